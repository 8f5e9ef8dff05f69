//! Mutation fuzzing of what the bot decodes: every platform event payload and every reply of the
//! database service it reads, fed valid inputs damaged by `natskit::hostile::Mutator`, decoded
//! the way the bot decodes them (`serde_json::from_slice`). None may panic: bad input is an
//! `Err`, counted as a malformed event or a failed request.
//!
//! A normal test run tries 20,000 inputs; `cargo xtask fuzz --seconds N` sets
//! `ROSEY_FUZZ_SECONDS` and runs this for N seconds in a release build.

use natskit::hostile::{self, Budget};
use rosey_protocol::db::{
    ChannelStatsReply, ConfirmSentReply, EnqueueReply, OutboundMessage, ServiceStats,
    UserStatsReply,
};
use rosey_protocol::platform::{
    BotStats, ChatMessage, MediaEvent, PlatformUser, PrivateMessage, UserCountEvent, UserLeave,
    UserListEvent,
};
use serde::de::DeserializeOwned;

const CORPUS: &[&[u8]] = &[
    br#"{"user": "amy", "content": "hello \u00e9 \ud83d\ude00", "correlation_id": "c1"}"#,
    br#"{"name": "amy", "rank": 3.0, "afk": false}"#,
    br#"{"user": "amy"}"#,
    br#"12"#,
    br#"{"count": 12, "correlation_id": "c2"}"#,
    br#"{"users": [{"name": "amy", "rank": 1.0}, {"name": "bob", "rank": 0}]}"#,
    br#"[{"name": "amy", "rank": 1.0}]"#,
    br#"{"kind": "change", "title": "song", "duration": 60.5}"#,
    br#"{"success": true, "total_users_seen": 3, "high_water": {"chat": 4, "connected": 9}, "top_chatters": [{"username": "amy", "chat_lines": 2}]}"#,
    br#"{"success": true, "found": true, "username": "amy", "total_chat_lines": 2}"#,
    br#"{"success": false, "error": "nope"}"#,
    br#"[{"id": 1, "message": "m", "created_at": 1700000000, "retry_count": 0}]"#,
    br#"{"success": true, "id": 4}"#,
];

fn budget() -> Budget {
    let seconds = std::env::var(hostile::FUZZ_SECONDS_VAR).ok();
    Budget::seconds_or_inputs(seconds.as_deref(), 20_000).unwrap()
}

fn decode<T: DeserializeOwned>(input: &[u8]) {
    let _ = serde_json::from_slice::<T>(input);
}

#[test]
fn decoders_never_panic_on_mutated_input() {
    let report = hostile::fuzz(CORPUS, 0x5eed_0002, budget(), |input| {
        decode::<ChatMessage>(input);
        decode::<PlatformUser>(input);
        decode::<UserLeave>(input);
        decode::<UserCountEvent>(input);
        decode::<UserListEvent>(input);
        decode::<MediaEvent>(input);
        decode::<PrivateMessage>(input);
        decode::<ChannelStatsReply>(input);
        decode::<UserStatsReply>(input);
        decode::<Vec<OutboundMessage>>(input);
        decode::<EnqueueReply>(input);
        decode::<ConfirmSentReply>(input);
        decode::<ServiceStats>(input);
        decode::<BotStats>(input);
    })
    .unwrap();
    println!(
        "fuzz: bot decoders: {} inputs in {:.1} s",
        report.inputs,
        report.elapsed.as_secs_f64()
    );
}
