//! The markdown report (`report.md`): one summary table short enough for a pull-request comment or
//! a GitHub Actions job summary, details below it.
//!
//! Values are escaped for markdown by tera's autoescape with [`escape`], so a branch name or a
//! commit subject cannot break a table, inject HTML or start a code span. [`cell`] (in
//! `escape.rs`, a leaf module the gate's `compare.md` uses too) is the one escaping function of
//! the harness's markdown.

use super::view::RunView;
use anyhow::Context as _;
use serde::Serialize;

/// GitHub rejects comments longer than 65 536 characters and truncates job summaries at 1 MiB;
/// the report stays well below the former.
pub const MAX_CHARS: usize = 60_000;

const TEMPLATE: &str = include_str!("templates/report.md.tera");
const TEMPLATE_NAME: &str = "report.md";

pub use super::escape::{cell, escape, is_line_break, ACTIVE};

#[derive(Serialize)]
struct Page<'a> {
    run: &'a RunView,
    details: bool,
}

/// Render the markdown report, leaving the details out when they would make it too long.
pub fn render(view: &RunView) -> anyhow::Result<String> {
    let mut tera = tera::Tera::new();
    tera.set_escape_fn(escape);
    tera.autoescape_on([".md"]);
    tera.add_raw_template(TEMPLATE_NAME, TEMPLATE)
        .context("parse the markdown template")?;
    let render = |details: bool| -> anyhow::Result<String> {
        let page = Page { run: view, details };
        let context = tera::Context::from_serialize(&page).context("markdown context")?;
        let text = tera
            .render(TEMPLATE_NAME, &context)
            .context("render the markdown report")?;
        Ok(tidy(&text))
    };
    let full = render(true)?;
    if full.chars().count() <= MAX_CHARS {
        return Ok(full);
    }
    let short = render(false)?;
    anyhow::ensure!(
        short.chars().count() <= MAX_CHARS,
        "the markdown summary is {} characters even without details (limit {MAX_CHARS})",
        short.chars().count()
    );
    Ok(short)
}

/// Collapse runs of blank lines that template conditionals leave behind, and end with one newline.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = Vec::new();
        escape(s, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_markdown() {
        assert_eq!(esc("a|b"), "a\\|b");
        assert_eq!(
            esc("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(esc("`rm -rf`"), "\\`rm -rf\\`");
        assert_eq!(esc("[x](http://e)"), "\\[x\\](http://e)");
        assert_eq!(esc("two\nlines"), "two lines");
        assert_eq!(esc("single_event_latency"), "single\\_event\\_latency");
        assert_eq!(esc("~~gone~~ $x$ #1"), "\\~\\~gone\\~\\~ \\$x\\$ \\#1");
        assert_eq!(esc("- item"), "\\- item");
        assert_eq!(esc("-3.2 %"), "-3.2 %");
        assert_eq!(esc("1. first"), "1\\. first");
        assert_eq!(esc("1.5 ms"), "1.5 ms");
        assert_eq!(esc("    code"), "&#32;   code");
        assert_eq!(esc("a\u{2028}b\r\nc"), "a b  c");
    }

    /// Checks that `cell` is inert markdown: returns what is wrong, if anything.
    fn inert(cell: &str) -> Result<(), String> {
        let chars: Vec<char> = cell.chars().collect();
        if let Some(c) = chars.iter().find(|c| is_line_break(**c)) {
            return Err(format!("line break or control character {c:?}"));
        }
        match chars.first() {
            Some(c @ ('#' | '+' | '-' | '=' | ' '))
                if !chars.get(1).is_some_and(char::is_ascii_digit) =>
            {
                return Err(format!("starts with {c:?}"));
            }
            _ => {}
        }
        let digits = chars.iter().take_while(|c| c.is_ascii_digit()).count();
        if (1..=9).contains(&digits)
            && matches!(chars.get(digits), Some('.' | ')'))
            && chars.get(digits + 1).is_none_or(|c| *c == ' ')
        {
            return Err("starts like an ordered list item".into());
        }
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '\\' => match chars.get(i + 1) {
                    Some(c) if c.is_ascii_punctuation() => i += 1,
                    other => return Err(format!("backslash before {other:?}")),
                },
                '&' => {
                    let rest: String = chars[i..].iter().take(5).collect();
                    match ["&amp;", "&lt;", "&gt;", "&#32;"]
                        .iter()
                        .find(|e| rest.starts_with(*e))
                    {
                        Some(entity) => i += entity.len() - 1,
                        None => return Err(format!("bare & at {i}")),
                    }
                }
                c if ACTIVE.contains(&c) || c == '<' || c == '>' => {
                    return Err(format!("unescaped {c:?} at {i}"));
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }

    /// The inverse of [`escape`], up to the line breaks it turns into spaces.
    fn unescape(cell: &str) -> String {
        let cell = cell
            .replace("&#32;", " ")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        let mut out = String::new();
        let mut chars = cell.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out.replace("&amp;", "&")
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// For any string, the escaped cell has no line break, no unescaped `|` or other
        /// markdown-active character, and unescapes back to the string (line breaks as spaces).
        #[test]
        fn any_string_escapes_to_an_inert_cell(
            s in proptest::prop_oneof![
                proptest::string::string_regex("(?s).{0,40}").unwrap(),
                proptest::string::string_regex(
                    "[-+=#0-9. |`*_\\[\\]~$<>&!()\\\\\r\n\t\u{2028}\u{85}a-c]{0,24}"
                ).unwrap(),
            ]
        ) {
            let e = esc(&s);
            if let Err(why) = inert(&e) {
                proptest::prop_assert!(false, "{s:?} -> {e:?}: {why}");
            }
            let plain: String = s.chars().map(|c| if is_line_break(c) { ' ' } else { c }).collect();
            proptest::prop_assert_eq!(unescape(&e), plain);
        }
    }

    #[test]
    fn tidy_collapses_blank_lines() {
        assert_eq!(tidy("\n\na\n\n\n\nb  \n\n"), "a\n\nb\n");
    }
}
