//! The gateway's one error type and every gRPC status decision.
//!
//! Handlers and the Redis layer return [`Error`]; `From<Error> for Status` is the single,
//! exhaustive place where errors become status codes. Redis failures are classified in
//! [`Error::from_redis`], by fred's error kind and by the Redis reply prefix (`WRONGTYPE`,
//! `OOM`, `CROSSSLOT`, ...). Internal details are logged here and never sent to clients.

use fred::error::{Error as RedisError, ErrorKind};
use tonic::Status;

use crate::redis::Budget;

/// Whether a command may safely run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Running it again gives the same state (GET, SET, DEL, EXPIRE ...).
    Idempotent,
    /// Running it twice would apply twice (INCRBY, HINCRBY, scripts with counters): it is sent
    /// at most once, and a failure after sending leaves its outcome unknown.
    AtMostOnce,
}

/// Everything that can go wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending request field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field at fault, e.g. `key` or `entries[3].value`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The data in Redis does not allow the operation (e.g. a hash where a string is needed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Redis refused for lack of resources (maxmemory reached).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Redis could not be reached or failed; the call may be retried.
    #[error("{message}")]
    Unavailable {
        /// What happened, for the client.
        message: String,
        /// The command had been sent when the failure happened and is not idempotent, so it
        /// may or may not have been applied.
        outcome_unknown: bool,
    },
    /// The call's gRPC deadline passed before Redis answered.
    #[error("the call's deadline passed before Redis answered")]
    DeadlineExceeded {
        /// As for `Unavailable`.
        outcome_unknown: bool,
    },
    /// The gateway is draining for shutdown; retry on another instance.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected reply; the details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Messages fred gives (with a generic error kind) when a connection drops under a command.
const FRED_CONNECTION_FAILURES: &[&str] = &[
    "Failed to route command",
    "Failed to send command to router",
    "Client is not initialized",
    "Connection closed",
];

/// The sentence appended to UNAVAILABLE / DEADLINE_EXCEEDED when a write's fate is unknown.
const OUTCOME_UNKNOWN: &str =
    "; the command had been sent and is not idempotent, so it may or may not have been applied";

impl Error {
    /// An INVALID_ARGUMENT naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Redis is known to be unreachable and nothing was sent.
    pub fn redis_unreachable() -> Self {
        Self::Unavailable {
            message: "Redis is unreachable; the gateway is reconnecting".into(),
            outcome_unknown: false,
        }
    }

    /// Classifies a fred error.
    ///
    /// `idempotency` tells whether a failure after sending leaves the outcome unknown;
    /// `budget` is the time the command had: when the client's deadline set it, a timeout is
    /// DEADLINE_EXCEEDED, otherwise UNAVAILABLE.
    pub fn from_redis(err: RedisError, idempotency: Idempotency, budget: Budget) -> Self {
        let may_have_applied = idempotency == Idempotency::AtMostOnce;
        let details = err.details();
        match err.kind() {
            ErrorKind::Timeout if budget.deadline_bound => Self::DeadlineExceeded {
                outcome_unknown: may_have_applied,
            },
            ErrorKind::Timeout => Self::Unavailable {
                message: format!("Redis did not answer within {:?}", budget.timeout),
                outcome_unknown: may_have_applied,
            },
            ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Cluster | ErrorKind::Routing => {
                tracing::debug!(error = %err, "redis connection failure");
                Self::Unavailable {
                    message: "the connection to Redis failed".into(),
                    outcome_unknown: may_have_applied,
                }
            }
            ErrorKind::Backpressure => Self::Unavailable {
                message: "Redis is overloaded (backpressure); retry later".into(),
                outcome_unknown: false,
            },
            ErrorKind::Auth => {
                tracing::error!(error = %err, "Redis rejected the gateway's credentials");
                Self::Unavailable {
                    message: "Redis rejected the gateway's credentials".into(),
                    outcome_unknown: false,
                }
            }
            _ if FRED_CONNECTION_FAILURES
                .iter()
                .any(|failure| details.starts_with(failure)) =>
            {
                tracing::debug!(error = %err, "redis connection failure");
                Self::Unavailable {
                    message: "the connection to Redis failed".into(),
                    outcome_unknown: may_have_applied,
                }
            }
            _ => Self::from_redis_reply(details),
        }
    }

    /// Classifies an error reply from Redis (or from one of our scripts) by its prefix.
    fn from_redis_reply(details: &str) -> Self {
        let (prefix, rest) = details.split_once(' ').unwrap_or((details, ""));
        match prefix {
            "WRONGTYPE" => Self::FailedPrecondition(
                "WRONGTYPE: the key holds a Redis type this operation cannot work on".into(),
            ),
            "OOM" => Self::ResourceExhausted(
                "Redis is out of memory (maxmemory reached); the write was rejected".into(),
            ),
            "CROSSSLOT" => Self::invalid(
                "keys",
                "the keys map to different Redis Cluster slots; give them a common hash tag, e.g. \
                 {user42}:a and {user42}:b",
            ),
            // Raised by our own Lua scripts: `GWARG <field> <reason>`.
            "GWARG" => {
                let (field, reason) = rest.split_once(' ').unwrap_or((rest, "is invalid"));
                Self::invalid(field, strip_script_location(reason))
            }
            // Raised by our own Lua scripts: `GWTYPE <message>`.
            "GWTYPE" => Self::FailedPrecondition(strip_script_location(rest).into()),
            // Redis refused these before running the command: the outcome is known.
            "LOADING" | "BUSY" | "MASTERDOWN" | "READONLY" | "TRYAGAIN" | "CLUSTERDOWN" => {
                Self::Unavailable {
                    message: format!("Redis cannot serve now: {}", first_words(details)),
                    outcome_unknown: false,
                }
            }
            _ if details.contains("value is not an integer or out of range") => Self::invalid(
                "key",
                "the stored value is not an integer, or the result is out of the 64-bit range",
            ),
            _ if details.contains("increment or decrement would overflow") => Self::invalid(
                "delta",
                "the result would overflow a signed 64-bit integer; nothing was changed",
            ),
            _ if details.contains("hash value is not an integer") => {
                Self::invalid("field", "the stored hash field is not an integer")
            }
            _ if details.contains("value is not a valid float") => {
                Self::invalid("key", "the stored value is not a number")
            }
            _ if details.contains("would produce NaN or Infinity") => Self::invalid(
                "delta",
                "the result would be NaN or infinite; nothing was changed",
            ),
            _ => Self::Internal(format!("unexpected Redis error: {details}")),
        }
    }
}

/// Redis appends `script: <sha>, on @user_script:<line>.` to errors raised inside scripts.
fn strip_script_location(text: &str) -> &str {
    text.split(" script: ").next().unwrap_or(text).trim_end()
}

/// The first few words of a Redis error, enough to tell what happened.
fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(8)
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { field, reason } => {
                Status::invalid_argument(format!("{field}: {reason}"))
            }
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::ResourceExhausted(message) => Status::resource_exhausted(message),
            Error::Unavailable {
                message,
                outcome_unknown,
            } => {
                let suffix = if outcome_unknown { OUTCOME_UNKNOWN } else { "" };
                Status::unavailable(format!("{message}{suffix}"))
            }
            Error::DeadlineExceeded { outcome_unknown } => {
                let suffix = if outcome_unknown { OUTCOME_UNKNOWN } else { "" };
                Status::deadline_exceeded(format!(
                    "the call's deadline passed before Redis answered{suffix}"
                ))
            }
            Error::ShuttingDown => {
                Status::unavailable("the gateway is shutting down; retry on another instance")
            }
            Error::Internal(details) => {
                tracing::error!(%details, "internal error");
                Status::internal("internal error; the gateway log has the details")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tonic::Code;

    fn budget(deadline_bound: bool) -> Budget {
        Budget {
            timeout: Duration::from_secs(1),
            deadline_bound,
        }
    }

    fn reply(text: &str) -> Status {
        let err = RedisError::new(ErrorKind::Unknown, text.to_owned());
        Error::from_redis(err, Idempotency::Idempotent, budget(false)).into()
    }

    #[test]
    fn redis_replies_map_to_documented_codes() {
        assert_eq!(
            reply("WRONGTYPE Operation against a key holding the wrong kind of value").code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            reply("OOM command not allowed when used memory > 'maxmemory'.").code(),
            Code::ResourceExhausted
        );
        let crossslot = reply("CROSSSLOT Keys in request don't hash to the same slot");
        assert_eq!(crossslot.code(), Code::InvalidArgument);
        assert!(crossslot.message().contains("hash tag"));
        assert_eq!(
            reply("ERR value is not an integer or out of range").code(),
            Code::InvalidArgument
        );
        assert_eq!(reply("LOADING Redis is loading").code(), Code::Unavailable);
        let internal = reply("ERR something nobody expected");
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("nobody expected"));
    }

    #[test]
    fn script_errors_name_the_field_without_script_location() {
        let status = reply(
            "GWARG ops[2].incrby.delta the result would overflow script: abc123, on @user_script:9.",
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "ops[2].incrby.delta: the result would overflow"
        );
    }

    #[test]
    fn timeouts_distinguish_deadline_and_unknown_outcome() {
        let timeout = || RedisError::new(ErrorKind::Timeout, "timed out");
        let write: Status =
            Error::from_redis(timeout(), Idempotency::AtMostOnce, budget(true)).into();
        assert_eq!(write.code(), Code::DeadlineExceeded);
        assert!(write.message().contains("may or may not have been applied"));
        let read: Status =
            Error::from_redis(timeout(), Idempotency::Idempotent, budget(false)).into();
        assert_eq!(read.code(), Code::Unavailable);
        assert!(!read.message().contains("may or may not"));
    }
}
