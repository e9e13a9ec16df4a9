//! query-api: the read side of Sparkle Community.
//!
//! Serves the global feed, author feeds and post views from the Redis read
//! model only — this crate links no SQL driver. Reads are public; a valid
//! bearer token personalises `liked_by_me`. A read-your-writes token makes a
//! query wait (bounded) until the projector has applied that write.
#![forbid(unsafe_code)]

pub mod config;
pub mod cursor;
pub mod read_model;
pub mod resp;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use community_shared::admin::{AdminServer, CheckFuture, CheckTiming, ReadinessBuilder};
use community_shared::auth::JwtVerifier;
use community_shared::shutdown::{Shutdown, ShutdownTrigger};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::read_model::{Backend, ReadModel};
use crate::routes::{AppState, Shared};

pub struct Application {
    listener: TcpListener,
    admin: AdminServer,
    router: axum::Router,
    shutdown: Shutdown,
    trigger: ShutdownTrigger,
    limits: community_shared::http::ServerLimits,
}

impl Application {
    pub async fn build(
        config: Config,
        metrics: PrometheusHandle,
        trigger: ShutdownTrigger,
    ) -> Result<Self, String> {
        let shutdown = trigger.subscribe();
        let redis = Backend::connect(&config.redis_url, "REDIS_URL").map_err(|e| e.to_string())?;
        let redis_check = redis.clone();
        let readiness = ReadinessBuilder::new(CheckTiming::default())
            .check("redis", move || -> CheckFuture {
                let redis = redis_check.clone();
                Box::pin(async move { redis.ping().await })
            })
            .start(shutdown.clone());
        let state = AppState::new(Shared {
            read_model: ReadModel::new(redis),
            verifier: config.auth.as_ref().map(|a| Arc::new(JwtVerifier::new(a))),
            consistency_wait: config.consistency_wait,
        });
        let router =
            community_shared::http::with_api_layers(routes::router(state), config.request_timeout);
        let listener = community_shared::http::bind("HTTP_ADDR", config.http_addr).await?;
        let admin = AdminServer::bind(config.admin_addr, readiness, metrics).await?;
        Ok(Self {
            listener,
            admin,
            router,
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

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.admin.spawn();
        let served = community_shared::http::serve(
            self.listener,
            self.router,
            self.shutdown.clone(),
            self.limits,
        )
        .await;
        self.trigger.trigger();
        served
    }
}
