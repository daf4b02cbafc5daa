//! `/api/v1/api-keys`: an organization makes, lists and deletes its own keys. The secret
//! is shown once; a deleted key is refused at once (on every node, on PostgreSQL); the
//! last key cannot be deleted; another organization's keys are not found; bad input
//! changes nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use waggle::config::Config;

use crate::helpers::*;

/// The answer of `GET /api/v1/webhooks` with `key`: 200 while the key is valid.
async fn status_with(app: &TestApp, address: &str, key: &str) -> u16 {
    app.client
        .get(format!("{address}/api/v1/webhooks"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn keys(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/api-keys").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// The keys as made, without when each was last used (written after the calls).
async fn keys_as_made(app: &TestApp) -> Vec<Value> {
    let mut keys = keys(app).await;
    for key in &mut keys {
        key.as_object_mut().unwrap().remove("last_used_at");
    }
    keys
}

#[tokio::test]
async fn a_key_is_shown_once_works_at_once_and_is_refused_once_deleted() {
    let app = spawn_app().await;
    let (status, made) = app
        .post("/api/v1/api-keys", json!({"name": "CI deploys"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let secret = made["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wgl_"), "{made}");
    assert_eq!(made["name"], "CI deploys");
    assert!(secret.starts_with(made["prefix"].as_str().unwrap()));
    assert_eq!(made["last_used_at"], Value::Null);
    assert_eq!(status_with(&app, &app.address, &secret).await, 200);
    let used = wait_for(
        "the new key's use recorded",
        Duration::from_secs(10),
        || async {
            let listed = keys(&app).await;
            let key = listed.iter().find(|k| k["id"] == made["id"])?;
            key["last_used_at"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert!(used.as_str() >= made["created_at"].as_str().unwrap());

    // Listed, oldest first, with neither the secret nor its hash.
    let listed = keys(&app).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["id"], made["id"]);
    assert_eq!(listed[1]["created_at"], made["created_at"]);
    for key in &listed {
        let fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["id", "name", "prefix", "created_at", "last_used_at"]
        );
    }
    assert!(!Value::from(listed.clone()).to_string().contains(&secret));

    let id = made["id"].as_str().unwrap();
    let (status, body) = app.delete(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(status_with(&app, &app.address, &secret).await, 401);
    assert_eq!(keys(&app).await.len(), 1);
    let (status, _) = app.delete(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn calls_at_once_with_the_same_keys_each_get_their_own_answer() {
    let app = spawn_app().await;
    let (status, made) = app
        .post("/api/v1/api-keys", json!({"name": "second"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let second = made["key"].as_str().unwrap().to_owned();
    // Many calls at once share their key lookups (several nodes read every key): each
    // valid key is found for each of its calls, however many carry it.
    let keys = [app.api_key.clone(), second, "wgl_not-a-key".to_owned()];
    let app = &app;
    let calls = (0..96).map(|i| {
        let key = keys[i % 3].clone();
        async move { (i % 3, status_with(app, &app.address, &key).await) }
    });
    let answers = futures::future::join_all(calls).await;
    for (which, status) in answers {
        let expected = if which == 2 { 401 } else { 200 };
        assert_eq!(status, expected, "key {which}");
    }
}

#[tokio::test]
async fn the_last_key_cannot_be_deleted() {
    let app = spawn_app().await;
    let only = keys(&app).await;
    assert_eq!(only.len(), 1);
    let id = only[0]["id"].as_str().unwrap();
    let (status, body) = app.delete(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("last API key"),
        "{body}"
    );
    assert_eq!(status_with(&app, &app.address, &app.api_key).await, 200);
    // With a second key, the first can go, and the second is then the last.
    let (_, made) = app.post("/api/v1/api-keys", json!({"name": "next"})).await;
    let (status, _) = app.delete(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let next = app.with_key(made["key"].as_str().unwrap());
    let last = made["id"].as_str().unwrap();
    let (status, _) = next.delete(&format!("/api/v1/api-keys/{last}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn another_organizations_keys_are_not_found_and_stay_valid() {
    let app = spawn_app().await;
    let other = app.other_org().await;
    let theirs = keys_as_made(&other).await;
    let id = theirs[0]["id"].as_str().unwrap();
    let (status, body) = app.delete(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(keys(&app).await.len(), 1, "only its own keys are listed");
    assert_eq!(
        status_with(&other, &other.address, &other.api_key).await,
        200
    );
    assert_eq!(keys_as_made(&other).await, theirs);
    let (status, _) = app.delete("/api/v1/api-keys/not-an-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_names_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let before = keys_as_made(&app).await;
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(256)}), "name"),
        (json!({}), "name"),
        (json!({"name": 7}), "name"),
        (json!({"name": "ok", "scope": "all"}), "body"),
    ] {
        let (status, answer) = app.post("/api/v1/api-keys", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(
            answer["detail"].to_string().contains(field),
            "{body}: {answer}"
        );
    }
    assert_eq!(keys_as_made(&app).await, before);
}

#[tokio::test]
async fn a_key_deleted_on_one_node_is_refused_on_the_other_at_once() {
    if backend() != Backend::Postgres {
        eprintln!("several nodes need PostgreSQL: run with WAGGLE_TEST_BACKEND=postgres");
        return;
    }
    let database = Arc::new(TestDatabase::create().await);
    let config = || {
        let mut config = Config::for_database(database.url());
        config.poll_interval = Duration::from_millis(20);
        config
    };
    let (first, _a) = start_running(config(), database.clone()).await;
    let (second, _b) = start_running(config(), database.clone()).await;
    let (_, made) = first
        .post("/api/v1/api-keys", json!({"name": "both"}))
        .await;
    let secret = made["key"].as_str().unwrap();
    // Both nodes have seen the key work.
    assert_eq!(status_with(&first, &first.address, secret).await, 200);
    assert_eq!(status_with(&first, &second.address, secret).await, 200);
    let id = made["id"].as_str().unwrap();
    let (status, _) = first.delete(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(status_with(&first, &second.address, secret).await, 401);
    assert_eq!(status_with(&first, &first.address, secret).await, 401);
}
