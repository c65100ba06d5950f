//! Typed operations on locks, as the Lock service uses them: each is one run of
//! `lua/lock.lua` (storage layout described there), so each is atomic and stays in one Cluster
//! slot. Waiting, wake-ups and lease renewal are built on these by the service.

use std::fmt::Write as _;
use std::time::Duration;

use fred::types::Value;

use std::sync::atomic::Ordering;

use fred::interfaces::ClientLike as _;

use super::keys::LockKeys;
use super::lock_sync::unconfirmed;
use super::scripts::LOCK;
use super::{Call, Redis, on_node, reply_array, reply_i64, run_script};
use crate::error::{Error, Idempotency};

/// The pub/sub channel on which a release names the waiter to wake. One per Redis deployment
/// (waiter ids are random, so tenants can share it); every gateway process subscribes once.
pub const LOCK_WAKE_CHANNEL: &str = "__gw:lock:wake";

/// How long a waiter's place in a queue outlives its last retry. A gateway that dies with
/// waiters queued blocks those behind them for at most this long.
pub const WAITER_LEASE: Duration = Duration::from_secs(5);

/// A random 128-bit value as 32 hex digits (owner tokens and waiter ids), from rand's
/// thread-local CSPRNG (ChaCha12, seeded from the operating system and reseeded as it goes):
/// no system call per id, where the system's random source cost one per Lock.Acquire.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(32);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// What an acquisition asks for.
#[derive(Debug, Clone)]
pub struct AcquireRequest<'a> {
    /// The owner token the lock will carry (made before sending, so that a call whose outcome
    /// is unknown can still be released).
    pub token: &'a str,
    /// The holder's label.
    pub owner: &'a str,
    /// Lease length, ms.
    pub ttl_ms: u64,
    /// Lock delay after a lease that runs out while held, ms.
    pub delay_ms: u64,
    /// The waiter id to queue under when the lock is busy; `None` to only try.
    pub waiter: Option<&'a str>,
}

/// How one acquisition attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The lock is now held with the request's token.
    Acquired {
        /// This acquisition's fencing token.
        fencing_token: u64,
        /// End of the lease, ms since the epoch (Redis' clock).
        expires_ms: i64,
    },
    /// Held by someone, inside a lock delay, or another waiter is first.
    Busy {
        /// When the lock will free itself unless extended, if known: worth a retry then.
        frees_in: Option<Duration>,
    },
}

/// A lock as Inspect reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// Someone holds it.
    pub held: bool,
    /// The holder's label (empty when free).
    pub owner: String,
    /// The holder's fencing token, or the bucket's counter when free.
    pub fencing_token: u64,
    /// The holder's remaining lease.
    pub lease_left: Option<Duration>,
    /// Waiters queued now (with a live lease).
    pub waiters: u32,
    /// The lock delay left when free but closed by one.
    pub delay_left: Option<Duration>,
}

/// A positive millisecond count as a duration, `None` for zero or less.
fn positive_ms(ms: i64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

fn keys(keys: &LockKeys) -> Vec<fred::types::Key> {
    vec![
        keys.lock.clone(),
        keys.queue.clone(),
        keys.leases.clone(),
        keys.fence.clone(),
    ]
}

impl Redis {
    /// One acquisition attempt: takes the lock if it is free and no earlier waiter is queued
    /// (or `request.waiter` is the first); otherwise queues `request.waiter`, if given, or
    /// renews its place.
    pub async fn lock_try_acquire(
        &self,
        call: &Call,
        lock: &LockKeys,
        request: &AcquireRequest<'_>,
    ) -> Result<Attempt, Error> {
        let args = vec![
            Value::from("acquire"),
            Value::from(request.token),
            Value::from(request.owner),
            Value::from(request.ttl_ms.to_string()),
            Value::from(request.delay_ms.to_string()),
            Value::from(request.waiter.unwrap_or("")),
            Value::from(WAITER_LEASE.as_millis().to_string()),
            Value::from(LOCK_WAKE_CHANNEL),
        ];
        // On a cluster, WAIT counts the replicas of the node it is sent to, so the script and
        // WAIT both go to the node serving the lock's slot (a node that no longer serves it
        // refuses the script: MOVED).
        let node = self
            .clustered()
            .then(|| self.node_of(lock.lock.as_bytes()))
            .flatten();
        let required = match &node {
            Some(node) => self.lock_sync().required_on(node),
            None => self.lock_sync().required(),
        };
        let (reply, acked) = match self.lock_sync().client().filter(|_| required > 0) {
            None => {
                let reply = self
                    .eval(call, Idempotency::AtMostOnce, &LOCK, keys(lock), args)
                    .await?;
                (reply, None)
            }
            // The script and WAIT on one dedicated connection: WAIT counts the replicas that
            // have every write this connection made, the grant included.
            Some(client) => {
                let wait_ms = self.lock_sync().timeout().as_millis().max(1).to_string();
                let default_timeout = self.command_timeout();
                self.run_on(client, call, Idempotency::AtMostOnce, |client| async move {
                    let client = on_node(client, node.as_ref());
                    let reply =
                        run_script(client.clone(), &LOCK, keys(lock), args, default_timeout)
                            .await?;
                    let granted = matches!(&reply, Value::Array(items)
                        if items.first().and_then(Value::as_i64) == Some(1));
                    if !granted {
                        return Ok((reply, None));
                    }
                    let acked: i64 = client
                        .custom(fred::cmd!("WAIT"), vec![required.to_string(), wait_ms])
                        .await?;
                    Ok((reply, Some(acked)))
                })
                .await?
            }
        };
        let mut items = reply_array(reply)?.into_iter();
        let (Some(acquired), Some(detail)) = (items.next(), items.next()) else {
            return Err(Error::Internal("lock script sent a short reply".into()));
        };
        if reply_i64(acquired)? == 1 {
            if let Some(acked) = acked
                && acked < i64::from(required)
            {
                // Not on enough replicas: a failover now could grant it again. Undo it.
                self.lock_sync().undone.fetch_add(1, Ordering::Relaxed);
                let released = self.lock_release(call, lock, request.token).await;
                return Err(unconfirmed(
                    acked,
                    required,
                    self.lock_sync().timeout(),
                    released.is_ok(),
                ));
            }
            let expires = items
                .next()
                .ok_or_else(|| Error::Internal("lock script sent no expiry".into()))?;
            Ok(Attempt::Acquired {
                fencing_token: reply_i64(detail)? as u64,
                expires_ms: reply_i64(expires)?,
            })
        } else {
            Ok(Attempt::Busy {
                frees_in: positive_ms(reply_i64(detail)?),
            })
        }
    }

    /// Takes `waiter` out of the queue; when it was first and the lock is free, wakes the next.
    pub async fn lock_leave(
        &self,
        call: &Call,
        lock: &LockKeys,
        waiter: &str,
    ) -> Result<(), Error> {
        let args = vec![
            Value::from("leave"),
            Value::from(waiter),
            Value::from(LOCK_WAKE_CHANNEL),
        ];
        self.eval(call, Idempotency::AtMostOnce, &LOCK, keys(lock), args)
            .await?;
        Ok(())
    }

    /// Frees the lock if `token` holds it (and wakes the first waiter); false otherwise.
    pub async fn lock_release(
        &self,
        call: &Call,
        lock: &LockKeys,
        token: &str,
    ) -> Result<bool, Error> {
        let args = vec![
            Value::from("release"),
            Value::from(token),
            Value::from(LOCK_WAKE_CHANNEL),
        ];
        let reply = self
            .eval(call, Idempotency::AtMostOnce, &LOCK, keys(lock), args)
            .await?;
        Ok(reply_i64(reply)? == 1)
    }

    /// Resets the lease to `ttl_ms` from now if `token` holds the lock; the new lease end (ms
    /// since the epoch), or `None` when it does not hold it.
    pub async fn lock_extend(
        &self,
        call: &Call,
        lock: &LockKeys,
        token: &str,
        ttl_ms: u64,
    ) -> Result<Option<i64>, Error> {
        let args = vec![
            Value::from("extend"),
            Value::from(token),
            Value::from(ttl_ms.to_string()),
        ];
        let reply = self
            .eval(call, Idempotency::AtMostOnce, &LOCK, keys(lock), args)
            .await?;
        let mut items = reply_array(reply)?.into_iter();
        match (items.next().map(reply_i64).transpose()?, items.next()) {
            (Some(1), Some(expires)) => Ok(Some(reply_i64(expires)?)),
            _ => Ok(None),
        }
    }

    /// The lock's holder, fencing token, lease and queue, read in one step.
    pub async fn lock_inspect(&self, call: &Call, lock: &LockKeys) -> Result<LockStatus, Error> {
        let reply = self
            .eval(
                call,
                Idempotency::Idempotent,
                &LOCK,
                keys(lock),
                vec![Value::from("inspect")],
            )
            .await?;
        let items = reply_array(reply)?;
        let [held, owner, fence, lease_left, waiters, delay_left]: [Value; 6] = items
            .try_into()
            .map_err(|_| Error::Internal("lock script sent a malformed inspect reply".into()))?;
        Ok(LockStatus {
            held: reply_i64(held)? == 1,
            owner: owner.as_string().unwrap_or_default(),
            fencing_token: reply_i64(fence)? as u64,
            lease_left: positive_ms(reply_i64(lease_left)?),
            waiters: u32::try_from(reply_i64(waiters)?).unwrap_or(u32::MAX),
            delay_left: positive_ms(reply_i64(delay_left)?),
        })
    }
}
