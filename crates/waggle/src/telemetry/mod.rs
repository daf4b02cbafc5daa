//! Tracing setup: human-readable lines by default, JSON lines on request; the level comes
//! from `RUST_LOG` (default `info`). Prometheus metrics are in [`metrics`].

use tracing_subscriber::EnvFilter;

pub mod metrics;

pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
