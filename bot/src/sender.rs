//! Platform actions out: the [`PlatformSender`] seam and its NATS implementation.
//!
//! "Sending" a chat line, PM or playlist change means handing it to the connector on
//! `rosey.platform.<channel>.out.<kind>`; it succeeds when that publish succeeds. Tests and
//! benchmarks can put their own sender in (for example one that rejects some messages) with
//! [`crate::spawn_with_sender`].

use std::fmt;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures::future::BoxFuture;
use rosey_protocol::platform::{self, ChannelAction, ChatAction, PlaylistAction, PmAction};
use rosey_protocol::to_seed_json;

/// One action for the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformAction {
    Chat(ChatAction),
    Pm(PmAction),
    Playlist(PlaylistAction),
    Channel(ChannelAction),
}

impl PlatformAction {
    pub fn chat(content: impl Into<String>) -> Self {
        PlatformAction::Chat(ChatAction {
            content: content.into(),
        })
    }

    pub fn pm(user: impl Into<String>, content: impl Into<String>) -> Self {
        PlatformAction::Pm(PmAction {
            user: user.into(),
            content: content.into(),
        })
    }

    /// The `out.<kind>` token.
    pub fn kind(&self) -> &'static str {
        match self {
            PlatformAction::Chat(_) => platform::action::CHAT,
            PlatformAction::Pm(_) => platform::action::PM,
            PlatformAction::Playlist(_) => platform::action::PLAYLIST,
            PlatformAction::Channel(_) => platform::action::CHANNEL,
        }
    }

    /// The payload in the seed's JSON style.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            PlatformAction::Chat(a) => to_seed_json(a),
            PlatformAction::Pm(a) => to_seed_json(a),
            PlatformAction::Playlist(a) => to_seed_json(a),
            PlatformAction::Channel(a) => to_seed_json(a),
        }
    }
}

/// Why an action was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    /// Retrying cannot help (the outbound loop then marks the message failed for good).
    pub permanent: bool,
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            permanent: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SendError {}

/// Carries actions to the platform.
pub trait PlatformSender: Send + Sync + 'static {
    /// Sends `action`, tagged with `correlation_id` (the `Rosey-Correlation-Id` header on NATS).
    fn send<'a>(
        &'a self,
        action: PlatformAction,
        correlation_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>>;
}

/// The default sender: publishes on the channel's `out.<kind>` subjects.
#[derive(Debug, Clone)]
pub struct NatsPlatformSender {
    client: Client,
    channel: String,
    publish_timeout: Duration,
}

impl NatsPlatformSender {
    pub fn new(client: Client, channel: impl Into<String>, publish_timeout: Duration) -> Self {
        NatsPlatformSender {
            client,
            channel: channel.into(),
            publish_timeout,
        }
    }
}

impl PlatformSender for NatsPlatformSender {
    fn send<'a>(
        &'a self,
        action: PlatformAction,
        correlation_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            if let PlatformAction::Chat(ChatAction { content })
            | PlatformAction::Pm(PmAction { content, .. }) = &action
            {
                if content.is_empty() {
                    return Err(SendError::permanent("empty message"));
                }
            }
            let subject = platform::out_subject(&self.channel, action.kind());
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(rosey_protocol::headers::CORRELATION_ID, correlation_id);
            let publish =
                self.client
                    .publish_with_headers(subject, headers, Bytes::from(action.to_json()));
            match tokio::time::timeout(self.publish_timeout, publish).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SendError::transient(format!("publish failed: {e}"))),
                Err(_) => Err(SendError::transient(
                    "publish timed out (NATS disconnected?)",
                )),
            }
        })
    }
}
