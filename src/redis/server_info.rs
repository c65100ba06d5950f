//! What the gateway reads of the Redis server itself: its version, checked at connect.
//!
//! The gateway relies on Redis 7.0 commands and options (SET … NX with GET, PEXPIRE NX/XX/GT/LT
//! inside scripts, GETEX-like scripts): against an older server some calls would fail with
//! obscure syntax errors, so it refuses to serve and says which version it found.

use std::fmt;
use std::time::Duration;

use fred::prelude::*;
use fred::types::InfoKind;

use super::{Call, Namespace, Redis};
use crate::error::{Error, Idempotency};

/// The oldest Redis the gateway serves.
pub const MIN_VERSION: RedisVersion = RedisVersion {
    major: 7,
    minor: 0,
    patch: 0,
};

/// A Redis server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RedisVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl fmt::Display for RedisVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl RedisVersion {
    /// Reads `redis_version:x.y.z` from an `INFO server` reply.
    pub fn from_info(info: &str) -> Option<Self> {
        let version = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("redis_version:"))?;
        Self::parse(version)
    }

    /// Reads `x.y.z` (a missing or unreadable minor or patch counts as 0).
    pub fn parse(version: &str) -> Option<Self> {
        let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
        Some(Self {
            major: parts.next()??,
            minor: parts.next().flatten().unwrap_or(0),
            patch: parts.next().flatten().unwrap_or(0),
        })
    }

    /// Whether the gateway can serve on this version.
    pub fn is_supported(&self) -> bool {
        *self >= MIN_VERSION
    }
}

impl Redis {
    /// The server's version, from `INFO server`.
    pub async fn server_version(&self, timeout: Duration) -> Result<RedisVersion, Error> {
        let call = Call::new(Some(timeout), timeout, Namespace::default());
        let info = self
            .run(&call, Idempotency::Idempotent, |client| async move {
                client.info::<String>(Some(InfoKind::Server)).await
            })
            .await?;
        RedisVersion::from_info(&info)
            .ok_or_else(|| Error::Internal("INFO server names no redis_version".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_info_and_compared() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        let version = RedisVersion::from_info(info).unwrap();
        assert_eq!(version.to_string(), "7.0.15");
        assert!(version.is_supported());
        let old = RedisVersion::from_info("redis_version:6.2.14\r\n").unwrap();
        assert!(!old.is_supported());
        assert!(
            RedisVersion::from_info("redis_version:7.4\r\n")
                .unwrap()
                .is_supported()
        );
        assert_eq!(RedisVersion::from_info("uptime:3\r\n"), None);
    }
}
