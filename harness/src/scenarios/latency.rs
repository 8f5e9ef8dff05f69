//! Latency of the database service, open loop, proven end to end:
//!
//! * `single_event_latency`: one publisher sends `rosey.db.message.log` events (with event ids)
//!   at a modest rate; latency runs from each event's intended send time to the commit notice
//!   that lists its id.
//! * `request_reply_latency`: `rosey.db.query.channel_stats` requests; latency runs from the
//!   intended send time to a reply that parses as a successful channel-stats answer.
//! * `concurrent_event_latency`: bursts from many publishers at once: each of `publishers`
//!   connections releases one event at the same intended instant, bursts at
//!   `rate_per_s / publishers` per second; latency per burst member from the shared instant (the
//!   send delay shows how far the harness got from releasing them truly at once).

use super::{connect_publishers, fixed_payload, prefill, warm_then_measure, OpenLoopParams, Plan};
use crate::load::{self, Ids, Proof, Script};
use crate::results::ScenarioResult;
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use bytes::Bytes;
use rosey_protocol::db::ChannelStatsReply;
use rosey_protocol::subjects;
use std::sync::Arc;

pub const SINGLE_EVENT: ScenarioDef = ScenarioDef {
    name: "single_event_latency",
    title: "Single event → committed",
    description: "message.log event from its intended send time to the service's commit notice, one publisher, open loop",
    needs_services: true,
    check: crate::config::check_params::<OpenLoopParams>,
    run: run_single,
};

pub const REQUEST_REPLY: ScenarioDef = ScenarioDef {
    name: "request_reply_latency",
    title: "Request → reply (channel stats)",
    description: "rosey.db.query.channel_stats from its intended send time to a successful reply from the service, open loop",
    needs_services: true,
    check: crate::config::check_params::<OpenLoopParams>,
    run: run_request_reply,
};

pub const CONCURRENT_EVENTS: ScenarioDef = ScenarioDef {
    name: "concurrent_event_latency",
    title: "Concurrent publishers → committed",
    description: "bursts of message.log events, one per publisher released at the same intended instant, to the commit notice, open loop",
    needs_services: true,
    check: crate::config::check_params::<OpenLoopParams>,
    run: run_concurrent,
};

fn run_single(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(events(ctx, false))
}

fn run_concurrent(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(events(ctx, true))
}

fn run_request_reply(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(request_reply(ctx))
}

async fn events(ctx: &ScenarioContext, concurrent: bool) -> anyhow::Result<ScenarioResult> {
    let p: OpenLoopParams = ctx.params()?;
    if concurrent {
        anyhow::ensure!(
            p.publishers >= 2,
            "concurrent_event_latency needs at least 2 publishers"
        );
    }
    ctx.require_services()?;
    let mut result = ctx.result(p.load_info());
    let senders = connect_publishers(ctx, p.publishers).await?;
    prefill(ctx, &senders, p.prefill_events, p.timing.drain_timeout()).await?;
    let mut plan = Plan::open_loop(
        &p,
        senders,
        crate::workers::RemoteScript::MessageLog {
            payload_bytes: p.payload_bytes,
        }
        .script(),
        Proof::CommitNotices(Ids::Direct),
    );
    if concurrent {
        // One event per publisher, all intended at the same instant.
        plan.phase.burst_size = u64::from(p.publishers);
    }
    warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "rosey.db.message.log: intended send time → commit notice listing the event id",
    )
    .await?;
    result
        .metrics
        .insert("publishers".into(), f64::from(p.publishers));
    result.metrics.insert(
        "per_publisher_rate_per_s".into(),
        p.timing.rate_per_s / f64::from(p.publishers),
    );
    if concurrent {
        result
            .metrics
            .insert("burst_size".into(), f64::from(p.publishers));
        result.notes.push(format!(
            "{} publishers release one event each at the same intended instant, {} bursts per second; \
             `send_delay` is how far each member's actual release was from that instant",
            p.publishers,
            crate::report::view::trimmed(p.timing.rate_per_s / f64::from(p.publishers))
        ));
    }
    Ok(result)
}

/// True when a reply is a successful channel-stats answer (an error reply is not proof).
pub fn is_channel_stats_success(payload: &[u8]) -> bool {
    matches!(serde_json::from_slice::<ChannelStatsReply>(payload), Ok(ChannelStatsReply::Ok(s)) if s.success)
}

/// True when a reply is a successful channel-stats answer that read the prefilled rows: every
/// prefill user seen, the high-water mark the prefill set, and top chatters from its chat lines.
pub fn reads_prefilled_rows(payload: &[u8]) -> bool {
    let users = i64::try_from(super::PREFILL_USERS).unwrap_or(i64::MAX);
    matches!(
        serde_json::from_slice::<ChannelStatsReply>(payload),
        Ok(ChannelStatsReply::Ok(s)) if s.success
            && s.total_users_seen >= users
            && s.high_water_mark.users >= users
            && !s.top_chatters.is_empty()
    )
}

async fn request_reply(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: OpenLoopParams = ctx.params()?;
    ctx.require_services()?;
    let mut result = ctx.result(p.load_info());
    let senders = connect_publishers(ctx, p.publishers).await?;
    prefill(ctx, &senders, p.prefill_events, p.timing.drain_timeout()).await?;
    // With a prefill, a reply counts only if it read the prefilled rows.
    let check: load::ReplyCheck = if p.prefill_events > 0 {
        Arc::new(reads_prefilled_rows)
    } else {
        Arc::new(is_channel_stats_success)
    };
    // The seed's cmd_stats sends `{}`; the body is never parsed.
    let plan = Plan::open_loop(
        &p,
        senders,
        Script::uniform(
            subjects::QUERY_CHANNEL_STATS,
            fixed_payload(Bytes::from_static(b"{}")),
        ),
        Proof::Replies(check),
    );
    warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "rosey.db.query.channel_stats: intended send time → successful reply",
    )
    .await?;
    if p.prefill_events > 0 {
        result.notes.push(format!(
            "before measuring, {} users joined and wrote {} chat lines (each proven committed); a reply \
             counts only if it reports those users, the high-water mark and top chatters",
            super::PREFILL_USERS,
            p.prefill_events
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_successful_channel_stats_count_as_replies() {
        let ok = br#"{"high_water_mark": {"users": 5, "timestamp": 7}, "high_water_connected": {"users": 0, "timestamp": null}, "top_chatters": [], "total_users_seen": 2, "success": true}"#;
        assert!(is_channel_stats_success(ok));
        assert!(!is_channel_stats_success(
            br#"{"success": false, "error": "db locked"}"#
        ));
        assert!(!is_channel_stats_success(b"[]"));
        assert!(!is_channel_stats_success(b"not json"));
        // Success alone is not enough after a prefill: the rows must be in the answer.
        assert!(!reads_prefilled_rows(ok), "5 users, no top chatters");
        let read = br#"{"high_water_mark": {"users": 64, "timestamp": 7}, "high_water_connected": {"users": 64, "timestamp": 7}, "top_chatters": [{"username": "bench-user-1", "chat_lines": 3}], "total_users_seen": 64, "success": true}"#;
        assert!(reads_prefilled_rows(read));
    }
}
