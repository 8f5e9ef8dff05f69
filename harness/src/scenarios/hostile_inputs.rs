//! Hostile input amid valid load: chat lines through the bot at a steady rate (each proven by the
//! commit notice of its database event), and, spread over the measured phase, rounds of input no
//! well-behaved client sends, from a raw socket to both services:
//!
//! - the frame battery of `natskit::hostile` (a subject or reply subject that is not UTF-8, header
//!   blocks a NATS client cannot parse) on the bot's platform subject and on the database
//!   service's `message.log`;
//! - malformed payloads (not JSON, wrong types, invalid UTF-8, an array, over the size limit);
//! - requests with an unreadable header block or a malformed body, each with a reply subject.
//!
//! Pass: every valid event committed, neither service lost its NATS connection, every request
//! answered, and each service counted exactly the bad inputs that reached it (nothing silent,
//! nothing counted twice).

use super::scripted::{self, BotLoadParams};
use super::Plan;
use crate::load::Script;
use crate::results::ScenarioResult;
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::StreamExt as _;
use natskit::hostile::{self, Frame};
use rosey_protocol::platform::{self, kind, ChatMessage};
use rosey_protocol::{subjects, to_seed_json};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "hostile_inputs",
    title: "Hostile input amid valid load",
    description: "chat lines through the bot, open loop, with rounds of unreadable frames (bad subjects, reply subjects, header blocks), malformed payloads and malformed requests sent to both services from a raw socket; every valid event committed, no disconnect, every request answered, every bad input counted",
    needs_services: true,
    check: crate::config::check_params::<HostileParams>,
    run: run_def,
};

fn run_def(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(run(ctx))
}

/// The valid load, and how many rounds of hostile input go with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostileParams {
    #[serde(flatten)]
    pub load: BotLoadParams,
    /// Rounds of hostile input, spread evenly over the measured phase.
    pub hostile_rounds: u32,
}

impl crate::config::ScenarioParams for HostileParams {
    fn validate(&self) -> anyhow::Result<()> {
        crate::config::ScenarioParams::validate(&self.load)?;
        anyhow::ensure!(
            self.hostile_rounds >= 1,
            "hostile_rounds must be at least 1"
        );
        Ok(())
    }
}

/// One round of hostile input and what each service must count of it.
#[derive(Debug, Clone)]
pub struct Round {
    pub frames: Vec<Frame>,
    /// Inputs the database service must count as malformed.
    pub db_malformed: u64,
    /// Inputs the bot must count as malformed.
    pub bot_malformed: u64,
    /// Requests sent with `reply_inbox` as their reply subject.
    pub requests: u64,
}

/// A chat text over the database service's default payload limit (64 KiB) and under the
/// server's max payload (1 MiB by default), so the server passes it on and the service refuses it.
const OVERSIZED_TEXT: usize = 70 * 1024;

/// Payloads the database service rejects on `message.log` (each counted once).
fn bad_db_payloads() -> Vec<Vec<u8>> {
    vec![
        b"not json at all".to_vec(),
        br#"{"username": "amy", "message": 42}"#.to_vec(),
        b"{\"username\": \"amy\", \"message\": \"\xc3\x28\"}".to_vec(),
        b"[1, 2]".to_vec(),
        format!(
            r#"{{"username": "amy", "message": "{}"}}"#,
            "x".repeat(OVERSIZED_TEXT)
        )
        .into_bytes(),
    ]
}

/// Payloads the bot rejects as a chat line (each counted once).
fn bad_bot_payloads() -> Vec<Vec<u8>> {
    vec![
        b"not json".to_vec(),
        br#"{"content": "no user"}"#.to_vec(),
        vec![0xff, 0xfe],
        b"[]".to_vec(),
    ]
}

/// One round for a bot on `channel` and a database service in `mode` (`core` or `durable`).
/// In durable mode the stream captures only the exact event subjects, keeps no reply subject and
/// rewrites a status line it cannot read, so three of the six frames reach the service
/// unreadable (the other three never arrive or arrive readable and valid).
pub fn round(channel: &str, mode: &str, reply_inbox: &str) -> Round {
    let chat = |text: &str| {
        to_seed_json(&ChatMessage {
            user: "hostile".into(),
            content: text.into(),
            correlation_id: None,
        })
    };
    let bot_subject = platform::in_subject(channel, kind::MESSAGE);
    let bot_prefix = format!("{}.{channel}.in", platform::PREFIX);
    let mut frames = hostile::frames(&bot_subject, &bot_prefix, &chat("hostile"));
    let bot_bad = bad_bot_payloads();
    let bot_malformed = (frames.len() + bot_bad.len()) as u64;
    for p in bot_bad {
        frames.push(raw_pub("bot_payload", &bot_subject, None, &p));
    }

    let valid_db_event = br#"{"username": "hostile", "message": "hostile"}"#;
    let db_frames = hostile::frames(subjects::MESSAGE_LOG, "rosey.db", valid_db_event);
    let db_reaching = match mode {
        "durable" => 3,
        _ => db_frames.len() as u64,
    };
    frames.extend(db_frames);
    let db_bad = bad_db_payloads();
    let mut db_malformed = db_reaching + db_bad.len() as u64;
    for p in db_bad {
        frames.push(raw_pub("db_payload", subjects::MESSAGE_LOG, None, &p));
    }
    // Requests: an unreadable header block, and a body that is not a request.
    frames.push(Frame {
        kind: "request_header_without_colon",
        bytes: hostile::hpub_frame(
            subjects::QUERY_CHANNEL_STATS.as_bytes(),
            Some(reply_inbox.as_bytes()),
            b"NATS/1.0\r\nno colon\r\n\r\n",
            b"{}",
        ),
        exact_subject: true,
    });
    frames.push(raw_pub(
        "request_payload",
        subjects::QUERY_USER_STATS,
        Some(reply_inbox),
        b"nope",
    ));
    db_malformed += 2;
    Round {
        frames,
        db_malformed,
        bot_malformed,
        requests: 2,
    }
}

fn raw_pub(kind: &'static str, subject: &str, reply: Option<&str>, payload: &[u8]) -> Frame {
    Frame {
        kind,
        bytes: hostile::pub_frame(subject.as_bytes(), reply.map(str::as_bytes), payload),
        exact_subject: true,
    }
}

/// `host:port` of the first server of `url`, if it takes plain, unauthenticated connections
/// (the raw publisher speaks neither TLS nor authentication).
pub fn raw_addr(url: &str) -> anyhow::Result<String> {
    let first = url.split(',').next().unwrap_or("").trim();
    if let Some((scheme, _)) = first.split_once("://").filter(|(s, _)| *s != "nats") {
        bail!(
            "hostile_inputs sends raw frames over plain TCP; the server at {scheme}://… needs \
             TLS or another transport (run it with --nats local or container)"
        );
    }
    if first.contains('@') {
        bail!(
            "hostile_inputs sends raw frames without authentication; the server URL carries \
             credentials (run it with --nats local or container)"
        );
    }
    crate::provision::first_server_addr(first)
}

/// What the hostile sender did.
#[derive(Debug, Default)]
struct Sent {
    rounds: u64,
    frames: u64,
    answered: u64,
}

async fn run(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: HostileParams = ctx.params()?;
    let channel = scripted::bot_channel(ctx).await?;
    let addr = raw_addr(&ctx.nats_url)?;
    let mode = ctx.services().await?.mode().to_owned();
    let mut result = ctx.result(p.load.load_info());

    let text = super::filler(p.load.payload_bytes);
    let valid_subject = platform::in_subject(&channel, kind::MESSAGE);
    let payload = Bytes::from(to_seed_json(&ChatMessage {
        user: "hostile-valid".into(),
        content: text,
        correlation_id: None,
    }));
    let script = Script::uniform(valid_subject, super::fixed_payload(payload));
    let plan = p.load.plan(ctx, script).await?;

    let reply_inbox = format!("_INBOX.bench-hostile.{}", std::process::id());
    let mut replies = ctx
        .client
        .subscribe(reply_inbox.clone())
        .await
        .context("subscribing to the hostile requests' reply subject")?;
    // The SUB is active at the server once a request on the same connection came back.
    ctx.services().await?.ping().await?;
    let one = round(&channel, &mode, &reply_inbox);
    let rounds = u64::from(p.hostile_rounds);
    let sender = send_rounds(&addr, &one, rounds, &plan, &mut replies);
    let (_, sent) = super::warm_then_measure_during(
        ctx,
        &plan,
        &mut result,
        "platform event → bot → dbservice: intended send time → commit notice, hostile input interleaved",
        sender,
    )
    .await?;
    let sent = sent?;

    let m = &mut result.metrics;
    let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied();
    let db_counted = get(m, "service.malformed");
    let bot_counted = get(m, "bot.events_malformed");
    let db_expected = (one.db_malformed * sent.rounds) as f64;
    let bot_expected = (one.bot_malformed * sent.rounds) as f64;
    let (Some(db_counted), Some(bot_counted)) = (db_counted, bot_counted) else {
        bail!("the services' counters were not read around the phase (a service restarted?)");
    };
    let requests = (one.requests * sent.rounds) as f64;
    m.insert("hostile.rounds".into(), sent.rounds as f64);
    m.insert("hostile.inputs_sent".into(), sent.frames as f64);
    m.insert("hostile.db_expected".into(), db_expected);
    m.insert("hostile.bot_expected".into(), bot_expected);
    m.insert(
        "hostile.uncounted".into(),
        (db_expected - db_counted).abs() + (bot_expected - bot_counted).abs(),
    );
    m.insert("hostile.requests_sent".into(), requests);
    m.insert(
        "hostile.unanswered".into(),
        (requests - sent.answered as f64).max(0.0),
    );
    result.notes.push(format!(
        "{} rounds of {} hostile inputs ({mode} mode): the database service had to count {db_expected} and counted {db_counted}, the bot {bot_expected} and {bot_counted}; {} of {requests} malformed requests answered",
        sent.rounds,
        one.frames.len(),
        sent.answered
    ));
    Ok(result)
}

/// Sends `rounds` rounds of `one`, spread evenly over the measured phase of `plan`, then waits
/// for the answers to the requests among them.
async fn send_rounds(
    addr: &str,
    one: &Round,
    rounds: u64,
    plan: &Plan,
    replies: &mut async_nats::Subscriber,
) -> anyhow::Result<Sent> {
    let phase = match plan.phase.rate_per_s {
        Some(rate) => Duration::from_secs_f64(plan.phase.count as f64 / rate),
        None => Duration::ZERO,
    };
    let start = tokio::time::Instant::now();
    let mut sent = Sent::default();
    for r in 0..rounds {
        let at = phase.mul_f64((r as f64 + 0.5) / rounds as f64);
        // Pacing the injector, not timing anything: the phase's clock runs on its own thread.
        tokio::time::sleep_until(start + at).await;
        let (addr, frames) = (addr.to_owned(), one.frames.clone());
        tokio::task::spawn_blocking(move || hostile::publish_raw(&addr, &frames))
            .await
            .context("the hostile sender's thread")?
            .context("sending hostile frames")?;
        sent.rounds += 1;
        sent.frames += one.frames.len() as u64;
    }
    let want = one.requests * sent.rounds;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent.answered < want {
        match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(_)) => sent.answered += 1,
            Ok(None) | Err(_) => break,
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_says_what_each_service_must_count() {
        let core = round("lobby", "core", "_INBOX.x");
        assert_eq!(core.bot_malformed, 6 + 4);
        assert_eq!(core.db_malformed, 6 + 5 + 2);
        assert_eq!(core.requests, 2);
        assert_eq!(
            core.frames.len() as u64,
            core.bot_malformed + core.db_malformed
        );
        let durable = round("lobby", "durable", "_INBOX.x");
        assert_eq!(durable.db_malformed, 3 + 5 + 2);
        assert_eq!(durable.frames.len(), core.frames.len());
    }

    #[test]
    fn raw_addresses_refuse_what_a_raw_socket_cannot_do() {
        assert_eq!(raw_addr("nats://127.0.0.1:4222").unwrap(), "127.0.0.1:4222");
        assert_eq!(
            raw_addr("nats://127.0.0.1:1,nats://127.0.0.1:2").unwrap(),
            "127.0.0.1:1"
        );
        assert_eq!(raw_addr("127.0.0.1:5").unwrap(), "127.0.0.1:5");
        assert!(raw_addr("tls://h:1").is_err());
        assert!(raw_addr("nats://u:p@h:1").is_err());
    }
}
