//! Recover: every delivery of a webhook in a range that ended in an error is made anew,
//! once, with its exact body; the call is checked, bounded, answers the same recovery
//! for the same range while it runs, and its progress is readable.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// A receiver answering whatever status it is set to, keeping each request's
/// `webhook-id` and body.
#[derive(Clone, Default)]
struct Switchable {
    status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl Switchable {
    async fn start(status: u16) -> (Self, String) {
        let receiver = Self::default();
        receiver.set(status);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = receiver.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                state.got.lock().unwrap().push((id, body));
                AxumStatus::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<(String, Bytes)> {
        self.got.lock().unwrap().clone()
    }
}

async fn sync(app: &TestApp, connector: &Value) {
    app.start_sync(connector).await;
}

fn recover_path(webhook: &Value) -> String {
    format!(
        "/api/v1/webhooks/{}/recover",
        webhook["webhook_id"].as_str().unwrap()
    )
}

async fn wait_done(app: &TestApp, webhook: &Value, recovery: &Value) -> Value {
    let path = format!(
        "{}/{}",
        recover_path(webhook),
        recovery["id"].as_str().unwrap()
    );
    wait_for(
        "the recovery to finish",
        Duration::from_secs(20),
        || async {
            let (status, read) = app.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{read}");
            (read["status"] == "done").then_some(read)
        },
    )
    .await
}

#[tokio::test]
async fn each_failed_delivery_in_the_range_is_made_anew_once_with_its_body() {
    let app = spawn_app().await;
    let (receiver, url) = Switchable::start(200).await;
    let webhook = app
        .create_webhook(&url, "production", &["connector_sync_started"])
        .await;
    let (other_receiver, other_url) = Switchable::start(500).await;
    app.create_webhook(&other_url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    let since = chrono::Utc::now().to_rfc3339();

    sync(&app, &connector).await; // answered 200: not recovered
    app.wait_settled(2).await;
    receiver.set(500);
    for _ in 0..3 {
        sync(&app, &connector).await;
    }
    let logs = app.wait_settled(8).await;
    // One of the failures resent, and failing again: the resend is what is recovered.
    let failed: Vec<&Value> = logs
        .iter()
        .filter(|l| l["webhook_id"] == webhook["webhook_id"] && l["response_code"] == 500)
        .collect();
    assert_eq!(failed.len(), 3);
    let resent = failed[0]["id"].as_str().unwrap();
    let (status, _) = app
        .post(&format!("/api/v1/webhooks/logs/{resent}/resend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.wait_settled(9).await;
    let before: Vec<(String, Bytes)> = receiver.got();
    assert_eq!(before.len(), 5);

    receiver.set(200);
    let (status, recovery) = app
        .post(&recover_path(&webhook), json!({"since": since}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{recovery}");
    assert_eq!(recovery["deliveries"], 3, "{recovery}");
    let done = wait_done(&app, &webhook, &recovery).await;
    assert_eq!(done["recovered"], 3, "{done}");
    assert!(done["finished_at"].is_string());
    let logs = app.wait_settled(12).await;
    let got = receiver.got();
    assert_eq!(got.len(), 8, "three more requests");
    // One for each event that failed (the resent one once), each with the body it failed
    // with, under a new delivery id.
    let failed_bodies: Vec<&Bytes> = before[1..].iter().map(|(_, body)| body).collect();
    let mut events: Vec<String> = Vec::new();
    for (id, body) in &got[5..] {
        assert!(
            failed_bodies.contains(&body),
            "a body that never failed was sent"
        );
        assert!(before.iter().all(|(old, _)| old != id), "a new webhook-id");
        let event: Value = serde_json::from_slice(body).unwrap();
        events.push(event["data"]["id"].as_str().unwrap().to_owned());
    }
    events.sort();
    events.dedup();
    assert_eq!(events.len(), 3, "each failed event once");
    assert_eq!(
        logs.iter()
            .filter(|l| l["webhook_id"] == webhook["webhook_id"] && l["response_code"] == 200)
            .count(),
        4
    );
    assert_eq!(
        other_receiver.got().len(),
        4,
        "another webhook's failures stay as they were"
    );

    // Recovered once: asked again, nothing is left.
    let (status, again) = app
        .post(&recover_path(&webhook), json!({"since": since}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_ne!(again["id"], recovery["id"], "the first one is done");
    assert_eq!(again["deliveries"], 0);
    wait_done(&app, &webhook, &again).await;
    assert_eq!(receiver.got().len(), 8);
}

#[tokio::test]
async fn the_same_range_answers_the_same_recovery_while_it_runs() {
    let app = spawn_app().await;
    let (_receiver, url) = Switchable::start(503).await;
    let webhook = app
        .create_webhook(&url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    let since = chrono::Utc::now().to_rfc3339();
    sync(&app, &connector).await;
    app.wait_settled(1).await;
    fail::cfg(
        "recover-hold",
        &format!("return({})", webhook["webhook_id"].as_str().unwrap()),
    )
    .unwrap();
    let (status, first) = app
        .post(&recover_path(&webhook), json!({"since": since}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (_, second) = app
        .post(&recover_path(&webhook), json!({"since": since}))
        .await;
    assert_eq!(second["id"], first["id"], "{second}");
    assert_eq!(second["status"], "running");
    assert_eq!(second["deliveries"], 1);
    // Another range is another recovery.
    let until = chrono::Utc::now().to_rfc3339();
    let (_, other) = app
        .post(
            &recover_path(&webhook),
            json!({"since": since, "until": until}),
        )
        .await;
    assert_ne!(other["id"], first["id"], "{other}");
}

#[tokio::test]
async fn bad_ranges_and_unknown_ids_change_nothing() {
    let app = spawn_app().await;
    let (receiver, url) = Switchable::start(500).await;
    let webhook = app
        .create_webhook(&url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    sync(&app, &connector).await;
    app.wait_settled(1).await;
    let path = recover_path(&webhook);
    let now = chrono::Utc::now();
    let iso = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339();
    for (body, field) in [
        (json!({}), None),
        (json!({"since": "yesterday"}), Some("since")),
        (json!({"since": iso(now), "until": "later"}), Some("until")),
        (
            json!({"since": iso(now + chrono::Duration::hours(1))}),
            Some("since"),
        ),
        (
            json!({"since": iso(now - chrono::Duration::days(32))}),
            Some("since"),
        ),
        (
            json!({"since": iso(now - chrono::Duration::hours(1)), "until": iso(now - chrono::Duration::hours(2))}),
            Some("since"),
        ),
        (json!({"since": iso(now), "extra": 1}), None),
    ] {
        let (status, answer) = app.post(&path, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        if let Some(field) = field {
            assert_eq!(
                answer["detail"][0]["loc"],
                json!(["body", field]),
                "{answer}"
            );
        }
    }
    let since = iso(now - chrono::Duration::hours(1));
    let unknown = format!("/api/v1/webhooks/{}/recover", uuid::Uuid::now_v7());
    let (status, _) = app.post(&unknown, json!({"since": since})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = app.other_org().await;
    let (status, _) = other.post(&path, json!({"since": since})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another organization's webhook"
    );
    let (status, _) = app.get(&format!("{path}/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing was recovered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.got().len(), 1);
    assert_eq!(app.all_logs("").await.len(), 1);
}
