//! Claims deliveries, attempts them, and records what happened (SPEC §3).
//!
//! Work reaches the dispatcher two ways: the API hands over the deliveries it has just
//! committed (already claimed for this node, so the first attempt starts at once), and a
//! poller claims whatever is due in the store: scheduled retries, deliveries the API could
//! not hand over, and work left behind by a crash. Every job holds a permit of a global
//! budget, so memory stays bounded however large the backlog; each webhook has its own
//! lane of concurrent attempts, so one slow or dead destination cannot hold up others.
//! Outcomes are written in batches by one writer task; a job's permit is returned only
//! once its outcome is committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::keys::KeyCache;
use super::sender::Sender;
use crate::domain::attempt::{Attempt, AttemptResult, DeliveryState, FailureCategory};
use crate::domain::ids::WebhookId;
use crate::domain::retry::RetryPolicy;
use crate::domain::time::{self, Timestamp};
use crate::storage::{DeliveryJob, DeliveryOutcome, Store};

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub retry: RetryPolicy,
    /// Jobs held in memory at once (in flight or waiting for their webhook's lane).
    pub max_jobs: usize,
    /// Concurrent attempts to one webhook.
    pub per_webhook_concurrency: usize,
    /// How long a claim lasts; longer than any attempt plus the wait for its lane.
    pub lease: Duration,
    /// How often the store is polled for due work when nothing wakes the poller sooner.
    pub poll_interval: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            max_jobs: 4096,
            per_webhook_concurrency: 64,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// Cheap to clone; every clone drives the same dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    sender: Sender,
    keys: Arc<KeyCache>,
    config: DispatcherConfig,
    /// One permit per job held in memory.
    jobs: Arc<Semaphore>,
    /// Per-webhook lanes; created on first use.
    lanes: Mutex<HashMap<WebhookId, Arc<Semaphore>>>,
    /// Outcomes waiting for the writer, each with the permit of its job.
    outcomes: mpsc::UnboundedSender<(DeliveryOutcome, OwnedSemaphorePermit)>,
    outcomes_rx: Mutex<Option<mpsc::UnboundedReceiver<(DeliveryOutcome, OwnedSemaphorePermit)>>>,
    /// Wakes the poller early: permits came back, or a retry is due sooner than it thinks.
    wake: Notify,
    /// The earliest retry the writer has scheduled that the poller has not yet claimed.
    earliest_retry: Mutex<Option<Timestamp>>,
    /// Set by the poller when the job budget ran out with due work perhaps left behind;
    /// the writer then wakes it as soon as permits come back.
    starved: AtomicBool,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        sender: Sender,
        keys: Arc<KeyCache>,
        config: DispatcherConfig,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                store,
                sender,
                keys,
                jobs: Arc::new(Semaphore::new(config.max_jobs)),
                config,
                lanes: Mutex::new(HashMap::new()),
                outcomes: tx,
                outcomes_rx: Mutex::new(Some(rx)),
                wake: Notify::new(),
                earliest_retry: Mutex::new(None),
                starved: AtomicBool::new(false),
            }),
        }
    }

    /// The claim a delivery made by this node's API gets, so it can be handed over at once.
    pub fn lease_for_new(&self) -> Timestamp {
        time::now() + to_delta(self.inner.config.lease)
    }

    /// Takes deliveries this node has claimed and starts their attempts; those that do
    /// not fit the in-memory budget are given back to the store for the poller.
    pub async fn submit(&self, jobs: Vec<DeliveryJob>) {
        let mut overflow = Vec::new();
        for job in jobs {
            match self.inner.jobs.clone().try_acquire_owned() {
                Ok(permit) => self.start(job, permit),
                Err(_) => overflow.push(job.id),
            }
        }
        if !overflow.is_empty() {
            if let Err(e) = self.inner.store.release(&overflow).await {
                tracing::error!(error = %e, count = overflow.len(), "could not release deliveries; they wait for their claim to expire");
            }
            self.inner.wake.notify_one();
        }
    }

    fn start(&self, job: DeliveryJob, permit: OwnedSemaphorePermit) {
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.attempt(job, permit).await });
    }

    /// Polls for due work and writes outcomes until `cancel` fires, then waits for the
    /// attempts in flight to be recorded.
    pub async fn run(self, cancel: CancellationToken) {
        let rx = self
            .inner
            .outcomes_rx
            .lock()
            .expect("dispatcher lock")
            .take()
            .expect("Dispatcher::run is called once");
        let writer = tokio::spawn(self.inner.clone().write_outcomes(rx));
        self.poll(&cancel).await;
        // Let attempts in flight finish and be recorded; what remains is picked up again
        // after a restart (its claim expires or, on SQLite, is dropped at start).
        let grace = self.inner.config.retry.attempt_timeout + Duration::from_secs(2);
        let all = self.inner.config.max_jobs as u32;
        let _ = tokio::time::timeout(grace, self.inner.jobs.acquire_many(all)).await;
        drop(self);
        let _ = writer.await;
    }

    async fn poll(&self, cancel: &CancellationToken) {
        let inner = &self.inner;
        loop {
            let available = inner.jobs.available_permits();
            let mut claimed_full = false;
            if available > 0 {
                let now = time::now();
                let limit = available.min(1024) as u32;
                match inner
                    .store
                    .claim_due(now, self.lease_for_new(), limit)
                    .await
                {
                    Ok(jobs) => {
                        claimed_full = jobs.len() as u32 == limit;
                        if !jobs.is_empty() {
                            tracing::debug!(count = jobs.len(), "claimed due deliveries");
                        }
                        self.submit(jobs).await;
                    }
                    Err(e) => tracing::error!(error = %e, "claiming due deliveries failed"),
                }
            }
            if claimed_full || available == 0 {
                if inner.jobs.available_permits() > 0 {
                    continue;
                }
                inner.starved.store(true, Ordering::Release);
            }
            let sleep = {
                let mut earliest = inner.earliest_retry.lock().expect("dispatcher lock");
                let now = time::now();
                let until_retry = earliest.take().filter(|at| *at > now).map(|at| {
                    let wait = (at - now).to_std().unwrap_or_default();
                    *earliest = Some(at);
                    wait
                });
                until_retry.map_or(inner.config.poll_interval, |w| {
                    w.min(inner.config.poll_interval)
                })
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {
                    let mut earliest = inner.earliest_retry.lock().expect("dispatcher lock");
                    if earliest.is_some_and(|at| at <= time::now()) {
                        *earliest = None;
                    }
                }
            }
        }
    }
}

impl Inner {
    #[instrument(skip_all, fields(delivery_id = %job.id, webhook_id = %job.webhook_id, attempt = job.attempt_number))]
    async fn attempt(self: Arc<Self>, job: DeliveryJob, permit: OwnedSemaphorePermit) {
        let policy = &self.config.retry;
        let number = job.attempt_number;
        let first_attempt_at = job.first_attempt_at;
        let outcome = |attempt: Option<Attempt>, state: DeliveryState, first: Option<Timestamp>| {
            let last_error = match attempt.as_ref().map(|a| &a.result) {
                Some(AttemptResult::Failure { category, .. }) => Some(category.as_str().to_owned()),
                _ => None,
            };
            DeliveryOutcome {
                delivery_id: job.id,
                webhook_id: job.webhook_id,
                attempt,
                first_attempt_at: first,
                state,
                last_error,
                lease_until: None,
            }
        };
        // A retry that cannot start inside the window, or beyond the budget, is not made.
        if let Some(first) = first_attempt_at {
            if number > policy.max_attempts() || !policy.within_window(first, time::now()) {
                tracing::info!("retry window closed; delivery failed");
                let _ = self
                    .outcomes
                    .send((outcome(None, DeliveryState::Failed, None), permit));
                return;
            }
        }

        let started_at = time::now();
        let waited = Instant::now();
        let lane = self.lane(job.webhook_id);
        let slot = tokio::time::timeout(policy.attempt_timeout, lane.acquire_owned()).await;
        let (request_headers, duration, result) = match slot {
            Ok(Ok(_slot)) => match self.keys.get(job.org_id).await {
                Ok(key) => {
                    let sent = self
                        .sender
                        .send(&job.url, &job.id.to_string(), job.body.clone(), &key)
                        .await;
                    (sent.request_headers, waited.elapsed(), sent.result)
                }
                Err(e) => {
                    tracing::error!(error = %e, "no signature key; will retry");
                    (
                        Vec::new(),
                        waited.elapsed(),
                        AttemptResult::Failure {
                            category: FailureCategory::LocalProtocolError,
                            message: "signature key unavailable".into(),
                        },
                    )
                }
            },
            _ => (
                Vec::new(),
                waited.elapsed(),
                AttemptResult::Failure {
                    category: FailureCategory::PoolTimeout,
                    message: format!(
                        "no free connection to this webhook within {:?}",
                        policy.attempt_timeout
                    ),
                },
            ),
        };
        let first = first_attempt_at.unwrap_or(started_at);
        let state = match &result {
            AttemptResult::Response { status, .. } => DeliveryState::Delivered { status: *status },
            AttemptResult::Failure { category, .. } if category.is_retriable() => {
                match policy.next_attempt(first, number, time::now()) {
                    Some(at) => DeliveryState::RetryScheduled { at },
                    None => DeliveryState::Failed,
                }
            }
            AttemptResult::Failure { .. } => DeliveryState::Failed,
        };
        match &result {
            AttemptResult::Response { status, .. } => {
                tracing::debug!(status, ?duration, "delivered")
            }
            AttemptResult::Failure { category, message } => {
                tracing::info!(%category, %message, ?state, "attempt failed")
            }
        }
        let attempt = Attempt {
            delivery_id: job.id,
            number,
            started_at,
            duration,
            request_url: job.url.clone(),
            request_headers,
            result,
        };
        let _ = self
            .outcomes
            .send((outcome(Some(attempt), state, Some(first)), permit));
    }

    fn lane(&self, webhook: WebhookId) -> Arc<Semaphore> {
        self.lanes
            .lock()
            .expect("dispatcher lock")
            .entry(webhook)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_webhook_concurrency)))
            .clone()
    }

    /// Commits outcomes in batches; a batch that fails to commit is retried until it
    /// does, since an outcome dropped here would be an attempt forgotten.
    async fn write_outcomes(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(DeliveryOutcome, OwnedSemaphorePermit)>,
    ) {
        let mut batch = Vec::with_capacity(512);
        while rx.recv_many(&mut batch, 512).await > 0 {
            let outcomes: Vec<DeliveryOutcome> = batch.iter().map(|(o, _)| o.clone()).collect();
            let mut backoff = Duration::from_millis(50);
            while let Err(e) = self.store.record_outcomes(&outcomes).await {
                tracing::error!(error = %e, count = outcomes.len(), "recording outcomes failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            let earliest = outcomes
                .iter()
                .filter_map(|o| match o.state {
                    DeliveryState::RetryScheduled { at } => Some(at),
                    _ => None,
                })
                .min();
            let mut wake = self.starved.swap(false, Ordering::AcqRel);
            if let Some(at) = earliest {
                let mut current = self.earliest_retry.lock().expect("dispatcher lock");
                wake |= current.is_none_or(|c| at < c);
                *current = Some(current.map_or(at, |c| c.min(at)));
            }
            // Permits go back only now that the outcomes are committed.
            batch.clear();
            if wake {
                self.wake.notify_one();
            }
        }
    }
}

fn to_delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}
