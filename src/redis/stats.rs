//! What the Redis layer counts about itself, for the whole process: failed commands by kind,
//! reconnects, and the pools themselves, whose connection state is read when asked.
//!
//! Every runtime's [`super::Redis`] adds to the same [`RedisStats`] (plain atomics, so the
//! runtimes never wait on each other). They are kept whether or not metrics are exported and
//! cost nothing on a command that succeeds; [`crate::metrics`] reads them at scrape time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fred::clients::Pool;

use super::Links;
use crate::error::Error;

/// Why a Redis command failed, as the metrics tell failures apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandErrorKind {
    /// No connection was up, it dropped under the command, or Redis refused to serve
    /// (loading, read-only replica, credentials, backpressure ...).
    Unavailable,
    /// No reply within the command's time budget (the call's deadline or
    /// REDIS_COMMAND_TIMEOUT), or no time left to send it.
    Timeout,
    /// Redis answered with an error: WRONGTYPE, OOM, a script's refusal, an unexpected reply.
    Other,
}

impl CommandErrorKind {
    /// Every kind, in the order the metrics list them.
    pub const ALL: [Self; 3] = [Self::Unavailable, Self::Timeout, Self::Other];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// The kind of a failed command: `timed_out` when fred reported a timeout, `error` what
    /// the gateway made of the failure.
    pub fn of(error: &Error, timed_out: bool) -> Self {
        match error {
            _ if timed_out => Self::Timeout,
            Error::DeadlineExceeded { .. } => Self::Timeout,
            Error::Unavailable { .. } => Self::Unavailable,
            _ => Self::Other,
        }
    }
}

/// Connections of every pool of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConnections {
    /// Connections the pools were built with (REDIS_MAX_CONNECTIONS shared out).
    pub configured: usize,
    /// Of those, the ones connected now.
    pub connected: usize,
}

/// The Redis layer's counters, shared by every runtime's pool.
#[derive(Default)]
pub struct RedisStats {
    /// Failed commands, indexed as [`CommandErrorKind::ALL`].
    command_errors: [AtomicU64; 3],
    /// Connections re-established after a failure (the first connection of each pooled
    /// client is not a reconnect).
    reconnects: AtomicU64,
    /// Every runtime's pool and what the gateway saw of its connections, to read connection
    /// state on demand rather than track it.
    pools: Mutex<Vec<(Pool, Arc<Links>)>>,
    /// Whether the Redis Cluster reports `cluster_state:fail` (as the health probe last read
    /// it): its nodes then refuse every command (CLUSTERDOWN), so calls are refused before
    /// they are sent, their outcome known.
    cluster_down: AtomicBool,
}

impl RedisStats {
    /// Counts one failed command.
    pub(crate) fn command_failed(&self, kind: CommandErrorKind) {
        self.command_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed commands of `kind` since start.
    pub fn command_errors(&self, kind: CommandErrorKind) -> u64 {
        self.command_errors[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts `count` reconnects.
    pub(crate) fn reconnected(&self, count: u64) {
        self.reconnects.fetch_add(count, Ordering::Relaxed);
    }

    /// Records whether the cluster reports itself down.
    pub(crate) fn set_cluster_down(&self, down: bool) {
        self.cluster_down.store(down, Ordering::Relaxed);
    }

    /// Whether the cluster reported itself down at the last health probe.
    pub fn cluster_down(&self) -> bool {
        self.cluster_down.load(Ordering::Relaxed)
    }

    /// Reconnects since start.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Adds a runtime's pool to those [`Self::pool_connections`] reports.
    pub(super) fn add_pool(&self, pool: &Pool, links: &Arc<Links>) {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((pool.clone(), links.clone()));
    }

    /// Configured and connected connections of every pool, now.
    pub fn pool_connections(&self) -> PoolConnections {
        let pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // fred reports a client connected until its first reconnect attempt; the gateway's
        // own view of each connection (see `Links`) knows of a failure at once.
        PoolConnections {
            configured: pools.iter().map(|(pool, _)| pool.size()).sum(),
            connected: pools
                .iter()
                .map(|(pool, links)| {
                    pool.clients()
                        .iter()
                        .enumerate()
                        .filter(|(index, client)| links.usable(*index, client))
                        .count()
                })
                .sum(),
        }
    }
}

impl std::fmt::Debug for RedisStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStats")
            .field("command_errors", &self.command_errors)
            .field("reconnects", &self.reconnects)
            .field("pools", &self.pool_connections())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_apart_by_kind() {
        let unavailable = Error::redis_unreachable();
        assert_eq!(
            CommandErrorKind::of(&unavailable, false),
            CommandErrorKind::Unavailable
        );
        // A timeout without a client deadline is reported as UNAVAILABLE, yet counted as one.
        assert_eq!(
            CommandErrorKind::of(&unavailable, true),
            CommandErrorKind::Timeout
        );
        let deadline = Error::DeadlineExceeded {
            outcome_unknown: false,
        };
        assert_eq!(
            CommandErrorKind::of(&deadline, false),
            CommandErrorKind::Timeout
        );
        let wrong_type = Error::WrongType {
            expected: None,
            actual: None,
        };
        assert_eq!(
            CommandErrorKind::of(&wrong_type, false),
            CommandErrorKind::Other
        );
        let stats = RedisStats::default();
        stats.command_failed(CommandErrorKind::Timeout);
        stats.command_failed(CommandErrorKind::Timeout);
        assert_eq!(stats.command_errors(CommandErrorKind::Timeout), 2);
        assert_eq!(stats.command_errors(CommandErrorKind::Other), 0);
    }
}
