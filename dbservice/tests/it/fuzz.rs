//! Mutation fuzzing of the service's decoders: every event subject's decoder
//! (`events::parse`, validation included) and every request body's, fed valid inputs damaged by
//! `natskit::hostile::Mutator`. None may panic: bad input is an `Err`, counted as malformed.
//!
//! A normal test run tries 20,000 inputs; `cargo xtask fuzz --seconds N` sets
//! `ROSEY_FUZZ_SECONDS` and runs this for N seconds in a release build.

use natskit::hostile::{self, Budget};
use rosey_dbservice::events;
use rosey_protocol::db::{
    MarkSent, OutboundEnqueue, OutboundGet, RecentChatGet, RecentMessagesQuery, UserStatsQuery,
};
use rosey_protocol::subjects;

const CORPUS: &[&[u8]] = &[
    br#"{"username": "amy"}"#,
    br#"{"username": "amy", "message": "hello \u00e9 \ud83d\ude00"}"#,
    br#"{"chat_count": 12, "connected_count": 30}"#,
    br#"{"status_data": {"bot_name": "rosey", "bot_rank": 3.0, "bot_afk": 0, "channel_name": "lobby", "current_chat_users": 4, "current_connected_users": 9, "bot_start_time": 1700000000, "bot_connected": 1, "playlist_items": 2, "current_media_title": "t", "current_media_duration": 60}}"#,
    br#"{"message_id": 7}"#,
    br#"{"message_id": 7, "error": "timeout", "is_permanent": true}"#,
    br#"{"timestamp": 1700000000.25, "username": "mod", "command": "say", "args": "hi", "result": "ok", "error": null}"#,
    br#"{"limit": 10, "max_retries": 3, "lease_secs": 30}"#,
    br#"{"limit": 20, "offset": 5}"#,
    br#"{"message": "queued"}"#,
    br#"{}"#,
];

fn budget() -> Budget {
    let seconds = std::env::var(hostile::FUZZ_SECONDS_VAR).ok();
    Budget::seconds_or_inputs(seconds.as_deref(), 20_000).unwrap()
}

#[test]
fn decoders_never_panic_on_mutated_input() {
    let report = hostile::fuzz(CORPUS, 0x5eed_0001, budget(), |input| {
        for subject in subjects::EVENT_SUBJECTS {
            let _ = events::parse(subject, input, 64 * 1024);
        }
        let _ = events::decode::<OutboundGet>(input);
        let _ = events::decode::<MarkSent>(input);
        let _ = events::decode::<RecentChatGet>(input);
        let _ = events::decode::<UserStatsQuery>(input);
        let _ = events::decode::<RecentMessagesQuery>(input);
        let _ = events::decode::<OutboundEnqueue>(input);
    })
    .unwrap();
    println!(
        "fuzz: dbservice decoders: {} inputs in {:.1} s",
        report.inputs,
        report.elapsed.as_secs_f64()
    );
}
