//! Logs and traces, set up once for every binary.
//!
//! Configured only by the standard variables: `RUST_LOG`, `LOG_FORMAT`
//! (`json` by default, `text` for humans) and the `OTEL_*` family. Trace
//! export is off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the W3C
//! trace-context propagator is installed globally either way, so an incoming
//! `traceparent` is continued and an outgoing one is written.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, Env};
use crate::logs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Telemetry settings, validated before anything starts.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub service_name: String,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
}

impl TelemetryConfig {
    pub fn from_env(env: &Env<'_>, default_service_name: &str) -> Result<Self, ConfigError> {
        let log_filter = env.optional("RUST_LOG").unwrap_or_else(|| "info".into());
        EnvFilter::try_new(&log_filter).map_err(|e| ConfigError {
            var: "RUST_LOG".into(),
            problem: e.to_string(),
        })?;
        let log_format = match env.optional("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError {
                    var: "LOG_FORMAT".into(),
                    problem: format!("{other:?} is not one of json, text"),
                });
            }
        };
        let otlp_protocol = match env.optional("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(ConfigError {
                    var: "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                    problem: format!("{other:?} is not one of grpc, http/protobuf"),
                });
            }
        };
        Ok(Self {
            service_name: env
                .optional("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| default_service_name.to_string()),
            log_filter,
            log_format,
            otlp_endpoint: env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otlp_protocol,
        })
    }
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans leave the process (`OTEL_EXPORTER_OTLP_ENDPOINT` is set).
///
/// Client spans — one per Redis command or Postgres transaction, see
/// [`redis_span!`](crate::redis_span) — are made only then: with export off
/// nothing reads them (log lines carry the ids of the enclosing server or
/// consumer span, which always exists), and they cost about a tenth of a
/// feed request.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keeps the trace pipeline alive; call [`Telemetry::shutdown`] before exit to flush spans.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global subscriber, propagator and tracer provider.
    ///
    /// Spans always get OpenTelemetry ids (so logs carry `trace_id` and the
    /// trace context travels through the outbox and the stream); they are
    /// exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Must run inside
    /// the Tokio runtime (the gRPC exporter needs it).
    pub fn init(config: &TelemetryConfig) -> Result<Self, String> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

        // Resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, with our
        // binary name as the fallback service name.
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(config.service_name.clone());
        }
        // The sampler comes from OTEL_TRACES_SAMPLER[_ARG] (parentbased_always_on by default).
        let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
        if config.otlp_endpoint.is_some() {
            // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and _TRACES_ENDPOINT,
            // _HEADERS, _TIMEOUT) itself, appending /v1/traces for HTTP as the spec says.
            let exporter = match config.otlp_protocol {
                OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                    .build(),
                OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .build(),
            }
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        EXPORTING.store(
            config.otlp_endpoint.is_some(),
            std::sync::atomic::Ordering::Relaxed,
        );

        let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| e.to_string())?;
        // Every request opens a few spans, so their cost is per request: no
        // busy/idle clocks on each poll, no thread or target attributes, and
        // no OpenTelemetry context switch on each enter/exit (nothing here
        // reads `Context::current()`; span contexts are read from the spans).
        let otel_layer = tracing_opentelemetry::layer()
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_target(false)
            .with_context_activation(false)
            .with_tracer(provider.tracer(config.service_name.clone()));
        let (json, text) = match config.log_format {
            LogFormat::Json => (
                Some(
                    tracing_subscriber::fmt::layer()
                        .event_format(logs::JsonLines)
                        .fmt_fields(logs::NoSpanFields),
                ),
                None,
            ),
            LogFormat::Text => (None, Some(tracing_subscriber::fmt::layer())),
        };
        tracing_subscriber::registry()
            .with(filter)
            .with(otel_layer)
            .with(logs::TraceIdLayer::default())
            .with(json)
            .with(text)
            .try_init()
            .map_err(|e| e.to_string())?;
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Self { provider })
    }

    /// Flushes and stops the exporter (spans of the last requests included).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) of a span, for carrying
/// it through the outbox and the stream. `None` when the span has no valid context.
pub fn trace_context_of(span: &tracing::Span) -> (Option<String>, Option<String>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier = std::collections::HashMap::new();
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MapCarrier(&mut carrier))
    });
    (
        carrier.remove("traceparent"),
        carrier.remove("tracestate").filter(|s| !s.is_empty()),
    )
}

/// The OpenTelemetry context described by a stored `traceparent`/`tracestate`.
pub fn context_from(traceparent: Option<&str>, tracestate: Option<&str>) -> opentelemetry::Context {
    let mut carrier = std::collections::HashMap::new();
    if let Some(tp) = traceparent {
        carrier.insert("traceparent".to_string(), tp.to_string());
    }
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_string(), ts.to_string());
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapCarrier(&mut carrier)))
}

struct MapCarrier<'a>(&'a mut std::collections::HashMap<String, String>);

impl opentelemetry::propagation::Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl opentelemetry::propagation::Extractor for MapCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// A CLIENT span named `$name` with `$fields`, or a disabled span when traces
/// are not exported (see [`exporting`]).
#[macro_export]
macro_rules! client_span {
    ($name:literal, $($fields:tt)*) => {
        if $crate::telemetry::exporting() {
            tracing::info_span!($name, otel.kind = "client", $($fields)*)
        } else {
            tracing::Span::none()
        }
    };
}

/// A CLIENT span for one Redis command or pipeline (OpenTelemetry database conventions).
#[macro_export]
macro_rules! redis_span {
    ($op:expr) => {
        $crate::client_span!(
            "redis",
            otel.name = %$op,
            db.system.name = "redis",
            db.operation.name = %$op,
        )
    };
}

/// A CLIENT span for Postgres work: `$op` like "SELECT posts" or "TRANSACTION create_post".
#[macro_export]
macro_rules! postgres_span {
    ($op:expr, $collection:expr) => {
        $crate::client_span!(
            "postgres",
            otel.name = %$op,
            db.system.name = "postgresql",
            db.operation.name = %$op,
            db.collection.name = %$collection,
        )
    };
}
