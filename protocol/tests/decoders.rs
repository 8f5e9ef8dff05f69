//! Property tests of every payload type's decoder (issue 11):
//!
//! * arbitrary bytes, and valid encodings with bytes flipped or cut off, never make a decoder
//!   panic (they decode or fail with an error);
//! * valid values round-trip: a value decoded from JSON is encoded by `to_seed_json`, decoded
//!   back equal, and encoded again to the same bytes.
//!
//! Valid values are made generically: each type has one template per shape (a JSON value with
//! every field present), and each leaf of the template is replaced by an arbitrary value of the
//! same JSON kind (or `null`, or for a `null` leaf any kind) whenever the result still decodes.
//! So every field is exercised with arbitrary strings (any Unicode, escapes, surrogate pairs),
//! integers over the whole range and finite floats, without a hand-written strategy per type.

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rosey_protocol::db::*;
use rosey_protocol::platform::*;
use rosey_protocol::to_seed_json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const N: usize = 16;

/// Replacement leaves, used in turn.
#[derive(Debug, Clone)]
struct Leaves {
    strings: Vec<String>,
    ints: Vec<i64>,
    uints: Vec<u64>,
    floats: Vec<f64>,
    bools: Vec<bool>,
    nulls: Vec<bool>,
}

fn leaves() -> impl Strategy<Value = Leaves> {
    let string = prop_oneof![
        any::<String>(),
        "[a-z\"\\\\/\u{0}-\u{1f}\u{7f}é😀\u{2028}]{0,12}",
    ];
    let float = prop_oneof![
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()),
        (-1e6f64..1e6),
        Just(0.0),
        Just(-0.0),
    ];
    (
        proptest::collection::vec(string, N),
        proptest::collection::vec(any::<i64>(), N),
        proptest::collection::vec(any::<u64>(), N),
        proptest::collection::vec(float, N),
        proptest::collection::vec(any::<bool>(), N),
        proptest::collection::vec(proptest::bool::weighted(0.15), N),
    )
        .prop_map(|(strings, ints, uints, floats, bools, nulls)| Leaves {
            strings,
            ints,
            uints,
            floats,
            bools,
            nulls,
        })
}

impl Leaves {
    /// The `k`th replacement for a leaf that is `old` in the template.
    fn candidate(&self, k: usize, old: &Value) -> Value {
        let i = k % N;
        if self.nulls[i] {
            return Value::Null;
        }
        let kind = match old {
            Value::Null => k / N % 4,
            Value::Bool(_) => 0,
            Value::Number(n) if n.is_f64() => 3,
            Value::Number(_) => 1 + k % 2,
            _ => 4,
        };
        match kind {
            0 => json!(self.bools[i]),
            1 => json!(self.ints[i]),
            2 => json!(self.uints[i]),
            3 => json!(self.floats[i]),
            _ => json!(self.strings[i]),
        }
    }
}

/// JSON pointers of every scalar leaf of `v` (the root itself when it is a scalar).
fn leaf_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaf_pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                leaf_pointers(item, format!("{at}/{key}"), out);
            }
        }
        _ => out.push(at),
    }
}

fn round_trips<T>(template: &Value, leaves: &Leaves) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut v = template.clone();
    if let Err(e) = serde_json::from_value::<T>(v.clone()) {
        panic!("template {template} does not decode: {e}");
    }
    let mut pointers = Vec::new();
    leaf_pointers(&v, String::new(), &mut pointers);
    for (k, ptr) in pointers.iter().enumerate() {
        let old = v.pointer(ptr).expect("a leaf of the template").clone();
        *v.pointer_mut(ptr).unwrap() = leaves.candidate(k, &old);
        if serde_json::from_value::<T>(v.clone()).is_err() {
            *v.pointer_mut(ptr).unwrap() = old;
        }
    }
    let value: T = serde_json::from_value(v).unwrap();
    let bytes = to_seed_json(&value);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    prop_assert!(bytes.is_ascii(), "not ASCII: {text}");
    let back: T = serde_json::from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("{text} does not decode: {e}")))?;
    prop_assert_eq!(&back, &value, "through {}", text);
    prop_assert_eq!(to_seed_json(&back), bytes);
    Ok(())
}

/// Arbitrary bytes, and valid encodings of the templates damaged at a few places or cut off.
fn hostile_bytes(templates: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let encodings: Vec<Vec<u8>> = templates.iter().map(to_seed_json).collect();
    let damaged = (
        proptest::sample::select(encodings),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut bytes, flips, cut, truncate)| {
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), damaged]
}

macro_rules! payloads {
    ($($name:ident: $ty:ty = [$($template:expr),+ $(,)?];)*) => {
        $(
            mod $name {
                use super::*;

                fn templates() -> Vec<Value> {
                    vec![$($template),+]
                }

                proptest! {
                    #![proptest_config(ProptestConfig::with_cases(200))]

                    #[test]
                    fn valid_values_round_trip(
                        which in any::<prop::sample::Index>(),
                        leaves in leaves(),
                    ) {
                        let templates = templates();
                        round_trips::<$ty>(which.get(&templates), &leaves)?;
                    }

                    #[test]
                    fn hostile_bytes_never_panic(bytes in hostile_bytes(templates())) {
                        let _ = serde_json::from_slice::<$ty>(&bytes);
                    }
                }
            }
        )*
    };
}

fn status_data() -> Value {
    json!({
        "bot_name": "s", "bot_rank": 1.5, "bot_afk": 1, "channel_name": "s",
        "current_chat_users": 1, "current_connected_users": 1, "bot_start_time": 1,
        "bot_connected": 1, "playlist_items": 1, "current_media_title": "s",
        "current_media_duration": 1
    })
}

fn platform_user() -> Value {
    json!({
        "user": "s", "rank": 1.5, "afk": true, "muted": true, "ip": "s", "uncloaked_ip": "s",
        "aliases": ["s", "s"], "leader": true, "correlation_id": "s"
    })
}

fn media_item() -> Value {
    json!({"uid": 1, "title": "s", "duration": 1, "url": "s", "queued_by": "s", "temp": true})
}

fn high_water_mark() -> Value {
    json!({"users": 1, "timestamp": 1})
}

fn channel_stats() -> Value {
    json!({
        "high_water_mark": high_water_mark(), "high_water_connected": high_water_mark(),
        "top_chatters": [{"username": "s", "chat_lines": 1}, {"username": "s", "chat_lines": 1}],
        "total_users_seen": 1, "success": true
    })
}

fn error_reply() -> Value {
    json!({"success": false, "error": "s"})
}

fn user_stats_found() -> Value {
    json!({
        "username": "s", "first_seen": 1, "last_seen": 1, "total_chat_lines": 1,
        "total_time_connected": 1, "current_session_start": 1, "success": true, "found": true
    })
}

fn user_stats_not_found() -> Value {
    json!({"username": "s", "success": true, "found": false, "message": "s"})
}

payloads! {
    // Events to the database service.
    user_event: UserEvent = [json!({"username": "s"})];
    message_log: MessageLog = [json!({"username": "s", "message": "s"})];
    user_count: UserCount = [json!({"chat_count": 1, "connected_count": 1})];
    high_water: HighWater = [json!({"chat_count": 1, "connected_count": 1})];
    status_data_: StatusData = [status_data()];
    status_update: StatusUpdate = [json!({"status_data": status_data()})];
    mark_sent: MarkSent = [json!({"message_id": 1})];
    mark_failed: MarkFailed = [json!({"message_id": 1, "error": "s", "is_permanent": true})];
    pm_command_audit: PmCommandAudit = [json!({
        "timestamp": 1.5, "username": "s", "command": "s", "args": "s", "result": "s", "error": "s"
    })];
    // Requests.
    outbound_get: OutboundGet = [json!({"limit": 1, "max_retries": 1})];
    recent_chat_get: RecentChatGet = [json!({"limit": 1})];
    user_stats_query: UserStatsQuery = [json!({"username": "s"})];
    recent_messages_query: RecentMessagesQuery = [json!({"limit": 1, "offset": 1})];
    outbound_enqueue: OutboundEnqueue = [json!({"message": "s"})];
    // Replies and notices.
    error_reply_: ErrorReply = [error_reply()];
    outbound_message: OutboundMessage = [json!({
        "id": 1, "timestamp": 1, "message": "s", "retry_count": 1, "last_error": "s"
    })];
    recent_chat_line: RecentChatLine = [json!({"timestamp": 1, "username": "s", "message": "s"})];
    recent_message: RecentMessage = [json!({
        "id": 1, "timestamp": 1, "username": "s", "message": "s"
    })];
    high_water_mark_: HighWaterMark = [high_water_mark()];
    top_chatter: TopChatter = [json!({"username": "s", "chat_lines": 1})];
    channel_stats_: ChannelStats = [channel_stats()];
    channel_stats_reply: ChannelStatsReply = [channel_stats(), error_reply()];
    user_stats_found_: UserStatsFound = [user_stats_found()];
    user_stats_not_found_: UserStatsNotFound = [user_stats_not_found()];
    user_stats_reply: UserStatsReply = [user_stats_found(), user_stats_not_found(), error_reply()];
    enqueue_reply: EnqueueReply = [json!({"success": true, "id": 1})];
    service_stats: ServiceStats = [json!({
        "success": true, "mode": "s", "version": "s", "received": 1, "committed": 1,
        "malformed": 1, "duplicates": 1, "batches": 1, "requests": 1, "failed": 1, "uptime_ms": 1
    })];
    commit_notice: CommitNotice = [json!({
        "batch": 1, "ids": ["s", "s"], "events": 1, "duplicate_ids": ["s"]
    })];
    // Platform events.
    chat_message: ChatMessage = [json!({"user": "s", "content": "s", "correlation_id": "s"})];
    private_message: PrivateMessage = [json!({"user": "s", "content": "s", "correlation_id": "s"})];
    platform_user_: PlatformUser = [platform_user()];
    user_leave: UserLeave = [json!({"user": "s", "correlation_id": "s"})];
    user_count_event: UserCountEvent = [json!(1), json!({"count": 1, "correlation_id": "s"})];
    user_list_event: UserListEvent = [
        json!([platform_user(), platform_user()]),
        json!({"users": [platform_user()], "correlation_id": "s"}),
    ];
    media_item_: MediaItem = [media_item()];
    media_event: MediaEvent = [
        json!({"kind": "playlist", "items": [media_item(), media_item()], "correlation_id": "s"}),
        json!({"kind": "queue", "item": media_item(), "after": 1, "correlation_id": "s"}),
        json!({"kind": "delete", "uid": 1, "correlation_id": "s"}),
        json!({"kind": "move", "uid": 1, "after": 1, "correlation_id": "s"}),
        json!({"kind": "set_current", "uid": 1, "correlation_id": "s"}),
        json!({"kind": "media_update", "current_time": 1.5, "paused": true, "correlation_id": "s"}),
        json!({"kind": "voteskip", "count": 1, "need": 1, "correlation_id": "s"}),
    ];
    // Platform actions.
    chat_action: ChatAction = [json!({"content": "s"})];
    pm_action: PmAction = [json!({"user": "s", "content": "s"})];
    playlist_action: PlaylistAction = [
        json!({"action": "add", "url": "s", "temp": true}),
        json!({"action": "remove", "uid": 1}),
        json!({"action": "move", "uid": 1, "after": 1}),
        json!({"action": "jump", "uid": 1}),
        json!({"action": "pause"}),
    ];
    channel_action: ChannelAction = [
        json!({"action": "kick", "user": "s", "reason": "s"}),
        json!({"action": "clear"}),
        json!({"action": "afk", "afk": true}),
    ];
}
