//! KeyValue.Transaction's Redis side: plain guards and operations, encoded for
//! `kv_transaction.lua` (the wire format is described at the top of the script), and the
//! script's reply read back. Request validation lives with the service.

use std::collections::HashMap;

use bytes::Bytes;
use fred::types::{Key, Value};

use super::keys::{INTERNAL_PREFIX, Namespace};
use super::scripts::KV_TRANSACTION;
use super::{Call, Redis, reply_array, reply_i64};
use crate::error::{Error, Idempotency};

/// A condition every guard of a transaction must meet for it to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The key exists.
    Exists(String),
    /// The key does not exist.
    Absent(String),
    /// The string key holds exactly `value`.
    ValueEquals {
        /// The key.
        key: String,
        /// The expected bytes.
        value: Bytes,
    },
    /// The hash field holds exactly `value`.
    HashFieldEquals {
        /// The hash.
        name: String,
        /// The field.
        field: String,
        /// The expected bytes.
        value: Bytes,
    },
    /// The hash field is an integer of at least `bound`.
    HashFieldAtLeast {
        /// The hash.
        name: String,
        /// The field.
        field: String,
        /// The bound.
        bound: i64,
    },
    /// The hash field is an integer of at most `bound`.
    HashFieldAtMost {
        /// The hash.
        name: String,
        /// The field.
        field: String,
        /// The bound.
        bound: i64,
    },
    /// Lock `name` is held by `token` and its lease is running.
    LockHeld {
        /// The lock's name.
        name: String,
        /// The owner token.
        token: String,
    },
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// SET, with a TTL in milliseconds or none.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// TTL in milliseconds.
        ttl_ms: Option<u64>,
    },
    /// DEL.
    Delete(String),
    /// PEXPIRE.
    Expire {
        /// The key.
        key: String,
        /// TTL in milliseconds.
        ttl_ms: u64,
    },
    /// INCRBY.
    IncrBy {
        /// The key.
        key: String,
        /// The amount.
        delta: i64,
    },
    /// HSET of several fields.
    HashSet {
        /// The hash.
        name: String,
        /// Field names and values.
        fields: Vec<(String, Bytes)>,
    },
    /// HDEL of several fields.
    HashDelete {
        /// The hash.
        name: String,
        /// Field names.
        fields: Vec<String>,
    },
    /// HINCRBY.
    HashIncrBy {
        /// The hash.
        name: String,
        /// The field.
        field: String,
        /// The amount.
        delta: i64,
    },
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionOutcome {
    /// Every guard held and every operation applied; one integer result per operation.
    Committed(Vec<i64>),
    /// The guard at this index failed; nothing was written.
    GuardFailed(u32),
}

/// The script's KEYS and ARGV for one transaction.
#[derive(Debug, Default)]
struct Encoded {
    /// Distinct namespaced keys, in first-use order.
    keys: Vec<Key>,
    /// Guards and operations, referring to keys by 1-based index.
    args: Vec<Value>,
    /// Where each caller key sits in `keys` (1-based, as Lua indexes).
    positions: HashMap<String, usize>,
}

impl Encoded {
    /// The 1-based index of `key` in KEYS, adding it on first use.
    fn key_index(&mut self, namespace: &Namespace, key: String) -> Value {
        let next = self.keys.len() + 1;
        let index = match self.positions.get(&key) {
            Some(&index) => index,
            None => {
                self.positions.insert(key.clone(), next);
                self.keys.push(namespace.key(key));
                next
            }
        };
        Value::Integer(index as i64)
    }

    /// The 1-based index of lock `name`'s key in KEYS, adding it on first use. Its position is
    /// remembered under a reserved-prefix name no caller key can have.
    fn lock_index(&mut self, namespace: &Namespace, name: &str) -> Value {
        let alias = format!("{INTERNAL_PREFIX}lock:{name}");
        let next = self.keys.len() + 1;
        let index = *self.positions.entry(alias).or_insert_with(|| {
            self.keys.push(namespace.lock_keys(name).lock);
            next
        });
        Value::Integer(index as i64)
    }

    fn push(&mut self, value: impl Into<Value>) {
        self.args.push(value.into());
    }

    fn encode(namespace: &Namespace, guards: Vec<Guard>, ops: Vec<Operation>) -> Self {
        let mut out = Self::default();
        out.push(guards.len() as i64);
        for guard in guards {
            let (kind, key_index, field, value) = match guard {
                Guard::Exists(key) => (
                    "exists",
                    out.key_index(namespace, key),
                    String::new(),
                    Value::from(""),
                ),
                Guard::Absent(key) => (
                    "absent",
                    out.key_index(namespace, key),
                    String::new(),
                    Value::from(""),
                ),
                Guard::ValueEquals { key, value } => (
                    "value_equals",
                    out.key_index(namespace, key),
                    String::new(),
                    Value::Bytes(value),
                ),
                Guard::HashFieldEquals { name, field, value } => (
                    "hash_field_equals",
                    out.key_index(namespace, name),
                    field,
                    Value::Bytes(value),
                ),
                Guard::HashFieldAtLeast { name, field, bound } => (
                    "hash_field_at_least",
                    out.key_index(namespace, name),
                    field,
                    Value::from(bound.to_string()),
                ),
                Guard::HashFieldAtMost { name, field, bound } => (
                    "hash_field_at_most",
                    out.key_index(namespace, name),
                    field,
                    Value::from(bound.to_string()),
                ),
                Guard::LockHeld { name, token } => (
                    "lock_held",
                    out.lock_index(namespace, &name),
                    String::new(),
                    Value::from(token),
                ),
            };
            out.push(kind);
            out.push(key_index);
            out.push(field);
            out.push(value);
        }
        out.push(ops.len() as i64);
        for op in ops {
            match op {
                Operation::Set { key, value, ttl_ms } => {
                    out.push("set");
                    let key_index = out.key_index(namespace, key);
                    out.push(key_index);
                    out.push(Value::Bytes(value));
                    out.push(ttl_ms.map(|ms| ms.to_string()).unwrap_or_default());
                }
                Operation::Delete(key) => {
                    out.push("delete");
                    let key_index = out.key_index(namespace, key);
                    out.push(key_index);
                }
                Operation::Expire { key, ttl_ms } => {
                    out.push("expire");
                    let key_index = out.key_index(namespace, key);
                    out.push(key_index);
                    out.push(ttl_ms.to_string());
                }
                Operation::IncrBy { key, delta } => {
                    out.push("incrby");
                    let key_index = out.key_index(namespace, key);
                    out.push(key_index);
                    out.push(delta.to_string());
                }
                Operation::HashSet { name, fields } => {
                    out.push("hset");
                    let key_index = out.key_index(namespace, name);
                    out.push(key_index);
                    out.push(fields.len() as i64);
                    for (field, value) in fields {
                        out.push(field);
                        out.push(Value::Bytes(value));
                    }
                }
                Operation::HashDelete { name, fields } => {
                    out.push("hdel");
                    let key_index = out.key_index(namespace, name);
                    out.push(key_index);
                    out.push(fields.len() as i64);
                    for field in fields {
                        out.push(field);
                    }
                }
                Operation::HashIncrBy { name, field, delta } => {
                    out.push("hincrby");
                    let key_index = out.key_index(namespace, name);
                    out.push(key_index);
                    out.push(field);
                    out.push(delta.to_string());
                }
            }
        }
        out
    }
}

impl Redis {
    /// Runs a transaction: if every guard holds, applies every operation, else nothing; one
    /// Lua script, so no other client sees a partial state. Every operation is checked
    /// against the data before anything is written, so a failing one changes nothing.
    pub async fn transaction(
        &self,
        call: &Call,
        guards: Vec<Guard>,
        ops: Vec<Operation>,
    ) -> Result<TransactionOutcome, Error> {
        let encoded = Encoded::encode(&call.namespace, guards, ops);
        let keys = encoded.keys;
        // All or nothing: one script, so one slot (lock guards included).
        self.one_slot("ops", &keys)?;
        let reply = self
            .eval(
                call,
                Idempotency::AtMostOnce,
                &KV_TRANSACTION,
                keys.clone(),
                encoded.args,
            )
            .await;
        self.forget_all(&keys);
        decode(reply?)
    }
}

/// Reads the script's reply: `{0, guard index}` or `{1, {results}}`.
fn decode(reply: Value) -> Result<TransactionOutcome, Error> {
    let mut parts = reply_array(reply)?.into_iter();
    let committed = parts.next().map(reply_i64).transpose()? == Some(1);
    let detail = parts
        .next()
        .ok_or_else(|| Error::Internal("transaction script replied without detail".into()))?;
    if !committed {
        let failed_guard = u32::try_from(reply_i64(detail)?)
            .map_err(|_| Error::Internal("transaction script sent a bad guard index".into()))?;
        return Ok(TransactionOutcome::GuardFailed(failed_guard));
    }
    let results = reply_array(detail)?
        .into_iter()
        .map(reply_i64)
        .collect::<Result<_, _>>()?;
    Ok(TransactionOutcome::Committed(results))
}
