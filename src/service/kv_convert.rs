//! KeyValue's messages to and from the Redis layer's plain values: enums, TTL states, and
//! the validation of a Transaction's guards and operations (every field named by its path).

use crate::error::Error;
use crate::limits::Limits;
use crate::pb::transaction_guard::Guard as PbGuard;
use crate::pb::transaction_operation::Op as PbOp;
use crate::pb::{self, ttl_status};
use crate::redis::strings::{ExpireCondition, SetCondition, TtlState};
use crate::redis::transaction::{Guard, Operation, TransactionOutcome};

/// Rejects an enum number the client's stubs know but this server does not.
pub fn unknown_enum(field: &str, number: i32) -> Error {
    Error::invalid(field, format!("has unknown value {number}"))
}

/// A TTL state as the API reports it.
pub fn ttl_status(state: TtlState) -> pb::TtlStatus {
    let (state, ttl) = match state {
        TtlState::Missing => (ttl_status::State::Missing, None),
        TtlState::Persistent => (ttl_status::State::Persistent, None),
        TtlState::Expiring(left) => (
            ttl_status::State::Expiring,
            Some(prost_types::Duration {
                seconds: left.as_secs() as i64,
                nanos: left.subsec_nanos() as i32,
            }),
        ),
    };
    pb::TtlStatus {
        state: state.into(),
        ttl,
    }
}

/// Set's `condition`.
pub fn set_condition(number: i32) -> Result<SetCondition, Error> {
    use pb::key_value_set_request::Condition;
    Ok(
        match Condition::try_from(number).map_err(|_| unknown_enum("condition", number))? {
            Condition::Unspecified | Condition::Always => SetCondition::Always,
            Condition::IfAbsent => SetCondition::IfAbsent,
            Condition::IfPresent => SetCondition::IfPresent,
        },
    )
}

/// Expire's `condition`.
pub fn expire_condition(number: i32) -> Result<ExpireCondition, Error> {
    use pb::key_value_expire_request::Condition;
    Ok(
        match Condition::try_from(number).map_err(|_| unknown_enum("condition", number))? {
            Condition::Unspecified | Condition::Always => ExpireCondition::Always,
            Condition::IfNoTtl => ExpireCondition::IfNoTtl,
            Condition::IfHasTtl => ExpireCondition::IfHasTtl,
            Condition::IfGreater => ExpireCondition::IfGreater,
            Condition::IfLess => ExpireCondition::IfLess,
        },
    )
}

/// A Transaction request's guards and operations, validated against `limits`.
pub fn transaction(
    request: pb::KeyValueTransactionRequest,
    limits: &Limits,
) -> Result<(Vec<Guard>, Vec<Operation>), Error> {
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
    let guards = request
        .guards
        .into_iter()
        .enumerate()
        .map(|(index, guard)| self::guard(&format!("guards[{index}]"), guard.guard, limits))
        .collect::<Result<_, _>>()?;
    let ops = request
        .ops
        .into_iter()
        .enumerate()
        .map(|(index, op)| operation(&format!("ops[{index}]"), op.op, limits))
        .collect::<Result<_, _>>()?;
    Ok((guards, ops))
}

fn guard(path: &str, guard: Option<PbGuard>, limits: &Limits) -> Result<Guard, Error> {
    let Some(guard) = guard else {
        return Err(Error::invalid(
            path,
            "sets no condition; set one of exists, absent, value_equals, hash_field_equals, \
             hash_field_at_least, hash_field_at_most, lock_held",
        ));
    };
    let hash_field = |kind: &str, name: &str, field: &str| -> Result<(), Error> {
        limits.key(&format!("{path}.{kind}.name"), name)?;
        limits.name(&format!("{path}.{kind}.field"), field)
    };
    Ok(match guard {
        PbGuard::Exists(exists) => {
            limits.key(&format!("{path}.exists.key"), &exists.key)?;
            Guard::Exists(exists.key)
        }
        PbGuard::Absent(absent) => {
            limits.key(&format!("{path}.absent.key"), &absent.key)?;
            Guard::Absent(absent.key)
        }
        PbGuard::ValueEquals(equals) => {
            limits.key(&format!("{path}.value_equals.key"), &equals.key)?;
            limits.value(&format!("{path}.value_equals.value"), &equals.value)?;
            Guard::ValueEquals {
                key: equals.key,
                value: equals.value,
            }
        }
        PbGuard::HashFieldEquals(equals) => {
            hash_field("hash_field_equals", &equals.name, &equals.field)?;
            limits.value(&format!("{path}.hash_field_equals.value"), &equals.value)?;
            Guard::HashFieldEquals {
                name: equals.name,
                field: equals.field,
                value: equals.value,
            }
        }
        PbGuard::HashFieldAtLeast(bound) => {
            hash_field("hash_field_at_least", &bound.name, &bound.field)?;
            Guard::HashFieldAtLeast {
                name: bound.name,
                field: bound.field,
                bound: bound.value,
            }
        }
        PbGuard::HashFieldAtMost(bound) => {
            hash_field("hash_field_at_most", &bound.name, &bound.field)?;
            Guard::HashFieldAtMost {
                name: bound.name,
                field: bound.field,
                bound: bound.value,
            }
        }
        PbGuard::LockHeld(held) => {
            limits.name(&format!("{path}.lock_held.name"), &held.name)?;
            super::lock::token(&format!("{path}.lock_held.token"), &held.token)?;
            Guard::LockHeld {
                name: held.name,
                token: held.token,
            }
        }
    })
}

fn operation(path: &str, op: Option<PbOp>, limits: &Limits) -> Result<Operation, Error> {
    let Some(op) = op else {
        return Err(Error::invalid(
            path,
            "sets no operation; set one of set, delete, expire, incrby, hset, hdel, hincrby",
        ));
    };
    Ok(match op {
        PbOp::Set(set) => {
            limits.key(&format!("{path}.set.key"), &set.key)?;
            limits.value(&format!("{path}.set.value"), &set.value)?;
            let ttl_ms = limits.ttl(&format!("{path}.set.ttl"), set.ttl.as_ref())?;
            Operation::Set {
                key: set.key,
                value: set.value,
                ttl_ms,
            }
        }
        PbOp::Delete(delete) => {
            limits.key(&format!("{path}.delete.key"), &delete.key)?;
            Operation::Delete(delete.key)
        }
        PbOp::Expire(expire) => {
            limits.key(&format!("{path}.expire.key"), &expire.key)?;
            let ttl_ms = limits.required_ttl(&format!("{path}.expire.ttl"), expire.ttl.as_ref())?;
            Operation::Expire {
                key: expire.key,
                ttl_ms,
            }
        }
        PbOp::Incrby(incr) => {
            limits.key(&format!("{path}.incrby.key"), &incr.key)?;
            Operation::IncrBy {
                key: incr.key,
                delta: incr.delta,
            }
        }
        PbOp::Hset(hset) => {
            limits.key(&format!("{path}.hset.name"), &hset.name)?;
            limits.batch(&format!("{path}.hset.fields"), hset.fields.len())?;
            let mut fields = Vec::with_capacity(hset.fields.len());
            for (name, value) in hset.fields {
                limits.name(&format!("{path}.hset.fields"), &name)?;
                limits.value(&format!("{path}.hset.fields[{name}]"), &value)?;
                fields.push((name, value));
            }
            Operation::HashSet {
                name: hset.name,
                fields,
            }
        }
        PbOp::Hdel(hdel) => {
            limits.key(&format!("{path}.hdel.name"), &hdel.name)?;
            limits.names(&format!("{path}.hdel.fields"), &hdel.fields)?;
            Operation::HashDelete {
                name: hdel.name,
                fields: hdel.fields,
            }
        }
        PbOp::Hincrby(hincr) => {
            limits.key(&format!("{path}.hincrby.name"), &hincr.name)?;
            limits.name(&format!("{path}.hincrby.field"), &hincr.field)?;
            Operation::HashIncrBy {
                name: hincr.name,
                field: hincr.field,
                delta: hincr.delta,
            }
        }
    })
}

/// A transaction's outcome as the API reports it.
pub fn transaction_response(outcome: TransactionOutcome) -> pb::KeyValueTransactionResponse {
    match outcome {
        TransactionOutcome::Committed(results) => pb::KeyValueTransactionResponse {
            committed: true,
            failed_guard: None,
            results: results
                .into_iter()
                .map(|value| pb::TransactionOperationResult { value })
                .collect(),
        },
        TransactionOutcome::GuardFailed(index) => pb::KeyValueTransactionResponse {
            committed: false,
            failed_guard: Some(index),
            results: Vec::new(),
        },
    }
}
