//! Redis Cluster hash slots: which keys may go in one command.
//!
//! On a cluster a command's keys must share a slot. Calls that promise atomicity (SetMany,
//! Transaction) are refused up front with INVALID_ARGUMENT explaining hash tags; calls that do
//! not (GetMany, Exists, Delete, the near cache's reads) are split into one command per slot,
//! sent together (fred pipelines them) and their results put back in request order. On a
//! single Redis every key is in "one slot" and nothing is split.
//!
//! Topology: [`Redis::cluster_primaries`] asks the cluster which primaries serve slots now, so
//! that connections which never see a redirection (subscribers) can follow a resharding onto a
//! new primary; [`Redis::resync_cluster`] has the pooled clients read the slot map again.

use std::collections::BTreeSet;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Key, Value};

use super::{Call, Namespace, Redis, reply_array};
use crate::error::{Error, Idempotency};

/// What a refusal says: how to keep keys together.
pub const CROSS_SLOT_ADVICE: &str = "the keys map to different Redis Cluster slots; give them a \
                                     common hash tag, e.g. {user42}:a and {user42}:b";

/// The cluster slot of `key` (its hash tag's, when it has one).
pub fn slot_of(key: &[u8]) -> u16 {
    fred::util::redis_keyslot(key)
}

/// `keys` grouped by slot, in order of first appearance; each group with the positions of its
/// keys in `keys`.
pub fn by_slot(keys: &[Key]) -> Vec<(Vec<usize>, Vec<Key>)> {
    let mut groups: Vec<(u16, Vec<usize>, Vec<Key>)> = Vec::new();
    for (position, key) in keys.iter().enumerate() {
        let slot = slot_of(key.as_bytes());
        match groups.iter_mut().find(|(group, _, _)| *group == slot) {
            Some((_, positions, members)) => {
                positions.push(position);
                members.push(key.clone());
            }
            None => groups.push((slot, vec![position], vec![key.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(_, positions, members)| (positions, members))
        .collect()
}

/// `host:port` of a node, as [`Redis::cluster_primaries`] and fred's slot map name it.
pub fn node_name(server: &Server) -> String {
    format!("{}:{}", server.host, server.port)
}

impl Redis {
    /// The primaries that serve slots now, as `host:port` (`CLUSTER SLOTS` through the pool:
    /// one command on an existing connection).
    pub async fn cluster_primaries(&self, timeout: Duration) -> Result<BTreeSet<String>, Error> {
        let call = Call::new(None, timeout, Namespace::default());
        let reply: Value = self
            .run(&call, Idempotency::Idempotent, |client| async move {
                client.custom(fred::cmd!("CLUSTER"), vec!["SLOTS"]).await
            })
            .await?;
        let mut primaries = BTreeSet::new();
        // Each range: [start, end, [host, port, id, ...] (the primary), replicas...].
        for range in reply_array(reply)? {
            let Value::Array(fields) = range else {
                continue;
            };
            if let Some(Value::Array(primary)) = fields.get(2)
                && let (Some(host), Some(port)) = (
                    primary.first().and_then(Value::as_string),
                    primary.get(1).and_then(Value::as_i64),
                )
            {
                primaries.insert(format!("{host}:{port}"));
            }
        }
        Ok(primaries)
    }

    /// The primary serving `key`'s slot, by the pool's slot map (`None` on a single Redis or
    /// before the map is known).
    pub(crate) fn node_of(&self, key: &[u8]) -> Option<Server> {
        self.pool
            .clients()
            .first()?
            .cached_cluster_state()?
            .get_server(slot_of(key))
            .cloned()
    }

    /// Has every pooled client read the cluster's slot map again (after a topology change:
    /// commands would follow redirections anyway, but per-node work such as the keyspace flags
    /// goes by the cached map).
    pub async fn resync_cluster(&self) {
        for client in self.pool.clients() {
            if let Err(err) = client.sync_cluster().await {
                tracing::debug!(error = %err, "re-reading the cluster's slot map failed");
            }
        }
    }

    /// INVALID_ARGUMENT naming `field` when, on a cluster, `keys` span more than one slot.
    pub(crate) fn one_slot(&self, field: &str, keys: &[Key]) -> Result<(), Error> {
        let mut slots = keys.iter().map(|key| slot_of(key.as_bytes()));
        match slots.next() {
            Some(first) if self.clustered() && slots.any(|slot| slot != first) => {
                Err(Error::invalid(field, CROSS_SLOT_ADVICE))
            }
            _ => Ok(()),
        }
    }

    /// Whether `keys` must be split per slot: on a cluster, when they span slots.
    pub(crate) fn spans_slots(&self, keys: &[Key]) -> bool {
        self.clustered() && self.one_slot("", keys).is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_grouped_by_slot_in_order_and_hash_tags_keep_them_together() {
        let keys: Vec<Key> = ["{u1}:a", "b", "{u1}:c", "b"]
            .into_iter()
            .map(Key::from)
            .collect();
        let groups = by_slot(&keys);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, vec![0, 2]);
        assert_eq!(groups[1].0, vec![1, 3]);
        assert_eq!(slot_of(b"{u1}:a"), slot_of(b"u1"));
    }
}
