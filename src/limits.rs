//! Input limits and the validation every handler applies before touching Redis.
//!
//! Each check returns INVALID_ARGUMENT naming the request field, so a client learns exactly
//! what to fix.

use std::time::Duration;

use crate::config::Config;
use crate::error::Error;
use crate::redis::keys;

/// The configured bounds on what a request may carry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most items (keys, entries, fields, guards plus operations) in one call.
    pub max_batch_items: usize,
    /// Longest TTL.
    pub max_ttl: Duration,
    /// Largest sum of value bytes in one response.
    pub max_response_bytes: usize,
    /// Longest lock wait or lock delay.
    pub max_lock_wait: Duration,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            max_batch_items: config.max_batch_items,
            max_ttl: config.max_ttl,
            max_response_bytes: config.max_response_bytes,
            max_lock_wait: config.max_lock_wait,
        }
    }
}

impl Limits {
    /// A caller's key (or hash name) must be 1 to `max_key_bytes` bytes and lie outside the
    /// gateway's reserved key space.
    pub fn key(&self, field: &str, key: &str) -> Result<(), Error> {
        self.name(field, key)?;
        if keys::is_internal(key) {
            return Err(Error::invalid(
                field,
                format!(
                    "starts with `{}`, which is reserved for the gateway's locks and sessions",
                    keys::INTERNAL_PREFIX
                ),
            ));
        }
        Ok(())
    }

    /// A name that is not a key (a hash field, a lock name) must be 1 to `max_key_bytes`
    /// bytes.
    pub fn name(&self, field: &str, key: &str) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::invalid(
                field,
                format!(
                    "is {} bytes; the limit is {} (GATEWAY_MAX_KEY_BYTES)",
                    key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A value must be at most `max_value_bytes` bytes (empty is fine).
    pub fn value(&self, field: &str, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.max_value_bytes {
            return Err(Error::invalid(
                field,
                format!(
                    "is {} bytes; the limit is {} (GATEWAY_MAX_VALUE_BYTES)",
                    value.len(),
                    self.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A list must hold 1 to `max_batch_items` items.
    pub fn batch(&self, field: &str, len: usize) -> Result<(), Error> {
        if len == 0 {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if len > self.max_batch_items {
            return Err(Error::invalid(
                field,
                format!(
                    "has {len} items; the limit is {} (GATEWAY_MAX_BATCH_ITEMS)",
                    self.max_batch_items
                ),
            ));
        }
        Ok(())
    }

    /// Every key of a list, each checked and named by its index.
    pub fn keys(&self, field: &str, keys: &[String]) -> Result<(), Error> {
        self.batch(field, keys.len())?;
        for (index, key) in keys.iter().enumerate() {
            self.key(&format!("{field}[{index}]"), key)?;
        }
        Ok(())
    }

    /// Every name of a list (hash fields), each checked and named by its index.
    pub fn names(&self, field: &str, names: &[String]) -> Result<(), Error> {
        self.batch(field, names.len())?;
        for (index, name) in names.iter().enumerate() {
            self.name(&format!("{field}[{index}]"), name)?;
        }
        Ok(())
    }

    /// A streamed page size: `requested`, or `default` (capped by the batch limit) when 0; over
    /// `max_batch_items` is INVALID_ARGUMENT.
    pub fn page_size(&self, field: &str, requested: u32, default: usize) -> Result<usize, Error> {
        match requested as usize {
            0 => Ok(default.min(self.max_batch_items)),
            size if size > self.max_batch_items => Err(Error::invalid(
                field,
                format!(
                    "is {size}; the limit is {} (GATEWAY_MAX_BATCH_ITEMS)",
                    self.max_batch_items
                ),
            )),
            size => Ok(size),
        }
    }

    /// A reply of `rpc` carrying `bytes` of values must fit `max_response_bytes`; over it,
    /// RESOURCE_EXHAUSTED says what to use `instead`.
    pub fn response(&self, rpc: &str, bytes: usize, instead: &str) -> Result<(), Error> {
        if bytes > self.max_response_bytes {
            return Err(Error::ResourceExhausted(format!(
                "{rpc}: the reply would carry {bytes} bytes of values; the limit is {} \
                 (GATEWAY_MAX_RESPONSE_BYTES). {instead}",
                self.max_response_bytes
            )));
        }
        Ok(())
    }

    /// An optional TTL: `None` when unset, else whole milliseconds (rounded up), which must be
    /// positive and at most `max_ttl`.
    pub fn ttl(
        &self,
        field: &str,
        ttl: Option<&prost_types::Duration>,
    ) -> Result<Option<u64>, Error> {
        let Some(ttl) = ttl else {
            return Ok(None);
        };
        if ttl.seconds < 0 || ttl.nanos < 0 || (ttl.seconds == 0 && ttl.nanos == 0) {
            return Err(Error::invalid(field, "must be greater than zero"));
        }
        if ttl.nanos >= 1_000_000_000 {
            return Err(Error::invalid(field, "has nanos outside 0..1e9"));
        }
        let max_ms = self.max_ttl.as_millis();
        let millis = (ttl.seconds as u128) * 1000 + (ttl.nanos as u128).div_ceil(1_000_000);
        if millis > max_ms {
            return Err(Error::invalid(
                field,
                format!(
                    "is longer than the limit of {} (GATEWAY_MAX_TTL)",
                    humantime::format_duration(self.max_ttl)
                ),
            ));
        }
        // max_ttl is validated at start to fit in i64 milliseconds.
        Ok(Some(millis as u64))
    }

    /// An optional wait (a lock's `wait_timeout` or `lock_delay`): unset or zero is none, else
    /// whole milliseconds (rounded up) of at most `max_lock_wait`.
    pub fn wait(
        &self,
        field: &str,
        wait: Option<&prost_types::Duration>,
    ) -> Result<Duration, Error> {
        let Some(wait) = wait else {
            return Ok(Duration::ZERO);
        };
        if wait.seconds < 0 || wait.nanos < 0 {
            return Err(Error::invalid(field, "must not be negative"));
        }
        if wait.nanos >= 1_000_000_000 {
            return Err(Error::invalid(field, "has nanos outside 0..1e9"));
        }
        let millis = (wait.seconds as u128) * 1000 + (wait.nanos as u128).div_ceil(1_000_000);
        if millis > self.max_lock_wait.as_millis() {
            return Err(Error::invalid(
                field,
                format!(
                    "is longer than the limit of {} (GATEWAY_MAX_LOCK_WAIT)",
                    humantime::format_duration(self.max_lock_wait)
                ),
            ));
        }
        // max_lock_wait is validated at start to be at most 100 years.
        Ok(Duration::from_millis(millis as u64))
    }

    /// A TTL that must be set.
    pub fn required_ttl(
        &self,
        field: &str,
        ttl: Option<&prost_types::Duration>,
    ) -> Result<u64, Error> {
        self.ttl(field, ttl)?
            .ok_or_else(|| Error::invalid(field, "is required"))
    }
}

/// Checks a Redis glob pattern: an unterminated `[` or a trailing `\` is rejected, since Redis
/// would silently read it some other way than the caller meant.
pub fn glob_pattern(field: &str, pattern: &str, max_bytes: usize) -> Result<(), Error> {
    if pattern.len() > max_bytes {
        return Err(Error::invalid(
            field,
            format!("is {} bytes; the limit is {max_bytes}", pattern.len()),
        ));
    }
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => {
                return Err(Error::invalid(field, "ends with a lone `\\` escape"));
            }
            '[' => {
                // As in Redis' matcher, the first `]` closes the class.
                let mut closed = false;
                while let Some(inner) = chars.next() {
                    match inner {
                        '\\' if chars.next().is_none() => break,
                        ']' => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                }
                if !closed {
                    return Err(Error::invalid(
                        field,
                        "has a `[` character class without its closing `]`",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 8,
            max_value_bytes: 4,
            max_batch_items: 2,
            max_ttl: Duration::from_secs(60),
            max_response_bytes: 10,
            max_lock_wait: Duration::from_secs(30),
        }
    }

    #[test]
    fn waits_may_be_zero_but_not_negative_or_over_the_limit() {
        let wait = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(limits().wait("wait_timeout", None).unwrap(), Duration::ZERO);
        assert_eq!(
            limits().wait("wait_timeout", Some(&wait(0, 0))).unwrap(),
            Duration::ZERO
        );
        assert_eq!(
            limits().wait("wait_timeout", Some(&wait(1, 1))).unwrap(),
            Duration::from_millis(1001)
        );
        assert!(limits().wait("wait_timeout", Some(&wait(-1, 0))).is_err());
        assert!(limits().wait("wait_timeout", Some(&wait(31, 0))).is_err());
    }

    #[test]
    fn ttls_round_up_to_milliseconds_and_respect_bounds() {
        let ttl = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(limits().ttl("ttl", Some(&ttl(1, 1))).unwrap(), Some(1001));
        assert_eq!(limits().ttl("ttl", None).unwrap(), None);
        assert!(limits().ttl("ttl", Some(&ttl(0, 0))).is_err());
        assert!(limits().ttl("ttl", Some(&ttl(-1, 0))).is_err());
        assert!(limits().ttl("ttl", Some(&ttl(61, 0))).is_err());
        assert!(limits().required_ttl("ttl", None).is_err());
    }

    #[test]
    fn keys_values_and_batches_are_bounded() {
        assert!(limits().key("key", "").is_err());
        assert!(limits().key("key", "123456789").is_err());
        assert!(limits().value("value", b"12345").is_err());
        assert!(
            limits()
                .keys("keys", &["a".into(), "b".into(), "c".into()])
                .is_err()
        );
        let err = limits().keys("keys", &["a".into(), "".into()]).unwrap_err();
        assert!(err.to_string().starts_with("keys[1]"), "{err}");
    }

    #[test]
    fn the_reserved_key_space_is_refused_to_callers_but_not_to_names() {
        let err = limits().key("key", "__gw:x").unwrap_err();
        assert!(
            err.to_string().starts_with("key: starts with `__gw:`"),
            "{err}"
        );
        assert!(limits().name("field", "__gw:x").is_ok());
        assert!(limits().key("key", "gw:x").is_ok());
    }

    #[test]
    fn responses_over_the_limit_name_the_alternative() {
        assert!(limits().response("GetMany", 10, "use Scan").is_ok());
        let err = limits().response("GetMany", 11, "use Scan").unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)));
        assert!(err.to_string().contains("use Scan"), "{err}");
    }

    #[test]
    fn malformed_globs_are_rejected() {
        for good in [
            "*", "user:*", "a?c", "[abc]*", "[]]x", "[^a-z]", "\\*", "x[\\]]",
        ] {
            assert!(glob_pattern("pattern", good, 64).is_ok(), "{good}");
        }
        for bad in ["[abc", "abc\\", "[", "a[\\"] {
            assert!(glob_pattern("pattern", bad, 64).is_err(), "{bad}");
        }
    }
}
