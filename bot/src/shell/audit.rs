//! Audit records that always fit the database service's payload limit.
//!
//! The service refuses an event larger than its `max_payload_bytes` (64 KiB by default) as
//! malformed, and events are fire-and-forget: an audit record built from a long PM (a
//! moderator's `say`, a refused user's spam) would be dropped without a trace while the command
//! itself ran. So every string of a record is cut to a budget of JSON-escaped bytes (the bytes it
//! takes in the event, as `to_seed_json` writes it) and marked with `…[truncated N bytes]`; the
//! budgets add up to less than [`MAX_RECORD_BYTES`].

use std::borrow::Cow;

use rosey_protocol::db::PmCommandAudit;

/// The largest audit record the bot publishes, in bytes of JSON: under the service's default
/// limit of 64 KiB (the bot does not know the service's configuration; a smaller limit there
/// would drop records, which the service counts as malformed events).
pub(crate) const MAX_RECORD_BYTES: usize = 60 * 1024;

/// Budgets in JSON-escaped bytes per field. With the keys, `result`, the timestamp and the
/// markers, a record stays under [`MAX_RECORD_BYTES`] (checked by a test).
const ARGS_BUDGET: usize = 32 * 1024;
const ERROR_BUDGET: usize = 16 * 1024;
const NAME_BUDGET: usize = 1024;

/// `record` with `username`, `command`, `args` and `error` cut to their budgets.
pub(crate) fn fit(record: PmCommandAudit) -> PmCommandAudit {
    let cut = |s: Option<String>, budget: usize| s.map(|s| truncate(&s, budget).into_owned());
    PmCommandAudit {
        username: cut(record.username, NAME_BUDGET),
        command: cut(record.command, NAME_BUDGET),
        args: cut(record.args, ARGS_BUDGET),
        error: cut(record.error, ERROR_BUDGET),
        ..record
    }
}

/// `s` unchanged when its JSON string body (quotes excluded) takes at most `budget` bytes;
/// otherwise its longest prefix (at a char boundary) that fits together with the marker
/// `…[truncated N bytes]`, where N counts the UTF-8 bytes left out.
pub(crate) fn truncate(s: &str, budget: usize) -> Cow<'_, str> {
    if s.chars().map(escaped_len).sum::<usize>() <= budget {
        return Cow::Borrowed(s);
    }
    // The marker's length with as many digits as `s.len()` has: never less than the real one.
    let reserve = escaped_str_len(&marker(s.len()));
    let room = budget.saturating_sub(reserve);
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let n = escaped_len(c);
        if used + n > room {
            break;
        }
        used += n;
        end = i + c.len_utf8();
    }
    Cow::Owned(format!("{}{}", &s[..end], marker(s.len() - end)))
}

fn marker(cut_bytes: usize) -> String {
    format!("…[truncated {cut_bytes} bytes]")
}

fn escaped_str_len(s: &str) -> usize {
    s.chars().map(escaped_len).sum()
}

/// The bytes `c` takes inside a JSON string written by `to_seed_json` (Python's
/// `ensure_ascii`): printable ASCII as is, `"` and `\` and the short control escapes in two,
/// other control characters, DEL and non-ASCII as `\uXXXX` (a surrogate pair above the BMP).
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        '\u{0}'..='\u{1f}' | '\u{7f}' => 6,
        ' '..='~' => 1,
        _ => 6 * c.len_utf16(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rosey_protocol::to_seed_json;

    fn json_body_len(s: &str) -> usize {
        to_seed_json(s).len() - 2
    }

    #[test]
    fn escaped_len_matches_the_encoder() {
        let sample = (0u32..0x800)
            .chain([0xfffd, 0xffff, 0x1_0000, 0x1_f600, 0x10_ffff])
            .filter_map(char::from_u32);
        for c in sample {
            assert_eq!(escaped_len(c), json_body_len(&c.to_string()), "{c:?}");
        }
    }

    #[test]
    fn short_strings_are_kept_and_long_ones_cut_with_a_marker() {
        assert_eq!(truncate("hello", 5), "hello");
        let long = "ab\"é😀\n".repeat(1000);
        for budget in [0, 10, 44, 45, 100, 1000, 4096] {
            let t = truncate(&long, budget);
            assert!(json_body_len(&t) <= budget.max(44), "{budget}: {t:?}");
            let (kept, rest) = t.split_once("…[truncated ").unwrap();
            assert!(long.starts_with(kept));
            let n: usize = rest.strip_suffix(" bytes]").unwrap().parse().unwrap();
            assert_eq!(kept.len() + n, long.len());
        }
    }

    #[test]
    fn a_record_of_huge_fields_fits_the_limit() {
        let huge = "\u{1}é😀\"".repeat(100_000);
        let record = fit(PmCommandAudit {
            timestamp: Some(f64::MAX),
            username: Some(huge.clone()),
            command: Some(huge.clone()),
            args: Some(huge.clone()),
            result: Some("denied".into()),
            error: Some(huge),
        });
        let len = to_seed_json(&record).len();
        assert!(len <= MAX_RECORD_BYTES, "{len}");
        assert!(record.args.unwrap().ends_with(" bytes]"));
    }
}
