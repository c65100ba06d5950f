//! Lua scripts, kept as `.lua` files beside this one and compiled in with `include_str!`.
//! Each runs atomically in Redis; all keys a script touches are passed in KEYS so that it
//! routes correctly in Redis Cluster.

use std::sync::LazyLock;

/// A Lua script and its SHA1, for EVALSHA.
#[derive(Debug)]
pub struct Script {
    /// The Lua source, sent with EVAL when Redis does not know the SHA yet.
    source: &'static str,
    /// Hex SHA1 of `source`, as Redis computes it.
    sha: String,
}

impl Script {
    fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: fred::util::sha1_hash(source),
        }
    }

    /// The Lua source.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The script's SHA1 as EVALSHA wants it.
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

/// KeyValue.Get with `include_ttl` and/or `refresh_ttl`: read, optionally refresh the TTL,
/// optionally read the TTL, in one step.
pub static KV_GET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/kv_get.lua")));

/// The near cache's read: type, value and TTL of each key, on its tracking connection.
pub static NEAR_CACHE_FILL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/near_cache_fill.lua")));

/// KeyValue.SetMany with a TTL or `if_none_exist`.
pub static KV_SET_MANY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/kv_set_many.lua")));

/// KeyValue.Increment with a TTL for new counters.
pub static KV_INCREMENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/kv_increment.lua")));

/// KeyValue.CompareAndSwap.
pub static KV_COMPARE_AND_SWAP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/kv_compare_and_swap.lua")));

/// KeyValue.Transaction: guards, validation against a shadow of the touched keys, then writes.
pub static KV_TRANSACTION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/kv_transaction.lua")));

/// Hash.Set with a TTL: HSET and PEXPIRE in one step.
pub static HASH_SET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/hash_set.lua")));

/// Every Session operation (see the script's header for the storage layout).
pub static SESSION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/session.lua")));

/// Every Lock operation (see the script's header for the storage layout).
pub static LOCK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lock.lua")));

/// Appends key events to the expiry stream.
pub static EXPIRY_APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/expiry_append.lua")));

/// Elects the process that records key events.
pub static EXPIRY_WRITER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/expiry_writer.lua")));

/// The due index of session buckets for the endings sweeper.
pub static SESSION_DUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/session_due.lua")));

/// Appends session endings to the endings stream.
pub static SESSION_ENDINGS_APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/session_endings_append.lua")));
