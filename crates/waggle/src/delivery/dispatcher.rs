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
//!
//! Claims are short leases, so that when a node dies another takes its work within
//! seconds. A live node must never let a lease it still works under run out (another node
//! would claim the delivery too), so a renewer extends the leases of every job held in
//! memory, in one statement, four times per lease: even a renewal that fails outright
//! leaves the next one time to land. Stores shared by several nodes also wake the poller
//! when another node makes work available, so polling is only the fallback.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::keys::KeyCache;
use super::lanes::Lanes;
use super::rules::RulesCache;
use super::sender::Sender;
use crate::domain::attempt::{Attempt, AttemptResult, DeliveryState, FailureCategory};
use crate::domain::ids::{DeliveryId, WebhookId};
use crate::domain::retry::{self, RetryPolicy, RETRIABLE_STATUSES};
use crate::domain::time::{self, to_delta, Timestamp};
use crate::storage::{DeliveryJob, DeliveryOutcome, Health, Store};

/// How long a stopping dispatcher waits for the attempts in flight before it gives the
/// rest back: the process must be gone within 10 s of SIGTERM (`docker stop` kills it
/// then), with its outcomes written and its claims released.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// Outcome batches committing at once (see `Inner::write_outcomes`). Two: with four,
/// the batches came out smaller, and PostgreSQL's fan-out cost 10 % more CPU per
/// delivery; with one, a batch waited for the one before it (BENCHMARKS.md).
const OUTCOME_BATCHES: usize = 2;
/// Where other nodes share the store: how long a batch of outcomes waits for more once
/// its first is in, unless [`GATHERED`] come sooner. PostgreSQL plans and commits each
/// batch whatever its size, and an outcome's commit delays no receiver: at 1,000 attempts
/// a second, batches of one cost it several times the CPU (BENCHMARKS.md). The embedded
/// store's writer gathers them by itself.
const OUTCOME_GATHER: Duration = Duration::from_millis(2);
const GATHERED: usize = 64;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub retry: RetryPolicy,
    /// Jobs held in memory at once (in flight or waiting for their webhook's lane).
    pub max_jobs: usize,
    /// Concurrent attempts to one webhook.
    pub per_webhook_concurrency: usize,
    /// How long a claim lasts unless renewed; jobs held in memory are renewed every
    /// quarter of it. A dead node's work waits this long for another node.
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
            lease: Duration::from_secs(10),
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
    rules: RulesCache,
    config: DispatcherConfig,
    /// One permit per job held in memory.
    jobs: Arc<Semaphore>,
    /// Per-webhook shares: concurrent attempts and jobs held.
    lanes: Mutex<Lanes>,
    /// Deliveries claimed by this node whose outcome is not yet committed: the renewer
    /// keeps their leases alive. Shared with the renewer alone, which must not hold
    /// `Inner` (the writer ends only when every `Inner` is gone).
    held: Arc<Mutex<HashSet<DeliveryId>>>,
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
                rules: RulesCache::new(store.clone(), config.retry.clone()),
                store,
                sender,
                keys,
                jobs: Arc::new(Semaphore::new(config.max_jobs)),
                lanes: Mutex::new(Lanes::new(config.per_webhook_concurrency, config.max_jobs)),
                config,
                held: Arc::default(),
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

    /// Whether a new delivery to `webhook` would fit in memory now (it may not by the time
    /// it is submitted; then it goes back to the store).
    /// Deliveries this node holds in memory now: being attempted, or waiting for their
    /// webhook's turn or their outcome's record.
    pub fn held(&self) -> usize {
        (self.inner.config.max_jobs).saturating_sub(self.inner.jobs.available_permits())
    }

    /// Has the poller look for due work now rather than at its next turn.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub fn has_room(&self, webhook: WebhookId) -> bool {
        self.inner.jobs.available_permits() > 0 && self.inner.lanes().has_room(webhook)
    }

    /// Takes deliveries this node has claimed and starts their attempts; those that do
    /// not fit the in-memory budget, or their webhook's share of it, are given back to
    /// the store for the poller.
    pub async fn submit(&self, jobs: Vec<DeliveryJob>) {
        let mut overflow = Vec::new();
        for job in jobs {
            if !self.inner.lanes().admit(job.webhook_id) {
                overflow.push(job.id);
                continue;
            }
            match self.inner.jobs.clone().try_acquire_owned() {
                Ok(permit) => self.start(job, permit),
                Err(_) => {
                    self.inner.lanes().leave(job.webhook_id);
                    overflow.push(job.id);
                }
            }
        }
        if !overflow.is_empty() {
            if let Err(e) = self.inner.store.release(&overflow, true).await {
                tracing::error!(error = %e, count = overflow.len(), "could not release deliveries; they wait for their claim to expire");
            }
            self.inner.wake.notify_one();
        }
    }

    fn start(&self, job: DeliveryJob, permit: OwnedSemaphorePermit) {
        self.inner
            .held
            .lock()
            .expect("dispatcher lock")
            .insert(job.id);
        let inner = self.inner.clone();
        let span = crate::telemetry::traces::attempt_span(&job);
        tokio::spawn(async move { inner.attempt(job, permit).await }.instrument(span));
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
        let stop_writing = CancellationToken::new();
        let writer = tokio::spawn(self.inner.clone().write_outcomes(rx, stop_writing.clone()));
        let stop_renewing = CancellationToken::new();
        let renewer = tokio::spawn(keep_leases(
            self.inner.store.clone(),
            self.inner.held.clone(),
            self.inner.config.lease,
            stop_renewing.clone(),
        ));
        self.poll(&cancel).await;
        // Let attempts in flight finish and be recorded: a permit comes back only once
        // its job's outcome is committed, so holding them all means everything is. Not
        // past SHUTDOWN_GRACE, though: what is still in flight then is given back.
        let grace =
            (self.inner.config.retry.attempt_timeout + Duration::from_secs(2)).min(SHUTDOWN_GRACE);
        let all = self.inner.config.max_jobs as u32;
        let _ = tokio::time::timeout(grace, self.inner.jobs.acquire_many(all)).await;
        // The writer owns a sender of its own channel (through `Inner`), so it is told
        // to stop rather than waiting for the channel to close.
        stop_writing.cancel();
        let _ = writer.await;
        // What is still held did not finish within the grace: give it back, so another
        // node (or this one after a restart) takes it without waiting for the lease.
        let unfinished: Vec<DeliveryId> = self
            .inner
            .held
            .lock()
            .expect("dispatcher lock")
            .drain()
            .collect();
        if !unfinished.is_empty() {
            tracing::warn!(
                count = unfinished.len(),
                "giving back deliveries whose attempts did not finish before shutdown"
            );
            if let Err(e) = self.inner.store.release(&unfinished, false).await {
                tracing::error!(error = %e, "could not give back deliveries; they wait for their claims to run out");
            }
        }
        stop_renewing.cancel();
        let _ = renewer.await;
    }

    async fn poll(&self, cancel: &CancellationToken) {
        let inner = &self.inner;
        let work_elsewhere = inner.store.work_notifications();
        let mut health = inner.store.health();
        loop {
            // While the store cannot write, nothing can be claimed: wait until it can.
            if health.borrow_and_update().trouble().is_some() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = health.wait_for(|h| *h == Health::Ok) => {}
                }
            }
            let available = inner.jobs.available_permits();
            // A claim that took anything may have been bound by the room the lanes had
            // when it began, which outcomes keep freeing while it runs: look again, until
            // a claim finds nothing it may take.
            let mut claimed_some = false;
            if available > 0 {
                let now = time::now();
                let room = inner.lanes().room(available);
                match inner
                    .store
                    .claim_due(now, self.lease_for_new(), &room)
                    .await
                {
                    Ok(jobs) => {
                        claimed_some = !jobs.is_empty();
                        if !jobs.is_empty() {
                            tracing::debug!(count = jobs.len(), "claimed due deliveries");
                        }
                        self.submit(jobs).await;
                    }
                    Err(e) => tracing::error!(error = %e, "claiming due deliveries failed"),
                }
            }
            if claimed_some || available == 0 {
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
                _ = notified(work_elsewhere.as_deref()) => {}
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
    /// One attempt of `job`. Its log lines name the delivery themselves: a span per
    /// attempt would cost more than the few lines it could carry, so it has one only
    /// while traces are exported.
    async fn attempt(self: Arc<Self>, job: DeliveryJob, permit: OwnedSemaphorePermit) {
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
                ordered_by: job.ordered_by,
            }
        };
        // A first attempt is made under any rules; a retry needs its webhook's.
        let mut rules = match number > 1 {
            true => Some(self.rules.get(job.org_id, job.webhook_id).await),
            false => None,
        };
        let policy = &rules.as_ref().unwrap_or(self.rules.standard()).policy;
        // An attempt beyond the budget, or a retry that cannot start inside the window, is
        // not made. The window opens with the first recorded attempt, so a first attempt a
        // crash interrupted is still made after the restart.
        let window_closed = job.attempts_recorded > 0
            && first_attempt_at.is_some_and(|first| !policy.within_window(first, time::now()));
        if number > policy.max_attempts() || window_closed {
            tracing::info!(
                delivery_id = %job.id,
                webhook_id = %job.webhook_id,
                number,
                window_closed,
                "retry budget or window used up; delivery failed"
            );
            let _ = self
                .outcomes
                .send((outcome(None, DeliveryState::Failed, None), permit));
            return;
        }

        let started_at = time::now();
        let waited = Instant::now();
        let lane = self.lanes().slots(job.webhook_id);
        // The attempt's time limit covers the wait for a free lane too; a lane that stays
        // busy for half of it is a pool timeout, leaving the other half for the exchange.
        let deadline = waited + policy.attempt_timeout;
        let pool_wait = policy.attempt_timeout / 2;
        // A free slot is taken at once, without arming a timer for the wait.
        let slot = match lane.clone().try_acquire_owned() {
            Ok(slot) => Ok(Ok(slot)),
            Err(_) => tokio::time::timeout(pool_wait, lane.acquire_owned()).await,
        };
        let (request_headers, duration, result) = match slot {
            Ok(Ok(_slot)) => match self.keys.get(job.org_id).await {
                Ok(key) => {
                    let sent = self
                        .sender
                        .send_until(
                            &job.url,
                            &job.id.to_string(),
                            job.body.clone(),
                            &key,
                            deadline,
                        )
                        .await;
                    (sent.request_headers, waited.elapsed(), sent.result)
                }
                Err(e) => {
                    tracing::error!(delivery_id = %job.id, error = %e, "no signature key; will retry");
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
                    message: format!("no free connection to this webhook within {pool_wait:?}"),
                },
            ),
        };
        let first = first_attempt_at.unwrap_or(started_at);
        // A network failure may be retried, and so may a status its webhook lists.
        let (ended, retriable, status, asked) = match &result {
            AttemptResult::Response {
                status, headers, ..
            } => {
                // Only an answer that may be retried has its Retry-After looked for.
                let retriable = RETRIABLE_STATUSES.contains(status);
                let asked = retriable
                    .then(|| {
                        headers
                            .iter()
                            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                    })
                    .flatten()
                    .and_then(|(_, value)| retry::retry_after(value, time::now()));
                (
                    DeliveryState::Delivered { status: *status },
                    retriable,
                    Some(*status),
                    asked,
                )
            }
            AttemptResult::Failure { category, .. } => {
                (DeliveryState::Failed, category.is_retriable(), None, None)
            }
        };
        let state = if retriable {
            let rules = match rules.take() {
                Some(rules) => rules,
                None => self.rules.get(job.org_id, job.webhook_id).await,
            };
            let retried = status.is_none_or(|status| rules.on_status.contains(&status));
            match retried
                .then(|| rules.policy.next_attempt(first, number, time::now(), asked))
                .flatten()
            {
                Some(at) => DeliveryState::RetryScheduled { at, status },
                None => ended,
            }
        } else {
            ended
        };
        crate::telemetry::metrics::attempt(&result, &state, duration, job.event_type);
        crate::telemetry::traces::record_attempt(&result);
        match &result {
            AttemptResult::Response { status, .. } => {
                tracing::debug!(delivery_id = %job.id, number, status, ?duration, "delivered")
            }
            AttemptResult::Failure { category, message } => {
                tracing::info!(delivery_id = %job.id, webhook_id = %job.webhook_id, number, %category, %message, ?state, "attempt failed")
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

    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().expect("dispatcher lock")
    }

    /// Commits outcomes in batches; a batch that fails to commit is retried until it
    /// does, since an outcome dropped here would be an attempt forgotten.
    /// Until `stop`, when it writes what is already queued and returns.
    ///
    /// Up to [`OUTCOME_BATCHES`] batches commit at once: a batch does not wait for the one
    /// before it, so an outcome is on its way to the store as soon as the attempt ends,
    /// and the SQLite writer commits whatever batches are queued together. Every outcome
    /// not yet committed is a delivery a crash would make twice.
    async fn write_outcomes(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(DeliveryOutcome, OwnedSemaphorePermit)>,
        stop: CancellationToken,
    ) {
        let mut committing = tokio::task::JoinSet::new();
        loop {
            while committing.try_join_next().is_some() {}
            if committing.len() >= OUTCOME_BATCHES {
                committing.join_next().await;
                continue;
            }
            let mut batch = Vec::with_capacity(512);
            let stopping = tokio::select! {
                received = rx.recv_many(&mut batch, 512) => received == 0,
                _ = stop.cancelled() => true,
            };
            if stopping {
                while let Ok(queued) = rx.try_recv() {
                    batch.push(queued);
                }
                if !batch.is_empty() {
                    self.commit_outcomes(&mut batch, true).await;
                }
                while committing.join_next().await.is_some() {}
                return;
            }
            if self.store.shared() {
                let until = tokio::time::Instant::now() + OUTCOME_GATHER;
                while batch.len() < GATHERED {
                    tokio::select! {
                        received = rx.recv_many(&mut batch, 512) => if received == 0 { break },
                        _ = tokio::time::sleep_until(until) => break,
                        _ = stop.cancelled() => break,
                    }
                }
            }
            let inner = self.clone();
            committing.spawn(async move { inner.commit_outcomes(&mut batch, false).await });
        }
    }

    /// Records a batch of outcomes, retrying until it commits (or, when stopping, for a
    /// few seconds: what is not recorded is attempted again once its claim runs out).
    async fn commit_outcomes(
        &self,
        batch: &mut Vec<(DeliveryOutcome, OwnedSemaphorePermit)>,
        stopping: bool,
    ) {
        let (outcomes, permits): (Vec<DeliveryOutcome>, Vec<OwnedSemaphorePermit>) =
            batch.drain(..).unzip();
        let outcomes: Arc<[DeliveryOutcome]> = outcomes.into();
        let mut backoff = Duration::from_millis(50);
        let give_up = Instant::now() + Duration::from_secs(5);
        while let Err(e) = self.store.record_outcomes(outcomes.clone()).await {
            if let Health::Broken(_) = &*self.store.health().borrow() {
                // No write is possible until a restart, which takes these deliveries back
                // (their claims are in the store) and attempts them again.
                tracing::error!(error = %e, count = outcomes.len(), "cannot record outcomes: the store stopped writing");
                return;
            }
            if stopping && Instant::now() > give_up {
                tracing::error!(error = %e, count = outcomes.len(), "could not record outcomes before shutdown");
                return;
            }
            tracing::error!(error = %e, count = outcomes.len(), "recording outcomes failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        let earliest = outcomes
            .iter()
            .filter_map(|o| match o.state {
                DeliveryState::RetryScheduled { at, .. } => Some(at),
                _ => None,
            })
            .min();
        // The end of an ordered delivery made the next one due: the poller takes it now.
        let mut wake = self.starved.swap(false, Ordering::AcqRel)
            | outcomes.iter().any(|o| o.lets_next_go().is_some());
        if let Some(at) = earliest {
            let mut current = self.earliest_retry.lock().expect("dispatcher lock");
            wake |= current.is_none_or(|c| at < c);
            *current = Some(current.map_or(at, |c| c.min(at)));
        }
        // Permits go back, and claims stop being renewed, only now that the outcomes
        // are committed.
        {
            let mut held = self.held.lock().expect("dispatcher lock");
            for o in outcomes.iter() {
                held.remove(&o.delivery_id);
            }
        }
        {
            let mut lanes = self.lanes();
            for o in outcomes.iter() {
                wake |= lanes.leave(o.webhook_id);
            }
        }
        drop(permits);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// Waits for `work`, or forever when the store has no such notifications.
async fn notified(work: Option<&Notify>) {
    match work {
        Some(work) => work.notified().await,
        None => std::future::pending().await,
    }
}

/// Extends the leases of the jobs held in memory until `stop`: every quarter of a lease,
/// by a full lease from now. Each renewal may take at most a quarter of a lease, so a
/// claim made just after a renewal began is renewed within three quarters of its lease
/// even when that renewal fails.
async fn keep_leases(
    store: Arc<dyn Store>,
    held: Arc<Mutex<HashSet<DeliveryId>>>,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = lease / 4;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; claims are fresh then
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let ids: Vec<DeliveryId> = held
            .lock()
            .expect("dispatcher lock")
            .iter()
            .copied()
            .collect();
        if ids.is_empty() {
            continue;
        }
        let until = time::now() + to_delta(lease);
        match tokio::time::timeout(every, store.renew_leases(&ids, until)).await {
            Ok(Ok(renewed)) => {
                tracing::trace!(held = ids.len(), renewed, "renewed leases");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, held = ids.len(), "renewing leases failed; retrying at the next tick")
            }
            Err(_) => {
                tracing::error!(held = ids.len(), timeout = ?every, "renewing leases timed out; retrying at the next tick")
            }
        }
    }
}
