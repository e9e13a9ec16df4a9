//! command-api: the write side of Sparkle Community.
//!
//! Validates commands, writes Postgres (the source of truth) together with a
//! transactional outbox, and relays the outbox to the Redis stream. Redis is
//! not needed to accept a write: the outbox absorbs an outage.
//!
//! [`Application::build`] binds both listeners first (port 0 in tests) and
//! [`Application::run_until_stopped`] serves until shutdown, so tests start
//! the same wiring as production.
#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod outbox;
pub mod post_batch;
pub mod routes;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use community_shared::admin::{AdminServer, CheckTiming, ReadinessBuilder};
use community_shared::auth::JwtVerifier;
use community_shared::shutdown::{Shutdown, ShutdownTrigger};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::Config;
use crate::outbox::Relay;
use crate::routes::AppState;

pub struct Application {
    listener: TcpListener,
    admin: AdminServer,
    router: axum::Router,
    relay: Relay,
    backlog: tokio::task::JoinHandle<()>,
    shutdown: Shutdown,
    trigger: ShutdownTrigger,
    limits: community_shared::http::ServerLimits,
}

impl Application {
    /// Wires everything and binds the listeners; nothing is served yet.
    pub async fn build(
        config: Config,
        metrics: PrometheusHandle,
        trigger: ShutdownTrigger,
    ) -> Result<Self, String> {
        let shutdown = trigger.subscribe();
        let pool = config.db.pool();
        let redis = community_shared::redis_conn::connect(&config.redis_url, "REDIS_URL")
            .map_err(|e| e.to_string())?;

        // Readiness needs Postgres and the schema, not Redis (CONTRACT §5).
        let readiness = ReadinessBuilder::new(CheckTiming::default())
            .check("postgres", community_store::reachable_check(pool.clone()))
            .check("schema", community_store::schema_check(pool.clone()))
            .start(shutdown.clone());

        let relay_wake = Arc::new(Notify::new());
        let state = AppState {
            pool: pool.clone(),
            verifier: Arc::new(JwtVerifier::new(&config.auth)),
            relay_wake: relay_wake.clone(),
            posts: post_batch::PostWriter::start(pool.clone()),
        };
        let router =
            community_shared::http::with_api_layers(routes::router(state), config.request_timeout);
        let listener = community_shared::http::bind("HTTP_ADDR", config.http_addr).await?;
        let admin = AdminServer::bind(config.admin_addr, readiness, metrics).await?;
        let relay = Relay::new(
            config.db.clone(),
            redis,
            relay_wake,
            config.relay.clone(),
            shutdown.clone(),
        );
        let backlog = tokio::spawn(outbox::report_backlog(pool, shutdown.clone()));
        Ok(Self {
            listener,
            admin,
            router,
            relay,
            backlog,
            shutdown,
            trigger,
            limits: config.server.clone(),
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until shutdown, then drains requests and finishes the relay's batch.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.admin.spawn();
        let relay = tokio::spawn(self.relay.run());
        let served = community_shared::http::serve(
            self.listener,
            self.router,
            self.shutdown.clone(),
            self.limits,
        )
        .await;
        // Make sure the background tasks stop even if the server ended on its own.
        self.trigger.trigger();
        let _ = relay.await;
        let _ = self.backlog.await;
        served
    }
}
