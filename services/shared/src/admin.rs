//! The admin server on `ADMIN_ADDR`: `/livez`, `/readyz`, `/metrics`.
//!
//! Never routed by the ingress. Readiness is computed in the background by
//! the `health` crate's periodic checkers, so a probe never waits on a
//! dependency and one failed ping does not flap the pod out of its Service.
//! A check counts as ready only after it has passed once, and readiness turns
//! 503 the moment shutdown begins so traffic drains before the process stops.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use health::{Checkable, PeriodicChecker, Reporter, Status};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::shutdown::Shutdown;

/// What a readiness check returns, boxed so checks can be built by functions
/// in other crates (`community_store::reachable_check`, `redis_conn::readiness_check`).
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

#[derive(Debug)]
struct CheckError(String);

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CheckError {}

#[derive(Default)]
struct ProbeState {
    passed_once: AtomicBool,
    last_error: Mutex<Option<String>>,
}

struct ProbeCheck {
    name: String,
    f: CheckFn,
    timeout: Duration,
    state: Arc<ProbeState>,
}

#[async_trait::async_trait]
impl Checkable for ProbeCheck {
    type Error = CheckError;

    async fn check(&self) -> Result<(), CheckError> {
        let result = match tokio::time::timeout(self.timeout, (self.f)()).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {:?}", self.timeout)),
        };
        let mut last = self
            .state
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                self.state.passed_once.store(true, Ordering::Release);
                *last = None;
                Ok(())
            }
            Err(e) => {
                *last = Some(e.clone());
                Err(CheckError(e))
            }
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }
}

/// One registered dependency check, as the `/readyz` handler sees it.
struct NamedReporter {
    name: String,
    checker: PeriodicChecker<ProbeCheck>,
    state: Arc<ProbeState>,
}

/// Timing of the background checks.
#[derive(Debug, Clone)]
pub struct CheckTiming {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before a healthy dependency is reported down.
    pub min_failures: u8,
}

impl Default for CheckTiming {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            min_failures: 2,
        }
    }
}

/// Builder for the set of readiness checks of one process.
pub struct ReadinessBuilder {
    timing: CheckTiming,
    checks: Vec<NamedReporter>,
}

impl ReadinessBuilder {
    pub fn new(timing: CheckTiming) -> Self {
        Self {
            timing,
            checks: Vec::new(),
        }
    }

    /// Registers a dependency check; `f` returns a human-readable error on failure.
    pub fn check<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let state = Arc::new(ProbeState::default());
        let probe = ProbeCheck {
            name: name.to_string(),
            f: Arc::new(move || Box::pin(f()) as CheckFuture),
            timeout: self.timing.timeout,
            state: state.clone(),
        };
        let config = health::Config {
            check_interval: self.timing.interval,
            min_failures: self.timing.min_failures,
            min_successes: 1,
            // If the checker itself stops updating (a wedged task), report unready.
            leeway: self.timing.interval * 5 + self.timing.timeout,
        };
        self.checks.push(NamedReporter {
            name: name.to_string(),
            checker: PeriodicChecker::new(probe, config),
            state,
        });
        self
    }

    /// Spawns the periodic checkers and returns the readiness view.
    pub fn start(self, shutdown: Shutdown) -> Readiness {
        for c in &self.checks {
            let checker = c.checker.clone();
            tokio::spawn(async move { checker.run().await });
        }
        Readiness {
            inner: Arc::new(ReadinessInner {
                checks: self.checks,
                shutdown,
            }),
        }
    }
}

struct ReadinessInner {
    checks: Vec<NamedReporter>,
    shutdown: Shutdown,
}

/// The process's current readiness, cheap to clone and to query.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckStatus {
    Pending,
    Pass,
    Fail(String),
}

impl Readiness {
    pub fn statuses(&self) -> BTreeMap<String, CheckStatus> {
        self.inner
            .checks
            .iter()
            .map(|c| {
                let status = if !c.state.passed_once.load(Ordering::Acquire) {
                    match c
                        .state
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                    {
                        Some(e) => CheckStatus::Fail(e),
                        None => CheckStatus::Pending,
                    }
                } else {
                    match c.checker.status() {
                        Some(Status::Healthy) => CheckStatus::Pass,
                        Some(Status::Unhealthy) => CheckStatus::Fail(
                            c.state
                                .last_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .clone()
                                .unwrap_or_else(|| "recovering".into()),
                        ),
                        None => CheckStatus::Fail("check has not run recently".into()),
                    }
                };
                (c.name.clone(), status)
            })
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        !self.inner.shutdown.is_triggered()
            && self
                .statuses()
                .values()
                .all(|s| matches!(s, CheckStatus::Pass))
    }

    /// Whether one named dependency currently passes (used to fail fast, e.g. 503 on reads).
    pub fn passes(&self, name: &str) -> bool {
        self.statuses()
            .get(name)
            .is_some_and(|s| matches!(s, CheckStatus::Pass))
    }
}

/// Installs the Prometheus recorder for this process and returns its handle.
///
/// Histograms get explicit buckets (seconds) so they render as Prometheus
/// histograms, which aggregate across replicas, rather than summaries.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    const LATENCY_BUCKETS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let shutting_down = state.readiness.inner.shutdown.is_triggered();
    let statuses = state.readiness.statuses();
    let ready = !shutting_down && statuses.values().all(|s| matches!(s, CheckStatus::Pass));
    let checks: serde_json::Map<String, serde_json::Value> = statuses
        .into_iter()
        .map(|(name, s)| {
            let v = match s {
                CheckStatus::Pass => json!({"status": "pass"}),
                CheckStatus::Pending => json!({"status": "pending"}),
                CheckStatus::Fail(e) => json!({"status": "fail", "error": e}),
            };
            (name, v)
        })
        .collect();
    let body = json!({
        "status": if ready { "ready" } else { "unready" },
        "shutting_down": shutting_down,
        "checks": checks,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn render_metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Binds the admin listener; call [`AdminServer::serve`] to run it.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl AdminServer {
    /// Binds `ADMIN_ADDR`; the error names the variable.
    pub async fn bind(
        addr: SocketAddr,
        readiness: Readiness,
        metrics: PrometheusHandle,
    ) -> Result<Self, String> {
        let listener = crate::http::bind("ADMIN_ADDR", addr).await?;
        let router = Router::new()
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/metrics", get(render_metrics))
            .with_state(AdminState { readiness, metrics });
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process exits: readiness must stay observable (503) while draining.
    pub async fn serve(self) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).await
    }

    /// [`AdminServer::serve`] on its own task; a failure is logged.
    pub fn spawn(self) {
        tokio::spawn(async move {
            if let Err(e) = self.serve().await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
    }
}
