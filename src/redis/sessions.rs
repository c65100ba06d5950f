//! Typed operations on sessions, as the Session service uses them. The storage layout (a hash
//! per session, a sorted-set index per bucket of users) is described in `lua/session.lua`;
//! key names come from [`super::keys`]. Every operation is one run of that script, so each is
//! atomic, and all keys it touches share one Cluster slot. Operations that give a bucket a new
//! deadline or record an ending then mark the bucket in the due index that the endings
//! sweeper follows ([`super::session_endings`]).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fred::prelude::*;
use fred::types::Value;

use super::keys::{session_tag, session_tag_of};
use super::scripts::SESSION;
use super::{Call, Redis, reply_array, reply_i64};
use crate::error::{Error, Idempotency};

/// Random bytes in a session id: 192 bits.
const ID_RANDOM_BYTES: usize = 24;
/// Characters in a session id: the 4-hex-digit tag, then the random part in URL-safe base64.
pub const SESSION_ID_LEN: usize = 4 + ID_RANDOM_BYTES * 4 / 3;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its id.
    pub id: String,
    /// The owning user.
    pub user_id: String,
    /// Application data.
    pub data: Vec<(String, String)>,
    /// Creation time, ms since the epoch (Redis' clock).
    pub created_ms: i64,
    /// Last access, ms since the epoch.
    pub accessed_ms: i64,
    /// Expiry unless accessed again, ms since the epoch.
    pub expires_ms: i64,
    /// Grows by one on every write.
    pub version: u64,
}

/// How an Update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Applied; the session as it is now.
    Updated(SessionRecord),
    /// `expected_version` did not match; nothing changed.
    VersionMismatch {
        /// The session's version.
        current: u64,
    },
    /// No such session (never existed, expired or deleted).
    Missing,
}

/// A fresh session id for `user_id`: its user's tag, then 192 bits from rand's thread-local
/// CSPRNG (ChaCha12, seeded from the operating system's and reseeded as it goes) in URL-safe
/// base64. Never derived from the user id beyond the 16-bit tag, nor from the clock.
pub fn new_session_id(user_id: &str) -> String {
    let random: [u8; ID_RANDOM_BYTES] = rand::random();
    let mut id = session_tag(user_id);
    URL_SAFE_NO_PAD.encode_string(random, &mut id);
    id
}

/// Whether `id` has the shape of a session id (the API refuses others before touching Redis).
pub fn is_session_id(id: &str) -> bool {
    id.len() == SESSION_ID_LEN
        && id[..4]
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        && id[4..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Reads a session hash (HGETALL pairs) into a record.
fn parse_record(id: String, raw: Value) -> Result<Option<SessionRecord>, Error> {
    let items = reply_array(raw)?;
    if items.is_empty() {
        return Ok(None);
    }
    let mut record = SessionRecord {
        id,
        user_id: String::new(),
        data: Vec::new(),
        created_ms: 0,
        accessed_ms: 0,
        expires_ms: 0,
        version: 0,
    };
    let text = |value: Value| -> Result<String, Error> {
        let bytes = value
            .into_bytes()
            .ok_or_else(|| Error::Internal("a session field is not a string".into()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut items = items.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        let field = text(field)?;
        if let Some(name) = field.strip_prefix("d:") {
            record.data.push((name.to_owned(), text(value)?));
            continue;
        }
        match field.as_str() {
            "m:user" => record.user_id = text(value)?,
            "m:created" => record.created_ms = reply_i64(value)?,
            "m:accessed" => record.accessed_ms = reply_i64(value)?,
            "m:expires" => record.expires_ms = reply_i64(value)?,
            "m:version" => record.version = reply_i64(value)?.max(0) as u64,
            _ => {}
        }
    }
    Ok(Some(record))
}

/// KEYS of an operation on one session: the session, its bucket's index and ended set.
fn session_keys(call: &Call, id: &str) -> Vec<Key> {
    let tag = session_tag_of(id);
    vec![
        call.namespace.session_key(id),
        call.namespace.session_bucket(tag),
        call.namespace.session_ended(tag),
    ]
}

fn millis(duration: Duration) -> Value {
    Value::from(duration.as_millis().to_string())
}

impl Redis {
    /// Runs one operation of the session script.
    async fn session_op(
        &self,
        call: &Call,
        idempotency: Idempotency,
        keys: Vec<Key>,
        args: Vec<Value>,
    ) -> Result<Value, Error> {
        self.eval(call, idempotency, &SESSION, keys, args).await
    }

    /// Creates a session for `user_id` with `data`, expiring `idle` after its last access and
    /// at most `absolute` after creation.
    pub async fn session_create(
        &self,
        call: &Call,
        user_id: String,
        data: Vec<(String, String)>,
        idle: Duration,
        absolute: Option<Duration>,
    ) -> Result<SessionRecord, Error> {
        let id = new_session_id(&user_id);
        let mut args = Vec::with_capacity(5 + data.len() * 2);
        args.push(Value::from("create"));
        args.push(Value::from(id.as_str()));
        args.push(Value::from(user_id));
        args.push(millis(idle));
        args.push(absolute.map_or_else(|| Value::from("0"), millis));
        for (name, value) in data {
            args.push(Value::from(name));
            args.push(Value::from(value));
        }
        // The id begins with the user's tag, so its keys are the user's bucket's.
        let keys = session_keys(call, &id);
        let reply = self
            .session_op(call, Idempotency::AtMostOnce, keys, args)
            .await?;
        let record = parse_record(id, reply)?
            .ok_or_else(|| Error::Internal("a created session read back empty".into()))?;
        self.session_due_mark(call, session_tag_of(&record.id), record.expires_ms)
            .await;
        Ok(record)
    }

    /// Reads a session; with `touch`, slides its idle expiry in the same step.
    pub async fn session_get(
        &self,
        call: &Call,
        id: String,
        touch: bool,
    ) -> Result<Option<SessionRecord>, Error> {
        let reply = if touch {
            let args = vec![Value::from("get"), Value::from(id.as_str())];
            self.session_op(call, Idempotency::AtMostOnce, session_keys(call, &id), args)
                .await?
        } else {
            self.hgetall_pairs(call, &call.namespace.session_key(&id))
                .await?
        };
        if reply.is_null() {
            return Ok(None);
        }
        parse_record(id, reply)
    }

    /// Slides a session's idle expiry; its new expiry (ms since the epoch), or `None` when
    /// the session is gone.
    pub async fn session_touch(&self, call: &Call, id: String) -> Result<Option<i64>, Error> {
        let keys = session_keys(call, &id);
        let args = vec![Value::from("touch"), Value::from(id)];
        let reply = self
            .session_op(call, Idempotency::AtMostOnce, keys, args)
            .await?;
        if reply.is_null() {
            return Ok(None);
        }
        reply_i64(reply).map(Some)
    }

    /// Removes `remove`, then writes `set`, in one step that also slides the idle expiry;
    /// only when the version is `expected_version` if that is given.
    pub async fn session_update(
        &self,
        call: &Call,
        id: String,
        set: Vec<(String, String)>,
        remove: Vec<String>,
        expected_version: Option<u64>,
    ) -> Result<UpdateOutcome, Error> {
        let keys = session_keys(call, &id);
        let mut args = Vec::with_capacity(4 + remove.len() + set.len() * 2);
        args.push(Value::from("update"));
        args.push(Value::from(id.as_str()));
        args.push(Value::from(
            expected_version
                .map(|version| version.to_string())
                .unwrap_or_default(),
        ));
        args.push(Value::from(remove.len().to_string()));
        args.extend(remove.into_iter().map(Value::from));
        for (name, value) in set {
            args.push(Value::from(name));
            args.push(Value::from(value));
        }
        let reply = self
            .session_op(call, Idempotency::AtMostOnce, keys, args)
            .await?;
        if reply.is_null() {
            return Ok(UpdateOutcome::Missing);
        }
        let mut parts = reply_array(reply)?.into_iter();
        let status = parts
            .next()
            .and_then(Value::into_string)
            .unwrap_or_default();
        let detail = parts.next().unwrap_or(Value::Null);
        match status.as_str() {
            "ok" => Ok(
                parse_record(id, detail)?.map_or(UpdateOutcome::Missing, UpdateOutcome::Updated)
            ),
            "conflict" => Ok(UpdateOutcome::VersionMismatch {
                current: reply_i64(detail)?.max(0) as u64,
            }),
            other => Err(Error::Internal(format!("session update replied {other:?}"))),
        }
    }

    /// Moves a session to a fresh id (same user, data and absolute deadline); the old id is
    /// gone in the same step. `None` when the session is gone.
    pub async fn session_rotate(
        &self,
        call: &Call,
        id: String,
    ) -> Result<Option<SessionRecord>, Error> {
        let tag = session_tag_of(&id).to_owned();
        // The same tag as the old id: the user, and so the slot, do not change.
        let mut new_id = new_session_id("");
        new_id.replace_range(..4, &tag);
        let keys = vec![
            call.namespace.session_key(&id),
            call.namespace.session_key(&new_id),
            call.namespace.session_bucket(&tag),
            call.namespace.session_ended(&tag),
        ];
        let args = vec![
            Value::from("rotate"),
            Value::from(id),
            Value::from(new_id.as_str()),
        ];
        let reply = self
            .session_op(call, Idempotency::AtMostOnce, keys, args)
            .await?;
        if reply.is_null() {
            return Ok(None);
        }
        // The old id's ending is due now; the new id's deadline is the old one's or later.
        self.session_due_mark(call, &tag, 0).await;
        parse_record(new_id, reply)
    }

    /// Deletes a session; whether it existed.
    pub async fn session_delete(&self, call: &Call, id: String) -> Result<bool, Error> {
        let keys = session_keys(call, &id);
        let tag = session_tag_of(&id).to_owned();
        let args = vec![Value::from("delete"), Value::from(id)];
        let reply = self
            .session_op(call, Idempotency::AtMostOnce, keys, args)
            .await?;
        let deleted = reply_i64(reply)? == 1;
        if deleted {
            self.session_due_mark(call, &tag, 0).await;
        }
        Ok(deleted)
    }

    /// Runs a per-user operation (`list` or `delete_user`) on the user's bucket.
    async fn session_user_op(
        &self,
        call: &Call,
        op: &str,
        user_id: String,
    ) -> Result<Value, Error> {
        let tag = session_tag(&user_id);
        let args = vec![
            Value::from(op),
            Value::from(user_id),
            Value::from(call.namespace.session_key_prefix(&tag)),
        ];
        let keys = vec![
            call.namespace.session_bucket(&tag),
            call.namespace.session_ended(&tag),
        ];
        // Expired members that both move to the ended set are already due by their deadlines.
        self.session_op(call, Idempotency::AtMostOnce, keys, args)
            .await
    }

    /// A user's live sessions, dropping ended ones from the index.
    pub async fn session_list(
        &self,
        call: &Call,
        user_id: String,
    ) -> Result<Vec<SessionRecord>, Error> {
        let reply = self.session_user_op(call, "list", user_id).await?;
        let mut sessions = Vec::new();
        let mut items = reply_array(reply)?.into_iter();
        while let (Some(id), Some(fields)) = (items.next(), items.next()) {
            let id = id
                .into_string()
                .ok_or_else(|| Error::Internal("a listed session id is not a string".into()))?;
            if let Some(record) = parse_record(id, fields)? {
                sessions.push(record);
            }
        }
        Ok(sessions)
    }

    /// Deletes every session of a user; how many there were.
    pub async fn session_delete_user(&self, call: &Call, user_id: String) -> Result<i64, Error> {
        let tag = session_tag(&user_id);
        let deleted = reply_i64(self.session_user_op(call, "delete_user", user_id).await?)?;
        if deleted > 0 {
            self.session_due_mark(call, &tag, 0).await;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_of_the_promised_shape_and_carry_the_users_tag() {
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let id = new_session_id("user-7");
            assert_eq!(id.len(), SESSION_ID_LEN);
            assert!(is_session_id(&id), "{id}");
            assert!(id.starts_with(&session_tag("user-7")));
            assert!(seen.insert(id), "a session id repeated");
        }
        assert_eq!(SESSION_ID_LEN, 36);
    }

    #[test]
    fn malformed_ids_are_recognised() {
        let good = new_session_id("u");
        assert!(is_session_id(&good));
        assert!(!is_session_id(""));
        assert!(!is_session_id(&good[1..]));
        assert!(!is_session_id(&format!("{good}x")));
        assert!(!is_session_id(&format!("ABCD{}", &good[4..])));
        assert!(!is_session_id(&format!("{}/{}", &good[..10], &good[11..])));
        assert!(!is_session_id(&format!("session_u_{}", "1".repeat(26))));
    }
}
