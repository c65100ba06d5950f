//! Key naming: every key a caller names passes through [`Namespace`], which prefixes it with
//! the caller's namespace (empty unless tenants are configured). Scans and events are confined
//! to the namespace and stripped of it.

use std::sync::Arc;

use fred::types::Key;

/// A caller's key prefix. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// Prepended to every key; empty means the whole keyspace.
    prefix: Arc<str>,
}

impl Namespace {
    /// A namespace whose keys all start with `prefix`.
    pub fn new(prefix: impl Into<Arc<str>>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The Redis key for the caller's `key`.
    pub fn key(&self, key: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(key)
        } else {
            Key::from(format!("{}{key}", self.prefix))
        }
    }

    /// The caller's name for a Redis key, or `None` when the key lies outside the namespace
    /// or is not UTF-8 (the API's keys are strings, so such a key could not be named back).
    pub fn strip<'a>(&self, redis_key: &'a [u8]) -> Option<&'a str> {
        let rest = redis_key.strip_prefix(self.prefix.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    /// A SCAN MATCH pattern confined to the namespace: the prefix, glob-escaped, then the
    /// caller's pattern.
    pub fn pattern(&self, pattern: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + pattern.len());
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str(pattern);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_stripped() {
        let tenant = Namespace::new("t1:");
        assert_eq!(tenant.key("a").as_bytes(), b"t1:a");
        assert_eq!(tenant.strip(b"t1:a"), Some("a"));
        assert_eq!(tenant.strip(b"t2:a"), None);
        assert_eq!(tenant.strip(b"t1:\xff"), None);
        assert_eq!(Namespace::default().key("a").as_bytes(), b"a");
    }

    #[test]
    fn scan_patterns_escape_the_prefix() {
        assert_eq!(Namespace::new("a*[b]:").pattern("x?"), "a\\*\\[b\\]:x?");
        assert_eq!(Namespace::default().pattern("*"), "*");
    }
}
