//! Wiring: `App::build(config)` opens the store, binds the listener and builds the
//! dispatcher and the router; `run_until_stopped` serves until SIGTERM or ctrl-c, then
//! lets the attempts in flight finish and be recorded. When the store stops being able
//! to write, it stops the same way and answers an error, so the process exits non-zero
//! and an orchestrator restarts it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::delivery::{Dispatcher, KeyCache, Sender};
use crate::storage::{self, Health, Store};

/// How long the API goes on answering once the store cannot write (every write a 503,
/// `/healthz` a 503 with the reason), so that callers and health checks hear why before
/// the process drains and exits.
const BROKEN_GRACE: Duration = Duration::from_secs(2);

pub struct App {
    listener: TcpListener,
    /// `--metrics-listen`'s, when given.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    dispatcher: Option<Dispatcher>,
    /// `--auto-disable-after`, where this node dispatches and it is not 0.
    auto_disable_after: Option<Duration>,
    /// `--retention`, when it is not 0.
    retention: Option<Duration>,
    /// Fires to stop serving and dispatching; `run_until_stopped` also fires it on signals.
    cancel: CancellationToken,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = storage::open(&config.database, config.sqlite_sync).await?;
        Self::build_with_store(config, store).await
    }

    pub async fn build_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        if config.database.starts_with("sqlite:") {
            // One process owns a SQLite file: any claim in it is left from a previous run.
            match store.release_all().await {
                Ok(0) => {}
                Ok(released) => tracing::info!(
                    released,
                    "taking back deliveries that were in flight when the last run stopped"
                ),
                // A file that cannot be written for now (a full disk, a read-only file):
                // serve what can be served (reads answer, writes 503) rather than stop; a
                // full disk is found writable again by the writer's probe. The claims left
                // behind run out by themselves meanwhile.
                Err(e) if matches!(*store.health().borrow(), Health::Unavailable(_)) => {
                    tracing::warn!(error = %e, "starting with a database that cannot be written for now");
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Installed before anything records.
        crate::telemetry::metrics::handle();
        let sender = Sender::new(config.sender()?)?;
        let keys = Arc::new(KeyCache::new(store.clone()));
        let dispatcher = (!config.no_dispatcher).then(|| {
            Dispatcher::new(
                store.clone(),
                sender.clone(),
                keys.clone(),
                config.dispatcher(),
            )
        });
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let metrics_listener = match &config.metrics_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding {address} (--metrics-listen)"))?,
            ),
            None => None,
        };
        let state = AppState {
            store,
            keys,
            sender,
            dispatcher: dispatcher.clone(),
            destinations: config.destinations(),
            key_usage: Default::default(),
            limits: Arc::new(crate::api::limits::RateLimits::new(config.rate_limit)),
            metrics_here: metrics_listener.is_none(),
            recovering: Arc::default(),
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            auto_disable_after: (!config.no_dispatcher && !config.auto_disable_after.is_zero())
                .then_some(config.auto_disable_after),
            retention: (!config.retention.is_zero()).then_some(config.retention),
            dispatcher,
            cancel: CancellationToken::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// A token that stops the app when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let cancel = self.cancel.clone();
        // The dispatcher stops with the app, or at once when the store's write path is
        // gone for good: its outcomes could not be recorded, and a restart attempts those
        // deliveries again. A store that cannot write for now (a full disk) is waited out:
        // the dispatcher pauses and the API answers 503 until it writes again.
        let dispatch = cancel.child_token();
        let mut health = self.state.store.health();
        let broken = tokio::spawn({
            let (cancel, dispatch) = (cancel.clone(), dispatch.clone());
            async move {
                let why = tokio::select! {
                    _ = shutdown_signal() => {
                        tracing::info!("shutting down");
                        None
                    }
                    _ = cancel.cancelled() => None,
                    why = health.wait_for(|h| matches!(h, Health::Broken(_))) => {
                        Some(why.ok().and_then(|h| h.trouble().map(str::to_owned)))
                    }
                };
                let Some(why) = why else {
                    cancel.cancel();
                    return None;
                };
                tracing::error!(
                    reason = why.as_deref().unwrap_or_default(),
                    grace = ?BROKEN_GRACE,
                    "storage cannot write; stopping"
                );
                dispatch.cancel();
                tokio::select! {
                    _ = tokio::time::sleep(BROKEN_GRACE) => {}
                    _ = shutdown_signal() => {}
                    _ = cancel.cancelled() => {}
                }
                cancel.cancel();
                Some(why.unwrap_or_else(|| "the store stopped".into()))
            }
        });
        if let Some(after) = self.auto_disable_after {
            let store = self.state.store.clone();
            tokio::spawn(crate::delivery::auto_disable::run(
                store,
                after,
                dispatch.clone(),
            ));
        }
        tokio::spawn(storage::retention::forget_answers(
            self.state.store.clone(),
            cancel.child_token(),
        ));
        // Nodes that deliver also recover.
        if self.dispatcher.is_some() {
            tokio::spawn(crate::delivery::recover::run(
                self.state.store.clone(),
                self.state.recovering.clone(),
                dispatch.clone(),
            ));
        }
        if let Some(keep) = self.retention {
            let store = self.state.store.clone();
            tokio::spawn(storage::retention::run(store, keep, dispatch.clone()));
        }
        tokio::spawn(crate::telemetry::metrics::sample(
            self.state.store.clone(),
            self.dispatcher.clone(),
            cancel.child_token(),
        ));
        if let Some(listener) = self.metrics_listener {
            let stop = cancel.clone().cancelled_owned();
            tokio::spawn(async move {
                let served = axum::serve(listener, crate::telemetry::metrics::router())
                    .with_graceful_shutdown(stop)
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "serving the metrics stopped");
                }
            });
        }
        let dispatching = self.dispatcher.map(|d| tokio::spawn(d.run(dispatch)));
        let router = api::router(&self.state)
            .merge(crate::dashboard::router())
            .with_state(self.state);
        // The peer's address: the dashboard counts failed sign-ins by client address.
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .await
            .context("serving HTTP")?;
        if let Some(dispatching) = dispatching {
            dispatching.await.context("dispatcher task")?;
        }
        match broken.await.context("health task")? {
            Some(why) => anyhow::bail!("stopped because the storage cannot write: {why}"),
            None => Ok(()),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
