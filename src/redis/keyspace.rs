//! Redis keyspace notifications: which `notify-keyspace-events` flags the expiry stream needs,
//! and enabling them by merging with what is set (never clobbering other flags).
//!
//! The stream needs key*event* notifications (`E`) for expired (`x`), evicted (`e`) and
//! generic commands (`g`, which carries DEL and UNLINK). `A` stands for `g$lshzxetd`.

use fred::prelude::*;
use fred::types::Value;

use super::{Call, Namespace, Redis, on_node};
use crate::error::{Error, Idempotency};

/// The flags the expiry stream needs.
pub const NEEDED_FLAGS: &str = "Exeg";

/// What the flags allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyspaceEvents {
    /// Redis publishes the events the stream needs.
    Ready,
    /// It does not, and the gateway could not or may not change that; the message says what
    /// an operator must enable.
    Unavailable(String),
}

/// The needed flags that `current` lacks, in `NEEDED_FLAGS` order.
pub fn missing_flags(current: &str) -> String {
    NEEDED_FLAGS
        .chars()
        .filter(|flag| {
            let covered_by_all = *flag != 'E' && current.contains('A');
            !current.contains(*flag) && !covered_by_all
        })
        .collect()
}

/// The explanation for an operator when the flags are missing.
fn explain(missing: &str, why: &str) -> String {
    format!(
        "Redis does not publish the keyspace events WatchExpirations needs ({why}); enable them \
         on the Redis server: add the flags \"{missing}\" to notify-keyspace-events (e.g. \
         `CONFIG SET notify-keyspace-events {NEEDED_FLAGS}` merged with the flags already set, \
         or `notify-keyspace-events {NEEDED_FLAGS}` in redis.conf or your provider's parameter \
         group)"
    )
}

impl Redis {
    /// Reads `notify-keyspace-events` and, when `configure` is true and flags are missing,
    /// adds them with CONFIG SET. Never fails: an unreachable Redis or a refused CONFIG is
    /// reported as [`KeyspaceEvents::Unavailable`] (with the reason) or, when only reading is
    /// refused and nothing may be changed, assumed ready.
    ///
    /// Key events are node-local: on a cluster every primary is checked (and configured), and
    /// the first that is not ready answers for all.
    pub async fn ensure_keyspace_events(&self, configure: bool) -> Result<KeyspaceEvents, Error> {
        for node in self.nodes()? {
            let state = self
                .ensure_keyspace_events_on(node.as_ref(), configure)
                .await?;
            if state != KeyspaceEvents::Ready {
                return Ok(state);
            }
        }
        Ok(KeyspaceEvents::Ready)
    }

    /// [`Redis::ensure_keyspace_events`] on one node (the pool's choice when `None`).
    async fn ensure_keyspace_events_on(
        &self,
        node: Option<&Server>,
        configure: bool,
    ) -> Result<KeyspaceEvents, Error> {
        let call = Call::new(None, self.command_timeout(), Namespace::default());
        let current = self
            .run(&call, Idempotency::Idempotent, |client| {
                let client = on_node(client, node);
                async move {
                    client
                        .custom::<Value, _>(
                            fred::cmd!("CONFIG"),
                            vec!["GET", "notify-keyspace-events"],
                        )
                        .await
                }
            })
            .await;
        let current = match current {
            Ok(Value::Array(items)) => items
                .get(1)
                .and_then(|value| value.as_string())
                .unwrap_or_default(),
            Ok(_) => String::new(),
            Err(err @ (Error::Unavailable { .. } | Error::DeadlineExceeded { .. })) => {
                return Err(err);
            }
            Err(err) if configure => {
                return Ok(KeyspaceEvents::Unavailable(explain(
                    NEEDED_FLAGS,
                    &format!("the gateway may not read or change the setting: {err}"),
                )));
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read notify-keyspace-events; assuming the flags {NEEDED_FLAGS} are enabled");
                return Ok(KeyspaceEvents::Ready);
            }
        };
        let missing = missing_flags(&current);
        if missing.is_empty() {
            return Ok(KeyspaceEvents::Ready);
        }
        if !configure {
            return Ok(KeyspaceEvents::Unavailable(explain(
                &missing,
                &format!(
                    "notify-keyspace-events is \"{current}\", and --no-configure-keyspace-events \
                     leaves it alone"
                ),
            )));
        }
        let merged = format!("{current}{missing}");
        let set = self
            .run(&call, Idempotency::Idempotent, |client| {
                let merged = merged.clone();
                let client = on_node(client, node);
                async move {
                    client
                        .custom::<Value, _>(
                            fred::cmd!("CONFIG"),
                            vec![
                                "SET".to_owned(),
                                "notify-keyspace-events".to_owned(),
                                merged,
                            ],
                        )
                        .await
                }
            })
            .await;
        match set {
            Ok(_) => {
                tracing::info!(was = %current, now = %merged, ?node, "enabled the keyspace events the expiry stream needs");
                Ok(KeyspaceEvents::Ready)
            }
            Err(err @ (Error::Unavailable { .. } | Error::DeadlineExceeded { .. })) => Err(err),
            Err(err) => Ok(KeyspaceEvents::Unavailable(explain(
                &missing,
                &format!("CONFIG SET was refused: {err}"),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::missing_flags;

    #[test]
    fn missing_flags_account_for_the_all_alias() {
        assert_eq!(missing_flags(""), "Exeg");
        assert_eq!(missing_flags("Ex"), "eg");
        assert_eq!(missing_flags("AK"), "E");
        assert_eq!(missing_flags("AKE"), "");
        assert_eq!(missing_flags("gxeKE"), "");
    }
}
