//! Cursor scans (SCAN for KeyValue.Scan, HSCAN for Hash.Scan): one paging routine that runs the cursor to
//! its end and hands out full pages of plain items. The caller decides what a page becomes
//! (a gRPC message) and where it goes.

use std::future::Future;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Value};

use super::hashes::collect_field_pairs;
use super::{Call, Redis, on_node, reply_array};
use crate::error::{Error, Idempotency};

/// Smallest COUNT hint sent with each step.
const MIN_COUNT_HINT: usize = 100;

/// Turns the elements of one scan step into items, skipping what the caller may not see.
type Collect<T> = fn(&Call, Vec<Value>, &mut Vec<T>) -> Result<(), Error>;

/// One cursor scan to the end.
pub struct Scan<T> {
    /// The pool.
    redis: Redis,
    /// The call's deadline and namespace.
    call: Call,
    /// The command: SCAN, or HSCAN for a hash.
    command: &'static str,
    /// Arguments before the cursor: none for SCAN, the key for HSCAN.
    leading: Vec<Value>,
    /// Arguments after the cursor: MATCH, COUNT and filters.
    trailing: Vec<Value>,
    /// Most items per page.
    page_size: usize,
    /// Most bytes per page (the response limit): a page is sent early rather than exceed it.
    max_page_bytes: usize,
    /// Reads one step's elements.
    collect: Collect<T>,
    /// What an item weighs against `max_page_bytes`.
    weigh: fn(&T) -> usize,
}

impl Scan<String> {
    /// SCAN over the caller's namespace: keys matching the caller's `pattern` (confined to
    /// the namespace here), of `key_type` when given, stripped of the namespace; the
    /// gateway's internal keys are never returned.
    pub fn keys(
        redis: Redis,
        call: Call,
        pattern: &str,
        key_type: Option<String>,
        page_size: usize,
        max_page_bytes: usize,
    ) -> Self {
        let mut trailing = match_and_count(call.namespace.pattern(pattern), page_size);
        if let Some(key_type) = key_type {
            trailing.push(Value::from("TYPE"));
            trailing.push(Value::from(key_type));
        }
        Self {
            redis,
            call,
            command: "SCAN",
            leading: Vec::new(),
            trailing,
            page_size,
            max_page_bytes,
            collect: collect_keys,
            weigh: String::len,
        }
    }
}

impl Scan<(String, Bytes)> {
    /// HSCAN over hash `name`: fields matching `pattern`, with their values.
    pub fn hash_fields(
        redis: Redis,
        call: Call,
        name: String,
        pattern: &str,
        page_size: usize,
        max_page_bytes: usize,
    ) -> Self {
        let key = call.namespace.key(name);
        Self {
            redis,
            trailing: match_and_count(pattern.to_owned(), page_size),
            call,
            command: "HSCAN",
            leading: vec![Value::from(key)],
            page_size,
            max_page_bytes,
            collect: |_, raw, into| collect_field_pairs(raw, into),
            weigh: |(field, value)| field.len() + value.len(),
        }
    }
}

/// MATCH and COUNT arguments; a larger COUNT hint means fewer round trips when the pattern
/// matches sparsely.
fn match_and_count(pattern: String, page_size: usize) -> Vec<Value> {
    vec![
        Value::from("MATCH"),
        Value::from(pattern),
        Value::from("COUNT"),
        Value::Integer(page_size.max(MIN_COUNT_HINT) as i64),
    ]
}

/// Keys of one SCAN step, named as the caller knows them.
fn collect_keys(call: &Call, raw: Vec<Value>, into: &mut Vec<String>) -> Result<(), Error> {
    for key in raw {
        let key = key
            .into_bytes()
            .ok_or_else(|| Error::Internal("SCAN returned a non-string key".into()))?;
        if let Some(name) = call.namespace.strip(&key) {
            into.push(name.to_owned());
        }
    }
    Ok(())
}

impl<T> Scan<T> {
    /// Runs the cursor to its end, handing each full page (and the last, partial one) to
    /// `deliver`; a page is full at `page_size` items or before it would pass
    /// `max_page_bytes`. Stops early, without error, when `deliver` returns false (the reader
    /// left). A single item heavier than `max_page_bytes` is RESOURCE_EXHAUSTED.
    pub async fn run<F, Fut>(&self, mut deliver: F) -> Result<(), Error>
    where
        F: FnMut(Vec<T>) -> Fut,
        Fut: Future<Output = bool>,
    {
        // SCAN walks one node's keyspace: on a cluster, every primary's in turn, each cursor
        // sent back to the node that gave it. HSCAN's key picks its node.
        let nodes = if self.leading.is_empty() {
            self.redis.nodes()?
        } else {
            vec![None]
        };
        let mut page = Vec::with_capacity(self.page_size);
        let mut page_bytes = 0;
        let mut found = Vec::new();
        for node in &nodes {
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let (next_cursor, raw) = self.step(node.as_ref(), cursor).await?;
                (self.collect)(&self.call, raw, &mut found)?;
                for item in found.drain(..) {
                    let weight = (self.weigh)(&item);
                    if weight > self.max_page_bytes {
                        return Err(Error::ResourceExhausted(format!(
                            "{}: one item holds {weight} bytes, over the response limit of {} \
                         (GATEWAY_MAX_RESPONSE_BYTES)",
                            self.command, self.max_page_bytes
                        )));
                    }
                    let full =
                        page.len() == self.page_size || page_bytes + weight > self.max_page_bytes;
                    if full && !page.is_empty() {
                        if !deliver(std::mem::take(&mut page)).await {
                            return Ok(());
                        }
                        page_bytes = 0;
                    }
                    page_bytes += weight;
                    page.push(item);
                }
                if next_cursor.as_ref() == b"0" {
                    break;
                }
                cursor = next_cursor;
            }
        }
        if !page.is_empty() {
            deliver(page).await;
        }
        Ok(())
    }

    /// One step, on `node` when given: the next cursor and the elements it returned.
    async fn step(
        &self,
        node: Option<&Server>,
        cursor: Bytes,
    ) -> Result<(Bytes, Vec<Value>), Error> {
        let mut args = Vec::with_capacity(self.leading.len() + 1 + self.trailing.len());
        args.extend(self.leading.iter().cloned());
        args.push(Value::Bytes(cursor));
        args.extend(self.trailing.iter().cloned());
        let command = self.command;
        // SCAN names no key; HSCAN's key (the first leading argument) picks the node.
        let route = if self.leading.is_empty() {
            ClusterHash::Random
        } else {
            ClusterHash::FirstKey
        };
        let reply = self
            .redis
            .run(&self.call, Idempotency::Idempotent, |client| {
                let (args, route) = (args.clone(), route.clone());
                let client = on_node(client, node);
                async move {
                    client
                        .custom::<Value, Value>(
                            CustomCommand::new_static(command, route, false),
                            args,
                        )
                        .await
                }
            })
            .await?;
        let mut parts = reply_array(reply)?.into_iter();
        let next_cursor = parts
            .next()
            .and_then(Value::into_bytes)
            .ok_or_else(|| Error::Internal(format!("{command} replied without a cursor")))?;
        let raw = reply_array(parts.next().unwrap_or(Value::Null))?;
        Ok((next_cursor, raw))
    }
}
