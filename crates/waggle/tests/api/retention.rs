//! Retention (`--retention`): events, deliveries and attempts older than it are removed in
//! the background; a delivery still being retried stays, with its event, until it ends;
//! and a SQLite file under a steady load stops growing, the space of what was removed
//! being used again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::StreamExt;
use serde_json::json;
use waggle::config::Backoff;

use crate::helpers::*;

#[tokio::test]
async fn old_rows_go_and_deliveries_still_retried_stay_with_their_events() {
    let app = spawn_app_with(|c| {
        // Long enough for the fresh delivery at the end to be read well within it, even
        // on a machine busy with other tests.
        c.retention = Duration::from_secs(5);
        // The delivery to a closed port waits for its retry well past the retention.
        c.retry_backoff = Backoff(vec![Duration::from_secs(60)]);
        c.retry_window = Duration::from_secs(300);
    })
    .await;
    let receiver = Receiver::start(200).await;
    app.create_webhook(
        &receiver.url("/ok"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let closed = format!("http://127.0.0.1:{}/down", free_port());
    app.create_webhook(&closed, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    for _ in 0..3 {
        app.start_sync(&connector).await;
    }
    // Two events no webhook wants: kept with no delivery.
    for model in ["department", "location"] {
        let (status, body) = app
            .post(
                &format!("/api/v1/connectors/{}/changes", id(&connector, "id")),
                json!({"model": model, "ids": ["x1"]}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    receiver.wait_for(3).await;
    // A recovery with nothing to recover finishes at once; finished, it goes too.
    let webhooks = app.get("/api/v1/webhooks").await.1;
    let recover = format!(
        "/api/v1/webhooks/{}/recover",
        id(&webhooks["items"][0], "webhook_id")
    );
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, recovery) = app.post(&recover, json!({"since": since})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{recovery}");
    let recovery = format!("{recover}/{}", id(&recovery, "id"));
    wait_for(
        "the recovery to finish",
        Duration::from_secs(10),
        || async { (app.get(&recovery).await.1["status"] == "done").then_some(()) },
    )
    .await;
    let db = app.db_url.clone();
    // Removed once older than the retention: the three delivered deliveries with their
    // attempts, and the two events nothing refers to.
    wait_for(
        "old rows to be removed",
        Duration::from_secs(20),
        || async {
            let deliveries = count(&db, "SELECT count(*) FROM deliveries").await;
            let events = count(&db, "SELECT count(*) FROM events").await;
            let recoveries = count(&db, "SELECT count(*) FROM recoveries").await;
            (deliveries == 3 && events == 3 && recoveries == 0).then_some(())
        },
    )
    .await;
    // What stays is each delivery still retried, its one attempt and its event.
    let logs = app.all_logs("").await;
    assert_eq!(logs.len(), 3, "{logs:?}");
    for log in &logs {
        assert_eq!(log["status"], "pending", "{log}");
        assert_eq!(log["url"], closed.as_str(), "{log}");
        assert_eq!(log["attempts"], 1, "{log}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM attempts").await, 3);
    // Their bodies are still made from their events, for the logs and the next attempt.
    let detail = app.log_detail(logs[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        detail["request"][0]["body"]["webhook"]["event"], "connector_sync_started",
        "{detail}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM events e WHERE EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)"
        )
        .await,
        3
    );
    // What is newer than the retention stays.
    app.start_sync(&connector).await;
    receiver.wait_for(4).await;
    let delivered = wait_for(
        "the fresh delivery's outcome",
        Duration::from_secs(20),
        || async {
            let delivered: Vec<_> = app
                .all_logs("")
                .await
                .into_iter()
                .filter(|l| l["status"] == "delivered")
                .collect();
            (!delivered.is_empty()).then_some(delivered)
        },
    )
    .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let detail = app.log_detail(delivered[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        detail["response"].as_array().map(Vec::len),
        Some(1),
        "{detail}"
    );
}

/// Bytes of the database file and its write-ahead log.
fn file_size(db_url: &str) -> u64 {
    let path = db_url.strip_prefix("sqlite://").unwrap();
    [path.to_owned(), format!("{path}-wal")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn a_sqlite_file_stops_growing_under_a_steady_load() {
    if backend() == Backend::Postgres {
        eprintln!("PostgreSQL manages its own files");
        return;
    }
    let app = spawn_app_with(|c| c.retention = Duration::from_secs(1)).await;
    // A receiver that only counts: the bodies would otherwise pile up in the test.
    let received = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new().route(
        "/h",
        axum::routing::post({
            let received = received.clone();
            move || async move {
                received.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    app.create_webhook(
        &format!("http://127.0.0.1:{port}/h"),
        "production",
        &["employee_data_changed"],
    )
    .await;
    let connector = app.create_connector("production").await;
    let changes = format!("/api/v1/connectors/{}/changes", id(&connector, "id"));
    // About 30 KB a body.
    let ids: Vec<String> = (0..2_000).map(|n| format!("employee-{n:05}")).collect();
    let body = json!({"model": "employee", "ids": ids});
    let body_len = body.to_string().len() as u64;
    let sent = AtomicUsize::new(0);
    // Steady load for `span`, four calls at a time.
    let load = |span: Duration| {
        let (app, changes, body, sent) = (&app, &changes, &body, &sent);
        async move {
            let until = Instant::now() + span;
            futures::stream::iter(0..4)
                .for_each_concurrent(4, |_| async move {
                    while Instant::now() < until {
                        let (status, answer) = app.post(changes, body.clone()).await;
                        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await;
        }
    };
    load(Duration::from_secs(6)).await;
    let settled = file_size(&app.db_url);
    let sent_before = sent.load(Ordering::Relaxed);
    load(Duration::from_secs(6)).await;
    let after = file_size(&app.db_url);
    let sent_after = sent.load(Ordering::Relaxed) - sent_before;
    let written = sent_after as u64 * body_len;
    eprintln!(
        "file {settled} bytes after the first 6 s, {after} after the next 6 s, \
         in which {sent_after} events of {body_len} bytes were accepted"
    );
    // The load alone would have grown the file by what it wrote; the space of what
    // retention removed was used again instead.
    assert!(
        written > settled,
        "the load wrote too little to tell ({written} bytes for a file of {settled})"
    );
    assert!(
        after <= settled + settled / 4,
        "the file grew from {settled} to {after} bytes while {written} bytes were written"
    );
    // Every delivery was made: removing the old ones did not get in the way.
    let total = sent.load(Ordering::Relaxed);
    wait_for("every delivery", Duration::from_secs(30), || async {
        (received.load(Ordering::Relaxed) >= total).then_some(())
    })
    .await;
}
