//! Configuration: one clap struct, every setting a flag and an environment variable.
//!
//! The old in-process helper's variables (`REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`,
//! `REDIS_PASSWORD`, `REDIS_MAX_CONNECTIONS`, `REDIS_RETRY_ON_TIMEOUT`) keep working;
//! `REDIS_URL` wins over them when set. [`Config::validate`] checks what clap cannot, so a bad
//! setting stops the process at start with a message naming it (exit code 2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

/// Parses a human duration such as `5s`, `250ms` or `30d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (examples: 250ms, 5s, 2m, 30d)"))
}

/// Parses the metrics endpoint's address; the error names the setting, which clap's own
/// message about the flag would not when the value came from the environment.
fn parse_metrics_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        "GATEWAY_METRICS_LISTEN must be an IP address and port, e.g. 127.0.0.1:9464 or \
         0.0.0.0:9464 (port 0 picks a free one)"
            .to_owned()
    })
}

/// Parses a byte size such as `1024`, `64KiB` or `4MiB`.
fn parse_byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a byte size (examples: 1024, 64KiB, 4MiB)"))?;
    let multiplier = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` (use B, KiB, MiB or GiB)")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The largest GATEWAY_MAX_BATCH_ITEMS: a Transaction HSET of that many fields passes twice as
/// many values to one command inside Lua, whose stack holds about 8000.
pub const MAX_BATCH_ITEMS_LIMIT: usize = 3000;

/// The longest GATEWAY_MAX_TTL: 100 years of 365.25 days (as `100years` parses).
pub const MAX_TTL_LIMIT: Duration = Duration::from_secs(3_155_760_000);

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How Redis is deployed, when REDIS_URL does not say (its scheme does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisMode {
    /// One server (REDIS_HOST:REDIS_PORT, or the one node of REDIS_NODES).
    Standalone,
    /// A Redis Cluster: REDIS_NODES are seeds; the gateway learns the rest.
    Cluster,
    /// A primary monitored by Sentinel: REDIS_NODES are the sentinels, and
    /// REDIS_SENTINEL_SERVICE the name they monitor it under.
    Sentinel,
}

/// Whether callers must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Bearer tokens of the auth file (GATEWAY_AUTH_FILE).
    Token,
    /// No authentication: anyone who reaches the port may do anything. Needed to listen on
    /// a non-loopback address without an auth file.
    None,
}

/// The services reachable without a token unless configured otherwise.
pub const DEFAULT_OPEN_SERVICES: &str = "grpc.health.v1.Health,grpc.reflection.v1.ServerReflection,\
grpc.reflection.v1alpha.ServerReflection";

/// Every setting of the gateway. Flags and environment variables are equivalent; a flag wins.
#[derive(Clone, Parser)]
#[command(
    name = "redis-gateway",
    version,
    about = "A gRPC gateway in front of Redis"
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the Prometheus metrics endpoint (`GET /metrics`), e.g. 127.0.0.1:9464.
    /// Unset: no endpoint, and calls are not measured. Port 0 picks a free port (logged as
    /// "serving metrics addr=...").
    #[arg(long, env = "GATEWAY_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_metrics_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// PEM certificate chain the gRPC port serves TLS with (with GATEWAY_TLS_KEY); unset: no
    /// TLS. The TLS files are read again when they change and on SIGHUP.
    #[arg(long, env = "GATEWAY_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of GATEWAY_TLS_CERT.
    #[arg(long, env = "GATEWAY_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle that clients' certificates must chain to: set, every client must present
    /// one (mTLS).
    #[arg(long, env = "GATEWAY_TLS_CLIENT_CA", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,

    /// The auth file (TOML): one `[[client]]` per caller with `name`, `token_sha256` (hex
    /// SHA-256 of its bearer token), `namespace` and `permissions`. Re-read when it changes.
    #[arg(long, env = "GATEWAY_AUTH_FILE", value_name = "TOML")]
    pub auth_file: Option<PathBuf>,

    /// `token` (the default with GATEWAY_AUTH_FILE) or `none`. Without an auth file the
    /// gateway serves only on a loopback address unless this is `none`.
    #[arg(long, env = "GATEWAY_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// gRPC services callable without a token (comma-separated; empty: none).
    #[arg(long, env = "GATEWAY_AUTH_OPEN_SERVICES", value_delimiter = ',', default_value = DEFAULT_OPEN_SERVICES)]
    pub auth_open_services: Vec<String>,

    /// Redis to use, as a URL: `redis://[user:password@]host:port[/db]`,
    /// `redis-cluster://host:port?node=host2:port2`, `redis-sentinel://host:port/db?
    /// sentinelServiceName=name&node=host2:port2`, or their TLS forms (`rediss://`,
    /// `rediss-cluster://`, `rediss-sentinel://`). Wins over REDIS_HOST, REDIS_PORT and
    /// REDIS_DB; conflicts with REDIS_MODE and REDIS_NODES.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// How Redis is deployed when REDIS_URL is not set: standalone, cluster or sentinel
    /// (default: standalone).
    #[arg(long, env = "REDIS_MODE", value_enum)]
    pub redis_mode: Option<RedisMode>,

    /// The nodes to reach when REDIS_URL is not set, comma-separated `host:port`: the cluster's
    /// seed nodes, the sentinels, or the one standalone server (default: REDIS_HOST:REDIS_PORT).
    #[arg(long, env = "REDIS_NODES", value_delimiter = ',')]
    pub redis_nodes: Vec<String>,

    /// The name the sentinels monitor the primary under (REDIS_MODE=sentinel).
    #[arg(long, env = "REDIS_SENTINEL_SERVICE")]
    pub redis_sentinel_service: Option<String>,

    /// ACL username for the sentinels themselves (when they require one); used when the URL's
    /// `sentinelUsername` is absent.
    #[arg(long, env = "REDIS_SENTINEL_USERNAME")]
    pub redis_sentinel_username: Option<String>,

    /// Password for the sentinels themselves (their `requirepass`); used when the URL's
    /// `sentinelPassword` is absent. Never logged.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,

    /// Connect to Redis (and the sentinels) over TLS; a `rediss` URL implies it.
    #[arg(long, env = "REDIS_TLS", default_value = "false", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub redis_tls: bool,

    /// PEM file of the CA certificates that Redis' server certificates must chain to
    /// (default: the system's roots).
    #[arg(long, env = "REDIS_TLS_CA", value_name = "PEM")]
    pub redis_tls_ca: Option<PathBuf>,

    /// PEM file of the client certificate (and its chain) to present to Redis, for
    /// `tls-auth-clients yes`; needs REDIS_TLS_KEY.
    #[arg(long, env = "REDIS_TLS_CERT", value_name = "PEM")]
    pub redis_tls_cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key.
    #[arg(long, env = "REDIS_TLS_KEY", value_name = "PEM")]
    pub redis_tls_key: Option<PathBuf>,

    /// Redis host, used when REDIS_URL is not set.
    #[arg(long, env = "REDIS_HOST", default_value = "localhost")]
    pub redis_host: String,

    /// Redis port, used when REDIS_URL is not set.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,

    /// Redis logical database, used when REDIS_URL does not name one.
    #[arg(long, env = "REDIS_DB", default_value_t = 0)]
    pub redis_db: u8,

    /// Redis ACL username (Redis 6+); used when REDIS_URL carries none.
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Redis password; used when REDIS_URL carries none. Never logged.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// Redis connections in all, shared out among the runtimes (at least one each; default:
    /// one per runtime). Each connection pipelines every concurrent call of its runtime, and
    /// fewer connections pipeline better: more rarely help.
    #[arg(long, env = "REDIS_MAX_CONNECTIONS")]
    pub redis_max_connections: Option<usize>,

    /// Number of single-threaded runtimes serving calls, each with its own listener
    /// (SO_REUSEPORT) and its own Redis connections; 0 means one per two CPU cores (at least
    /// one), which leaves room for the kernel's network work and a co-located Redis. Set it to
    /// the number of cores the gateway has to itself when Redis runs elsewhere.
    #[arg(long, env = "GATEWAY_RUNTIMES", default_value_t = 0)]
    pub runtimes: usize,

    /// Retry idempotent reads once when Redis times out or the connection drops, within the
    /// call's deadline. Writes that are not idempotent are never retried.
    #[arg(long, env = "REDIS_RETRY_ON_TIMEOUT", default_value = "false", action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub redis_retry_on_timeout: bool,

    /// How long to wait for a Redis connection to be established.
    #[arg(long, env = "REDIS_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,

    /// Longest time one Redis command may take; a shorter gRPC deadline wins.
    #[arg(long, env = "REDIS_COMMAND_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub redis_command_timeout: Duration,

    /// Start and supervise a private redis-server instead of using an external Redis; only the
    /// gateway can reach it (a unix socket in a 0700 directory, a random password, no TCP).
    /// Conflicts with REDIS_URL.
    #[arg(long, env = "GATEWAY_EMBEDDED_REDIS", default_value = "false", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub embedded_redis: bool,

    /// Where the embedded redis-server keeps its data (append-only file).
    #[arg(
        long,
        env = "GATEWAY_EMBEDDED_REDIS_DIR",
        default_value = ".redis-gateway/redis"
    )]
    pub embedded_redis_dir: PathBuf,

    /// The redis-server program the embedded mode runs.
    #[arg(long, env = "GATEWAY_REDIS_SERVER_BIN", default_value = "redis-server")]
    pub redis_server_bin: PathBuf,

    /// Largest key accepted, in bytes (e.g. 1024, 4KiB).
    #[arg(long, env = "GATEWAY_MAX_KEY_BYTES", default_value = "1KiB", value_parser = parse_byte_size)]
    pub max_key_bytes: usize,

    /// Largest value accepted, in bytes (e.g. 512KiB, 4MiB).
    #[arg(long, env = "GATEWAY_MAX_VALUE_BYTES", default_value = "4MiB", value_parser = parse_byte_size)]
    pub max_value_bytes: usize,

    /// Largest gRPC request message accepted, in bytes; bigger messages get OUT_OF_RANGE.
    /// Must be larger than GATEWAY_MAX_VALUE_BYTES.
    #[arg(long, env = "GATEWAY_MAX_REQUEST_BYTES", default_value = "16MiB", value_parser = parse_byte_size)]
    pub max_request_bytes: usize,

    /// Calls (unary and streams) served at once by the process, shared out among the
    /// runtimes; a call beyond it is refused at once with RESOURCE_EXHAUSTED (health checks
    /// never are).
    #[arg(long, env = "GATEWAY_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: u64,

    /// Calls one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_STREAMS", default_value_t = 1000)]
    pub max_concurrent_streams: u32,

    /// Open WatchExpirations and Session.WatchEnded streams per tenant namespace (in this
    /// process); more are RESOURCE_EXHAUSTED.
    #[arg(long, env = "GATEWAY_MAX_WATCHERS_PER_TENANT", default_value_t = 1000)]
    pub max_watchers_per_tenant: usize,

    /// How often the server pings a client connection (HTTP/2 PING) to find dead peers.
    #[arg(long, env = "GATEWAY_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "GATEWAY_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// Longest a client connection lives before the server asks the client to reconnect
    /// (GOAWAY; calls in progress finish). Unset: no limit.
    #[arg(long, env = "GATEWAY_MAX_CONNECTION_AGE", value_parser = parse_duration)]
    pub max_connection_age: Option<Duration>,

    /// How long a client connection may go without a call before the server closes it
    /// (GOAWAY; the client connects again when it next calls). `0s`: never.
    #[arg(long, env = "GATEWAY_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most keys, entries, fields or transaction steps in one call (at most 3000).
    #[arg(long, env = "GATEWAY_MAX_BATCH_ITEMS", default_value_t = 1000)]
    pub max_batch_items: usize,

    /// Largest sum of value bytes in one response (GetMany, and later Hash.GetAll); bigger
    /// replies are RESOURCE_EXHAUSTED, naming the RPC to use instead.
    #[arg(long, env = "GATEWAY_MAX_RESPONSE_BYTES", default_value = "16MiB", value_parser = parse_byte_size)]
    pub max_response_bytes: usize,

    /// Longest TTL accepted (at most 100 years, so now + TTL always fits Redis' clock).
    #[arg(long, env = "GATEWAY_MAX_TTL", default_value = "365d", value_parser = parse_duration)]
    pub max_ttl: Duration,

    /// Leave Redis' notify-keyspace-events alone: by default the gateway adds the flags the
    /// expiry stream needs (`Exeg`), merged with those already set.
    #[arg(long, env = "GATEWAY_NO_CONFIGURE_KEYSPACE_EVENTS", default_value = "false", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub no_configure_keyspace_events: bool,

    /// About how many key events the expiry stream retains for clients that resume; the
    /// session-endings stream (Session.WatchEnded) keeps as many endings.
    #[arg(long, env = "GATEWAY_EXPIRY_RETENTION", default_value_t = 100_000)]
    pub expiry_retention: u64,

    /// How long key events are still recorded after the last WatchExpirations client left, so
    /// one that reconnects within it can resume without missing any.
    #[arg(long, env = "GATEWAY_EXPIRY_RESUME_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub expiry_resume_window: Duration,

    /// Longest `wait_timeout` and `lock_delay` a Lock call may ask for.
    #[arg(long, env = "GATEWAY_MAX_LOCK_WAIT", default_value = "1h", value_parser = parse_duration)]
    pub max_lock_wait: Duration,

    /// A session's default idle timeout (Session.Create without `idle_timeout`): it expires
    /// this long after its last access.
    #[arg(long, env = "GATEWAY_SESSION_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,

    /// A session's default absolute timeout (Session.Create without `absolute_timeout`): it
    /// ends this long after creation however active it is. Unset: no cap.
    #[arg(long, env = "GATEWAY_SESSION_ABSOLUTE_TIMEOUT", value_parser = parse_duration)]
    pub session_absolute_timeout: Option<Duration>,

    /// How many replicas must confirm a lock acquisition before it is granted: `auto` (one,
    /// whenever the primary has a replica connected), or a count (0: never wait).
    #[arg(long, env = "GATEWAY_LOCK_REPLICA_ACKS", default_value = "auto")]
    pub lock_replica_acks: crate::redis::lock_sync::ReplicaAcks,

    /// Longest wait for those replicas; an acquisition they do not confirm in time is released
    /// again and refused (UNAVAILABLE).
    #[arg(long, env = "GATEWAY_LOCK_REPLICA_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    pub lock_replica_timeout: Duration,

    /// Most entries of the near cache (KeyValue reads served from the gateway's memory, kept
    /// coherent by Redis client tracking); 0 turns it off.
    #[arg(
        long,
        env = "GATEWAY_NEAR_CACHE_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub near_cache_max_entries: usize,

    /// Most bytes the near cache holds (keys, values and 96 bytes of bookkeeping per entry).
    #[arg(long, env = "GATEWAY_NEAR_CACHE_MAX_BYTES", default_value = "64MiB", value_parser = parse_byte_size)]
    pub near_cache_max_bytes: usize,

    /// Longest the near cache serves an entry without reading the key again: a bound on
    /// staleness should an invalidation ever be lost without the connection dropping.
    #[arg(long, env = "GATEWAY_NEAR_CACHE_MAX_AGE", default_value = "5m", value_parser = parse_duration)]
    pub near_cache_max_age: Duration,

    /// Key prefixes whose Gets use the near cache without asking (comma-separated, e.g.
    /// `config:,feature:`); other keys use it when a Get or GetMany sets `near_cache`.
    #[arg(long, env = "GATEWAY_NEAR_CACHE_PREFIXES", value_delimiter = ',')]
    pub near_cache_prefixes: Vec<String>,

    /// How often the background probe pings Redis to drive the health status.
    #[arg(long, env = "GATEWAY_HEALTH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log line format; the level filter comes from RUST_LOG (default `info`).
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A setting that clap accepted but that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    /// The flag and environment variable at fault, e.g. `--redis-url / REDIS_URL`.
    pub setting: &'static str,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Checks the settings that depend on each other or that clap's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.embedded_redis && self.redis_url.is_some() {
            return Err(ConfigError::new(
                "--embedded-redis / GATEWAY_EMBEDDED_REDIS",
                "conflicts with REDIS_URL: use one or the other",
            ));
        }
        self.validate_redis_target()?;
        self.validate_auth()?;
        self.validate_tls()?;
        if let Some(metrics) = self.metrics_listen
            && metrics.port() != 0
            && metrics.port() == self.listen.port()
        {
            return Err(ConfigError::new(
                "--metrics-listen / GATEWAY_METRICS_LISTEN",
                "must use another port than GATEWAY_LISTEN (gRPC)",
            ));
        }
        if self.redis_port == 0 {
            return Err(ConfigError::new(
                "--redis-port / REDIS_PORT",
                "must be between 1 and 65535",
            ));
        }
        if self
            .redis_max_connections
            .is_some_and(|connections| !(1..=256).contains(&connections))
        {
            return Err(ConfigError::new(
                "--redis-max-connections / REDIS_MAX_CONNECTIONS",
                "must be between 1 and 256",
            ));
        }
        if self.runtimes > 256 {
            return Err(ConfigError::new(
                "--runtimes / GATEWAY_RUNTIMES",
                "must be between 0 (one per two CPU cores) and 256",
            ));
        }
        if self.max_response_bytes < self.max_value_bytes {
            return Err(ConfigError::new(
                "--max-response-bytes / GATEWAY_MAX_RESPONSE_BYTES",
                "must be at least GATEWAY_MAX_VALUE_BYTES, or a single stored value could not be read back",
            ));
        }
        let positive_durations = [
            (
                "--redis-connect-timeout / REDIS_CONNECT_TIMEOUT",
                self.redis_connect_timeout,
            ),
            (
                "--redis-command-timeout / REDIS_COMMAND_TIMEOUT",
                self.redis_command_timeout,
            ),
            ("--max-ttl / GATEWAY_MAX_TTL", self.max_ttl),
            (
                "--near-cache-max-age / GATEWAY_NEAR_CACHE_MAX_AGE",
                self.near_cache_max_age,
            ),
            (
                "--max-lock-wait / GATEWAY_MAX_LOCK_WAIT",
                self.max_lock_wait,
            ),
            (
                "--health-interval / GATEWAY_HEALTH_INTERVAL",
                self.health_interval,
            ),
            (
                "--http2-keepalive-interval / GATEWAY_HTTP2_KEEPALIVE_INTERVAL",
                self.http2_keepalive_interval,
            ),
            (
                "--http2-keepalive-timeout / GATEWAY_HTTP2_KEEPALIVE_TIMEOUT",
                self.http2_keepalive_timeout,
            ),
            (
                "--max-connection-age / GATEWAY_MAX_CONNECTION_AGE",
                self.max_connection_age.unwrap_or(Duration::MAX),
            ),
            (
                "--drain-timeout / GATEWAY_DRAIN_TIMEOUT",
                self.drain_timeout,
            ),
        ];
        let session_timeouts = [
            (
                "--session-idle-timeout / GATEWAY_SESSION_IDLE_TIMEOUT",
                Some(self.session_idle_timeout),
            ),
            (
                "--session-absolute-timeout / GATEWAY_SESSION_ABSOLUTE_TIMEOUT",
                self.session_absolute_timeout,
            ),
        ];
        for (setting, value) in session_timeouts {
            if let Some(value) = value
                && (value.is_zero() || value > self.max_ttl)
            {
                return Err(ConfigError::new(
                    setting,
                    "must be greater than zero and at most GATEWAY_MAX_TTL",
                ));
            }
        }
        for (setting, value) in positive_durations {
            if value.is_zero() {
                return Err(ConfigError::new(setting, "must be greater than zero"));
            }
        }
        if self.max_ttl > MAX_TTL_LIMIT {
            return Err(ConfigError::new(
                "--max-ttl / GATEWAY_MAX_TTL",
                "must be at most 100 years: Redis stores expiry as now + TTL in milliseconds, and \
                 a Transaction must never be half-applied because Redis rejected an expiry",
            ));
        }
        if self.expiry_retention < 100 || self.expiry_retention > 100_000_000 {
            return Err(ConfigError::new(
                "--expiry-retention / GATEWAY_EXPIRY_RETENTION",
                "must be between 100 and 100000000 events",
            ));
        }
        if self.near_cache_max_entries > 0 && self.near_cache_max_bytes < 1 << 10 {
            return Err(ConfigError::new(
                "--near-cache-max-bytes / GATEWAY_NEAR_CACHE_MAX_BYTES",
                "must be at least 1KiB while the near cache is on (set \
                 GATEWAY_NEAR_CACHE_MAX_ENTRIES=0 to turn it off)",
            ));
        }
        if self.near_cache_prefixes.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "--near-cache-prefixes / GATEWAY_NEAR_CACHE_PREFIXES",
                "has an empty prefix, which would cache every key; name the prefixes, \
                 e.g. `config:,feature:`",
            ));
        }
        if self.max_lock_wait > MAX_TTL_LIMIT {
            return Err(ConfigError::new(
                "--max-lock-wait / GATEWAY_MAX_LOCK_WAIT",
                "must be at most 100 years",
            ));
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > 512 << 20 {
            return Err(ConfigError::new(
                "--max-key-bytes / GATEWAY_MAX_KEY_BYTES",
                "must be between 1 byte and 512MiB",
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 512 << 20 {
            return Err(ConfigError::new(
                "--max-value-bytes / GATEWAY_MAX_VALUE_BYTES",
                "must be between 1 byte and 512MiB (Redis' own limit)",
            ));
        }
        if self.max_request_bytes <= self.max_value_bytes {
            return Err(ConfigError::new(
                "--max-request-bytes / GATEWAY_MAX_REQUEST_BYTES",
                "must be larger than GATEWAY_MAX_VALUE_BYTES, or no maximal value fits in a request",
            ));
        }
        let at_least_one = [
            (
                "--max-in-flight / GATEWAY_MAX_IN_FLIGHT",
                self.max_in_flight,
            ),
            (
                "--max-concurrent-streams / GATEWAY_MAX_CONCURRENT_STREAMS",
                u64::from(self.max_concurrent_streams),
            ),
            (
                "--max-watchers-per-tenant / GATEWAY_MAX_WATCHERS_PER_TENANT",
                self.max_watchers_per_tenant as u64,
            ),
        ];
        for (setting, value) in at_least_one {
            if value == 0 {
                return Err(ConfigError::new(setting, "must be at least 1"));
            }
        }
        if !(1..=MAX_BATCH_ITEMS_LIMIT).contains(&self.max_batch_items) {
            return Err(ConfigError::new(
                "--max-batch-items / GATEWAY_MAX_BATCH_ITEMS",
                format!(
                    "must be between 1 and {MAX_BATCH_ITEMS_LIMIT} (Redis' Lua passes at most 8000 \
                     values to one command)"
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Checks the gRPC port's TLS files: certificate and key together, a client CA only with
    /// them, each a readable file.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::new(
                "--tls-cert / GATEWAY_TLS_CERT, --tls-key / GATEWAY_TLS_KEY",
                "the gRPC port's certificate needs its key, and a key its certificate: set both",
            ));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError::new(
                "--tls-client-ca / GATEWAY_TLS_CLIENT_CA",
                "needs GATEWAY_TLS_CERT and GATEWAY_TLS_KEY: client certificates are checked \
                 during a TLS handshake",
            ));
        }
        let files = [
            ("--tls-cert / GATEWAY_TLS_CERT", &self.tls_cert),
            ("--tls-key / GATEWAY_TLS_KEY", &self.tls_key),
            (
                "--tls-client-ca / GATEWAY_TLS_CLIENT_CA",
                &self.tls_client_ca,
            ),
        ];
        for (setting, file) in files {
            if let Some(file) = file
                && !file.is_file()
            {
                return Err(ConfigError::new(
                    setting,
                    format!("{} is not a readable file", file.display()),
                ));
            }
        }
        Ok(())
    }

    /// Checks the authentication settings: secure by default.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        match (self.auth, &self.auth_file) {
            (Some(AuthMode::None), Some(_)) => Err(ConfigError::new(
                "--auth / GATEWAY_AUTH",
                "is `none` but GATEWAY_AUTH_FILE is set: use one or the other",
            )),
            (Some(AuthMode::Token), None) => Err(ConfigError::new(
                "--auth-file / GATEWAY_AUTH_FILE",
                "is required with GATEWAY_AUTH=token",
            )),
            (None, None) if !self.listen.ip().is_loopback() => Err(ConfigError::new(
                "--auth-file / GATEWAY_AUTH_FILE",
                format!(
                    "is required to listen on {} (not a loopback address): without it anyone \
                     who reaches the port could read and write every key. Set GATEWAY_AUTH=none \
                     to serve without authentication anyway",
                    self.listen
                ),
            )),
            (_, Some(file)) if !file.is_file() => Err(ConfigError::new(
                "--auth-file / GATEWAY_AUTH_FILE",
                format!("{} is not a readable file", file.display()),
            )),
            _ => Ok(()),
        }
    }

    /// Whether callers must present a token.
    pub fn auth_required(&self) -> bool {
        self.auth_file.is_some()
    }

    /// Checks how Redis is reached: the URL or the explicit mode and nodes, and TLS.
    fn validate_redis_target(&self) -> Result<(), ConfigError> {
        const URL: &str = "--redis-url / REDIS_URL";
        let tls = crate::redis::target::tls_enabled(self);
        if self.embedded_redis {
            let explicit = [
                ("--redis-mode / REDIS_MODE", self.redis_mode.is_some()),
                ("--redis-nodes / REDIS_NODES", !self.redis_nodes.is_empty()),
                ("--redis-tls / REDIS_TLS", tls),
            ];
            if let Some((setting, _)) = explicit.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    setting,
                    "does not apply to the embedded Redis (a private unix socket)",
                ));
            }
        }
        if let Some(url) = &self.redis_url {
            let schemes = [
                "redis://",
                "rediss://",
                "redis-cluster://",
                "rediss-cluster://",
                "redis-sentinel://",
                "rediss-sentinel://",
            ];
            if !schemes.iter().any(|scheme| url.starts_with(scheme)) {
                return Err(ConfigError::new(
                    URL,
                    "must be a redis://, redis-cluster:// or redis-sentinel:// URL, or its TLS \
                     form (rediss://, rediss-cluster://, rediss-sentinel://)",
                ));
            }
            fred::types::config::Config::from_url(url).map_err(|err| {
                ConfigError::new(
                    URL,
                    format!(
                        "not a usable Redis URL ({}); expected redis://[user:password@]host:port/db",
                        err.details()
                    ),
                )
            })?;
            if self.redis_mode.is_some() || !self.redis_nodes.is_empty() {
                return Err(ConfigError::new(
                    "--redis-mode / REDIS_MODE, --redis-nodes / REDIS_NODES",
                    "conflict with REDIS_URL, which names the mode and nodes itself: use one or \
                     the other",
                ));
            }
        } else {
            let mode = self.redis_mode.unwrap_or(RedisMode::Standalone);
            let default_port = if mode == RedisMode::Sentinel {
                26379
            } else {
                6379
            };
            for node in &self.redis_nodes {
                crate::redis::target::parse_node(node, default_port)
                    .map_err(|reason| ConfigError::new("--redis-nodes / REDIS_NODES", reason))?;
            }
            if mode == RedisMode::Standalone && self.redis_nodes.len() > 1 {
                return Err(ConfigError::new(
                    "--redis-nodes / REDIS_NODES",
                    "names several nodes, but REDIS_MODE is standalone: set REDIS_MODE=cluster \
                     or sentinel",
                ));
            }
            if mode == RedisMode::Sentinel
                && self
                    .redis_sentinel_service
                    .as_deref()
                    .is_none_or(str::is_empty)
            {
                return Err(ConfigError::new(
                    "--redis-sentinel-service / REDIS_SENTINEL_SERVICE",
                    "is required with REDIS_MODE=sentinel: the name the sentinels monitor the \
                     primary under",
                ));
            }
        }
        let tls_files = [
            ("--redis-tls-ca / REDIS_TLS_CA", &self.redis_tls_ca),
            ("--redis-tls-cert / REDIS_TLS_CERT", &self.redis_tls_cert),
            ("--redis-tls-key / REDIS_TLS_KEY", &self.redis_tls_key),
        ];
        for (setting, file) in tls_files {
            let Some(file) = file else { continue };
            if !tls {
                return Err(ConfigError::new(
                    setting,
                    "is set but TLS to Redis is off: set REDIS_TLS=true or use a rediss URL",
                ));
            }
            if !file.is_file() {
                return Err(ConfigError::new(
                    setting,
                    format!("{} is not a readable file", file.display()),
                ));
            }
        }
        if self.redis_tls_cert.is_some() != self.redis_tls_key.is_some() {
            return Err(ConfigError::new(
                "--redis-tls-cert / REDIS_TLS_CERT, --redis-tls-key / REDIS_TLS_KEY",
                "a client certificate needs its key, and a key its certificate: set both",
            ));
        }
        Ok(())
    }

    /// How many runtimes serve: GATEWAY_RUNTIMES, or one per two CPU cores (at least one).
    pub fn runtime_count(&self) -> usize {
        match self.runtimes {
            0 => std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1)),
            count => count,
        }
    }

    /// Each runtime's share of GATEWAY_MAX_IN_FLIGHT (rounded up).
    pub fn in_flight_per_runtime(&self) -> u64 {
        let runtimes = self.runtime_count() as u64;
        self.max_in_flight.div_ceil(runtimes)
    }

    /// Redis connections per runtime: REDIS_MAX_CONNECTIONS shared out, at least one.
    pub fn connections_per_runtime(&self) -> usize {
        self.redis_max_connections
            .map_or(1, |total| (total / self.runtime_count()).max(1))
    }
}

impl std::fmt::Debug for Config {
    /// Lists every setting but the secrets: the password is masked and so is any password in
    /// the URL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("auth_file", &self.auth_file)
            .field("auth", &self.auth)
            .field("auth_open_services", &self.auth_open_services)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_mode", &self.redis_mode)
            .field("redis_nodes", &self.redis_nodes)
            .field("redis_sentinel_service", &self.redis_sentinel_service)
            .field("redis_sentinel_username", &self.redis_sentinel_username)
            .field(
                "redis_sentinel_password",
                &self.redis_sentinel_password.as_ref().map(|_| "***"),
            )
            .field("redis_tls", &self.redis_tls)
            .field("redis_tls_ca", &self.redis_tls_ca)
            .field("redis_tls_cert", &self.redis_tls_cert)
            .field("redis_tls_key", &self.redis_tls_key)
            .field("redis_host", &self.redis_host)
            .field("redis_port", &self.redis_port)
            .field("redis_db", &self.redis_db)
            .field("redis_username", &self.redis_username)
            .field(
                "redis_password",
                &self.redis_password.as_ref().map(|_| "***"),
            )
            .field("redis_max_connections", &self.redis_max_connections)
            .field("runtimes", &self.runtimes)
            .field("redis_retry_on_timeout", &self.redis_retry_on_timeout)
            .field("redis_connect_timeout", &self.redis_connect_timeout)
            .field("redis_command_timeout", &self.redis_command_timeout)
            .field("embedded_redis", &self.embedded_redis)
            .field("embedded_redis_dir", &self.embedded_redis_dir)
            .field("redis_server_bin", &self.redis_server_bin)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_batch_items", &self.max_batch_items)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("max_watchers_per_tenant", &self.max_watchers_per_tenant)
            .field("http2_keepalive_interval", &self.http2_keepalive_interval)
            .field("http2_keepalive_timeout", &self.http2_keepalive_timeout)
            .field("max_connection_age", &self.max_connection_age)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_ttl", &self.max_ttl)
            .field("max_lock_wait", &self.max_lock_wait)
            .field(
                "no_configure_keyspace_events",
                &self.no_configure_keyspace_events,
            )
            .field("expiry_retention", &self.expiry_retention)
            .field("lock_replica_acks", &self.lock_replica_acks)
            .field("lock_replica_timeout", &self.lock_replica_timeout)
            .field("near_cache_max_entries", &self.near_cache_max_entries)
            .field("near_cache_max_bytes", &self.near_cache_max_bytes)
            .field("near_cache_max_age", &self.near_cache_max_age)
            .field("near_cache_prefixes", &self.near_cache_prefixes)
            .field("expiry_resume_window", &self.expiry_resume_window)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("session_absolute_timeout", &self.session_absolute_timeout)
            .field("health_interval", &self.health_interval)
            .field("drain_timeout", &self.drain_timeout)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// Masks the passwords of a URL: the user info's (`redis://user:secret@host:6379` →
/// `redis://user:***@host:6379`) and a sentinel URL's `sentinelPassword` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let masked = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => "***".to_owned(),
            };
            format!("{masked}{}", &rest[at..authority_end])
        }
        None => rest[..authority_end].to_owned(),
    };
    let mut tail = rest[authority_end..].to_owned();
    if let Some(query_start) = tail.find('?') {
        let query: Vec<String> = tail[query_start + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("sentinelPassword") => {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        tail = format!("{}?{}", &tail[..query_start], query.join("&"));
    }
    format!("{}{authority}{tail}", &url[..scheme_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_accept_units() {
        assert_eq!(parse_byte_size("1024"), Ok(1024));
        assert_eq!(parse_byte_size("4KiB"), Ok(4096));
        assert_eq!(parse_byte_size("2MiB"), Ok(2 << 20));
        assert!(parse_byte_size("12 parsecs").is_err());
        assert!(parse_byte_size("").is_err());
    }

    #[test]
    fn redacted_urls_hide_passwords_only() {
        assert_eq!(
            redact_url("redis://app:s3cret@cache:6379/2"),
            "redis://app:***@cache:6379/2"
        );
        assert_eq!(redact_url("redis://:s3cret@cache"), "redis://:***@cache");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(
            redact_url(
                "rediss-sentinel://u:pw@s1:26379/0?sentinelServiceName=m&sentinelPassword=sp&node=s2"
            ),
            "rediss-sentinel://u:***@s1:26379/0?sentinelServiceName=m&sentinelPassword=***&node=s2"
        );
        assert_eq!(
            redact_url("redis-cluster://h1:1?node=h2:2"),
            "redis-cluster://h1:1?node=h2:2"
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = Config::parse_from([
            "redis-gateway",
            "--redis-url",
            "redis://u:topsecret@h:1/0",
            "--redis-password",
            "alsosecret",
        ]);
        let printed = format!("{config:?}");
        assert!(!printed.contains("topsecret"), "{printed}");
        assert!(!printed.contains("alsosecret"), "{printed}");
    }

    #[test]
    fn boolean_settings_accept_the_usual_spellings() {
        for (text, expected) in [
            ("True", true),
            ("1", true),
            ("yes", true),
            ("false", false),
            ("0", false),
        ] {
            let config = Config::parse_from(["redis-gateway", "--redis-retry-on-timeout", text]);
            assert_eq!(config.redis_retry_on_timeout, expected, "{text}");
        }
        assert!(Config::parse_from(["redis-gateway", "--embedded-redis"]).embedded_redis);
    }

    #[test]
    fn ttls_past_a_century_are_refused() {
        let config = Config::parse_from(["redis-gateway", "--max-ttl", "101years"]);
        let err = config.validate().unwrap_err();
        assert!(err.setting.contains("GATEWAY_MAX_TTL"), "{err}");
        let config = Config::parse_from(["redis-gateway", "--max-ttl", "100years"]);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn connections_are_shared_out_among_runtimes() {
        let config = Config::parse_from(["redis-gateway", "--runtimes", "2"]);
        assert_eq!(config.connections_per_runtime(), 1);
        let config = Config::parse_from([
            "redis-gateway",
            "--runtimes",
            "2",
            "--redis-max-connections",
            "6",
        ]);
        assert_eq!(config.connections_per_runtime(), 3);
        let config = Config::parse_from([
            "redis-gateway",
            "--runtimes",
            "4",
            "--redis-max-connections",
            "2",
        ]);
        assert_eq!(config.connections_per_runtime(), 1);
    }

    #[test]
    fn metrics_endpoint_is_off_unless_an_address_is_given() {
        let config = Config::parse_from(["redis-gateway"]);
        assert_eq!(config.metrics_listen, None);
        let config = Config::parse_from(["redis-gateway", "--metrics-listen", "127.0.0.1:0"]);
        assert_eq!(config.metrics_listen, Some(([127, 0, 0, 1], 0).into()));
        assert!(config.validate().is_ok());
        let config = Config::parse_from(["redis-gateway", "--metrics-listen", "[::1]:9464"]);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn metrics_endpoint_needs_an_address_and_port() {
        for bad in ["localhost:9464", "9464", "127.0.0.1", "127.0.0.1:99999", ""] {
            let err = Config::try_parse_from(["redis-gateway", "--metrics-listen", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert_eq!(err.exit_code(), 2);
            assert!(
                err.to_string().contains("GATEWAY_METRICS_LISTEN"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn metrics_endpoint_cannot_share_the_grpc_port() {
        let config = Config::parse_from([
            "redis-gateway",
            "--listen",
            "0.0.0.0:50051",
            "--auth",
            "none",
            "--metrics-listen",
            "127.0.0.1:50051",
        ]);
        let err = config.validate().unwrap_err();
        assert!(err.setting.contains("GATEWAY_METRICS_LISTEN"), "{err}");
    }

    #[test]
    fn embedded_redis_conflicts_with_url() {
        let config = Config::parse_from([
            "redis-gateway",
            "--embedded-redis",
            "--redis-url",
            "redis://h:1",
        ]);
        let err = config.validate().unwrap_err();
        assert!(err.setting.contains("GATEWAY_EMBEDDED_REDIS"));
    }

    #[test]
    fn standalone_cluster_and_sentinel_urls_are_accepted_in_plain_and_tls_forms() {
        let with_url = |url: &str| Config::parse_from(["redis-gateway", "--redis-url", url]);
        for url in [
            "redis://h:1/0",
            "rediss://h:1/0",
            "redis-cluster://h1:1?node=h2:2&node=h3:3",
            "rediss-cluster://h1:1?node=h2:2",
            "redis-sentinel://s1:26379/0?sentinelServiceName=main&node=s2:26379",
            "rediss-sentinel://s1:26379/0?sentinelServiceName=main&sentinelPassword=x",
        ] {
            assert!(with_url(url).validate().is_ok(), "{url}");
        }
        let err = with_url("http://h:1").validate().unwrap_err();
        assert!(err.setting.contains("REDIS_URL"), "{err}");
    }

    #[test]
    fn explicit_modes_need_their_settings_and_do_not_mix_with_a_url() {
        let parse = |args: &[&str]| {
            let mut all = vec!["redis-gateway"];
            all.extend_from_slice(args);
            Config::parse_from(all).validate()
        };
        assert!(parse(&["--redis-mode", "cluster", "--redis-nodes", "a:1,b:2,c"]).is_ok());
        assert!(
            parse(&[
                "--redis-mode",
                "sentinel",
                "--redis-nodes",
                "s1,s2:26380",
                "--redis-sentinel-service",
                "main"
            ])
            .is_ok()
        );
        let cases: [(&[&str], &str); 5] = [
            (
                &["--redis-mode", "sentinel", "--redis-nodes", "s1"],
                "REDIS_SENTINEL_SERVICE",
            ),
            (&["--redis-nodes", "a:1,b:2"], "REDIS_NODES"),
            (
                &["--redis-mode", "cluster", "--redis-nodes", "a:0"],
                "REDIS_NODES",
            ),
            (
                &["--redis-url", "redis://h:1", "--redis-mode", "cluster"],
                "REDIS_MODE",
            ),
            (&["--embedded-redis", "--redis-tls"], "REDIS_TLS"),
        ];
        for (args, setting) in cases {
            let err = parse(args).unwrap_err();
            assert!(err.setting.contains(setting), "{args:?}: {err}");
        }
    }

    #[test]
    fn serving_beyond_loopback_needs_auth_or_an_explicit_none() {
        let parse = |args: &[&str]| {
            let mut all = vec!["redis-gateway"];
            all.extend_from_slice(args);
            Config::parse_from(all).validate()
        };
        assert!(parse(&["--listen", "127.0.0.1:1"]).is_ok());
        assert!(parse(&["--listen", "[::1]:1"]).is_ok());
        let err = parse(&["--listen", "0.0.0.0:1"]).unwrap_err();
        assert!(err.setting.contains("GATEWAY_AUTH_FILE"), "{err}");
        assert!(parse(&["--listen", "0.0.0.0:1", "--auth", "none"]).is_ok());
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        assert!(parse(&["--listen", "0.0.0.0:1", "--auth-file", path]).is_ok());
        assert!(parse(&["--auth", "none", "--auth-file", path]).is_err());
        assert!(parse(&["--auth", "token"]).is_err());
    }

    #[test]
    fn tls_files_need_tls_and_come_in_pairs() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let parse = |args: &[&str]| {
            let mut all = vec!["redis-gateway"];
            all.extend_from_slice(args);
            Config::parse_from(all).validate()
        };
        let err = parse(&["--redis-tls-ca", path]).unwrap_err();
        assert!(err.reason.contains("TLS to Redis is off"), "{err}");
        assert!(parse(&["--redis-tls", "--redis-tls-ca", path]).is_ok());
        assert!(parse(&["--redis-url", "rediss://h:1", "--redis-tls-ca", path]).is_ok());
        let err = parse(&["--redis-tls", "--redis-tls-cert", path]).unwrap_err();
        assert!(err.setting.contains("REDIS_TLS_KEY"), "{err}");
        let err = parse(&["--redis-tls", "--redis-tls-ca", "/nonexistent/ca.pem"]).unwrap_err();
        assert!(err.setting.contains("REDIS_TLS_CA"), "{err}");
    }
}
