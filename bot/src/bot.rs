//! The state every part of a running bot shares.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::DbClient;
use crate::metrics::Metrics;
use crate::sender::{PlatformAction, PlatformSender, SendError};
use crate::state::ChannelState;
use crate::trace::{Trace, TraceSource};

pub(crate) struct Bot {
    pub config: Config,
    pub db: DbClient,
    pub sender: Arc<dyn PlatformSender>,
    pub metrics: Arc<Metrics>,
    pub traces: TraceSource,
    /// When the bot started (the status row's `bot_start_time`).
    pub start_time: SystemTime,
    /// When the NATS connection was last (re)established.
    pub connected_since: Mutex<SystemTime>,
    /// PM command tasks; waited for on shutdown.
    pub tasks: TaskTracker,
    state: Mutex<ChannelState>,
}

impl Bot {
    pub fn new(
        config: Config,
        db: DbClient,
        sender: Arc<dyn PlatformSender>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = SystemTime::now();
        Bot {
            traces: TraceSource::new(&config.bot_name),
            config,
            db,
            sender,
            metrics,
            start_time: now,
            connected_since: Mutex::new(now),
            tasks: TaskTracker::new(),
            state: Mutex::new(ChannelState::default()),
        }
    }

    /// The channel state. Held only for plain reads and writes, never across an await.
    pub fn state(&self) -> MutexGuard<'_, ChannelState> {
        // Every state update is a single assignment or collection edit; a panic elsewhere cannot
        // leave it half-done, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn connected_since(&self) -> SystemTime {
        *self
            .connected_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a platform action, counting the outcome.
    pub async fn act(&self, action: PlatformAction, trace: &Trace) -> Result<(), SendError> {
        let kind = action.kind();
        match self.sender.send(action, trace.correlation_id()).await {
            Ok(()) => {
                Metrics::inc(&self.metrics.actions_sent);
                Ok(())
            }
            Err(e) => {
                Metrics::inc(&self.metrics.action_failures);
                tracing::warn!(kind, correlation_id = trace.correlation_id(), error = %e, "platform action not sent");
                Err(e)
            }
        }
    }
}
