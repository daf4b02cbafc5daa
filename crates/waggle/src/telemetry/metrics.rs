//! Prometheus metrics, served at `GET /metrics` in the text format: attempts by outcome
//! and failure category, attempt latency, API requests by route and status. No
//! organization or webhook ids are labels (their number is unbounded); the per-organization
//! view is the API's.
//!
//! One recorder per process (the `metrics` facade's global), made by the first app; every
//! app of the process renders it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::attempt::{AttemptResult, DeliveryState};

/// Seconds: from a fast loopback receiver to the attempt timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// The process's recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness's) may be installed: then nothing records,
            // and /metrics answers what this one has.
            let _ = ::metrics::set_global_recorder(recorder);
            // Histograms keep their samples until upkeep folds them into the buckets:
            // without it, and without scrapes, they would grow for as long as the process
            // runs. A thread of its own, so that it outlives any one runtime.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                })
                .expect("the upkeep thread starts");
            handle
        })
        .clone()
}

/// Counts an attempt and times it.
pub fn attempt(result: &AttemptResult, state: &DeliveryState, duration: Duration) {
    let outcome = match state {
        DeliveryState::Delivered { .. } => "delivered",
        DeliveryState::RetryScheduled { .. } => "retry_scheduled",
        DeliveryState::Failed => "failed",
    };
    let (category, status) = match result {
        AttemptResult::Response { status, .. } => ("none", status_class(*status)),
        AttemptResult::Failure { category, .. } => (category.as_str(), "none"),
    };
    ::metrics::counter!(
        "waggle_attempts_total",
        "outcome" => outcome,
        "failure_category" => category,
        "status" => status,
    )
    .increment(1);
    ::metrics::histogram!("waggle_attempt_duration_seconds", "outcome" => outcome)
        .record(duration.as_secs_f64());
}

/// Counts deliveries made by API calls (one per webhook an event goes to).
pub fn deliveries_created(count: usize) {
    ::metrics::counter!("waggle_deliveries_created_total").increment(count as u64);
}

/// Counts the rows retention removed.
pub fn purged(purged: crate::storage::Purged) {
    if purged.deliveries > 0 {
        ::metrics::counter!("waggle_retention_removed_total", "table" => "deliveries")
            .increment(purged.deliveries);
    }
    if purged.events > 0 {
        ::metrics::counter!("waggle_retention_removed_total", "table" => "events")
            .increment(purged.events);
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Around every route: counts the request by its route (the pattern, not the path, so
/// that ids make no labels) and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        // `:connector_id` rather than `{connector_id}`: braces inside a label value are
        // valid, but trip up simple parsers of the format.
        .map(|p| match p.as_str() {
            route if route.contains('{') => route.replace('{', ":").replace('}', ""),
            route => route.to_owned(),
        })
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!(
        "waggle_api_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status,
    )
    .increment(1);
    ::metrics::histogram!("waggle_api_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
