//! Bad input gets a clear 4xx and changes nothing: every rejected call below is followed
//! by a look at the database itself (the rows of every table) and at what the API shows
//! of the webhook and connector it aimed at.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const TABLES: &[&str] = &[
    "organizations",
    "api_keys",
    "dashboard_users",
    "dashboard_sessions",
    "webhooks",
    "connectors",
    "sync_jobs",
    "events",
    "deliveries",
    "attempts",
];

/// How many rows each table holds, read from the database file or server.
async fn rows(db_url: &str) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    match backend() {
        Backend::Sqlite => {
            let path = db_url.strip_prefix("sqlite://").unwrap();
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            for table in TABLES {
                let n: i64 = conn
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .unwrap();
                counts.push((*table, n));
            }
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(db_url).await.unwrap();
            for table in TABLES {
                let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                counts.push((*table, n));
            }
        }
    }
    counts
}

/// The database's rows and what the API shows of the organization's records.
async fn snapshot(app: &TestApp, webhook: &str, connector: &str) -> Value {
    let (_, hook) = app.get(&format!("/api/v1/webhooks/{webhook}")).await;
    let (_, conn) = app.get(&format!("/api/v1/connectors/{connector}")).await;
    let (_, hooks) = app.get("/api/v1/webhooks").await;
    json!({
        "rows": format!("{:?}", rows(&app.db_url).await),
        "webhook": hook,
        "connector": conn,
        "webhooks": hooks,
    })
}

async fn send(app: &TestApp, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.api_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    decode(response).await
}

/// A bad call: method, path, body, the status expected, where the answer should point
/// (`null`: anywhere) and the kind of problem (empty: any).
type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, Value, &'a str);

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// `{"a":{"a":…1…}}`, `depth` objects deep.
fn nested_objects(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

#[tokio::test]
async fn every_limit_answers_a_clear_4xx_and_changes_nothing() {
    let app = spawn_app().await;
    let hook = app
        .create_webhook("https://example.com/h", "production", &["connector_synced"])
        .await;
    let webhook = id(&hook, "webhook_id");
    let created = app.create_connector("production").await;
    let connector = id(&created, "id");
    let sync = id(&app.start_sync(&created).await, "id");
    let before = snapshot(&app, &webhook, &connector).await;

    let good_hook = |patch: Value| {
        let mut body = json!({"url": "https://example.com/x", "name": "x",
                              "type": "production", "events": ["connector_synced"]});
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        serde_json::to_vec(&body).unwrap()
    };
    let fail = format!("/api/v1/connectors/{connector}/syncs/{sync}/fail");
    let changes = format!("/api/v1/connectors/{connector}/changes");
    let patch = format!("/api/v1/webhooks/{webhook}");
    let many_ids: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    // (method, path, body, status, where the answer points, the kind of problem)
    let cases: Vec<Case> = vec![
        ("POST", "/api/v1/webhooks", vec![b' '; 1024 * 1024 + 1], 413, json!(null), ""),
        ("POST", "/api/v1/webhooks", good_hook(json!({"name": "n".repeat(256)})), 422,
            json!(["body", "name"]), "value_error.any_str.max_length"),
        ("POST", "/api/v1/webhooks",
            good_hook(json!({"url": format!("https://example.com/{}", "u".repeat(2048))})), 422,
            json!(["body", "url"]), ""),
        ("POST", "/api/v1/webhooks", good_hook(json!({"events": vec!["connector_synced"; 51]})),
            422, json!(["body", "events"]), "value_error.list.max_items"),
        ("POST", "/api/v1/webhooks", good_hook(json!({"events": []})), 422,
            json!(["body", "events"]), "value_error.list.min_items"),
        ("POST", "/api/v1/webhooks", good_hook(json!({"name": 7})), 422,
            json!(["body", "name"]), "type_error"),
        ("POST", "/api/v1/webhooks", good_hook(json!({"secret_header": "x"})), 422,
            json!(["body", "secret_header"]), "value_error.extra"),
        ("POST", "/api/v1/webhooks",
            br#"{"url":"https://example.com/x","name":"a","name":"b","type":"production","events":["connector_synced"]}"#.to_vec(),
            422, json!(["body", "name"]), "value_error.duplicate"),
        ("POST", "/api/v1/webhooks", b"{\"url\":\"https://example.com/\xff\xfe\"}".to_vec(), 422,
            json!(["body"]), "value_error.jsondecode"),
        ("POST", "/api/v1/webhooks", b"{\"url\":".to_vec(), 422, json!(["body"]),
            "value_error.jsondecode"),
        ("PATCH", &patch, br#"{"name":"renamed","is_active":false}"#.to_vec(), 422,
            json!(["body", "is_active"]), "value_error.extra"),
        ("PATCH", &patch, br#"{"name":"renamed","url":42}"#.to_vec(), 422,
            json!(["body", "url"]), "type_error"),
        ("POST", &changes, serde_json::to_vec(&json!({"model": "employee", "ids": many_ids})).unwrap(),
            422, json!(["body", "ids"]), ""),
        ("POST", &fail, format!(r#"{{"message":"m","detail":{}}}"#, nested(40)).into_bytes(), 422,
            json!(null), "value_error.depth"),
        ("POST", &fail, br#"{"message":"m","detail":{"code":1,"code":2}}"#.to_vec(), 422,
            json!(["body", "detail", "code"]), "value_error.duplicate"),
    ];
    for (method, path, body, status, loc, kind) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let (got, answer) = send(&app, method, path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path} {shown}: {answer}");
        let detail = &answer["detail"];
        if status == 413 {
            assert!(detail.as_str().unwrap().contains("too large"), "{answer}");
        } else {
            let problem = &detail[0];
            assert!(!problem["msg"].as_str().unwrap().is_empty(), "{answer}");
            if !loc.is_null() {
                assert_eq!(problem["loc"], loc, "{method} {path} {shown}: {answer}");
            }
            if !kind.is_empty() {
                assert_eq!(problem["type"], kind, "{method} {path} {shown}: {answer}");
            }
        }
        assert_eq!(
            snapshot(&app, &webhook, &connector).await,
            before,
            "{method} {path} {shown} changed something"
        );
    }
    // The limits themselves pass: 32 levels (the body's, then 31 in `detail`), 10,000
    // ids, 255 characters.
    let (status, body) = send(
        &app,
        "POST",
        &fail,
        format!(r#"{{"message":"m","detail":{}}}"#, nested_objects(31)).into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let (status, body) = send(
        &app,
        "POST",
        &changes,
        serde_json::to_vec(&json!({"model": "employee", "ids": ids})).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/webhooks",
        good_hook(json!({"name": "n".repeat(255)})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
