//! Logs and traces.
//!
//! - Log lines go to stderr, filtered by `SEEDGATE_LOG` (an `EnvFilter`,
//!   default `info`), as text or, with `[telemetry] log_format = "json"` or
//!   `SEEDGATE_LOG_FORMAT=json`, as one JSON object per line carrying the
//!   fields of every span the line is in: `request_id`, `method` and `path`
//!   of a gateway request; `task_id`, `origin` and `url` of a download;
//!   `plugin` and `op` of a plugin call; `piece`; `peer_id` of a seed-peer
//!   request.
//! - With `[telemetry] otlp_endpoint`, the same spans are exported over
//!   OTLP/gRPC (request → task → plugin call / piece fetch), batched on the
//!   runtime, and flushed when the process stops.

use anyhow::Context;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

/// What must outlive serving: the trace exporter, flushed on drop.
pub struct Telemetry {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

impl Telemetry {
    /// Installs the process's subscriber. With an OTLP endpoint, call it
    /// inside the tokio runtime: the exporter's gRPC channel lives there.
    pub fn init(config: &TelemetryConfig) -> anyhow::Result<Self> {
        let format = match std::env::var("SEEDGATE_LOG_FORMAT") {
            Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Ok(v) if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            Ok(v) => anyhow::bail!("SEEDGATE_LOG_FORMAT: '{v}' is neither 'text' nor 'json'"),
            Err(_) => config.log_format,
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("SEEDGATE_LOG")
            .unwrap_or_else(|_| "info".into());
        let logs: Boxed = match format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour for a terminal only: escape codes in a log file
                // or a journal are noise.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_filter(filter)
                .boxed(),
        };
        let mut layers = vec![logs];
        let traces = match &config.otlp_endpoint {
            Some(endpoint) => {
                let provider = otlp_provider(endpoint, config)?;
                use opentelemetry::trace::TracerProvider;
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("seedgate"))
                    // Spans only: log lines stay in the log.
                    .with_filter(LevelFilter::INFO)
                    .boxed();
                layers.push(layer);
                Some(provider)
            }
            None => None,
        };
        tracing_subscriber::registry()
            .with(layers)
            .try_init()
            .context("installing the log subscriber")?;
        if let Some(endpoint) = &config.otlp_endpoint {
            tracing::info!(%endpoint, service = %config.service_name, ratio = config.sample_ratio, "exporting traces over OTLP");
        }
        Ok(Self { traces })
    }

    /// Text logs with `SEEDGATE_LOG`, for the command-line tools.
    pub fn init_plain() {
        if let Err(e) = Self::init(&TelemetryConfig::default()) {
            eprintln!("seedgate: {e:#}");
        }
    }
}

fn otlp_provider(
    endpoint: &str,
    config: &TelemetryConfig,
) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::Sampler;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(10))
        .build()
        .with_context(|| format!("telemetry.otlp_endpoint '{endpoint}'"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    // Batched on the tokio runtime: the gRPC client needs it (the SDK's
    // default batch thread would call it outside any runtime).
    let batch =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

impl Drop for Telemetry {
    /// Exports the spans still batched.
    fn drop(&mut self) {
        if let Some(p) = self.traces.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("seedgate: exporting the last traces: {e}");
        }
    }
}
