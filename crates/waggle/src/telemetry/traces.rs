//! OpenTelemetry trace export (`--otlp-endpoint`), off by default: a span for each API
//! request and for each delivery attempt, sent over OTLP/HTTP (protobuf) in batches.
//!
//! An API request joins the trace its `traceparent` header names. The deliveries it makes
//! keep that request's own context in their row (`traceparent`), so each attempt, made
//! at once or claimed later by any node after any restart, is a child of the request that
//! made it: one trace shows the call and every attempt it caused.
//!
//! With export off nothing of this runs: no span is made on the delivery path and no
//! context is stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_http::{HeaderExtractor, HttpError};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::domain::attempt::AttemptResult;
use crate::storage::DeliveryJob;

/// Set once export starts: spans are made only then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Time limit of one export request to the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a collector may answer with; its answers are a few bytes.
const MAX_ANSWER: usize = 64 * 1024;

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The export, running: dropped (or [`Traces::shutdown`]), it sends what it still holds.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends the spans still held; called on the way out.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not send the last spans");
        }
    }
}

/// The collector's URL for traces: `endpoint` as given when it names a path, otherwise
/// with OTLP's `/v1/traces` appended (`http://collector:4318` is the usual form).
pub fn traces_url(endpoint: &str) -> anyhow::Result<url::Url> {
    let mut url =
        url::Url::parse(endpoint).with_context(|| format!("--otlp-endpoint {endpoint}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https"),
        "--otlp-endpoint {endpoint}: the scheme must be http or https"
    );
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/v1/traces");
    }
    Ok(url)
}

/// Starts the export to `endpoint` and makes the layer that feeds it waggle's spans. Must
/// be called inside the Tokio runtime, on which the export requests run.
pub fn start<S>(endpoint: &str) -> anyhow::Result<(impl Layer<S>, Traces)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let url = traces_url(endpoint)?;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(Collector::new()?)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_attributes([
                    KeyValue::new("service.name", "waggle"),
                    KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                ])
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("waggle"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target("waggle", tracing::Level::INFO),
        );
    EXPORTING.store(true, Ordering::Relaxed);
    Ok((layer, Traces { provider }))
}

/// Around every API route while exporting: a server span named by the route, a child of
/// the caller's `traceparent` when it sends one.
pub async fn around_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// The current span's context as a `traceparent` value, for the deliveries an API call
/// makes; `None` while not exporting.
pub fn current_traceparent() -> Option<Arc<str>> {
    if !exporting() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.remove("traceparent").map(Into::into)
}

/// The span of one attempt of `job`, a child of the request that made the delivery;
/// [`Span::none`] while not exporting.
pub fn attempt_span(job: &DeliveryJob) -> Span {
    if !exporting() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "attempt",
        otel.name = "deliver webhook",
        otel.kind = "client",
        delivery_id = %job.id,
        webhook_id = %job.webhook_id,
        attempt = job.attempt_number,
        event_type = job.event_type.map(|t| t.as_str()),
        http.response.status_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    );
    if let Some(traceparent) = &job.traceparent {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_string())]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// Writes an attempt's result on its span, the current one (see [`attempt_span`]).
pub fn record_attempt(result: &AttemptResult) {
    // Checked first: not even the current span is looked up while not exporting.
    if !exporting() {
        return;
    }
    let span = Span::current();
    match result {
        AttemptResult::Response { status, .. } => {
            span.record("http.response.status_code", status);
            if !(200..300).contains(status) {
                span.record("otel.status_code", "ERROR");
            }
        }
        AttemptResult::Failure { category, .. } => {
            span.record("error.type", category.as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The exporter's HTTP client: HTTP/1.1 (TLS for `https`), run on the service's runtime.
/// The batch exporter works on a thread of its own, outside the runtime, so each request
/// is handed to the runtime and its answer awaited.
#[derive(Debug, Clone)]
struct Collector {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl Collector {
    fn new() -> anyhow::Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime: tokio::runtime::Handle::try_current()
                .context("trace export needs the runtime")?,
        })
    }
}

#[async_trait]
impl opentelemetry_http::HttpClient for Collector {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(http::Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        };
        // The timer too is the runtime's: made inside the task, not on this thread.
        self.runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await })
            .await??
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_path_gets_otlps_own() {
        assert_eq!(
            traces_url("http://collector:4318").unwrap().as_str(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces")
                .unwrap()
                .as_str(),
            "https://c.example/otlp/v1/traces"
        );
        assert!(traces_url("grpc://collector:4317").is_err());
        assert!(traces_url("collector:4318").is_err());
    }
}
