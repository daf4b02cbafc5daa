//! Pushes events through waggle's public API: one `connector_data_modified` per call,
//! `POST /api/v1/connectors/{id}/changes {"model":"bench","ids":["<seq>"]}`, from a pool
//! of concurrent clients, flat out or paced; with several nodes, each client calls one,
//! round-robin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::now_us;

/// How the events are pushed.
#[derive(Debug, Clone, Copy)]
pub struct Push {
    pub events: u64,
    /// Events per second; `None` is as fast as the API answers.
    pub rate: Option<u64>,
    /// Concurrent API connections.
    pub clients: usize,
    /// No call starts after this long.
    pub limit: Duration,
}

/// What the API accepted, and when each call returned.
#[derive(Debug)]
pub struct Pushed {
    /// Wall clock when the first call started (µs since the epoch).
    pub started_us: u64,
    /// Wall clock when the last accepted call returned.
    pub last_return_us: u64,
    /// Per sequence number, when its call returned; 0 when it was not accepted.
    pub returned_us: Vec<u64>,
    pub accepted: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

pub async fn push(
    base_urls: &[String],
    api_key: &str,
    connector_id: &str,
    plan: Push,
) -> anyhow::Result<Pushed> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(plan.clients)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    anyhow::ensure!(!base_urls.is_empty(), "no waggle to push events to");
    let auth: Arc<str> = format!("Bearer {api_key}").into();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let started_us = now_us();
    let deadline = started + plan.limit;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..plan.clients {
        let base_url = &base_urls[n % base_urls.len()];
        let url = format!("{base_url}/api/v1/connectors/{connector_id}/changes");
        let (client, auth, next) = (client.clone(), auth.clone(), next.clone());
        tasks.spawn(async move {
            let mut returned = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= plan.events {
                    break;
                }
                if let Some(rate) = plan.rate {
                    let due = started + Duration::from_secs_f64(seq as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                if Instant::now() >= deadline {
                    break;
                }
                let sent = client
                    .post(&url)
                    .header("authorization", &*auth)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"model":"bench","ids":["{seq}"]}}"#))
                    .send()
                    .await;
                let failure = match sent {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => match r.bytes().await {
                        Ok(_) => {
                            returned.push((seq, now_us()));
                            continue;
                        }
                        Err(e) => format!("reading the answer: {e}"),
                    },
                    Ok(r) => {
                        let status = r.status();
                        format!("{status}: {}", r.text().await.unwrap_or_default())
                    }
                    Err(e) => format!("{e}"),
                };
                errors += 1;
                first_error.get_or_insert(failure);
            }
            (returned, errors, first_error)
        });
    }
    let mut pushed = Pushed {
        started_us,
        last_return_us: started_us,
        returned_us: vec![0; plan.events as usize],
        accepted: 0,
        errors: 0,
        first_error: None,
    };
    while let Some(joined) = tasks.join_next().await {
        let (returned, errors, first_error) = joined?;
        for (seq, at) in returned {
            pushed.returned_us[seq as usize] = at;
            pushed.last_return_us = pushed.last_return_us.max(at);
            pushed.accepted += 1;
        }
        pushed.errors += errors;
        if pushed.first_error.is_none() {
            pushed.first_error = first_error;
        }
    }
    anyhow::ensure!(
        pushed.accepted > 0,
        "the API accepted no event ({} errors; first: {})",
        pushed.errors,
        pushed.first_error.as_deref().unwrap_or("none")
    );
    Ok(pushed)
}
