//! The platform boundary: subjects and payloads between a chat-site connector (or the harness
//! playing the chat site) and the bot.
//!
//! The bot never talks to a chat site itself. A connector publishes normalized platform events on
//! `rosey.platform.<channel>.in.<kind>` and carries out the actions the bot publishes on
//! `rosey.platform.<channel>.out.<kind>`. `<channel>` is one NATS token (no `.`, `*`, `>` or
//! whitespace); [`valid_channel`] checks it.
//!
//! | Subject (`rosey.platform.<channel>.`…) | Direction | Payload |
//! |---|---|---|
//! | `in.message` | connector → bot | [`ChatMessage`] `{"user", "content"}` |
//! | `in.user_join` | connector → bot | [`PlatformUser`] `{"user", "rank", "afk", "muted", ...}` |
//! | `in.user_leave` | connector → bot | [`UserLeave`] `{"user"}` |
//! | `in.usercount` | connector → bot | [`UserCountEvent`]: `42` or `{"count": 42}` |
//! | `in.userlist` | connector → bot | [`UserListEvent`]: `[user, ...]` or `{"users": [user, ...]}` |
//! | `in.pm` | connector → bot | [`PrivateMessage`] `{"user", "content"}` |
//! | `in.media` | connector → bot | [`MediaEvent`], tagged by `"kind"` |
//! | `out.chat` | bot → connector | [`ChatAction`] `{"content"}` |
//! | `out.pm` | bot → connector | [`PmAction`] `{"user", "content"}` |
//! | `out.playlist` | bot → connector | [`PlaylistAction`], tagged by `"action"` |
//! | `out.channel` | bot → connector | [`ChannelAction`], tagged by `"action"` (kick, clear, afk) |
//!
//! Correlation: an incoming event may carry a correlation id in the
//! [`crate::headers::CORRELATION_ID`] header or in an optional `"correlation_id"` payload field
//! (object payloads only); the header wins when both are present. Everything the bot emits because
//! of that event (database events, requests, actions) carries the same id in the
//! `Rosey-Correlation-Id` header; actions never repeat it in the payload. When an event has no
//! id the bot makes one.
//!
//! Unknown payload fields are ignored so connectors can send more than the bot reads.

use serde::{Deserialize, Serialize};

/// Prefix of every platform subject.
pub const PREFIX: &str = "rosey.platform";

/// The kinds of incoming events (the last subject token after `in.`).
pub mod kind {
    pub const MESSAGE: &str = "message";
    pub const USER_JOIN: &str = "user_join";
    pub const USER_LEAVE: &str = "user_leave";
    pub const USERCOUNT: &str = "usercount";
    pub const USERLIST: &str = "userlist";
    pub const PM: &str = "pm";
    pub const MEDIA: &str = "media";
    /// Every incoming kind, in the order of the module table.
    pub const ALL: [&str; 7] = [
        MESSAGE, USER_JOIN, USER_LEAVE, USERCOUNT, USERLIST, PM, MEDIA,
    ];
}

/// The kinds of outgoing actions (the last subject token after `out.`).
pub mod action {
    pub const CHAT: &str = "chat";
    pub const PM: &str = "pm";
    pub const PLAYLIST: &str = "playlist";
    pub const CHANNEL: &str = "channel";
    /// Every outgoing kind.
    pub const ALL: [&str; 4] = [CHAT, PM, PLAYLIST, CHANNEL];
}

/// True if `channel` can be used as one subject token.
pub fn valid_channel(channel: &str) -> bool {
    !channel.is_empty()
        && !channel
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
}

/// `rosey.platform.<channel>.in.<kind>`.
pub fn in_subject(channel: &str, kind: &str) -> String {
    format!("{PREFIX}.{channel}.in.{kind}")
}

/// `rosey.platform.<channel>.in.>`: every incoming event of one channel.
pub fn in_wildcard(channel: &str) -> String {
    format!("{PREFIX}.{channel}.in.>")
}

/// `rosey.bot.<channel>.stats` (addition): a request answered by the bot of `channel` with its
/// [`BotStats`]. Outside `rosey.platform.<channel>.in.>`, so no platform event can be taken for it.
pub fn bot_stats_subject(channel: &str) -> String {
    format!("rosey.bot.{channel}.stats")
}

/// `rosey.platform.<channel>.out.<kind>`.
pub fn out_subject(channel: &str, kind: &str) -> String {
    format!("{PREFIX}.{channel}.out.{kind}")
}

/// `rosey.platform.<channel>.out.>`: every action the bot publishes for one channel.
pub fn out_wildcard(channel: &str) -> String {
    format!("{PREFIX}.{channel}.out.>")
}

/// The kind token of an incoming subject of `channel`, or `None` if it is not one.
pub fn in_kind<'a>(channel: &str, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix(PREFIX)?
        .strip_prefix('.')?
        .strip_prefix(channel)?
        .strip_prefix(".in.")
}

// --- Incoming events ---------------------------------------------------------------------------

/// `in.message`: a public chat line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChatMessage {
    pub user: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// `in.pm`: a private message to the bot (the PM command shell reads these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PrivateMessage {
    pub user: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// A user as the platform describes it: the payload of `in.user_join` and an element of
/// `in.userlist`. Only `user` is required. `rank` is the platform rank (moderators are 2.0 and
/// up by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlatformUser {
    pub user: String,
    #[serde(default)]
    pub rank: f64,
    #[serde(default)]
    pub afk: bool,
    #[serde(default)]
    pub muted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncloaked_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The channel leader (controls playback).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl PlatformUser {
    /// A user with rank `rank` and defaults elsewhere.
    pub fn new(user: impl Into<String>, rank: f64) -> Self {
        PlatformUser {
            user: user.into(),
            rank,
            ..Default::default()
        }
    }
}

/// `in.user_leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserLeave {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// `in.usercount`: the number of connected viewers (chat users plus anonymous ones), as a bare
/// integer or as `{"count": n}` (the seed accepted both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserCountEvent {
    Bare(i64),
    Object {
        count: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
}

impl UserCountEvent {
    pub fn count(&self) -> i64 {
        match self {
            UserCountEvent::Bare(n) | UserCountEvent::Object { count: n, .. } => *n,
        }
    }

    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            UserCountEvent::Bare(_) => None,
            UserCountEvent::Object { correlation_id, .. } => correlation_id.as_deref(),
        }
    }
}

/// `in.userlist`: the full list of chat users, replacing the bot's local list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserListEvent {
    Bare(Vec<PlatformUser>),
    Object {
        users: Vec<PlatformUser>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
}

impl UserListEvent {
    pub fn users(&self) -> &[PlatformUser] {
        match self {
            UserListEvent::Bare(users) | UserListEvent::Object { users, .. } => users,
        }
    }

    pub fn into_users(self) -> Vec<PlatformUser> {
        match self {
            UserListEvent::Bare(users) | UserListEvent::Object { users, .. } => users,
        }
    }

    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            UserListEvent::Bare(_) => None,
            UserListEvent::Object { correlation_id, .. } => correlation_id.as_deref(),
        }
    }
}

/// One playlist entry. `uid` is the platform's id for the entry (stable while it is queued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MediaItem {
    pub uid: i64,
    #[serde(default)]
    pub title: String,
    /// Seconds.
    #[serde(default)]
    pub duration: i64,
    #[serde(default)]
    pub url: String,
    /// Who queued it.
    #[serde(default)]
    pub queued_by: String,
    #[serde(default)]
    pub temp: bool,
}

/// `in.media`: playlist and playback changes (the seed's `playlist`, `queue`, `delete`,
/// `moveVideo`, `setCurrent`, `mediaUpdate`, plus voteskip counts). The bot keeps local playlist
/// state from these; it publishes no database event for them (the current media reaches the
/// database through the periodic status update, as in the seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MediaEvent {
    /// The whole playlist, replacing the local copy.
    Playlist {
        items: Vec<MediaItem>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// An item was queued after the item `after` (`None`: at the end).
    Queue {
        item: MediaItem,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// An item was removed.
    Delete {
        uid: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// An item moved to just after `after` (`None`: to the front).
    Move {
        uid: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// The item now playing.
    SetCurrent {
        uid: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// Playback position (seconds) and pause state.
    MediaUpdate {
        current_time: f64,
        paused: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// Vote-skip progress.
    Voteskip {
        count: i64,
        need: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
}

impl MediaEvent {
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            MediaEvent::Playlist { correlation_id, .. }
            | MediaEvent::Queue { correlation_id, .. }
            | MediaEvent::Delete { correlation_id, .. }
            | MediaEvent::Move { correlation_id, .. }
            | MediaEvent::SetCurrent { correlation_id, .. }
            | MediaEvent::MediaUpdate { correlation_id, .. }
            | MediaEvent::Voteskip { correlation_id, .. } => correlation_id.as_deref(),
        }
    }
}

// --- Outgoing actions --------------------------------------------------------------------------

/// `out.chat`: say something in public chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatAction {
    pub content: String,
}

/// `out.pm`: send a private message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmAction {
    pub user: String,
    pub content: String,
}

/// `out.playlist`: change the playlist or playback. Items are named by their `uid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PlaylistAction {
    /// Queue `url` at the end; `temp` items are removed after playing.
    Add {
        url: String,
        temp: bool,
    },
    Remove {
        uid: i64,
    },
    /// Move `uid` to just after `after`; `null` moves it to the front.
    Move {
        uid: i64,
        after: Option<i64>,
    },
    /// Play `uid` now (the `jump` and `next` commands).
    Jump {
        uid: i64,
    },
    Pause,
}

/// `out.channel`: channel moderation and the bot's own presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ChannelAction {
    Kick {
        user: String,
        reason: String,
    },
    /// Clear the public chat.
    Clear,
    /// Set the bot's AFK flag.
    Afk {
        afk: bool,
    },
}

/// A snapshot of the bot's counters since it started: the reply to [`bot_stats_subject`]
/// (addition; the seed's bot had no counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BotStats {
    /// Platform events received (valid or not).
    pub events_received: u64,
    /// Platform events that could not be parsed or named no known kind (logged and ignored).
    pub events_malformed: u64,
    /// Database events handed to the NATS client (durable events: stored by the stream).
    pub db_events_published: u64,
    /// Database events the client refused or did not accept in time (durable events: that
    /// JetStream never confirmed storing within the retry window).
    pub db_publish_failures: u64,
    /// Durable events: publishes repeated because no PubAck came (an outage, a restart).
    pub db_publish_retries: u64,
    /// Requests to the database service that got a reply.
    pub requests_ok: u64,
    /// Requests that failed (no responders, timeout, connection), after retries.
    pub requests_failed: u64,
    /// Request attempts refused by the open circuit breaker without touching NATS.
    pub requests_short_circuited: u64,
    /// Authorized PM commands run.
    pub pm_commands: u64,
    /// PM commands refused (sender not a moderator or unknown).
    pub pm_denied: u64,
    /// PM command audit records that could not be published (the NATS client refused them or
    /// did not take them in time), or that were still larger than the bot's record limit.
    pub audit_failures: u64,
    /// Platform actions published (chat, PM, playlist, channel).
    pub actions_sent: u64,
    /// Platform actions that could not be sent.
    pub action_failures: u64,
    /// Outbound-queue messages sent and marked sent.
    pub outbound_sent: u64,
    /// Outbound-queue messages whose sending failed (marked failed).
    pub outbound_failed: u64,
    /// Times the NATS connection came back after a disconnection.
    pub reconnects: u64,
    /// Platform events the NATS client dropped because the bot did not keep up (slow
    /// consumer), as the client reported them: a lower bound.
    pub client_drops: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_seed_json_string;

    #[test]
    fn subjects() {
        assert_eq!(
            in_subject("lobby", kind::MESSAGE),
            "rosey.platform.lobby.in.message"
        );
        assert_eq!(
            out_subject("lobby", action::PM),
            "rosey.platform.lobby.out.pm"
        );
        assert_eq!(in_wildcard("lobby"), "rosey.platform.lobby.in.>");
        assert_eq!(
            in_kind("lobby", "rosey.platform.lobby.in.usercount"),
            Some("usercount")
        );
        assert_eq!(in_kind("lobby", "rosey.platform.lobbyx.in.usercount"), None);
        assert_eq!(in_kind("lobby", "rosey.platform.lobby.out.chat"), None);
        assert!(valid_channel("cytube-lobby_1"));
        for bad in ["", "a.b", "a*", ">", "a b"] {
            assert!(!valid_channel(bad), "{bad:?}");
        }
    }

    #[test]
    fn usercount_accepts_int_or_object() {
        let a: UserCountEvent = serde_json::from_str("42").unwrap();
        let b: UserCountEvent =
            serde_json::from_str(r#"{"count": 42, "correlation_id": "c1"}"#).unwrap();
        assert_eq!((a.count(), a.correlation_id()), (42, None));
        assert_eq!((b.count(), b.correlation_id()), (42, Some("c1")));
        assert!(serde_json::from_str::<UserCountEvent>(r#"{"n": 1}"#).is_err());
        assert!(serde_json::from_str::<UserCountEvent>(r#""42""#).is_err());
    }

    #[test]
    fn userlist_and_users() {
        let l: UserListEvent =
            serde_json::from_str(r#"[{"user": "amy", "rank": 3}, {"user": "bob", "extra": 1}]"#)
                .unwrap();
        assert_eq!(l.users().len(), 2);
        assert_eq!(l.users()[0].rank, 3.0);
        let o: UserListEvent =
            serde_json::from_str(r#"{"users": [], "correlation_id": "x"}"#).unwrap();
        assert_eq!(o.correlation_id(), Some("x"));
        assert!(serde_json::from_str::<PlatformUser>(r#"{"rank": 1}"#).is_err());
        assert_eq!(
            to_seed_json_string(&PlatformUser::new("amy", 2.0)),
            r#"{"user": "amy", "rank": 2.0, "afk": false, "muted": false}"#
        );
    }

    #[test]
    fn tagged_payloads() {
        let m: MediaEvent = serde_json::from_str(
            r#"{"kind": "queue", "item": {"uid": 7, "title": "T", "duration": 60}, "after": 3}"#,
        )
        .unwrap();
        assert!(matches!(m, MediaEvent::Queue { after: Some(3), .. }));
        assert_eq!(
            to_seed_json_string(&PlaylistAction::Move {
                uid: 1,
                after: Some(2)
            }),
            r#"{"action": "move", "uid": 1, "after": 2}"#
        );
        assert_eq!(
            to_seed_json_string(&PlaylistAction::Move {
                uid: 1,
                after: None
            }),
            r#"{"action": "move", "uid": 1, "after": null}"#
        );
        assert_eq!(
            to_seed_json_string(&PlaylistAction::Pause),
            r#"{"action": "pause"}"#
        );
        assert_eq!(
            to_seed_json_string(&ChannelAction::Kick {
                user: "bob".into(),
                reason: String::new()
            }),
            r#"{"action": "kick", "user": "bob", "reason": ""}"#
        );
        assert_eq!(
            to_seed_json_string(&PmAction {
                user: "amy".into(),
                content: "hi".into()
            }),
            r#"{"user": "amy", "content": "hi"}"#
        );
    }
}
