//! KeyValue.Transaction: validates a request and encodes it for `kv_transaction.lua`, and reads
//! the script's reply back. The wire format is described at the top of the script.

use std::collections::HashMap;

use fred::types::{Key, Value};

use super::keys::Namespace;
use super::{reply_array, reply_i64};
use crate::error::Error;
use crate::limits::Limits;
use crate::pb::transaction_guard::Guard;
use crate::pb::transaction_operation::Op;
use crate::pb::{TransactionOperationResult, TransactionRequest, TransactionResponse};

/// The script's KEYS and ARGV for one transaction.
#[derive(Debug, Default)]
pub struct EncodedTransaction {
    /// Distinct namespaced keys, in first-use order.
    pub keys: Vec<Key>,
    /// Guards and operations, referring to keys by 1-based index.
    pub args: Vec<Value>,
    /// Where each caller key sits in `keys` (1-based, as Lua indexes).
    positions: HashMap<String, usize>,
}

impl EncodedTransaction {
    /// The 1-based index of `key` in KEYS, adding it on first use.
    fn key_index(&mut self, namespace: &Namespace, key: &str) -> Value {
        let next = self.keys.len() + 1;
        let index = *self.positions.entry(key.to_owned()).or_insert(next);
        if index == next {
            self.keys.push(namespace.key(key));
        }
        Value::Integer(index as i64)
    }

    fn push(&mut self, value: impl Into<Value>) {
        self.args.push(value.into());
    }
}

/// Validates `request` against `limits` and encodes it for the script.
pub fn encode(
    request: &TransactionRequest,
    namespace: &Namespace,
    limits: &Limits,
) -> Result<EncodedTransaction, Error> {
    limits.batch("ops", request.ops.len())?;
    let steps = request.guards.len() + request.ops.len();
    if steps > limits.max_batch_items {
        return Err(Error::invalid(
            "guards",
            format!(
                "guards and ops together are {steps}; the limit is {} (GATEWAY_MAX_BATCH_ITEMS)",
                limits.max_batch_items
            ),
        ));
    }
    let mut out = EncodedTransaction::default();

    out.push(request.guards.len() as i64);
    for (index, guard) in request.guards.iter().enumerate() {
        let field = format!("guards[{index}]");
        let Some(guard) = &guard.guard else {
            return Err(Error::invalid(
                field,
                "sets no condition; set one of exists, absent, value_equals, hash_field_equals, \
                 hash_field_at_least, hash_field_at_most",
            ));
        };
        let (kind, key, hash_field, value): (&str, &str, &str, Value) = match guard {
            Guard::Exists(exists) => ("exists", &exists.key, "", Value::from("")),
            Guard::Absent(absent) => ("absent", &absent.key, "", Value::from("")),
            Guard::ValueEquals(equals) => {
                limits.value(&format!("{field}.value_equals.value"), &equals.value)?;
                (
                    "value_equals",
                    &equals.key,
                    "",
                    Value::Bytes(equals.value.clone()),
                )
            }
            Guard::HashFieldEquals(equals) => {
                limits.value(&format!("{field}.hash_field_equals.value"), &equals.value)?;
                (
                    "hash_field_equals",
                    &equals.name,
                    &equals.field,
                    Value::Bytes(equals.value.clone()),
                )
            }
            Guard::HashFieldAtLeast(bound) => (
                "hash_field_at_least",
                &bound.name,
                &bound.field,
                Value::from(bound.value.to_string()),
            ),
            Guard::HashFieldAtMost(bound) => (
                "hash_field_at_most",
                &bound.name,
                &bound.field,
                Value::from(bound.value.to_string()),
            ),
        };
        let key_field = match guard {
            Guard::Exists(_) | Guard::Absent(_) | Guard::ValueEquals(_) => "key",
            _ => "name",
        };
        limits.key(&format!("{field}.{kind}.{key_field}"), key)?;
        if key_field == "name" && hash_field.is_empty() {
            return Err(Error::invalid(
                format!("{field}.{kind}.field"),
                "must not be empty",
            ));
        }
        out.push(kind);
        let key_index = out.key_index(namespace, key);
        out.push(key_index);
        out.push(hash_field);
        out.push(value);
    }

    out.push(request.ops.len() as i64);
    for (index, op) in request.ops.iter().enumerate() {
        let field = format!("ops[{index}]");
        let Some(op) = &op.op else {
            return Err(Error::invalid(
                field,
                "sets no operation; set one of set, delete, expire, incrby, hset, hdel, hincrby",
            ));
        };
        match op {
            Op::Set(set) => {
                limits.key(&format!("{field}.set.key"), &set.key)?;
                limits.value(&format!("{field}.set.value"), &set.value)?;
                let ttl = limits.ttl(&format!("{field}.set.ttl"), set.ttl.as_ref())?;
                out.push("set");
                let key_index = out.key_index(namespace, &set.key);
                out.push(key_index);
                out.push(Value::Bytes(set.value.clone()));
                out.push(ttl.map(|ms| ms.to_string()).unwrap_or_default());
            }
            Op::Delete(delete) => {
                limits.key(&format!("{field}.delete.key"), &delete.key)?;
                out.push("delete");
                let key_index = out.key_index(namespace, &delete.key);
                out.push(key_index);
            }
            Op::Expire(expire) => {
                limits.key(&format!("{field}.expire.key"), &expire.key)?;
                let ttl =
                    limits.required_ttl(&format!("{field}.expire.ttl"), expire.ttl.as_ref())?;
                out.push("expire");
                let key_index = out.key_index(namespace, &expire.key);
                out.push(key_index);
                out.push(ttl.to_string());
            }
            Op::Incrby(incr) => {
                limits.key(&format!("{field}.incrby.key"), &incr.key)?;
                out.push("incrby");
                let key_index = out.key_index(namespace, &incr.key);
                out.push(key_index);
                out.push(incr.delta.to_string());
            }
            Op::Hset(hset) => {
                limits.key(&format!("{field}.hset.name"), &hset.name)?;
                limits.batch(&format!("{field}.hset.fields"), hset.fields.len())?;
                out.push("hset");
                let key_index = out.key_index(namespace, &hset.name);
                out.push(key_index);
                out.push(hset.fields.len() as i64);
                for (name, value) in &hset.fields {
                    limits.key(&format!("{field}.hset.fields"), name)?;
                    limits.value(&format!("{field}.hset.fields[{name}]"), value)?;
                    out.push(name.as_str());
                    out.push(Value::Bytes(value.clone()));
                }
            }
            Op::Hdel(hdel) => {
                limits.key(&format!("{field}.hdel.name"), &hdel.name)?;
                limits.keys(&format!("{field}.hdel.fields"), &hdel.fields)?;
                out.push("hdel");
                let key_index = out.key_index(namespace, &hdel.name);
                out.push(key_index);
                out.push(hdel.fields.len() as i64);
                for name in &hdel.fields {
                    out.push(name.as_str());
                }
            }
            Op::Hincrby(hincr) => {
                limits.key(&format!("{field}.hincrby.name"), &hincr.name)?;
                limits.key(&format!("{field}.hincrby.field"), &hincr.field)?;
                out.push("hincrby");
                let key_index = out.key_index(namespace, &hincr.name);
                out.push(key_index);
                out.push(hincr.field.as_str());
                out.push(hincr.delta.to_string());
            }
        }
    }
    Ok(out)
}

/// Reads the script's reply: `{0, guard index}` or `{1, {results}}`.
pub fn decode(reply: Value) -> Result<TransactionResponse, Error> {
    let mut parts = reply_array(reply)?.into_iter();
    let committed = parts.next().map(reply_i64).transpose()? == Some(1);
    let detail = parts
        .next()
        .ok_or_else(|| Error::Internal("transaction script replied without detail".into()))?;
    if !committed {
        let failed_guard = u32::try_from(reply_i64(detail)?)
            .map_err(|_| Error::Internal("transaction script sent a bad guard index".into()))?;
        return Ok(TransactionResponse {
            committed: false,
            failed_guard: Some(failed_guard),
            results: Vec::new(),
        });
    }
    let results = reply_array(detail)?
        .into_iter()
        .map(|value| reply_i64(value).map(|value| TransactionOperationResult { value }))
        .collect::<Result<_, _>>()?;
    Ok(TransactionResponse {
        committed: true,
        failed_guard: None,
        results,
    })
}
