//! KeyValue.Scan's Redis side: SCAN with MATCH/COUNT/TYPE to the end of the keyspace, keys
//! stripped of the caller's namespace and streamed in pages.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Value};
use tokio::sync::mpsc;
use tonic::Status;

use super::{Call, Redis, reply_array};
use crate::error::{Error, Idempotency};
use crate::pb;

/// Smallest COUNT hint sent with SCAN.
const MIN_COUNT_HINT: usize = 100;

/// One running KeyValue.Scan.
pub struct KeyScan {
    /// The pool.
    pub redis: Redis,
    /// The call's deadline and namespace.
    pub call: Call,
    /// MATCH pattern, already confined to the namespace.
    pub match_pattern: String,
    /// Keys per streamed page.
    pub page_size: usize,
    /// TYPE filter, or empty.
    pub key_type: String,
}

impl KeyScan {
    /// Runs SCAN to the end of the keyspace, sending full pages as they fill. Returns early,
    /// without error, when the client goes away.
    pub async fn stream_to(
        &self,
        pages: &mpsc::Sender<Result<pb::ScanResponse, Status>>,
    ) -> Result<(), Error> {
        let mut cursor = Bytes::from_static(b"0");
        let mut page = Vec::with_capacity(self.page_size);
        loop {
            let (next_cursor, keys) = self.scan_once(cursor).await?;
            for key in keys {
                let key = key
                    .into_bytes()
                    .ok_or_else(|| Error::Internal("SCAN returned a non-string key".into()))?;
                if let Some(name) = self.call.namespace.strip(&key) {
                    page.push(name.to_owned());
                }
                if page.len() == self.page_size {
                    let full = std::mem::replace(&mut page, Vec::with_capacity(self.page_size));
                    if pages
                        .send(Ok(pb::ScanResponse { keys: full }))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            if next_cursor.as_ref() == b"0" {
                break;
            }
            cursor = next_cursor;
        }
        if !page.is_empty() {
            let _ = pages.send(Ok(pb::ScanResponse { keys: page })).await;
        }
        Ok(())
    }

    /// One SCAN step: the next cursor and the keys it returned.
    async fn scan_once(&self, cursor: Bytes) -> Result<(Bytes, Vec<Value>), Error> {
        let mut args = vec![
            Value::Bytes(cursor),
            Value::from("MATCH"),
            Value::from(self.match_pattern.as_str()),
            Value::from("COUNT"),
            // A larger hint means fewer round trips when the pattern matches sparsely.
            Value::Integer(self.page_size.max(MIN_COUNT_HINT) as i64),
        ];
        if !self.key_type.is_empty() {
            args.push(Value::from("TYPE"));
            args.push(Value::from(self.key_type.as_str()));
        }
        let reply = self
            .redis
            .run(&self.call, Idempotency::Idempotent, |client| {
                let args = args.clone();
                async move {
                    client
                        .custom::<Value, Value>(
                            CustomCommand::new_static("SCAN", ClusterHash::Random, false),
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
            .ok_or_else(|| Error::Internal("SCAN replied without a cursor".into()))?;
        let keys = reply_array(parts.next().unwrap_or(Value::Null))?;
        Ok((next_cursor, keys))
    }
}
