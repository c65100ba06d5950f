//! Lock wake-ups: the gateway process's one pub/sub subscription, shared by all its waiters.
//!
//! A release (or a waiter leaving the head of a queue) publishes the id of the waiter that is
//! now first on [`LOCK_WAKE_CHANNEL`]; every gateway process receives it, and the one that
//! registered that id wakes just that waiter. Waiters on any runtime register here, so a
//! thousand waiters cost one Redis connection, not a thousand subscriptions. Pub/sub loses
//! what is published while the subscriber is disconnected, so after every (re)connection all
//! local waiters are woken to look again; they also retry on their own with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{Config as FredConfig, TcpConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::locks::{LOCK_WAKE_CHANNEL, random_id};
use crate::error::Error;

/// The waiters of this process, by waiter id.
#[derive(Debug, Default)]
pub struct Wakeups {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A waiter's registration; dropping it unregisters the waiter.
#[derive(Debug)]
pub struct Registration {
    id: String,
    notify: Arc<Notify>,
    wakeups: Arc<Wakeups>,
}

impl Registration {
    /// The waiter id, as queued in Redis.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Resolves when this waiter was woken since it last looked (a wake-up that arrives while
    /// the waiter is busy is kept, not lost).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.wakeups.waiters().remove(&self.id);
    }
}

impl Wakeups {
    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new waiter under a fresh random id.
    pub fn register(self: &Arc<Self>) -> Result<Registration, Error> {
        let id = random_id();
        let notify = Arc::new(Notify::new());
        self.waiters().insert(id.clone(), notify.clone());
        Ok(Registration {
            id,
            notify,
            wakeups: self.clone(),
        })
    }

    /// Waiters registered now.
    pub fn len(&self) -> usize {
        self.waiters().len()
    }

    /// True when no waiter is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes waiter `id` if it is one of this process's.
    fn wake(&self, id: &str) {
        if let Some(notify) = self.waiters().get(id) {
            notify.notify_one();
        }
    }

    /// Wakes every waiter (after a gap in the subscription).
    fn wake_all(&self) {
        for notify in self.waiters().values() {
            notify.notify_one();
        }
    }

    /// Subscribes to the wake channel on its own connection and dispatches wake-ups until
    /// `shutdown`; reconnects (and resubscribes) by itself, forever.
    pub async fn run(
        self: Arc<Self>,
        fred: FredConfig,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let client = match Builder::from_config(fred)
            .with_connection_config(|connection| {
                connection.connection_timeout = timeout;
                connection.internal_command_timeout = timeout;
                connection.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "lock wake-ups disabled: building the subscriber failed");
                return;
            }
        };
        let mut messages = client.message_rx();
        let mut connections = client.reconnect_rx();
        let connection = client.connect();
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => {
                        if let Some(id) = message.value.as_str() {
                            self.wake(&id);
                        }
                    }
                    // Missed messages: everyone looks again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                connected = connections.recv() => {
                    if connected.is_err() {
                        break;
                    }
                    match tokio::time::timeout(timeout, client.subscribe(LOCK_WAKE_CHANNEL)).await {
                        Ok(Ok(())) => tracing::debug!("subscribed to lock wake-ups"),
                        Ok(Err(err)) => tracing::warn!(error = %err, "subscribing to lock wake-ups failed; waiters fall back to polling"),
                        Err(_) => tracing::warn!("subscribing to lock wake-ups timed out; waiters fall back to polling"),
                    }
                    // Whatever was published while disconnected is lost.
                    self.wake_all();
                }
                () = shutdown.cancelled() => break,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
        connection.abort();
    }
}
