//! Key naming for every service, in one place.
//!
//! Every Redis key passes through [`Namespace`], which prefixes it with the caller's namespace
//! (empty unless tenants are configured). Scans and events are confined to the namespace and
//! stripped of it.
//!
//! Inside each namespace, keys starting with [`INTERNAL_PREFIX`] (`__gw:`) belong to the
//! gateway itself: locks, fence counters, sessions and per-user session indexes. KeyValue,
//! Hash and Transaction callers cannot name them (INVALID_ARGUMENT), Scan leaves them out, and
//! the expiry stream will not report them. A session id is a bearer secret and a lock token a
//! capability, so a caller with plain key access must not read, forge or delete either.
//!
//! # Cluster hash tags
//! Keys one Lua script touches together must share a hash slot. The internal keys of one lock
//! (the lock, its waiter queue and leases, and the fence counter of its bucket) share the tag
//! `{<4 hex digits of the hash of the lock name>}`; a session's key and its bucket's index
//! share `{<4 hex digits of the hash of the user id>}`, which also begins the session id. The tag is a hash, never the name
//! itself, so a name that contains `{` or starts with `}` cannot change which part of the key
//! Redis hashes. The namespace prefix is validated to hold no braces (it precedes the tag).

use std::sync::Arc;

use fred::types::Key;

/// The reserved key space inside every namespace.
pub const INTERNAL_PREFIX: &str = "__gw:";

/// True when a caller's key falls into the gateway's reserved key space.
pub fn is_internal(key: &str) -> bool {
    key.starts_with(INTERNAL_PREFIX)
}

/// True when some key matching the glob `pattern` can lie outside the reserved key space,
/// i.e. the pattern does not spell out the reserved prefix literally. A pattern that names
/// only internal keys (`__gw:*`) is refused by Scan.
pub fn pattern_is_internal(pattern: &str) -> bool {
    // Only a literal prefix can pin the match inside the reserved space; any glob character
    // before the end of the prefix lets user keys match too.
    let literal: String = pattern
        .chars()
        .take_while(|c| !matches!(c, '*' | '?' | '[' | '\\'))
        .collect();
    literal.starts_with(INTERNAL_PREFIX)
}

/// A caller's key prefix. Cheap to clone; the default (no prefix) allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// Prepended to every key; `None` means the whole keyspace.
    prefix: Option<Arc<str>>,
}

impl Namespace {
    /// A namespace whose keys all start with `prefix`.
    pub fn new(prefix: impl Into<Arc<str>>) -> Self {
        let prefix: Arc<str> = prefix.into();
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
        }
    }

    /// The prefix itself (empty for the whole keyspace).
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }

    /// The Redis key for the caller's `key`. Without a prefix the caller's String becomes the
    /// key without a copy.
    pub fn key(&self, key: String) -> Key {
        match &self.prefix {
            None => Key::from(key),
            Some(prefix) => {
                let mut full = String::with_capacity(prefix.len() + key.len());
                full.push_str(prefix);
                full.push_str(&key);
                Key::from(full)
            }
        }
    }

    /// The Redis keys for a list of caller keys.
    pub fn keys(&self, keys: Vec<String>) -> Vec<Key> {
        keys.into_iter().map(|key| self.key(key)).collect()
    }

    /// The caller's name for a Redis key, or `None` when the key lies outside the namespace,
    /// inside the gateway's reserved key space, or is not UTF-8 (the API's keys are strings,
    /// so such a key could not be named back).
    pub fn strip<'a>(&self, redis_key: &'a [u8]) -> Option<&'a str> {
        let rest = redis_key.strip_prefix(self.prefix().as_bytes())?;
        let name = std::str::from_utf8(rest).ok()?;
        (!is_internal(name)).then_some(name)
    }

    /// A SCAN MATCH pattern confined to the namespace: the prefix, glob-escaped, then the
    /// caller's pattern.
    pub fn pattern(&self, pattern: &str) -> String {
        let prefix = self.prefix();
        let mut out = String::with_capacity(prefix.len() + pattern.len());
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str(pattern);
        out
    }

    /// An internal key: `<namespace>__gw:<kind>:{<tag>}:<name>`.
    fn internal(&self, kind: &str, tag: &str, name: &str) -> Key {
        Key::from(format!(
            "{}{INTERNAL_PREFIX}{kind}:{{{tag}}}:{name}",
            self.prefix()
        ))
    }

    /// Every key of lock `name`, all in one Cluster slot.
    pub fn lock_keys(&self, name: &str) -> LockKeys {
        let tag = bucket_tag(name);
        LockKeys {
            lock: self.internal("lock", &tag, name),
            queue: self.internal("lockq", &tag, name),
            leases: self.internal("lockw", &tag, name),
            fence: Key::from(format!("{}{INTERNAL_PREFIX}fence:{{{tag}}}", self.prefix())),
            tag,
        }
    }

    /// The key holding session `session_id`, whose first four characters are its user's
    /// [`session_tag`].
    pub fn session_key(&self, session_id: &str) -> Key {
        Key::from(format!(
            "{}{session_id}",
            self.session_key_prefix(session_tag_of(session_id))
        ))
    }

    /// What every session key of bucket `tag` starts with (the id follows).
    pub fn session_key_prefix(&self, tag: &str) -> String {
        format!("{}{INTERNAL_PREFIX}session:{{{tag}}}:", self.prefix())
    }

    /// The index of the sessions of every user whose [`session_tag`] is `tag`: a sorted set of
    /// `<user id>\n<session id>` by expiry. Same slot as those sessions.
    pub fn session_bucket(&self, tag: &str) -> Key {
        Key::from(format!(
            "{}{INTERNAL_PREFIX}sessions:{{{tag}}}",
            self.prefix()
        ))
    }

    /// The sessions of bucket `tag` that ended and are not yet in the endings stream: a
    /// sorted set of `<reason>\n<user id>\n<session id>` by the time each ended. Same slot as
    /// the bucket's sessions, so the session script records endings atomically.
    pub fn session_ended(&self, tag: &str) -> Key {
        Key::from(format!(
            "{}{INTERNAL_PREFIX}session-ended:{{{tag}}}",
            self.prefix()
        ))
    }
}

/// A bucket of sessions as the due index names it: the namespace prefix and the tag, read
/// back from the bucket's index key (`<namespace>__gw:sessions:{<tag>}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBucket {
    /// The namespace the bucket lives in.
    pub namespace: Namespace,
    /// Its tag.
    pub tag: String,
}

impl SessionBucket {
    /// The bucket whose index key is `key`, if it is one.
    pub fn parse(key: &str) -> Option<Self> {
        let marker = format!("{INTERNAL_PREFIX}sessions:{{");
        let at = key.rfind(&marker)?;
        let tag = key[at + marker.len()..].strip_suffix('}')?;
        (tag.len() == 4 && tag.bytes().all(|byte| byte.is_ascii_hexdigit())).then(|| Self {
            namespace: Namespace::new(&key[..at]),
            tag: tag.to_owned(),
        })
    }

    /// The bucket's index key.
    pub fn index(&self) -> Key {
        self.namespace.session_bucket(&self.tag)
    }

    /// The bucket's pending endings.
    pub fn ended(&self) -> Key {
        self.namespace.session_ended(&self.tag)
    }

    /// What the bucket's session keys start with.
    pub fn session_key_prefix(&self) -> String {
        self.namespace.session_key_prefix(&self.tag)
    }

    /// The due index's member for this bucket: its index key.
    pub fn member(&self) -> String {
        String::from_utf8_lossy(self.index().as_bytes()).into_owned()
    }
}

/// The keys of one lock (see `lua/lock.lua` for what each holds).
#[derive(Debug, Clone)]
pub struct LockKeys {
    /// The lock: holder token, owner label, fencing token, lease end, lock delay.
    pub lock: Key,
    /// Waiter ids in arrival order.
    pub queue: Key,
    /// Waiter id -> end of its lease.
    pub leases: Key,
    /// The fencing-token counter shared by every lock of the bucket.
    pub fence: Key,
    /// The bucket's hash tag, without braces.
    pub tag: String,
}

/// A bucket tag: 4 hex digits of the SHA1 of `text`, so any text (with braces or not) maps to
/// one of 65,536 well-formed tags. Keys that many names share (a lock bucket's fence counter,
/// a user bucket's session index) stay bounded however many names there are.
pub fn bucket_tag(text: &str) -> String {
    let mut digest = fred::util::sha1_hash(text);
    digest.truncate(4);
    digest
}

/// The cluster hash tag shared by a user's sessions and their index: the [`bucket_tag`] of the
/// user id. Session ids begin with it, so a call that names only the id finds the slot.
/// It reveals nothing a bearer of the id cannot read anyway (Get returns the user id), and
/// with 65,536 tags shared by many users it does not single a user out.
pub fn session_tag(user_id: &str) -> String {
    bucket_tag(user_id)
}

/// The tag a well-formed session id begins with.
pub fn session_tag_of(session_id: &str) -> &str {
    session_id.get(..4).unwrap_or(session_id)
}

/// Property tests: whatever a tenant sends, its keys and patterns stay inside its namespace.
#[cfg(test)]
mod namespace_properties {
    use proptest::prelude::*;

    use super::*;
    use crate::auth::validate_namespace;
    use crate::redis::glob;

    /// Characters that matter to globs, prefixes, hash tags and C strings, mixed with any.
    fn tricky() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(vec![
                    '*', '?', '[', ']', '^', '-', '\\', '{', '}', ':', '/', '.', '\0', 'a', 'b',
                    't', '1', '_', 'é', '\u{10FFFF}',
                ]),
                1 => any::<char>(),
            ],
            0..24,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn namespace() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{1,12}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// A key is stored under the prefix and named back unchanged (unless it is internal).
        #[test]
        fn keys_stay_under_the_prefix(ns in namespace(), key in tricky()) {
            let namespace = Namespace::new(format!("{ns}:"));
            let stored = namespace.key(key.clone());
            prop_assert!(stored.as_bytes().starts_with(namespace.prefix().as_bytes()));
            let named = namespace.strip(stored.as_bytes());
            if is_internal(&key) {
                prop_assert_eq!(named, None);
            } else {
                prop_assert_eq!(named, Some(key.as_str()));
            }
        }

        /// No pattern matches a key outside the namespace: neither another tenant's (whose
        /// name may extend this one's, as `t1` and `t10`) nor one without any prefix.
        #[test]
        fn patterns_never_match_outside_the_namespace(
            ns in namespace(),
            other in namespace(),
            pattern in tricky(),
            rest in tricky(),
        ) {
            let namespace = Namespace::new(format!("{ns}:"));
            let confined = namespace.pattern(&pattern);
            for outside in [
                format!("{other}:{rest}"),
                format!("{ns}{other}:{rest}"),
                format!("{ns}{rest}"),
                rest.clone(),
            ] {
                if outside.as_bytes().starts_with(namespace.prefix().as_bytes()) {
                    continue;
                }
                prop_assert!(
                    !glob::matches(confined.as_bytes(), outside.as_bytes()),
                    "{confined:?} matched {outside:?}"
                );
            }
            // And what it matches inside, it matches as the caller's pattern would.
            let inside = format!("{ns}:{rest}");
            prop_assert_eq!(
                glob::matches(confined.as_bytes(), inside.as_bytes()),
                glob::matches(pattern.as_bytes(), rest.as_bytes())
            );
        }

        /// A namespace the auth file accepts holds no delimiter, glob character or brace.
        #[test]
        fn accepted_namespaces_hold_nothing_that_could_widen_them(ns in tricky()) {
            if validate_namespace(&ns).is_ok() {
                let forbidden = [':', '*', '?', '[', ']', '\\', '{', '}', '\0'];
                prop_assert!(!ns.contains(forbidden), "accepted {:?}", ns);
                prop_assert!(ns.len() <= 64);
            }
        }

        /// Validation never panics, whatever the input.
        #[test]
        fn validation_never_panics(key in tricky(), pattern in tricky()) {
            let limits = crate::limits::Limits {
                max_key_bytes: 16,
                max_value_bytes: 16,
                max_batch_items: 4,
                max_ttl: std::time::Duration::from_secs(60),
                max_response_bytes: 64,
                max_lock_wait: std::time::Duration::from_secs(60),
            };
            let _ = limits.key("key", &key);
            let _ = limits.name("name", &key);
            let _ = crate::limits::glob_pattern("pattern", &pattern, 16);
            let _ = pattern_is_internal(&pattern);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_stripped() {
        let tenant = Namespace::new("t1:");
        assert_eq!(tenant.key("a".into()).as_bytes(), b"t1:a");
        assert_eq!(tenant.strip(b"t1:a"), Some("a"));
        assert_eq!(tenant.strip(b"t2:a"), None);
        assert_eq!(tenant.strip(b"t1:\xff"), None);
        assert_eq!(Namespace::default().key("a".into()).as_bytes(), b"a");
        assert_eq!(Namespace::new(""), Namespace::default());
    }

    #[test]
    fn internal_keys_are_never_stripped_back_to_callers() {
        assert_eq!(Namespace::default().strip(b"__gw:lock:{x}:a"), None);
        assert_eq!(Namespace::new("t1:").strip(b"t1:__gw:session:{x}:s"), None);
        assert_eq!(Namespace::default().strip(b"gw:a"), Some("gw:a"));
    }

    #[test]
    fn scan_patterns_escape_the_prefix() {
        assert_eq!(Namespace::new("a*[b]:").pattern("x?"), "a\\*\\[b\\]:x?");
        assert_eq!(Namespace::default().pattern("*"), "*");
    }

    #[test]
    fn patterns_that_only_match_internal_keys_are_recognised() {
        assert!(pattern_is_internal("__gw:*"));
        assert!(pattern_is_internal("__gw:lock:*"));
        assert!(!pattern_is_internal("*"));
        assert!(!pattern_is_internal("__g*"));
        assert!(!pattern_is_internal("_[_]gw:*"));
    }

    #[test]
    fn a_locks_keys_share_a_tag_derived_from_a_hash_of_the_name() {
        for name in ["orders", "}odd", "{braced}", "a{b}c", ""] {
            let keys = Namespace::default().lock_keys(name);
            let tag = |key: &Key| {
                let text = key.as_str().unwrap().to_owned();
                let open = text.find('{').unwrap();
                let close = open + text[open..].find('}').unwrap();
                text[open + 1..close].to_owned()
            };
            for key in [&keys.queue, &keys.leases, &keys.fence] {
                assert_eq!(tag(&keys.lock), tag(key), "{name}");
            }
            assert_eq!(tag(&keys.lock), keys.tag, "{name}");
            assert_eq!(keys.tag, bucket_tag(name), "{name}");
            assert_eq!(keys.tag.len(), 4);
            assert!(is_internal(keys.lock.as_str().unwrap()));
        }
        // One fence counter per bucket, whatever the name.
        let a = Namespace::default().lock_keys("a");
        let tag_a = a.tag.clone();
        let twin = (0..1_000_000)
            .map(|n| format!("n{n}"))
            .find(|name| bucket_tag(name) == tag_a)
            .unwrap();
        assert_eq!(Namespace::default().lock_keys(&twin).fence, a.fence);
        assert_ne!(Namespace::default().lock_keys(&twin).lock, a.lock);
    }

    #[test]
    fn a_session_shares_its_users_slot() {
        let ns = Namespace::new("t1:");
        let tag = session_tag("user-7");
        assert_eq!(tag.len(), 4);
        let id = format!("{tag}{}", "A".repeat(32));
        let session = ns.session_key(&id);
        let bucket = ns.session_bucket(&tag);
        let braced = format!("{{{tag}}}");
        assert!(session.as_str().unwrap().contains(&braced));
        assert!(bucket.as_str().unwrap().contains(&braced));
        assert!(session.as_str().unwrap().starts_with("t1:__gw:session:"));
        assert_eq!(
            session.as_str().unwrap(),
            format!("{}{id}", ns.session_key_prefix(&tag))
        );
        assert!(ns.session_ended(&tag).as_str().unwrap().contains(&braced));
    }

    #[test]
    fn a_session_bucket_is_named_back_from_its_index_key() {
        for ns in [Namespace::default(), Namespace::new("t1:")] {
            let bucket = SessionBucket {
                namespace: ns.clone(),
                tag: session_tag("user-7"),
            };
            assert_eq!(SessionBucket::parse(&bucket.member()), Some(bucket.clone()));
            assert_eq!(bucket.index(), ns.session_bucket(&bucket.tag));
        }
        assert_eq!(SessionBucket::parse("__gw:sessions:{xyz1}"), None);
        assert_eq!(SessionBucket::parse("__gw:sessions:{abcd"), None);
        assert_eq!(SessionBucket::parse("plain"), None);
    }
}
