//! Per-call context: the time budget a call's Redis work may use, and the caller's namespace.

use std::time::{Duration, Instant};

use super::keys::Namespace;

/// The most taken off a client's deadline (see `Call::deadline_margin`).
const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// What one gRPC call brings to the Redis layer.
#[derive(Debug, Clone)]
pub struct Call {
    /// When the client stops waiting, if it sent a deadline (`grpc-timeout`).
    grpc_deadline: Option<Instant>,
    /// Longest time one Redis command may take.
    command_timeout: Duration,
    /// Taken off the client's deadline: tonic's own deadline timer started when the request
    /// arrived, a little before this call's clock, and the gateway must answer first so the
    /// client gets DEADLINE_EXCEEDED (with its outcome-unknown note), not a bare CANCELLED.
    deadline_margin: Duration,
    /// The key prefix that confines this caller.
    pub namespace: Namespace,
    /// How this call's request names the operands of a Redis data error.
    pub operands: Operands,
}

/// The request fields a Redis data error is about, as the RPC being served names them: a
/// KeyValue counter's `key` is a Hash counter's `field`. Errors such as "value is not an
/// integer" are reported as INVALID_ARGUMENT naming these.
#[derive(Debug, Clone, Copy)]
pub struct Operands {
    /// The stored value the command read (e.g. `key`, or `field` for a hash counter).
    pub stored: &'static str,
    /// The amount the command applied (e.g. `delta`).
    pub delta: &'static str,
}

impl Default for Operands {
    fn default() -> Self {
        Self {
            stored: "key",
            delta: "delta",
        }
    }
}

/// The time one Redis command may take.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// How long the command may take.
    pub timeout: Duration,
    /// True when the client's deadline, not the command timeout, set `timeout`: running out
    /// is then DEADLINE_EXCEEDED rather than UNAVAILABLE.
    pub deadline_bound: bool,
}

impl Call {
    /// A call whose client sent `grpc_timeout` (if any) and whose commands may each take up
    /// to `command_timeout`.
    pub fn new(
        grpc_timeout: Option<Duration>,
        command_timeout: Duration,
        namespace: Namespace,
    ) -> Self {
        Self {
            grpc_deadline: grpc_timeout.map(|timeout| Instant::now() + timeout),
            command_timeout,
            deadline_margin: grpc_timeout
                .map(|timeout| (timeout / 10).min(MAX_DEADLINE_MARGIN))
                .unwrap_or_default(),
            namespace,
            operands: Operands::default(),
        }
    }

    /// The same call, reporting Redis data errors against `operands`.
    pub fn with_operands(mut self, stored: &'static str, delta: &'static str) -> Self {
        self.operands = Operands { stored, delta };
        self
    }

    /// Time left before the client's deadline, less the margin the gateway keeps to answer
    /// first; `None` when the client set no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.grpc_deadline.map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(self.deadline_margin)
        })
    }

    /// The budget of the next command: the command timeout, cut short by the client's deadline.
    pub fn budget(&self) -> Budget {
        match self.grpc_deadline {
            Some(deadline) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(self.deadline_margin);
                if left < self.command_timeout {
                    Budget {
                        timeout: left,
                        deadline_bound: true,
                    }
                } else {
                    Budget {
                        timeout: self.command_timeout,
                        deadline_bound: false,
                    }
                }
            }
            None => Budget {
                timeout: self.command_timeout,
                deadline_bound: false,
            },
        }
    }
}

/// Parses the `grpc-timeout` header value: digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
    }

    #[test]
    fn the_shorter_of_deadline_and_command_timeout_wins() {
        let short = Call::new(
            Some(Duration::from_millis(100)),
            Duration::from_secs(5),
            Namespace::default(),
        );
        assert!(short.budget().deadline_bound);
        assert!(short.budget().timeout <= Duration::from_millis(100));
        let long = Call::new(
            Some(Duration::from_secs(60)),
            Duration::from_secs(5),
            Namespace::default(),
        );
        assert!(!long.budget().deadline_bound);
        assert_eq!(long.budget().timeout, Duration::from_secs(5));
    }
}
