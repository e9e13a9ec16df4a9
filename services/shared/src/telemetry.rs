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

/// Keeps the trace pipeline alive; call [`Telemetry::shutdown`] before exit to flush spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber, propagator and (if configured) the OTLP exporter.
    /// Must run inside the Tokio runtime (the gRPC exporter needs it).
    pub fn init(config: &TelemetryConfig) -> Result<Self, String> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

        let provider = match &config.otlp_endpoint {
            None => None,
            Some(_) => {
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
                // Resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, with our
                // binary name as the fallback service name.
                let mut resource = opentelemetry_sdk::Resource::builder();
                if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
                    resource = resource.with_service_name(config.service_name.clone());
                }
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource.build())
                        .build(),
                )
            }
        };

        let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| e.to_string())?;
        let otel_layer = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer().with_tracer(p.tracer(config.service_name.clone()))
        });
        let (json, text) = match config.log_format {
            LogFormat::Json => (
                Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false),
                ),
                None,
            ),
            LogFormat::Text => (None, Some(tracing_subscriber::fmt::layer())),
        };
        tracing_subscriber::registry()
            .with(filter)
            .with(json)
            .with(text)
            .with(otel_layer)
            .try_init()
            .map_err(|e| e.to_string())?;

        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
        }
        Ok(Self { provider })
    }

    /// Flushes and stops the exporter (spans of the last requests included).
    pub fn shutdown(self) {
        if let Some(Err(e)) = self.provider.map(|p| p.shutdown()) {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}
