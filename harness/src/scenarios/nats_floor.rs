//! `nats_floor`: raw NATS with no service in between, in the same run as everything else, so
//! every service result can be read as "floor + service cost". Two open-loop measurements:
//! publish → subscribe (the headline `latency`) and request → reply against a responder inside
//! the harness that answers at once (`request_reply`).

use super::responder::{Answer, Responder, ResponderSpec};
use super::{connect_publishers, filler, fixed_payload, warm_then_measure, OpenLoopParams, Plan};
use crate::load::{self, Proof, Script};
use crate::results::ScenarioResult;
use crate::scenario::{add_histogram, BoxFuture, ScenarioContext, ScenarioDef};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "nats_floor",
    title: "NATS floor (no service)",
    description:
        "raw NATS publish→subscribe and request→reply latency, open loop, no service in between",
    needs_services: false,
    check: crate::config::check_params::<OpenLoopParams>,
    run,
};

fn run(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: OpenLoopParams = ctx.params()?;
    let mut result = ctx.result(p.load_info());
    let payload = fixed_payload(Bytes::from(filler(p.payload_bytes)));
    let senders = connect_publishers(ctx, p.publishers).await?;
    let nonce = ctx.seed;

    // Publish → subscribe: the harness's listener connection subscribes to the subject itself.
    let pubsub_plan = Plan::open_loop(
        &p,
        senders.clone(),
        Script::uniform(format!("bench.floor.{nonce}.pubsub"), payload.clone()),
        Proof::Subscribed,
    );
    let pubsub = warm_then_measure(
        ctx,
        &pubsub_plan,
        &mut result,
        "publish → subscriber receipt, from the intended send time (raw NATS)",
    )
    .await?;

    // Request → reply against a responder that answers at once.
    let subject = format!("bench.floor.{nonce}.request");
    let responder = Responder::start(
        &ctx.nats_url,
        ResponderSpec {
            subject: subject.clone(),
            answer: Answer::Reply,
            delay: Duration::ZERO,
            service_time: Duration::ZERO,
            spin: Duration::ZERO,
            stall: None,
        },
    )
    .await?;
    let accept: load::ReplyCheck = Arc::new(|_| true);
    let rr_plan = Plan::open_loop(
        &p,
        senders,
        Script::uniform(subject, payload),
        Proof::Replies(accept),
    );
    let rr = async {
        super::warm_up(ctx, &rr_plan, "rr", &mut result.notes).await?;
        let bar = ctx.progress_bar("rr", rr_plan.phase.count);
        let rr = load::run_phase(
            &ctx.client,
            rr_plan.spec(ctx.id_prefix("rr"), rr_plan.phase.count),
            &bar,
        )
        .await;
        bar.finish_and_clear();
        rr
    }
    .await;
    let stats = responder.stop().await?;
    let rr = rr?;
    add_histogram(
        &mut result,
        "request_reply",
        "request → reply from the intended send time (raw NATS, instant responder)",
        &rr.record.latency,
    )?;
    add_histogram(
        &mut result,
        "send_delay.request_reply",
        "actual − intended send time of the requests",
        &rr.send.send_delay,
    )?;
    let a = &mut result.accounting;
    a.sent += rr.record.sent;
    a.committed += rr.record.confirmed;
    a.lost += rr.record.lost();
    a.duplicated += rr.record.duplicated;
    result
        .metrics
        .insert("responder_handled".into(), stats.handled as f64);
    result
        .metrics
        .insert("pubsub_delivered".into(), pubsub.record.confirmed as f64);
    result
        .metrics
        .insert("request_reply_answered".into(), rr.record.confirmed as f64);
    result.notes.push("accounting covers both measurements; `committed` means delivered to the subscriber or answered".into());
    Ok(result)
}
