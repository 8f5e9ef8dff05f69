//! Text the PM shell produces: help, durations, numbers printed the way Python prints them,
//! the `stats` and `user` database sections (as the seed formats them), and splitting long replies.

use chrono::{Local, TimeZone};
use rosey_protocol::db::{ChannelStats, UserStatsFound};

/// The `help` reply. Starts and ends with a newline, like the seed's.
pub const HELP_TEXT: &str = "
Bot Commands:
───────────────────────────────
Info:
 help - Show commands
 info - Bot & channel
 status - Connection
 stats - Database stats

Users:
 users - List all
 user <name> - User info
 afk [on|off] - Set AFK

Chat:
 say <msg> - Chat msg
 pm <u> <msg> - Private msg
 clear - Clear chat

Playlist:
 playlist [n] - Show queue
 current - Now playing
 add <url> [t] - Add video
 remove <#> - Delete item
 move <#> <#> - Reorder
 jump <#> - Jump to
 next - Skip video

Control:
 pause - Pause vid
 kick <u> [r] - Kick user
 voteskip - Skip vote

Examples:
 say Hello everyone!
 add youtu.be/xyz yes
 playlist 5
 kick Bob Spamming
───────────────────────────────
";

/// Longest PM chunk, counting each line as its length plus one (seed).
pub const MAX_PM_CHUNK: usize = 500;

/// `1d 2h 3m 4s` with zero parts left out; `0s` for zero; `Unknown` for negative.
pub fn format_duration(seconds: f64) -> String {
    if seconds < 0.0 {
        return "Unknown".to_owned();
    }
    let s = seconds as u64;
    let (days, hours, minutes, secs) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let mut parts = Vec::new();
    for (n, unit) in [(days, "d"), (hours, "h"), (minutes, "m")] {
        if n > 0 {
            parts.push(format!("{n}{unit}"));
        }
    }
    if secs > 0 || parts.is_empty() {
        parts.push(format!("{secs}s"));
    }
    parts.join(" ")
}

/// A float the way Python's `str(float)` prints it for ordinary values: `2.0`, `1.5`.
pub fn py_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// A playback position: whole seconds print as an integer, like the platform's int field.
pub fn position(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Local time as `%Y-%m-%d %H:%M`.
pub fn local_time(ts: i64) -> String {
    match Local.timestamp_opt(ts, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => ts.to_string(),
    }
}

fn peak_line(label: &str, users: i64, ts: Option<i64>) -> String {
    match ts.filter(|&t| t != 0) {
        Some(t) => format!("{label}: {users} ({})", local_time(t)),
        None => format!("{label}: {users}"),
    }
}

/// The `stats` reply for a successful `query.channel_stats`.
pub fn channel_stats(stats: &ChannelStats) -> String {
    let mut out = vec![
        "=== Channel Statistics ===".to_owned(),
        peak_line(
            "Peak chat users",
            stats.high_water_mark.users,
            stats.high_water_mark.timestamp,
        ),
        peak_line(
            "Peak connected viewers",
            stats.high_water_connected.users,
            stats.high_water_connected.timestamp,
        ),
        format!("Total unique users: {}", stats.total_users_seen),
    ];
    if !stats.top_chatters.is_empty() {
        out.push("\n=== Top Chatters ===".to_owned());
        for (i, c) in stats.top_chatters.iter().take(10).enumerate() {
            out.push(format!(
                "{}. {}: {} messages",
                i + 1,
                c.username,
                c.chat_lines
            ));
        }
    }
    out.join("\n")
}

/// The database section of the `user` reply for a known user (lines to append).
pub fn user_stats(stats: &UserStatsFound) -> Vec<String> {
    let total = stats.total_time_connected;
    let mut out = vec![
        "\n--- Database Statistics ---".to_owned(),
        format!("Chat messages: {}", stats.total_chat_lines),
        format!(
            "Time connected: {}h {}m",
            total.div_euclid(3600),
            total.rem_euclid(3600) / 60
        ),
        format!("First seen: {}", local_time(stats.first_seen)),
        format!("Last seen: {}", local_time(stats.last_seen)),
    ];
    if stats.current_session_start.is_some_and(|s| s != 0) {
        out.push("Status: Currently connected".to_owned());
    }
    out
}

/// Splits a reply into PM-sized chunks exactly as the seed does: on `\n`, each line counted as
/// its length (in characters) plus one, a new chunk started when the next line would pass
/// [`MAX_PM_CHUNK`]. A single over-long line is sent as its own chunk, unsplit.
pub fn chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut len = 0;
    for line in text.split('\n') {
        let line_len = line.chars().count() + 1;
        if len + line_len > MAX_PM_CHUNK && !current.is_empty() {
            out.push(current.join("\n"));
            current = vec![line];
            len = line_len;
        } else {
            current.push(line);
            len += line_len;
        }
    }
    if !current.is_empty() {
        out.push(current.join("\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rosey_protocol::db::{HighWaterMark, TopChatter};

    #[test]
    fn durations_like_the_seed() {
        assert_eq!(format_duration(0.0), "0s");
        assert_eq!(format_duration(59.9), "59s");
        assert_eq!(format_duration(3600.0), "1h");
        assert_eq!(format_duration(90061.0), "1d 1h 1m 1s");
        assert_eq!(format_duration(-1.0), "Unknown");
    }

    #[test]
    fn python_number_printing() {
        assert_eq!(py_float(2.0), "2.0");
        assert_eq!(py_float(1.5), "1.5");
        assert_eq!(position(12.0), "12");
        assert_eq!(position(12.5), "12.5");
    }

    #[test]
    fn stats_layout() {
        let ts = 1_700_000_000;
        let s = ChannelStats {
            high_water_mark: HighWaterMark {
                users: 5,
                timestamp: Some(ts),
            },
            high_water_connected: HighWaterMark {
                users: 0,
                timestamp: Some(0),
            },
            top_chatters: vec![
                TopChatter {
                    username: "amy".into(),
                    chat_lines: 9,
                },
                TopChatter {
                    username: "bob".into(),
                    chat_lines: 2,
                },
            ],
            total_users_seen: 2,
            success: true,
        };
        let expected = format!(
            "=== Channel Statistics ===\nPeak chat users: 5 ({})\nPeak connected viewers: 0\nTotal unique users: 2\n\n=== Top Chatters ===\n1. amy: 9 messages\n2. bob: 2 messages",
            local_time(ts)
        );
        assert_eq!(channel_stats(&s), expected);
        let none = ChannelStats {
            top_chatters: vec![],
            ..s
        };
        assert!(channel_stats(&none).ends_with("Total unique users: 2"));
    }

    #[test]
    fn user_stats_section() {
        let f = UserStatsFound {
            username: "amy".into(),
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_100,
            total_chat_lines: 10,
            total_time_connected: 7384,
            current_session_start: None,
            success: true,
            found: true,
        };
        let lines = user_stats(&f);
        assert_eq!(lines[1], "Chat messages: 10");
        assert_eq!(lines[2], "Time connected: 2h 3m");
        assert_eq!(lines.len(), 5);
        let live = UserStatsFound {
            current_session_start: Some(5),
            ..f
        };
        assert_eq!(
            user_stats(&live).last().unwrap(),
            "Status: Currently connected"
        );
    }

    #[test]
    fn chunking_matches_the_seed() {
        assert_eq!(chunks("a\nb"), ["a\nb"]);
        // 5 lines of 99 chars: each counts 100, so exactly 500 fit in one chunk.
        let line = "x".repeat(99);
        let five = [line.as_str(); 5].join("\n");
        assert_eq!(chunks(&five).len(), 1);
        let six = [line.as_str(); 6].join("\n");
        let c = chunks(&six);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], five);
        assert_eq!(c[1], line);
        // A long single line stays whole.
        let long = "y".repeat(700);
        assert_eq!(chunks(&long), std::slice::from_ref(&long));
        // Characters, not bytes.
        let wide = vec!["é".repeat(99); 5].join("\n");
        assert_eq!(chunks(&wide).len(), 1);
        assert_eq!(
            chunks(HELP_TEXT).concat().replace('\n', ""),
            HELP_TEXT.replace('\n', "")
        );
    }
}
