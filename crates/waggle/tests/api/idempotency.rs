//! `Idempotency-Key`: a call made again with the same key, method, path and body answers
//! its first answer and changes nothing, emits nothing; the same key with another call is
//! a 422; calls with one key at once make one record; a key expires after a day. On
//! PostgreSQL, the same holds from one node to another (`multinode.rs`).

use axum::http::StatusCode;
use serde_json::{json, Value};
use waggle::domain::connector::{Connector, ConnectorStatus};
use waggle::domain::event::Environment;
use waggle::domain::ids::ConnectorId;
use waggle::domain::time;
use waggle::storage::Remembered;

use crate::helpers::*;

/// POSTs with an `Idempotency-Key`: the status, whether the answer was given again, and
/// the body.
async fn post_keyed(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, bool, Value) {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.api_key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let status = r.status().as_u16();
    (status, replayed, r.json().await.unwrap_or(Value::Null))
}

fn connector_body(name: &str) -> Value {
    json!({
        "environment": "production", "display_name": name, "integration_slug": "breathehr",
        "categories": ["HRIS"], "origin_id": "user_1", "end_user_name": "Ann",
        "end_user_email": "ann@example.com"
    })
}

#[tokio::test]
async fn a_repeated_call_answers_as_the_first_and_emits_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    app.create_webhook(
        &receiver.url("/h"),
        "production",
        &[
            "connector_sync_started",
            "connector_synced",
            "connector_data_modified",
        ],
    )
    .await;

    // Creating a connector twice with one key: one connector.
    let body = connector_body("HR");
    let (status, replayed, first) = post_keyed(&app, "conn-1", "/api/v1/connectors", &body).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = post_keyed(&app, "conn-1", "/api/v1/connectors", &body).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again, first);
    let (_, list) = app.get("/api/v1/connectors").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let connector = id(&first, "id");

    // A sync started, completed and a change, each twice with its key.
    let syncs = format!("/api/v1/connectors/{connector}/syncs");
    let start = json!({"initial_sync": true});
    let (status, _, job) = post_keyed(&app, "start-1", &syncs, &start).await;
    assert_eq!(status, 201, "{job}");
    let (status, replayed, again) = post_keyed(&app, "start-1", &syncs, &start).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, job);
    let complete = format!("{syncs}/{}/complete", id(&job, "id"));
    let (status, _, done) = post_keyed(&app, "complete-1", &complete, &Value::Null).await;
    assert_eq!(status, 200, "{done}");
    // Without its key, completing again is refused; with it, the first answer comes back.
    let (status, replayed, again) = post_keyed(&app, "complete-1", &complete, &Value::Null).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again, done);
    let (status, _) = app.post(&complete, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let changes = format!("/api/v1/connectors/{connector}/changes");
    let change = json!({"model": "department", "ids": ["d1"]});
    let (status, _, emitted) = post_keyed(&app, "change-1", &changes, &change).await;
    assert_eq!(status, 202, "{emitted}");
    let (status, replayed, again) = post_keyed(&app, "change-1", &changes, &change).await;
    assert_eq!((status, replayed), (202, true));
    assert_eq!(again, emitted);

    // A last call without a key: once it has arrived, nothing else is on its way. Three
    // events were emitted, each once, and then this one.
    app.start_sync(&json!({"id": connector})).await;
    let got = receiver.wait_for(4).await;
    let settled = app.wait_settled(4).await;
    assert_eq!(settled.len(), 4, "{settled:?}");
    let mut events: Vec<String> = got
        .iter()
        .map(|r| r.json()["webhook"]["event"].as_str().unwrap().to_owned())
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "connector_data_modified",
            "connector_sync_started",
            "connector_sync_started",
            "connector_synced"
        ]
    );
    assert_eq!(receiver.count(), 4);
}

#[tokio::test]
async fn a_key_used_with_another_call_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let (status, _, first) =
        post_keyed(&app, "k", "/api/v1/connectors", &connector_body("First")).await;
    assert_eq!(status, 201, "{first}");
    // Another body, then another path, under the same key.
    let (status, _, refused) =
        post_keyed(&app, "k", "/api/v1/connectors", &connector_body("Second")).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["detail"][0]["loc"],
        json!(["header", "Idempotency-Key"])
    );
    let webhook = json!({"url": "https://example.com/h", "name": "h", "type": "production",
                         "events": ["connector_synced"]});
    let (status, _, refused) = post_keyed(&app, "k", "/api/v1/webhooks", &webhook).await;
    assert_eq!(status, 422, "{refused}");
    let (_, connectors) = app.get("/api/v1/connectors").await;
    assert_eq!(connectors["items"].as_array().unwrap().len(), 1);
    let (_, webhooks) = app.get("/api/v1/webhooks").await;
    assert_eq!(webhooks["items"].as_array().unwrap().len(), 0);

    // Keys that cannot be one: too long, or not visible ASCII.
    for bad in ["x".repeat(256), "with space".to_owned()] {
        let (status, _, refused) = post_keyed(&app, &bad, "/api/v1/webhooks", &webhook).await;
        assert_eq!(status, 422, "{refused}");
        assert_eq!(
            refused["detail"][0]["loc"],
            json!(["header", "Idempotency-Key"])
        );
    }
    let (_, webhooks) = app.get("/api/v1/webhooks").await;
    assert_eq!(webhooks["items"].as_array().unwrap().len(), 0);

    // Keys are the organization's own: another one's same key makes its own record.
    let other = app.other_org().await;
    let (status, replayed, theirs) =
        post_keyed(&other, "k", "/api/v1/connectors", &connector_body("First")).await;
    assert_eq!((status, replayed), (201, false), "{theirs}");
    assert_ne!(theirs["id"], first["id"]);
}

#[tokio::test]
async fn calls_with_one_key_at_once_make_one_record_and_give_one_answer() {
    let app = spawn_app().await;
    let webhook = json!({"url": "https://example.com/h", "name": "h", "type": "production",
                         "events": ["connector_synced"]});
    let answers = futures::future::join_all(
        (0..16).map(|_| post_keyed(&app, "together", "/api/v1/webhooks", &webhook)),
    )
    .await;
    let first = &answers[0].2;
    for (status, _, body) in &answers {
        assert_eq!(*status, 201, "{body}");
        assert_eq!(body, first);
    }
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1
    );
    let (_, webhooks) = app.get("/api/v1/webhooks").await;
    assert_eq!(webhooks["items"].as_array().unwrap().len(), 1, "{webhooks}");

    // The same for events: one change, one event, whatever the number of calls.
    let connector = app.create_connector("production").await;
    let changes = format!("/api/v1/connectors/{}/changes", id(&connector, "id"));
    let change = json!({"model": "employee", "ids": ["e1"]});
    let answers =
        futures::future::join_all((0..16).map(|_| post_keyed(&app, "change", &changes, &change)))
            .await;
    for (status, _, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        assert_eq!(body, &answers[0].2);
    }
    let events = count(&app.db_url, "SELECT count(*) FROM events").await;
    assert_eq!(
        events, 2,
        "employee_data_changed and connector_data_modified, once"
    );
}

#[tokio::test]
async fn a_key_is_free_again_a_day_after_its_answer() {
    let app = spawn_app().await;
    let org = app.org_id;
    // An answer kept 25 hours ago, with its own record.
    let old = Remembered {
        org_id: org,
        key: "old".into(),
        fingerprint: "another call".into(),
        status: 201,
        body: b"{}".to_vec(),
        created_at: time::now() - chrono::Duration::hours(25),
    };
    let connector = Connector {
        id: ConnectorId::new(),
        org_id: org,
        environment: Environment::Production,
        display_name: "Old".into(),
        integration_slug: "breathehr".into(),
        categories: vec!["HRIS".into()],
        origin_id: "o".into(),
        connector_status: ConnectorStatus::Complete,
        end_user_name: "n".into(),
        end_user_email: "n@example.com".into(),
        created_at: time::now(),
    };
    app.store
        .create_connector(&connector, Some(&old))
        .await
        .unwrap();
    let (status, replayed, made) =
        post_keyed(&app, "old", "/api/v1/connectors", &connector_body("New")).await;
    assert_eq!((status, replayed), (201, false), "{made}");
    let kept = app
        .store
        .remembered(org, "old", time::now())
        .await
        .unwrap()
        .expect("the new answer is kept");
    assert_eq!(serde_json::from_slice::<Value>(&kept.body).unwrap(), made);
    // Forgotten once expired.
    let forgotten = app
        .store
        .forget_remembered(time::now() + chrono::Duration::hours(25), 100)
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert!(app
        .store
        .remembered(org, "old", time::now())
        .await
        .unwrap()
        .is_none());
}
