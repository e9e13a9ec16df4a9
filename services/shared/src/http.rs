//! HTTP conventions shared by command-api and query-api.
//!
//! * extractors whose rejections are problem+json (bad JSON → 400, wrong
//!   content type → 415, body too large → 413, bad path/query → 400);
//! * the layers every API router gets: 64 KiB body limit, a request timeout,
//!   unknown routes and methods as problems, and one layer that opens the
//!   server span (continuing an incoming `traceparent`) and records
//!   `http_requests_total` / `http_request_duration_seconds` by route
//!   template, never by raw path, so label sets stay bounded;
//! * [`serve`], which drains in-flight requests on shutdown.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use opentelemetry::propagation::Extractor;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::problem::Problem;
use crate::shutdown::Shutdown;

/// Largest accepted request body (CONTRACT §4: 413 above it).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Largest accepted request head (431 above it); a JWT is ~1 KiB.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// A JSON object body whose every rejection is a problem.
///
/// The body must be a JSON object (serde would otherwise accept an array for
/// a struct). The parsed value is kept too, e.g. to fingerprint the request.
pub struct JsonBody<T>(pub T, pub serde_json::Value);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => return Err(json_problem(rejection)),
        };
        if !raw.is_object() {
            return Err(Problem::bad_request("the body must be a JSON object"));
        }
        let value = T::deserialize(&raw).map_err(|e| {
            Problem::bad_request(format!("the body does not have the expected shape: {e}"))
        })?;
        Ok(Self(value, raw))
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::unsupported_media_type(),
        JsonRejection::JsonSyntaxError(e) => {
            Problem::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => Problem::bad_request(format!(
            "the body does not have the expected shape: {}",
            e.body_text()
        )),
        JsonRejection::BytesRejection(e) => {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::payload_too_large(BODY_LIMIT_BYTES)
            } else {
                Problem::bad_request(e.body_text())
            }
        }
        other => Problem::bad_request(other.body_text()),
    }
}

/// A path parameter parsed by serde (e.g. a UUID) with a 400 problem on failure.
pub struct PathParam<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e: PathRejection| {
                Problem::bad_request(format!("invalid path parameter: {}", e.body_text()))
            })
    }
}

/// Query parameters with a 400 problem on failure.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e: QueryRejection| {
                Problem::bad_request(format!("invalid query parameter: {}", e.body_text()))
            })
    }
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The method as a metric label and span attribute: the methods HTTP defines,
/// or `_OTHER` (as the OpenTelemetry conventions say), so a client inventing
/// methods cannot grow the label set without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// The HTTP metrics' handles by route, method and status, resolved once per
/// worker thread. Looking a labelled metric up in the registry builds and
/// hashes its key (several allocations) — a cost every request paid. The set
/// is bounded like the labels: route templates, method labels, status codes.
type RouteMetrics = Vec<(&'static str, u16, metrics::Counter, metrics::Histogram)>;

thread_local! {
    static HTTP_METRICS: RefCell<HashMap<Box<str>, RouteMetrics>> = RefCell::new(HashMap::new());
}

fn record_request(route: &str, method: &'static str, status: u16, seconds: f64) {
    HTTP_METRICS.with_borrow_mut(|cache| {
        if !cache.contains_key(route) {
            cache.insert(route.into(), Vec::new());
        }
        let Some(entries) = cache.get_mut(route) else {
            return;
        };
        let i = match entries.iter().position(|e| e.0 == method && e.1 == status) {
            Some(i) => i,
            None => {
                let labels = [
                    metrics::Label::new("method", method),
                    metrics::Label::new("route", route.to_owned()),
                    metrics::Label::new("status", status.to_string()),
                ];
                entries.push((
                    method,
                    status,
                    metrics::counter!("http_requests_total", labels.to_vec()),
                    metrics::histogram!("http_request_duration_seconds", Vec::from(labels)),
                ));
                entries.len() - 1
            }
        };
        let (_, _, count, duration) = &entries[i];
        count.increment(1);
        duration.record(seconds);
    });
}

/// The route label: the matched template, or `unmatched` (404s, 405s).
fn route_label(route: &Option<MatchedPath>) -> &str {
    route.as_ref().map_or("unmatched", MatchedPath::as_str)
}

/// The server span of one request. With export on it carries the HTTP
/// conventions' attributes and continues an incoming `traceparent`. With
/// export off it is made only when the access log is on (debug level for this
/// module), to give that request's log lines a `trace_id`: otherwise nothing
/// reads it, and making it cost about a sixth of a feed request's CPU.
fn server_span(req: &Request, method: &'static str, route: &str) -> tracing::Span {
    if !crate::telemetry::exporting() {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return tracing::Span::none();
        }
        return tracing::info_span!("http.server.request", http.route = %route);
    }
    let span = tracing::info_span!(
        "http.server.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    // Continue the caller's trace when it sent one; without a (valid)
    // traceparent the span starts a new trace. Most requests carry none, and
    // the propagator's lookup is not free, so it only runs when there is one.
    if req.headers().contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let _ = span.set_parent(parent);
    }
    span
}

/// The layer every API route gets: the 64 KiB body limit, the request
/// deadline (503 past it), the server span and the HTTP metrics, by route
/// template. One hand-written layer, not one per concern: `Router::layer`
/// wraps every route in its own boxed service per layer, and with four
/// `from_fn` layers that boxing cost a third of a feed request's CPU.
#[derive(Clone)]
struct ApiLayer {
    timeout: Duration,
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = Api<<DefaultBodyLimit as tower::Layer<S>>::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        Api {
            inner: DefaultBodyLimit::max(BODY_LIMIT_BYTES).layer(inner),
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
struct Api<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower::Service<Request> for Api<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        let span = server_span(&req, method, route_label(&route));
        let timeout = self.timeout;
        let handled = self.inner.call(req);
        Box::pin(async move {
            let started = Instant::now();
            let response = match tokio::time::timeout(timeout, handled.instrument(span.clone()))
                .await
            {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    let route = route_label(&route);
                    tracing::warn!(?timeout, method, route, "request timed out");
                    Problem::unavailable("the request took too long; try again", 1).into_response()
                }
            };
            let elapsed = started.elapsed().as_secs_f64();
            let status = response.status();
            // No-ops on a bare span (export off), which has neither field.
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            // The access log: debug level, off the hot path unless asked for (RUST_LOG).
            span.in_scope(|| {
                tracing::debug!(
                    status = status.as_u16(),
                    duration_ms = elapsed * 1000.0,
                    "request completed"
                )
            });
            record_request(route_label(&route), method, status.as_u16(), elapsed);
            Ok(response)
        })
    }
}

async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}

/// Adds the layers every API router shares. Call after all routes are added.
pub fn with_api_layers(router: Router, request_timeout: Duration) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(ApiLayer {
            timeout: request_timeout,
        })
}

/// Binds a listener for the address in `var`; the error names the variable.
pub async fn bind(
    var: &str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind {var} {addr}: {e}"))
}

/// Connection-level limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A client must send its whole request head within this time (slowloris).
    pub header_read_timeout: Duration,
    /// After shutdown begins, keep serving (while unready) this long.
    pub shutdown_delay: Duration,
    /// Open connections at most; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
}

impl ServerLimits {
    /// `SHUTDOWN_DELAY_MS` (default 0) and `HTTP_HEADER_READ_TIMEOUT_MS` (default 10 s).
    pub fn from_env(env: &crate::config::Env<'_>) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            header_read_timeout: env.duration_ms_or(
                "HTTP_HEADER_READ_TIMEOUT_MS",
                10_000,
                100..=300_000,
            )?,
            shutdown_delay: env.duration_ms_or("SHUTDOWN_DELAY_MS", 0, 0..=120_000)?,
            max_connections: env.bounded_or("HTTP_MAX_CONNECTIONS", 4096, 1..=1_000_000)?,
        })
    }
}

/// Serves `router` until `shutdown`, then drains.
///
/// On shutdown: readiness is already 503; for `shutdown_delay` the server keeps
/// serving but answers with `Connection: close`, so clients stop reusing their
/// connections before we stop accepting; then in-flight requests finish and
/// the remaining idle connections are closed. Each connection must send its
/// request head within `header_read_timeout`, and request heads are capped
/// (32 KiB, 100 headers), so slow or oversized clients are cut off.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
    limits: ServerLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    use tower::ServiceExt;

    // Outside the router (one wrapper around it, not one per route).
    let draining = shutdown.clone();
    let app = ServiceExt::<axum::http::Request<hyper::body::Incoming>>::map_response(
        router,
        move |mut res: Response| {
            if draining.is_triggered() {
                res.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            res
        },
    );
    let stop_accepting = crate::shutdown::after_delay(shutdown, limits.shutdown_delay);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        // Backpressure: at the connection cap, stop accepting until one closes.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = stop_accepting.wait() => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop_accepting.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(MAX_HEADER_BYTES)
            .max_headers(100);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::method_label;
    use axum::http::Method;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for invented in ["FOO", "BREW", "get"] {
            let m = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "_OTHER", "{invented}");
        }
    }
}
