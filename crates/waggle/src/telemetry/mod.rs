//! Tracing setup: human-readable lines by default, JSON lines on request; the level comes
//! from `RUST_LOG` (default `info`). Prometheus metrics are in [`metrics`]; the optional
//! OpenTelemetry trace export is in [`traces`].

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub mod metrics;
pub mod traces;

/// Logs to stderr, and exports spans to `otlp_endpoint` when one is given; the export
/// sends what it holds when the returned [`traces::Traces`] is shut down.
pub fn init(json: bool, otlp_endpoint: Option<&str>) -> anyhow::Result<Option<traces::Traces>> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match json {
        true => fmt.json().with_filter(filter).boxed(),
        false => fmt.with_filter(filter).boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    let Some(endpoint) = otlp_endpoint else {
        let _ = registry.try_init();
        return Ok(None);
    };
    let (export, traces) = traces::start(endpoint)?;
    let _ = registry.with(export).try_init();
    Ok(Some(traces))
}
