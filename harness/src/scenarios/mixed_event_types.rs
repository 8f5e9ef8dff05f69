//! A realistic mix of platform events through the bot at a target rate: chat lines, joins,
//! leaves, viewer counts and moderator PM commands (`status`, `info`, `stats`, `help`). Every
//! database event the bot derives from them is proven committed by commit notices of the event
//! ids the bot forwards (`<correlation id>:<n>`); counts and latency are reported per type.
//!
//! What each event must cause (the bot's semantics: the seed's, with its bugs fixed): a chat line one
//! `message.log`; a join `user.joined` + `stats.high_water`; a leave `user.left`; a viewer count
//! one `stats.high_water`; an authorised PM command two `action.pm_command` audit records
//! (pending and final). The bot's periodic status updates are not driven by platform events and
//! are not part of this accounting.

use super::scripted::{self, BotLoadParams};
use crate::load::{Message, Script};
use crate::results::ScenarioResult;
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use bytes::Bytes;
use rosey_protocol::platform::{
    self, kind, ChatMessage, PlatformUser, PrivateMessage, UserCountEvent, UserLeave,
};
use rosey_protocol::to_seed_json;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "mixed_event_types",
    title: "Mixed event types through the bot",
    description: "chat, joins, leaves, viewer counts and moderator PMs on the bot's platform subjects, open loop; every resulting database event committed, per-type counts and latency",
    needs_services: true,
    check: crate::config::check_params::<BotLoadParams>,
    run: run_def,
};

fn run_def(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(run(ctx))
}

const KINDS: [&str; 5] = [
    "message",
    "user_join",
    "user_leave",
    "usercount",
    "pm_command",
];
const MODERATOR: &str = "mix-mod";

/// One cycle of 20 events: 11 chat lines, 2 joins, 2 leaves (of users joined earlier in the
/// same cycle), 3 viewer counts, 2 PM commands.
const CYCLE: [usize; 20] = [0, 0, 1, 0, 3, 0, 0, 4, 0, 2, 0, 0, 1, 0, 3, 0, 3, 2, 0, 4];
/// For each leave position, the join position whose user it removes.
fn joined_at(leave_pos: usize) -> usize {
    if leave_pos == 9 {
        2
    } else {
        12
    }
}

/// Message `i` of the mix, with the database events it must cause.
pub fn mixed(channel: &str, prefix: &str, text: &str, i: u64) -> Message {
    let cycle = i / CYCLE.len() as u64;
    let pos = (i % CYCLE.len() as u64) as usize;
    let k = CYCLE[pos];
    let subject = |kind: &str| platform::in_subject(channel, kind);
    let (subject, payload, expected) = match k {
        0 => (
            subject(kind::MESSAGE),
            to_seed_json(&ChatMessage {
                user: format!("mix-chat-{}", i % 16),
                content: text.to_owned(),
                correlation_id: None,
            }),
            1,
        ),
        1 => (
            subject(kind::USER_JOIN),
            to_seed_json(&PlatformUser::new(format!("{prefix}u{cycle}-{pos}"), 1.0)),
            2,
        ),
        2 => (
            subject(kind::USER_LEAVE),
            to_seed_json(&UserLeave {
                user: format!("{prefix}u{cycle}-{}", joined_at(pos)),
                correlation_id: None,
            }),
            1,
        ),
        3 => (
            subject(kind::USERCOUNT),
            to_seed_json(&UserCountEvent::Bare(20 + (i % 50) as i64)),
            1,
        ),
        _ => {
            let command = ["status", "info", "stats", "help"][(cycle % 4) as usize];
            (
                subject(kind::PM),
                to_seed_json(&PrivateMessage {
                    user: MODERATOR.into(),
                    content: command.into(),
                    correlation_id: None,
                }),
                2,
            )
        }
    };
    Message {
        kind: k,
        subject,
        payload: Bytes::from(payload),
        expected_events: expected,
    }
}

async fn run(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: BotLoadParams = ctx.params()?;
    let channel = scripted::bot_channel(ctx).await?;
    let mut result = ctx.result(p.load_info());
    scripted::join_users(
        ctx,
        &channel,
        vec![PlatformUser::new(MODERATOR, 3.0)],
        "setup",
    )
    .await?;
    let text = super::filler(p.payload_bytes);
    // User names are unique per run (the phase prefix), so a join is never of a known user.
    let prefix = format!("mix-{}-", std::process::id());
    let script = Script::new(&KINDS, move |_, i| mixed(&channel, &prefix, &text, i));
    let plan = p.plan(ctx, script).await?;
    super::warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "platform event → bot → dbservice: intended send time → commit notice of its last database event",
    )
    .await?;
    result.notes.push(
        "per event: chat 1 db event, join 2, leave 1, viewer count 1, moderator PM 2 (audit pending + final)".into(),
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_follow_their_joins_and_the_mix_is_as_documented() {
        let mut counts = [0u32; 5];
        for (pos, k) in CYCLE.iter().enumerate() {
            counts[*k] += 1;
            if *k == 2 {
                assert_eq!(CYCLE[joined_at(pos)], 1, "leave at {pos} removes a join");
                assert!(joined_at(pos) < pos);
            }
        }
        assert_eq!(counts, [11, 2, 2, 3, 2]);
        let m = mixed("c", "x-", "hi", 22);
        assert_eq!((m.kind, m.expected_events), (1, 2));
        assert_eq!(m.subject, "rosey.platform.c.in.user_join");
        let leave = mixed("c", "x-", "hi", 29);
        let v: serde_json::Value = serde_json::from_slice(&leave.payload).unwrap();
        assert_eq!(v["user"], "x-u1-2");
    }
}
