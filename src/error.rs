//! The gateway's one error type and every gRPC status decision.
//!
//! Handlers and the Redis layer return [`Error`]; `From<Error> for Status` is the single,
//! exhaustive place where errors become status codes. Redis failures are classified in
//! [`Error::from_redis`], by fred's error kind and by the Redis reply prefix (`WRONGTYPE`,
//! `OOM`, `CROSSSLOT`, ...). Internal details are logged here and never sent to clients.

use fred::error::{Error as RedisError, ErrorKind};
use tonic::Status;

use crate::redis::{Budget, Operands};

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
    /// The data in Redis does not allow the operation (e.g. a non-integer counter).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The key holds another Redis type than the operation works on (WRONGTYPE).
    #[error("WRONGTYPE: the key holds {}", actual.as_deref().unwrap_or("another Redis type"))]
    WrongType {
        /// The type the operation works on, when the Redis layer knows it.
        expected: Option<&'static str>,
        /// The type the key holds (`TYPE`), when it could be read.
        actual: Option<String>,
    },
    /// Redis refused for lack of resources (maxmemory reached), or the reply would exceed the
    /// response limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The thing the call names does not exist (e.g. an unknown or expired session).
    #[error("{0}")]
    NotFound(String),
    /// The gateway's Redis user lacks an ACL permission the call needs.
    #[error("{0}")]
    PermissionDenied(String),
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
    // In flight on a connection that dropped, then due again with no attempt left.
    "Too many failed write attempts",
];

/// What fred answers a command it refused to send because its client was not connected
/// (`fail_fast`); the same words never describe a command that was sent.
const FRED_NOT_SENT: &str = "Connection closed unexpectedly.";

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

    /// A FAILED_PRECONDITION caused by the stored data, naming the request `field` it concerns.
    pub fn stored_state(field: &str, reason: &str) -> Self {
        Self::FailedPrecondition(format!("{field}: {reason}"))
    }

    /// True when a command had been sent and its effect is unknown.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Unavailable {
                outcome_unknown: true,
                ..
            } | Self::DeadlineExceeded {
                outcome_unknown: true
            }
        )
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
    /// Redis' own reply prefix is read first (fred files `CLUSTERDOWN` under its cluster kind,
    /// yet Redis refused the command, so the outcome is known); fred's error kind decides the
    /// rest. `idempotency` tells whether a failure after sending leaves the outcome unknown;
    /// `budget` is the time the command had: when the client's deadline set it, a timeout is
    /// DEADLINE_EXCEEDED, otherwise UNAVAILABLE. `operands` names the request fields a data
    /// error is about.
    pub fn from_redis(
        err: RedisError,
        idempotency: Idempotency,
        budget: Budget,
        operands: Operands,
    ) -> Self {
        if let Some(classified) = Self::from_redis_reply(err.details(), operands) {
            return classified;
        }
        let may_have_applied = idempotency == Idempotency::AtMostOnce;
        // fred's fail-fast check refused it before sending: no connection was up (e.g. a
        // cluster client reconnecting while a shard is down). Not sent, so not applied.
        if err.kind() == &ErrorKind::Canceled && err.details() == FRED_NOT_SENT {
            return Self::redis_unreachable();
        }
        // A MOVED or ASK that fred did not follow (see `Redis::connect`): not run.
        if crate::redis::is_redirection(&err) {
            return Self::Unavailable {
                message: "Redis refused the command (a cluster slot moved and is still moving); \
                          retry"
                    .into(),
                outcome_unknown: false,
            };
        }
        // fred refuses keys of several cluster nodes itself, before sending anything.
        if err.kind() == &ErrorKind::Cluster && err.details().contains("same cluster node") {
            return Self::invalid(operands.stored, crate::redis::slots::CROSS_SLOT_ADVICE);
        }
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
                .any(|failure| err.details().starts_with(failure)) =>
            {
                tracing::debug!(error = %err, "redis connection failure");
                Self::Unavailable {
                    message: "the connection to Redis failed".into(),
                    outcome_unknown: may_have_applied,
                }
            }
            _ => Self::Internal(format!("unexpected Redis error: {}", err.details())),
        }
    }

    /// Classifies an error reply from Redis (or from one of our scripts) by its prefix and
    /// text; `None` when the text is not a reply this gateway knows.
    fn from_redis_reply(details: &str, operands: Operands) -> Option<Self> {
        let (prefix, rest) = details.split_once(' ').unwrap_or((details, ""));
        let refused = |why: &str| Self::Unavailable {
            message: format!(
                "Redis refused the command ({why}): {}",
                first_words(details)
            ),
            outcome_unknown: false,
        };
        Some(match prefix {
            "WRONGTYPE" => Self::WrongType {
                expected: None,
                actual: None,
            },
            "OOM" => Self::ResourceExhausted(
                "Redis is out of memory (maxmemory reached); the write was rejected".into(),
            ),
            "CROSSSLOT" => Self::invalid(operands.stored, crate::redis::slots::CROSS_SLOT_ADVICE),
            "NOPERM" => {
                tracing::error!(
                    reply = %details,
                    "Redis refused a command to the gateway's user: grant it in the ACL, e.g. \
                     `ACL SETUSER <user> +@read +@write +@scripting +@keyspace +info +ping`"
                );
                Self::PermissionDenied(
                    "the gateway's Redis user lacks a permission this call needs; the gateway \
                     log names it"
                        .into(),
                )
            }
            // Raised by our own Lua scripts: `GWARG <field> <reason>`.
            "GWARG" => {
                let (field, reason) = rest.split_once(' ').unwrap_or((rest, "is invalid"));
                Self::invalid(field, strip_script_location(reason))
            }
            // Raised by our own Lua scripts: `GWTYPE <message>`.
            "GWTYPE" => Self::FailedPrecondition(strip_script_location(rest).into()),
            // Redis refused these before running the command: the outcome is known.
            "LOADING" => refused("still loading its data"),
            "BUSY" => refused("a long script is running"),
            "MASTERDOWN" => refused("the replica lost its primary"),
            "READONLY" => refused("it is a read-only replica, e.g. after a failover"),
            "TRYAGAIN" => refused("a cluster slot is moving"),
            "CLUSTERDOWN" => refused("the cluster is down"),
            "MOVED" | "ASK" => refused("a cluster slot moved"),
            "MISCONF" => refused("it cannot persist to disk"),
            "NOREPLICAS" => refused("not enough replicas acknowledge writes"),
            "NOAUTH" | "WRONGPASS" => {
                tracing::error!(reply = %details, "Redis rejected the gateway's credentials");
                Self::Unavailable {
                    message: "Redis rejected the gateway's credentials".into(),
                    outcome_unknown: false,
                }
            }
            // Raised by our own Lua scripts: `GWSTATE <field> <reason>` (the stored data does
            // not allow the operation).
            "GWSTATE" => {
                let (field, reason) = rest.split_once(' ').unwrap_or((rest, "is unusable"));
                Self::stored_state(field, strip_script_location(reason))
            }
            // What is stored, not what was sent, makes these fail: FAILED_PRECONDITION, with
            // the message naming the request field the stored value or amount belongs to.
            _ if details.contains("value is not an integer or out of range") => Self::stored_state(
                operands.stored,
                "the stored value is not an integer, or the result is out of the 64-bit range; \
                 nothing was changed",
            ),
            _ if details.contains("increment or decrement would overflow") => Self::stored_state(
                operands.delta,
                "the result would overflow a signed 64-bit integer; nothing was changed",
            ),
            _ if details.contains("hash value is not an integer") => Self::stored_state(
                operands.stored,
                "the stored hash field is not an integer; nothing was changed",
            ),
            _ if details.contains("value is not a valid float") => Self::stored_state(
                operands.stored,
                "the stored value is not a number; nothing was changed",
            ),
            _ if details.contains("would produce NaN or Infinity") => Self::stored_state(
                operands.delta,
                "the result would be NaN or infinite; nothing was changed",
            ),
            _ => return None,
        })
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
            Error::WrongType { expected, actual } => {
                Status::failed_precondition(match (expected, actual) {
                    (Some(expected), Some(actual)) => format!(
                        "WRONGTYPE: the key holds a {actual}; this operation works on a {expected}"
                    ),
                    (Some(expected), None) => format!(
                        "WRONGTYPE: the key holds another Redis type; this operation works on a \
                         {expected}"
                    ),
                    _ => "WRONGTYPE: the key holds a Redis type this operation cannot work on"
                        .to_owned(),
                })
            }
            Error::ResourceExhausted(message) => Status::resource_exhausted(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::NotFound(message) => Status::not_found(message),
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

    /// A Redis error reply as fred reports it: fred's `pretty_error` files WRONGTYPE under
    /// `InvalidArgument`, NOAUTH/WRONGPASS under `Auth`, MOVED/ASK/CLUSTERDOWN under `Cluster`,
    /// and everything else under `Unknown`.
    fn fred_reply(text: &str) -> RedisError {
        let kind = match text.split_whitespace().next().unwrap_or("") {
            "WRONGTYPE" => ErrorKind::InvalidArgument,
            "NOAUTH" | "WRONGPASS" => ErrorKind::Auth,
            "MOVED" | "ASK" | "CLUSTERDOWN" => ErrorKind::Cluster,
            _ => ErrorKind::Unknown,
        };
        RedisError::new(kind, text.to_owned())
    }

    fn classify(err: RedisError, idempotency: Idempotency, operands: Operands) -> Status {
        Error::from_redis(err, idempotency, budget(false), operands).into()
    }

    fn reply(text: &str) -> Status {
        classify(
            fred_reply(text),
            Idempotency::AtMostOnce,
            Operands::default(),
        )
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
            Code::FailedPrecondition
        );
        let internal = reply("ERR something nobody expected");
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("nobody expected"));
    }

    #[test]
    fn refusals_are_unavailable_with_a_known_outcome() {
        for text in [
            "CLUSTERDOWN The cluster is down",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk",
            "NOREPLICAS Not enough good replicas to write.",
            "READONLY You can't write against a read only replica.",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "LOADING Redis is loading the dataset in memory",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            // At-most-once writes: were the refusal read as a connection failure, the status
            // would say the outcome is unknown.
            let status = reply(text);
            assert_eq!(status.code(), Code::Unavailable, "{text}");
            assert!(
                !status.message().contains("may or may not"),
                "{text}: {}",
                status.message()
            );
        }
    }

    #[test]
    fn missing_acl_permissions_are_permission_denied() {
        let status = reply("NOPERM User app has no permissions to run the 'eval' command");
        assert_eq!(status.code(), Code::PermissionDenied);
    }

    #[test]
    fn data_errors_name_the_field_of_the_request_being_served() {
        let hash = Operands {
            stored: "field",
            delta: "delta",
        };
        let status = classify(
            fred_reply("ERR hash value is not an integer"),
            Idempotency::AtMostOnce,
            hash,
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().starts_with("field: "),
            "{}",
            status.message()
        );
        let status = classify(
            fred_reply("ERR value is not an integer or out of range"),
            Idempotency::AtMostOnce,
            Operands {
                stored: "entries[2].key",
                delta: "delta",
            },
        );
        assert!(
            status.message().starts_with("entries[2].key: "),
            "{}",
            status.message()
        );
        let status = classify(
            fred_reply("ERR increment or decrement would overflow"),
            Idempotency::AtMostOnce,
            Operands {
                stored: "key",
                delta: "amount",
            },
        );
        assert!(
            status.message().starts_with("amount: "),
            "{}",
            status.message()
        );
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
    fn connection_failures_leave_a_write_unknown() {
        for err in [
            RedisError::new(ErrorKind::IO, "Connection closed."),
            RedisError::new(ErrorKind::Unknown, "Failed to route command."),
            RedisError::new(ErrorKind::Unknown, "Too many failed write attempts."),
        ] {
            let status = classify(err, Idempotency::AtMostOnce, Operands::default());
            assert_eq!(status.code(), Code::Unavailable);
            assert!(
                status.message().contains("may or may not"),
                "{}",
                status.message()
            );
        }
        let auth = classify(
            fred_reply("WRONGPASS invalid username-password pair or user is disabled."),
            Idempotency::AtMostOnce,
            Operands::default(),
        );
        assert_eq!(auth.code(), Code::Unavailable);
        assert!(!auth.message().contains("may or may not"));
    }

    #[test]
    fn commands_fred_never_sent_or_the_cluster_redirected_have_a_known_outcome() {
        for err in [
            // fred's fail-fast refusal while its client is not connected.
            RedisError::new(ErrorKind::Canceled, "Connection closed unexpectedly."),
            // A MOVED or ASK not followed (max_redirections 0).
            RedisError::new(ErrorKind::Routing, "Too many redirections."),
        ] {
            let status = classify(err, Idempotency::AtMostOnce, Operands::default());
            assert_eq!(status.code(), Code::Unavailable);
            assert!(
                !status.message().contains("may or may not"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn timeouts_distinguish_deadline_and_unknown_outcome() {
        let timeout = || RedisError::new(ErrorKind::Timeout, "Request timed out.");
        let write: Status = Error::from_redis(
            timeout(),
            Idempotency::AtMostOnce,
            budget(true),
            Operands::default(),
        )
        .into();
        assert_eq!(write.code(), Code::DeadlineExceeded);
        assert!(write.message().contains("may or may not have been applied"));
        let read: Status = Error::from_redis(
            timeout(),
            Idempotency::Idempotent,
            budget(false),
            Operands::default(),
        )
        .into();
        assert_eq!(read.code(), Code::Unavailable);
        assert!(!read.message().contains("may or may not"));
    }
}
