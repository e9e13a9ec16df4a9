//! query-api settings (CONTRACT §2), validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use community_shared::auth::AuthConfig;
use community_shared::config::{ConfigError, Env};
use community_shared::http::ServerLimits;
use community_shared::telemetry::TelemetryConfig;

pub const HELP: &str = concat!(
    "query-api ",
    env!("CARGO_PKG_VERSION"),
    " — Sparkle Community read side (Redis only, no SQL)

USAGE:
  query-api              serve the feed and post views
  query-api --help | --version

ENVIRONMENT:
  HTTP_ADDR                      public REST listener [default: 0.0.0.0:8080]
  AUTH_JWT_SECRET                HS256 key; when set, a valid token personalises liked_by_me [optional]
  AUTH_JWT_ISSUER                expected `iss` claim [default: not checked]
  AUTH_JWT_AUDIENCE              expected `aud` claim [default: not checked]
  CONSISTENCY_WAIT_MS            longest wait for a read-your-writes token [default: 2000]
  REQUEST_TIMEOUT_MS             per-request deadline, then 503 [default: 10000]
  HTTP_HEADER_READ_TIMEOUT_MS    a client must send its request head within this [default: 10000]
  HTTP_MAX_CONNECTIONS           open client connections at most [default: 4096]
"
);

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub redis_url: String,
    pub auth: Option<AuthConfig>,
    pub telemetry: TelemetryConfig,
    pub consistency_wait: Duration,
    pub request_timeout: Duration,
    pub server: ServerLimits,
}

impl Config {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            redis_url: env.redis_url("REDIS_URL")?,
            http_addr: env.addr_or("HTTP_ADDR", "0.0.0.0:8080")?,
            admin_addr: env.addr_or("ADMIN_ADDR", "0.0.0.0:9090")?,
            auth: AuthConfig::from_env(env)?,
            telemetry: TelemetryConfig::from_env(env, "query-api")?,
            consistency_wait: env.duration_ms_or("CONSISTENCY_WAIT_MS", 2000, 0..=30_000)?,
            request_timeout: env.duration_ms_or("REQUEST_TIMEOUT_MS", 10_000, 100..=300_000)?,
            server: ServerLimits::from_env(env)?,
        })
    }
}
