//! The PM commands themselves. Texts follow the seed's `common/shell.py`; actions on the
//! platform go out as [`PlatformAction`]s, database questions as resilient requests.

use std::time::SystemTime;

use rosey_protocol::db::{ChannelStatsReply, UserStatsQuery, UserStatsReply};
use rosey_protocol::platform::{ChannelAction, MediaItem, PlaylistAction};
use rosey_protocol::subjects;

use super::text::{self, format_duration, py_float};
use super::Reply;
use crate::bot::Bot;
use crate::db::Retry;
use crate::sender::PlatformAction;
use crate::state::Playlist;
use crate::trace::Trace;

/// Runs one command (`command` already lowercased).
pub(super) async fn run(bot: &Bot, command: &str, args: &str, trace: &Trace) -> Reply {
    match command {
        "help" => Reply::ok(text::HELP_TEXT),
        "info" => info(bot),
        "status" => status(bot),
        "stats" => stats(bot, trace).await,
        "users" => users(bot),
        "user" => user(bot, args, trace).await,
        "afk" => afk(bot, args, trace).await,
        "say" => say(bot, args, trace).await,
        "pm" => pm(bot, args, trace).await,
        "clear" => {
            done(
                bot,
                PlatformAction::Channel(ChannelAction::Clear),
                trace,
                "Chat cleared",
            )
            .await
        }
        "playlist" => playlist(bot, args),
        "current" => current(bot),
        "add" => add(bot, args, trace).await,
        "remove" => remove(bot, args, trace).await,
        "move" => move_item(bot, args, trace).await,
        "jump" => jump(bot, args, trace).await,
        "next" => next(bot, trace).await,
        "pause" => {
            done(
                bot,
                PlatformAction::Playlist(PlaylistAction::Pause),
                trace,
                "Paused",
            )
            .await
        }
        "kick" => kick(bot, args, trace).await,
        "voteskip" => voteskip(bot),
        other => Reply::err(format!(
            "Unknown command: {other}\nType 'help' for available commands"
        )),
    }
}

/// Sends `action`; replies `ok_text`, or the seed's `Error: <e>` if it could not be sent.
async fn done(
    bot: &Bot,
    action: PlatformAction,
    trace: &Trace,
    ok_text: impl Into<String>,
) -> Reply {
    match bot.act(action, trace).await {
        Ok(()) => Reply::ok(ok_text),
        Err(e) => Reply::err(format!("Error: {e}")),
    }
}

fn secs_since(t: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn info(bot: &Bot) -> Reply {
    let state = bot.state();
    let bot_rank = state.user(&bot.config.bot_name).map_or(0.0, |u| u.rank);
    let mut out = vec![
        format!("Bot: {}", bot.config.bot_name),
        format!("Rank: {}", py_float(bot_rank)),
        format!("AFK: {}", yes_no(state.bot_afk)),
        format!("Channel: {}", bot.config.channel),
    ];
    let chat = state.users.len() as i64;
    match state.usercount {
        Some(total) if total != 0 && total != chat => {
            out.push(format!("Users: {chat} in chat, {total} connected"))
        }
        _ => out.push(format!("Users: {chat}")),
    }
    if let Some(pl) = &state.playlist {
        out.push(format!("Playlist: {} items", pl.queue.len()));
        let total: i64 = pl.queue.iter().map(|i| i.duration).sum();
        if total > 0 {
            out.push(format!("Duration: {}", format_duration(total as f64)));
        }
        if let Some(item) = pl.current_item() {
            out.push(format!("Now playing: {}", item.title));
        }
    }
    Reply::ok(out.join("\n"))
}

fn status(bot: &Bot) -> Reply {
    let mut out = vec![format!(
        "Uptime: {}",
        format_duration(secs_since(bot.start_time))
    )];
    let connected = bot.db.is_connected();
    out.push(format!("Connected: {}", yes_no(connected)));
    if connected {
        out.push(format!("Server: {}", bot.config.nats.redacted_url()));
        out.push(format!(
            "Conn time: {}",
            format_duration(secs_since(bot.connected_since()))
        ));
    }
    out.push(format!("Channel: {}", bot.config.channel));
    let state = bot.state();
    if let Some(leader) = state.leader() {
        out.push(format!("Leader: {}", leader.user));
    }
    if let Some(pl) = &state.playlist {
        out.push(format!(
            "Playback: {}",
            if pl.paused { "Paused" } else { "Playing" }
        ));
    }
    Reply::ok(out.join("\n"))
}

async fn stats(bot: &Bot, trace: &Trace) -> Reply {
    // The seed sends `{}` and the service never parses it.
    let body = serde_json::Map::new();
    let bytes = match bot
        .db
        .request(subjects::QUERY_CHANNEL_STATS, &body, trace, Retry::ReadOnly)
        .await
    {
        Ok(b) => b,
        Err(e) => return Reply::err(format!("Stats unavailable ({e})")),
    };
    match serde_json::from_slice::<ChannelStatsReply>(&bytes) {
        Ok(ChannelStatsReply::Ok(s)) => Reply::ok(text::channel_stats(&s)),
        Ok(ChannelStatsReply::Err(e)) => Reply::err(format!("Stats error: {}", e.error)),
        Err(e) => {
            tracing::error!(error = %e, "invalid channel_stats reply");
            Reply::err("Stats error: Invalid response from DatabaseService")
        }
    }
}

fn users(bot: &Bot) -> Reply {
    let state = bot.state();
    if state.users.is_empty() {
        return Reply::ok("No users information available");
    }
    let mut sorted: Vec<_> = state.users.iter().collect();
    // Stable, like Python's sorted(): equal ranks keep join order.
    sorted.sort_by(|a, b| b.rank.total_cmp(&a.rank));
    let lines: Vec<String> = sorted
        .iter()
        .map(|u| {
            let flags: Vec<&str> = [(u.afk, "AFK"), (u.muted, "MUTED"), (u.leader, "LEADER")]
                .into_iter()
                .filter_map(|(on, f)| on.then_some(f))
                .collect();
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            };
            format!("  [{}] {}{flags}", py_float(u.rank), u.user)
        })
        .collect();
    Reply::ok(format!(
        "Users in channel ({}):\n{}",
        lines.len(),
        lines.join("\n")
    ))
}

async fn user(bot: &Bot, name: &str, trace: &Trace) -> Reply {
    if name.is_empty() {
        return Reply::err("Usage: user <username>");
    }
    let mut out = {
        let state = bot.state();
        let Some(u) = state.user(name) else {
            return Reply::err(format!("User '{name}' not found"));
        };
        let mut out = vec![
            format!("User: {}", u.user),
            format!("Rank: {}", py_float(u.rank)),
            format!("AFK: {}", yes_no(u.afk)),
            format!("Muted: {}", yes_no(u.muted)),
        ];
        if let Some(ip) = u.ip.as_deref().filter(|s| !s.is_empty()) {
            out.push(format!("IP: {ip}"));
            if let Some(unc) = u.uncloaked_ip.as_deref().filter(|s| !s.is_empty()) {
                out.push(format!("Uncloaked: {unc}"));
            }
        }
        if !u.aliases.is_empty() {
            out.push(format!("Aliases: {}", u.aliases.join(", ")));
        }
        if u.leader {
            out.push("Status: LEADER".to_owned());
        }
        out
    };
    let query = UserStatsQuery {
        username: Some(name.to_owned()),
    };
    let problem = match bot
        .db
        .request(subjects::QUERY_USER_STATS, &query, trace, Retry::ReadOnly)
        .await
    {
        Err(e) => Some(format!("Database stats unavailable ({e})")),
        Ok(bytes) => match serde_json::from_slice::<UserStatsReply>(&bytes) {
            Ok(UserStatsReply::Found(s)) => {
                out.extend(text::user_stats(&s));
                None
            }
            Ok(UserStatsReply::NotFound(_)) => {
                out.push("\n--- Database Statistics ---".to_owned());
                out.push("No database history for this user".to_owned());
                None
            }
            Ok(UserStatsReply::Err(e)) => Some(format!("Database stats error: {}", e.error)),
            Err(_) => {
                Some("Database stats error: Invalid response from DatabaseService".to_owned())
            }
        },
    };
    // The user part was answered; the missing statistics make it an error all the same.
    if let Some(p) = &problem {
        out.push("\n--- Database Statistics ---".to_owned());
        out.push(p.clone());
    }
    Reply {
        text: out.join("\n"),
        error: problem,
    }
}

async fn afk(bot: &Bot, args: &str, trace: &Trace) -> Reply {
    if args.is_empty() {
        return Reply::ok(format!(
            "Current AFK status: {}",
            if bot.state().bot_afk { "On" } else { "Off" }
        ));
    }
    let on = match args.to_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => true,
        "off" | "no" | "false" | "0" => false,
        _ => return Reply::err("Usage: afk [on|off]"),
    };
    let reply = done(
        bot,
        PlatformAction::Channel(ChannelAction::Afk { afk: on }),
        trace,
        format!("AFK status: {}", if on { "On" } else { "Off" }),
    )
    .await;
    if reply.error.is_none() {
        bot.state().bot_afk = on;
    }
    reply
}

async fn say(bot: &Bot, message: &str, trace: &Trace) -> Reply {
    if message.is_empty() {
        return Reply::err("Usage: say <message>");
    }
    done(
        bot,
        PlatformAction::chat(message),
        trace,
        format!("Sent: {message}"),
    )
    .await
}

async fn pm(bot: &Bot, args: &str, trace: &Trace) -> Reply {
    let Some((user, message)) = split_first(args) else {
        return Reply::err("Usage: pm <user> <message>");
    };
    if message.is_empty() {
        return Reply::err("Usage: pm <user> <message>");
    }
    done(
        bot,
        PlatformAction::pm(user, message),
        trace,
        format!("PM sent to {user}: {message}"),
    )
    .await
}

/// `"a  b c"` → `("a", "b c")`, like Python's `split(None, 1)`.
fn split_first(args: &str) -> Option<(&str, &str)> {
    let args = args.trim();
    if args.is_empty() {
        return None;
    }
    Some(match args.split_once(char::is_whitespace) {
        Some((a, rest)) => (a, rest.trim_start()),
        None => (args, ""),
    })
}

/// Python's `int()` on a short argument: surrounding whitespace and a sign allowed.
fn parse_int(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

/// A copy of the playlist, or the seed's "no playlist" reply.
fn playlist_copy(bot: &Bot, missing: &str) -> Result<Playlist, Reply> {
    bot.state()
        .playlist
        .clone()
        .ok_or_else(|| Reply::err(missing))
}

fn playlist(bot: &Bot, args: &str) -> Reply {
    let pl = match playlist_copy(bot, "No playlist information available") {
        Ok(pl) => pl,
        Err(r) => return r,
    };
    let limit = if args.is_empty() {
        10
    } else {
        // Negative counts (Python would slice from the end) are refused instead.
        match parse_int(args).and_then(|n| usize::try_from(n).ok()) {
            Some(n) => n,
            None => return Reply::err("Usage: playlist [number]"),
        }
    };
    let items: Vec<String> = pl
        .queue
        .iter()
        .take(limit)
        .enumerate()
        .map(|(i, item)| {
            let marker = if pl.current == Some(item.uid) {
                "► "
            } else {
                "  "
            };
            format!(
                "{marker}{}. {} ({})",
                i + 1,
                item.title,
                format_duration(item.duration as f64)
            )
        })
        .collect();
    let mut out = format!("Playlist ({} items):\n{}", pl.queue.len(), items.join("\n"));
    if pl.queue.len() > limit {
        out.push_str(&format!("\n  ... and {} more", pl.queue.len() - limit));
    }
    Reply::ok(out)
}

fn current(bot: &Bot) -> Reply {
    let pl = match playlist_copy(bot, "No playlist information available") {
        Ok(pl) => pl,
        Err(r) => return r,
    };
    let Some(item) = pl.current_item() else {
        return Reply::ok("Nothing is currently playing");
    };
    Reply::ok(
        [
            format!("Title: {}", item.title),
            format!("Duration: {}", format_duration(item.duration as f64)),
            format!("Queued by: {}", item.queued_by),
            format!("URL: {}", item.url),
            format!("Temporary: {}", yes_no(item.temp)),
            format!("Status: {}", if pl.paused { "Paused" } else { "Playing" }),
            format!("Position: {}s", text::position(pl.current_time)),
        ]
        .join("\n"),
    )
}

async fn add(bot: &Bot, args: &str, trace: &Trace) -> Reply {
    let mut parts = args.split_whitespace();
    let Some(url) = parts.next() else {
        return Reply::err("Usage: add <url> [temp]  (temp: yes/no, default=yes)");
    };
    let temp = !matches!(
        parts.next().map(str::to_lowercase).as_deref(),
        Some("no" | "false" | "0" | "perm")
    );
    let action = PlatformAction::Playlist(PlaylistAction::Add {
        url: url.to_owned(),
        temp,
    });
    match bot.act(action, trace).await {
        Ok(()) => Reply::ok(format!(
            "Added: {url} ({})",
            if temp { "temporary" } else { "permanent" }
        )),
        Err(e) => Reply::err(format!("Failed to add media: {e}")),
    }
}

/// Resolves a 1-based position argument to an item, with the seed's replies for each failure.
fn item_at(bot: &Bot, args: &str, usage: &str) -> Result<MediaItem, Reply> {
    if args.is_empty() {
        return Err(Reply::err(usage));
    }
    let pos = parse_int(args).ok_or_else(|| Reply::err("Invalid position number"))?;
    let pl = playlist_copy(bot, "No playlist available")?;
    let len = pl.queue.len();
    if pos < 1 || pos as usize > len {
        return Err(Reply::err(format!("Position must be between 1 and {len}")));
    }
    Ok(pl.queue[pos as usize - 1].clone())
}

async fn remove(bot: &Bot, args: &str, trace: &Trace) -> Reply {
    match item_at(bot, args, "Usage: remove <position>") {
        Ok(item) => {
            let action = PlatformAction::Playlist(PlaylistAction::Remove { uid: item.uid });
            done(bot, action, trace, format!("Removed: {}", item.title)).await
        }
        Err(r) => r,
    }
}

async fn jump(bot: &Bot, args: &str, trace: &Trace) -> Reply {
    match item_at(bot, args, "Usage: jump <position>") {
        Ok(item) => {
            let action = PlatformAction::Playlist(PlaylistAction::Jump { uid: item.uid });
            done(bot, action, trace, format!("Jumped to: {}", item.title)).await
        }
        Err(r) => r,
    }
}

/// `move <from> <to>`: the item ends up at position `to`. (The seed always anchored on the item
/// before `to`, which put downward moves one place short, and refused moves to the front.)
async fn move_item(bot: &Bot, args: &str, trace: &Trace) -> Reply {
    let parts: Vec<&str> = args.split_whitespace().collect();
    if parts.len() < 2 {
        return Reply::err("Usage: move <from_pos> <to_pos>");
    }
    let (Some(from), Some(to)) = (parse_int(parts[0]), parse_int(parts[1])) else {
        return Reply::err("Invalid position numbers");
    };
    let pl = match playlist_copy(bot, "No playlist available") {
        Ok(pl) => pl,
        Err(r) => return r,
    };
    let len = pl.queue.len() as i64;
    if from < 1 || from > len {
        return Reply::err(format!("From position must be between 1 and {len}"));
    }
    if to < 1 || to > len {
        return Reply::err(format!("To position must be between 1 and {len}"));
    }
    let item = &pl.queue[from as usize - 1];
    // The item that must end up just before it, counted in the queue without the moved item.
    let after = match from.cmp(&to) {
        std::cmp::Ordering::Less => Some(pl.queue[to as usize - 1].uid),
        _ if to == 1 => None,
        _ => Some(pl.queue[to as usize - 2].uid),
    };
    if from == to {
        return Reply::ok(format!("Moved {} from position {from} to {to}", item.title));
    }
    let action = PlatformAction::Playlist(PlaylistAction::Move {
        uid: item.uid,
        after,
    });
    done(
        bot,
        action,
        trace,
        format!("Moved {} from position {from} to {to}", item.title),
    )
    .await
}

async fn next(bot: &Bot, trace: &Trace) -> Reply {
    let pl = match playlist_copy(bot, "No playlist available") {
        Ok(pl) => pl,
        Err(r) => return r,
    };
    let Some(current) = pl.current else {
        return Reply::err("Nothing is currently playing");
    };
    let Some(idx) = pl.queue.iter().position(|i| i.uid == current) else {
        return Reply::err("Current item not in queue");
    };
    match pl.queue.get(idx + 1) {
        Some(next) => {
            let action = PlatformAction::Playlist(PlaylistAction::Jump { uid: next.uid });
            done(bot, action, trace, format!("Skipped to: {}", next.title)).await
        }
        None => Reply::err("Already at last item"),
    }
}

async fn kick(bot: &Bot, args: &str, trace: &Trace) -> Reply {
    let Some((user, reason)) = split_first(args) else {
        return Reply::err("Usage: kick <user> [reason]");
    };
    let text = if reason.is_empty() {
        format!("Kicked {user}")
    } else {
        format!("Kicked {user}: {reason}")
    };
    let action = PlatformAction::Channel(ChannelAction::Kick {
        user: user.to_owned(),
        reason: reason.to_owned(),
    });
    done(bot, action, trace, text).await
}

fn voteskip(bot: &Bot) -> Reply {
    let (count, need) = bot.state().voteskip.unwrap_or((0, 0));
    Reply::ok(format!("Voteskip: {count}/{need}"))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_splitting() {
        assert_eq!(
            split_first("bob  spamming a lot"),
            Some(("bob", "spamming a lot"))
        );
        assert_eq!(split_first("bob"), Some(("bob", "")));
        assert_eq!(split_first("  "), None);
        assert_eq!(parse_int(" +3 "), Some(3));
        assert_eq!(parse_int("x"), None);
    }
}
