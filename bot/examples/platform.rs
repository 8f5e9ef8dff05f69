//! Plays the chat site by hand: publishes one platform event for a running `rosey-bot` and
//! prints what the bot did because of it (database events and platform actions carrying the
//! event's correlation id) until the last expected effect arrives.
//!
//! ```text
//! cargo run -p rosey-bot --example platform -- join mod 2
//! cargo run -p rosey-bot --example platform -- chat alice "hello"
//! cargo run -p rosey-bot --example platform -- pm mod stats
//! ```

use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::HeaderMap;
use clap::{Parser, Subcommand};
use futures::{FutureExt, StreamExt};
use rosey_protocol::headers::{CORRELATION_ID, EVENT_ID};
use rosey_protocol::platform::{self, kind, ChatMessage, PlatformUser, PrivateMessage};
use rosey_protocol::subjects;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(about = "Publish one platform event for rosey-bot and print its effects")]
struct Args {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = "lobby")]
    channel: String,
    /// Give up waiting for the bot after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    #[command(subcommand)]
    event: Event,
}

#[derive(Debug, Subcommand)]
enum Event {
    /// A user joins (rank 2 or more may use PM commands).
    Join {
        user: String,
        #[arg(default_value_t = 0.0)]
        rank: f64,
    },
    /// A user leaves.
    Leave { user: String },
    /// A public chat line.
    Chat { user: String, text: Vec<String> },
    /// A private message to the bot (a PM command).
    Pm { user: String, text: Vec<String> },
    /// The platform's connected-viewer count.
    Usercount { count: i64 },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(&args.nats_url)
        .await
        .with_context(|| format!("connecting to {}", args.nats_url))?;
    let mut db = client.subscribe("rosey.db.>").await?;
    let mut out = client
        .subscribe(platform::out_wildcard(&args.channel))
        .await?;
    rosey_bot::round_trip(&client).await?;

    let cid = format!("demo-{}", std::process::id());
    // What the bot emits last for this event; seeing it means the effects are all printed.
    let (kind, payload, last): (&str, Vec<u8>, &str) = match &args.event {
        Event::Join { user, rank } => (
            kind::USER_JOIN,
            serde_json::to_vec(&PlatformUser::new(user, *rank))?,
            subjects::HIGH_WATER,
        ),
        Event::Leave { user } => (
            kind::USER_LEAVE,
            serde_json::to_vec(&serde_json::json!({ "user": user }))?,
            subjects::USER_LEFT,
        ),
        Event::Chat { user, text } => {
            let m = ChatMessage {
                user: user.clone(),
                content: text.join(" "),
                correlation_id: None,
            };
            (
                kind::MESSAGE,
                serde_json::to_vec(&m)?,
                subjects::MESSAGE_LOG,
            )
        }
        Event::Pm { user, text } => {
            let m = PrivateMessage {
                user: user.clone(),
                content: text.join(" "),
                correlation_id: None,
            };
            (kind::PM, serde_json::to_vec(&m)?, subjects::PM_COMMAND)
        }
        Event::Usercount { count } => (
            kind::USERCOUNT,
            serde_json::to_vec(count)?,
            subjects::HIGH_WATER,
        ),
    };
    let subject = platform::in_subject(&args.channel, kind);
    let mut headers = HeaderMap::new();
    headers.insert(CORRELATION_ID, cid.as_str());
    client
        .publish_with_headers(subject.clone(), headers, payload.into())
        .await?;
    client.flush().await?;
    println!("> {subject} [{CORRELATION_ID}: {cid}]");

    let deadline =
        tokio::time::sleep(Duration::try_from_secs_f64(args.timeout).context("bad --timeout")?);
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            _ = &mut deadline => bail!("no final effect from the bot within {}s (is rosey-bot running on channel {:?}? is the sender a moderator?)", args.timeout, args.channel),
            m = db.next() => m,
            m = out.next() => m,
        };
        let Some(msg) = msg else {
            bail!("connection closed")
        };
        if show(&msg, &cid, last) {
            // Effects published before the last one may still sit in the other subscription.
            for sub in [&mut out, &mut db] {
                while let Some(Some(m)) = sub.next().now_or_never() {
                    show(&m, &cid, last);
                }
            }
            return Ok(());
        }
    }
}

/// Prints `msg` if it belongs to this event; true if it is the event's last effect.
fn show(msg: &async_nats::Message, cid: &str, last: &str) -> bool {
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    if header(CORRELATION_ID).as_deref() != Some(cid) {
        return false;
    }
    let body: Value = serde_json::from_slice(&msg.payload).unwrap_or(Value::Null);
    let event_id = header(EVENT_ID)
        .map(|id| format!(" [{EVENT_ID}: {id}]"))
        .unwrap_or_default();
    match body
        .get("content")
        .and_then(Value::as_str)
        .filter(|_| msg.subject.ends_with(".out.pm"))
    {
        Some(content) => println!(
            "< {}{event_id} to {}:\n{content}",
            msg.subject,
            body["user"].as_str().unwrap_or_default()
        ),
        None => println!("< {}{event_id} {body}", msg.subject),
    }
    msg.subject.as_str() == last && (last != subjects::PM_COMMAND || body["result"] != "pending")
}
