//! One multiplexed, self-healing Redis connection per process.
//!
//! A `ConnectionManager` pipelines every caller's commands over one socket
//! (far faster than a connection per request) and reconnects in the
//! background. It is created lazily, so a process starts even while Redis is
//! down, and every command has a response timeout, so an outage fails fast.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ConfigError;

/// Every Redis connection's deadlines: to connect, and for each reply.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The client for `url`; the error names the variable `var` it came from.
pub fn client(url: &str, var: &str) -> Result<redis::Client, ConfigError> {
    redis::Client::open(url).map_err(|e| invalid(var, e))
}

fn invalid(var: &str, e: redis::RedisError) -> ConfigError {
    ConfigError {
        var: var.to_string(),
        problem: format!("invalid Redis URL: {e}"),
    }
}

pub fn connect(url: &str, var: &str) -> Result<ConnectionManager, ConfigError> {
    manager(client(url, var)?, var)
}

/// A lazily connecting [`ConnectionManager`] for `client`.
pub fn manager(client: redis::Client, var: &str) -> Result<ConnectionManager, ConfigError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| invalid(var, e))
}

/// `PING`, for readiness checks.
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), String> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A readiness check (for [`crate::admin::ReadinessBuilder::check`]): `PING`.
pub fn readiness_check(
    conn: ConnectionManager,
) -> impl Fn() -> crate::admin::CheckFuture + Send + Sync + 'static {
    move || {
        let mut c = conn.clone();
        Box::pin(async move { ping(&mut c).await })
    }
}
