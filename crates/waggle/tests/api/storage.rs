//! The SQLite writer, supervised: a fault in it (a panic, an I/O error) turns `/healthz`
//! and every write of the API to 503, stops the app with an error so that the process
//! exits non-zero, and loses nothing the API acknowledged: after a restart on the same
//! file, every acknowledged event is delivered, and the refused call left nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use waggle::config::Config;

use crate::helpers::*;

async fn a_writer_fault_stops_the_app_and_loses_nothing_acknowledged(fault: &str) {
    if backend() == Backend::Postgres {
        eprintln!("the SQLite writer's faults are SQLite's: nothing to inject on PostgreSQL");
        return;
    }
    let database = Arc::new(TestDatabase::create().await);
    let url = database.url().to_owned();
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let config = || {
        let mut config = Config::for_database(&url);
        config.allow_private_destinations = true;
        config.poll_interval = Duration::from_millis(20);
        config
    };
    let receiver = Receiver::start(200).await;
    let (app, running) = start_running(config(), database.clone()).await;
    app.create_webhook(
        &receiver.url("/h"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    let mut acknowledged = HashSet::new();
    for _ in 0..5 {
        acknowledged.insert(id(&app.start_sync(&connector).await, "id"));
    }

    fail::cfg("sqlite-writer", &format!("return({fault}:{path})")).unwrap();
    let syncs = format!(
        "/api/v1/connectors/{}/syncs",
        connector["id"].as_str().unwrap()
    );
    // The next commit fails: this call's, or the dispatcher's just before it.
    let (status, body) = app.post(&syncs, json!({})).await;
    fail::remove("sqlite-writer");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, json!({"detail": "storage unavailable"}));
    // Every later write too, even with the fault gone: the writer stays stopped.
    let (status, body) = app.post(&syncs, json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "unavailable");
    let reason = health["reason"].as_str().unwrap();
    let expected = if fault == "panic" { "panicked" } else { "I/O" };
    assert!(reason.contains(expected), "{reason}");

    // The app drains and stops by itself, with an error (the process exits non-zero).
    let stopped = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the app stops by itself")
        .unwrap();
    let error = stopped.unwrap_err().to_string();
    assert!(error.contains("storage cannot write"), "{error}");
    let key = app.api_key.clone();
    drop(app);

    // Restarted on the same file: what was acknowledged is all there, and delivered.
    let (mut app, _running) = start_running(config(), database.clone()).await;
    app.api_key = key;
    let delivered = wait_for(
        "every acknowledged sync delivered",
        Duration::from_secs(20),
        || async {
            let got: HashSet<String> = receiver
                .requests()
                .iter()
                .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
                .collect();
            acknowledged.is_subset(&got).then_some(got)
        },
    )
    .await;
    // The refused calls made nothing: no event, no delivery, no log.
    assert_eq!(delivered, acknowledged);
    let logs = app.all_logs("").await;
    assert_eq!(logs.len(), acknowledged.len());
    app.cancel.cancel();
}

/// Both faults in one test: the fail point's setting is the process's, one at a time.
#[tokio::test]
async fn a_panic_or_an_io_error_in_the_writer_stops_the_app_and_loses_nothing_acknowledged() {
    for fault in ["panic", "io"] {
        a_writer_fault_stops_the_app_and_loses_nothing_acknowledged(fault).await;
    }
}
