//! Prometheus metrics, served at `GET /metrics` in the text format (or on
//! `--metrics-listen`): attempts by outcome and failure category, attempt latency,
//! deliveries made by event type, the queue (due, scheduled, claimed, the oldest due's
//! age), SQLite group commits, the PostgreSQL pool, API requests by route and status. No
//! organization or webhook ids are labels (their number is unbounded); the per-organization
//! view is the API's.
//!
//! One recorder per process (the `metrics` facade's global), made by the first app; every
//! app of the process renders it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::delivery::Dispatcher;
use crate::domain::attempt::{AttemptResult, DeliveryState, FailureCategory};
use crate::domain::event::EventType;
use crate::domain::time;
use crate::storage::Store;

/// Seconds: from a fast loopback receiver to the attempt timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Writes in one SQLite group commit: from one to the group's limit.
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
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
                .set_buckets_for_metric(
                    Matcher::Full("waggle_sqlite_group_commit_writes".into()),
                    GROUP_BUCKETS,
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

/// The metrics in the Prometheus text format, as an answer.
pub fn answer() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

/// What `--metrics-listen` serves: `/metrics` alone (the API's `/metrics` is documented
/// with the API).
pub fn router() -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(|| async { answer() }))
}

/// Outcomes of an attempt, as labels.
const OUTCOMES: [&str; 3] = ["delivered", "retry_scheduled", "failed"];
/// Status classes, as labels; "none" for an attempt with no answer.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Failure categories, and "none" for an attempt that got an answer.
const CATEGORIES: usize = FailureCategory::ALL.len() + 1;
/// Event types, and "unknown" for a resend whose claim did not read its event.
const EVENT_TYPES: usize = EventType::ALL.len() + 1;

/// The attempt metrics' handles, one per label set, each made on first use: recording
/// into a handle is an atomic add, where naming the metric and its labels at each record
/// hashes them and looks them up in the recorder's registry (about a tenth of an
/// attempt's CPU, measured).
struct AttemptHandles {
    counted:
        [[[[OnceLock<Counter>; EVENT_TYPES]; STATUS_CLASSES.len()]; CATEGORIES]; OUTCOMES.len()],
    timed: [OnceLock<Histogram>; OUTCOMES.len()],
}

static ATTEMPTS: AttemptHandles = AttemptHandles {
    counted: [const {
        [const { [const { [const { OnceLock::new() }; EVENT_TYPES] }; STATUS_CLASSES.len()] };
            CATEGORIES]
    }; OUTCOMES.len()],
    timed: [const { OnceLock::new() }; OUTCOMES.len()],
};

/// Counts an attempt (of an event of `event_type`, when known) and times it.
pub fn attempt(
    result: &AttemptResult,
    state: &DeliveryState,
    duration: Duration,
    event_type: Option<EventType>,
) {
    let outcome = match state {
        DeliveryState::Delivered { .. } => 0,
        DeliveryState::RetryScheduled { .. } => 1,
        DeliveryState::Failed => 2,
    };
    let (category, status) = match result {
        AttemptResult::Response { status, .. } => (None, status_class(*status)),
        AttemptResult::Failure { category, .. } => (Some(*category), STATUS_CLASSES.len() - 1),
    };
    let category_index = category.map_or(CATEGORIES - 1, |c| {
        FailureCategory::ALL
            .iter()
            .position(|a| *a == c)
            .expect("every category is in ALL")
    });
    let event_index = event_type.map_or(EVENT_TYPES - 1, |t| {
        EventType::ALL
            .iter()
            .position(|a| *a == t)
            .expect("every event type is in ALL")
    });
    ATTEMPTS.counted[outcome][category_index][status][event_index]
        .get_or_init(|| {
            ::metrics::counter!(
                "waggle_attempts_total",
                "outcome" => OUTCOMES[outcome],
                "failure_category" => category.map_or("none", FailureCategory::as_str),
                "status" => STATUS_CLASSES[status],
                "event_type" => event_type.map_or("unknown", EventType::as_str),
            )
        })
        .increment(1);
    ATTEMPTS.timed[outcome]
        .get_or_init(|| {
            ::metrics::histogram!("waggle_attempt_duration_seconds", "outcome" => OUTCOMES[outcome])
        })
        .record(duration.as_secs_f64());
}

/// Counts deliveries made by API calls (one per webhook an event goes to), by event type.
pub fn deliveries_created(event_type: EventType, count: usize) {
    if count > 0 {
        ::metrics::counter!("waggle_deliveries_created_total", "event_type" => event_type.as_str())
            .increment(count as u64);
    }
}

/// Counts a SQLite group commit: the writes it committed together, and how long it took.
pub fn group_commit(writes: usize, took: Duration) {
    ::metrics::histogram!("waggle_sqlite_group_commit_writes").record(writes as f64);
    ::metrics::histogram!("waggle_sqlite_group_commit_duration_seconds").record(took.as_secs_f64());
}

/// How often the gauges of the queue and the pool are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Keeps the gauges that are read rather than counted until `stop`, every
/// [`SAMPLE_EVERY`]: the deliveries waiting in the store (of every node) and the age of
/// the earliest one due, the deliveries this node's dispatcher holds, and the database
/// pool's connections.
pub async fn sample(
    store: Arc<dyn Store>,
    dispatcher: Option<Dispatcher>,
    stop: CancellationToken,
) {
    loop {
        if let Some(dispatcher) = &dispatcher {
            ::metrics::gauge!("waggle_dispatcher_deliveries_held").set(dispatcher.held() as f64);
        }
        if let Some((size, idle)) = store.pool_usage() {
            let in_use = (size as usize).saturating_sub(idle);
            ::metrics::gauge!("waggle_postgres_pool_connections", "state" => "in_use")
                .set(in_use as f64);
            ::metrics::gauge!("waggle_postgres_pool_connections", "state" => "idle")
                .set(idle as f64);
        }
        let now = time::now();
        match store.queue_depth(now).await {
            Ok(depth) => {
                for (state, count) in [
                    ("due", depth.due),
                    ("scheduled", depth.scheduled),
                    ("claimed", depth.claimed),
                ] {
                    ::metrics::gauge!("waggle_queue_deliveries", "state" => state)
                        .set(count as f64);
                }
                let waited = depth
                    .earliest
                    .and_then(|at| (now - at).to_std().ok())
                    .unwrap_or_default();
                ::metrics::gauge!("waggle_queue_oldest_due_seconds").set(waited.as_secs_f64());
            }
            Err(e) => tracing::debug!(error = %e, "metrics: could not read the queue"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
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

/// The index of a status's class in [`STATUS_CLASSES`].
fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The API metrics' handles of one route, method and status.
#[derive(Clone)]
struct RouteHandles {
    requests: Counter,
    duration: Histogram,
}

/// By route pattern (as axum matched it), then method and status; made on first use, as
/// for [`AttemptHandles`]. Routes, methods and statuses are few, so this stays small.
type RouteKey = (Method, u16);
static ROUTES: LazyLock<RwLock<HashMap<String, HashMap<RouteKey, RouteHandles>>>> =
    LazyLock::new(Default::default);

fn route_handles(route: &str, method: &Method, status: u16) -> RouteHandles {
    let key = (method.clone(), status);
    if let Some(found) = ROUTES
        .read()
        .expect("metrics lock")
        .get(route)
        .and_then(|by_status| by_status.get(&key))
    {
        return found.clone();
    }
    // `:connector_id` rather than `{connector_id}`: braces inside a label value are
    // valid, but trip up simple parsers of the format.
    let label = route.replace('{', ":").replace('}', "");
    let made = RouteHandles {
        requests: ::metrics::counter!(
            "waggle_api_requests_total",
            "route" => label.clone(),
            "method" => method.as_str().to_owned(),
            "status" => status.to_string(),
        ),
        duration: ::metrics::histogram!("waggle_api_request_duration_seconds", "route" => label),
    };
    ROUTES
        .write()
        .expect("metrics lock")
        .entry(route.to_owned())
        .or_default()
        .entry(key)
        .or_insert(made)
        .clone()
}

/// Around every route: counts the request by its route (the pattern, not the path, so
/// that ids make no labels) and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let handles = route_handles(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        &method,
        response.status().as_u16(),
    );
    handles.requests.increment(1);
    handles.duration.record(started.elapsed().as_secs_f64());
    response
}
