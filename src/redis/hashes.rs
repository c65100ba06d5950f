//! Typed operations on Redis hashes, as the Hash service uses them: each takes the [`Call`],
//! the caller's hash name and plain field names and values, applies the namespace, and runs
//! one command or script.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Value};

use super::scripts::HASH_SET;
use super::{Call, Redis, reply_array, reply_bytes};
use crate::error::{Error, Idempotency};

/// What the hash operations expect a key to hold, for WRONGTYPE messages.
const HASH: &str = "hash";

impl Redis {
    /// HSET of `fields`; with `ttl_ms`, the hash's TTL is set in the same atomic step. Returns
    /// how many fields were new.
    pub async fn hash_set(
        &self,
        call: &Call,
        name: String,
        fields: Vec<(String, Bytes)>,
        ttl_ms: Option<u64>,
    ) -> Result<i64, Error> {
        let key = call.namespace.key(name);
        let mut args = Vec::with_capacity(fields.len() * 2 + 1);
        if let Some(ms) = ttl_ms {
            args.push(Value::from(ms.to_string()));
        }
        for (field, value) in fields {
            args.push(Value::from(field));
            args.push(Value::Bytes(value));
        }
        let added = match ttl_ms {
            Some(_) => {
                self.eval(
                    call,
                    Idempotency::AtMostOnce,
                    &HASH_SET,
                    vec![key.clone()],
                    args,
                )
                .await
            }
            None => {
                let mut command_args = Vec::with_capacity(args.len() + 1);
                command_args.push(Value::from(key.clone()));
                command_args.extend(args);
                self.run(call, Idempotency::AtMostOnce, |client| {
                    let args = command_args.clone();
                    async move {
                        client
                            .custom::<Value, Value>(
                                CustomCommand::new_static("HSET", ClusterHash::FirstKey, false),
                                args,
                            )
                            .await
                    }
                })
                .await
            }
        };
        // A new or emptied hash changes what KeyValue.Get answers for its key.
        self.near_cache.forget(key.as_bytes());
        let added = self.name_wrong_type(call, &key, HASH, added).await?;
        super::reply_i64(added)
    }

    /// HSETNX: whether the field was written (it did not exist).
    pub async fn hash_set_if_absent(
        &self,
        call: &Call,
        name: String,
        field: String,
        value: Bytes,
    ) -> Result<bool, Error> {
        let key = call.namespace.key(name);
        let written = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let (key, field, value) = (key.clone(), field.clone(), value.clone());
                async move { client.hsetnx::<i64, _, _, _>(key, field, value).await }
            })
            .await;
        // A new or emptied hash changes what KeyValue.Get answers for its key.
        self.near_cache.forget(key.as_bytes());
        Ok(self.name_wrong_type(call, &key, HASH, written).await? == 1)
    }

    /// HGET.
    pub async fn hash_get(
        &self,
        call: &Call,
        name: String,
        field: String,
    ) -> Result<Option<Bytes>, Error> {
        let key = call.namespace.key(name);
        let reply = self
            .run(call, Idempotency::Idempotent, |client| {
                let (key, field) = (key.clone(), field.clone());
                async move { client.hget::<Value, _, _>(key, field).await }
            })
            .await;
        reply_bytes(self.name_wrong_type(call, &key, HASH, reply).await?)
    }

    /// HMGET, one entry per field in order.
    pub async fn hash_get_many(
        &self,
        call: &Call,
        name: String,
        fields: Vec<String>,
    ) -> Result<Vec<Option<Bytes>>, Error> {
        let key = call.namespace.key(name);
        let reply = self
            .run(call, Idempotency::Idempotent, |client| {
                let (key, fields) = (key.clone(), fields.clone());
                async move { client.hmget::<Value, _, _>(key, fields).await }
            })
            .await;
        reply_array(self.name_wrong_type(call, &key, HASH, reply).await?)?
            .into_iter()
            .map(reply_bytes)
            .collect()
    }

    /// HGETALL: every field whose name is UTF-8 (the API's field names are strings, so others
    /// could not be named back), with its value.
    pub async fn hash_get_all(
        &self,
        call: &Call,
        name: String,
    ) -> Result<Vec<(String, Bytes)>, Error> {
        let key = call.namespace.key(name);
        let reply = self.hgetall_pairs(call, &key).await;
        let mut fields = Vec::new();
        collect_field_pairs(
            reply_array(self.name_wrong_type(call, &key, HASH, reply).await?)?,
            &mut fields,
        )?;
        Ok(fields)
    }

    /// HDEL: how many of `fields` were removed.
    pub async fn hash_delete(
        &self,
        call: &Call,
        name: String,
        fields: Vec<String>,
    ) -> Result<i64, Error> {
        let key = call.namespace.key(name);
        let deleted = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let (key, fields) = (key.clone(), fields.clone());
                async move { client.hdel::<i64, _, _>(key, fields).await }
            })
            .await;
        // A new or emptied hash changes what KeyValue.Get answers for its key.
        self.near_cache.forget(key.as_bytes());
        self.name_wrong_type(call, &key, HASH, deleted).await
    }

    /// HEXISTS.
    pub async fn hash_exists(
        &self,
        call: &Call,
        name: String,
        field: String,
    ) -> Result<bool, Error> {
        let key = call.namespace.key(name);
        let exists = self
            .run(call, Idempotency::Idempotent, |client| {
                let (key, field) = (key.clone(), field.clone());
                async move { client.hexists::<i64, _, _>(key, field).await }
            })
            .await;
        Ok(self.name_wrong_type(call, &key, HASH, exists).await? == 1)
    }

    /// HLEN (0 for a missing hash).
    pub async fn hash_len(&self, call: &Call, name: String) -> Result<i64, Error> {
        let key = call.namespace.key(name);
        let len = self
            .run(call, Idempotency::Idempotent, |client| {
                let key = key.clone();
                async move { client.hlen::<i64, _>(key).await }
            })
            .await;
        self.name_wrong_type(call, &key, HASH, len).await
    }

    /// HINCRBY.
    pub async fn hash_increment(
        &self,
        call: &Call,
        name: String,
        field: String,
        delta: i64,
    ) -> Result<i64, Error> {
        let key = call.namespace.key(name);
        let value = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let (key, field) = (key.clone(), field.clone());
                async move { client.hincrby::<i64, _, _>(key, field, delta).await }
            })
            .await;
        // A new or emptied hash changes what KeyValue.Get answers for its key.
        self.near_cache.forget(key.as_bytes());
        self.name_wrong_type(call, &key, HASH, value).await
    }

    /// HINCRBYFLOAT.
    pub async fn hash_increment_float(
        &self,
        call: &Call,
        name: String,
        field: String,
        delta: f64,
    ) -> Result<f64, Error> {
        let key = call.namespace.key(name);
        let value = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let (key, field) = (key.clone(), field.clone());
                async move { client.hincrbyfloat::<f64, _, _>(key, field, delta).await }
            })
            .await;
        // A new or emptied hash changes what KeyValue.Get answers for its key.
        self.near_cache.forget(key.as_bytes());
        self.name_wrong_type(call, &key, HASH, value).await
    }
}

impl Redis {
    /// HGETALL as the flat `field, value, ...` array Redis sends (fred's typed `hgetall`
    /// would fold it into a map).
    pub(super) async fn hgetall_pairs(&self, call: &Call, key: &Key) -> Result<Value, Error> {
        self.run(call, Idempotency::Idempotent, |client| {
            let key = key.clone();
            async move {
                client
                    .custom::<Value, Value>(
                        CustomCommand::new_static("HGETALL", ClusterHash::FirstKey, false),
                        vec![Value::from(key)],
                    )
                    .await
            }
        })
        .await
    }
}

/// Field/value pairs of an HGETALL or HSCAN reply (`field, value, field, value, ...`); fields
/// that are not UTF-8 are skipped.
pub(super) fn collect_field_pairs(
    raw: Vec<Value>,
    into: &mut Vec<(String, Bytes)>,
) -> Result<(), Error> {
    let mut items = raw.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        let field = field
            .into_bytes()
            .ok_or_else(|| Error::Internal("a hash reply held a non-string field".into()))?;
        let value = reply_bytes(value)?.unwrap_or_default();
        if let Ok(field) = String::from_utf8(field.to_vec()) {
            into.push((field, value));
        }
    }
    Ok(())
}
