//! Webhook configuration over the API: CRUD, pagination, validation, auth and isolation.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn create_read_update_delete() {
    let app = spawn_app().await;
    let hook = app
        .create_webhook(
            "https://example.com/hook",
            "production",
            &["connector_synced", "connector_sync_started"],
        )
        .await;
    assert_eq!(hook["type"], "production");
    assert_eq!(hook["is_enabled"], true);
    assert_eq!(
        hook["events"],
        json!(["connector_sync_started", "connector_synced"])
    );
    assert_eq!(hook["last_triggered_at"], serde_json::Value::Null);
    let path = format!("/api/v1/webhooks/{}", id(&hook, "webhook_id"));

    let (status, read) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, hook);

    let (status, patched) = app
        .patch(
            &path,
            json!({"name": "Employee data", "is_enabled": false, "type": "development"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "Employee data");
    assert_eq!(patched["is_enabled"], false);
    assert_eq!(patched["type"], "development");
    assert_eq!(patched["url"], "https://example.com/hook");

    let (status, _) = app.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].is_string());
    let (status, _) = app.delete(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_filters_by_is_active_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let hook = app
            .create_webhook(
                &format!("https://example.com/{i}"),
                "production",
                &["connector_synced"],
            )
            .await;
        ids.push(id(&hook, "webhook_id"));
    }
    app.patch(
        &format!("/api/v1/webhooks/{}", ids[1]),
        json!({"is_enabled": false}),
    )
    .await;

    let (_, page1) = app.get("/api/v1/webhooks?page_size=2").await;
    assert_eq!(page1["page_size"], 2);
    let cursor = page1["cursor"].as_str().expect("a next page").to_owned();
    let (_, page2) = app
        .get(&format!("/api/v1/webhooks?page_size=2&cursor={cursor}"))
        .await;
    let (_, page3) = app
        .get(&format!(
            "/api/v1/webhooks?page_size=2&cursor={}",
            page2["cursor"].as_str().unwrap()
        ))
        .await;
    assert!(page3["cursor"].is_null(), "last page has no cursor");
    let listed: Vec<String> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| id(w, "webhook_id"))
        })
        .collect();
    assert_eq!(listed, ids, "every webhook once, in creation order");

    let (_, active) = app.get("/api/v1/webhooks?is_active=true").await;
    assert_eq!(active["items"].as_array().unwrap().len(), 4);
    let (_, inactive) = app.get("/api/v1/webhooks?is_active=false").await;
    assert_eq!(inactive["items"][0]["webhook_id"], ids[1].as_str());
}

#[tokio::test]
async fn invalid_input_gets_422_in_the_provider_shape_and_changes_nothing() {
    let app = spawn_app().await;
    let bad = [
        (
            json!({"url": "ftp://example.com", "name": "n", "type": "production", "events": ["connector_synced"]}),
            "url",
        ),
        (
            json!({"url": "not a url", "name": "n", "type": "production", "events": ["connector_synced"]}),
            "url",
        ),
        (
            json!({"url": "https://example.com", "name": "  ", "type": "production", "events": ["connector_synced"]}),
            "name",
        ),
        (
            json!({"url": "https://example.com", "name": "x".repeat(300), "type": "production", "events": ["connector_synced"]}),
            "name",
        ),
        (
            json!({"url": "https://example.com", "name": "n", "type": "staging", "events": ["connector_synced"]}),
            "type",
        ),
        (
            json!({"url": "https://example.com", "name": "n", "type": "production", "events": ["sync_done"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com", "name": "n", "type": "production", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com", "name": "n", "type": "production"}),
            "events",
        ),
        (
            json!({"url": 5, "name": "n", "type": "production", "events": ["connector_synced"]}),
            "url",
        ),
    ];
    for (body, field) in bad {
        let (status, answer) = app.post("/api/v1/webhooks", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
        let detail = answer["detail"].as_array().expect("detail is a list");
        assert!(
            detail.iter().any(|d| d["loc"] == json!(["body", field])
                && d["msg"].is_string()
                && d["type"].is_string()),
            "{body} -> {answer}"
        );
    }
    for query in [
        "page_size=0",
        "page_size=101",
        "page_size=abc",
        "cursor=%%%",
        "is_active=maybe",
    ] {
        let (status, answer) = app.get(&format!("/api/v1/webhooks?{query}")).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query} -> {answer}"
        );
        assert_eq!(answer["detail"][0]["loc"][0], "query");
    }
    // Malformed JSON.
    let r = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&app.api_key)
        .body("{\"url\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    // A bad patch changes nothing, not even its valid fields.
    let hook = app
        .create_webhook(
            "https://example.com/ok",
            "production",
            &["connector_synced"],
        )
        .await;
    let path = format!("/api/v1/webhooks/{}", id(&hook, "webhook_id"));
    let (status, _) = app
        .patch(&path, json!({"name": "new name", "url": "gopher://x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.patch(&path, json!({"enabled": false})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused, not ignored"
    );
    assert_eq!(app.get(&path).await.1, hook);
    let (_, list) = app.get("/api/v1/webhooks").await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "only the valid webhook exists"
    );
}

#[tokio::test]
async fn private_address_literals_are_refused_when_not_allowed() {
    let app = spawn_app_with(|c| c.allow_private_destinations = false).await;
    for url in [
        "http://127.0.0.1:9/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://169.254.169.254/latest",
    ] {
        let (status, body) = app
            .post("/api/v1/webhooks", json!({"url": url, "name": "n", "type": "production", "events": ["connector_synced"]}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
    }
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/webhooks");
    let none = app.client.get(&url).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("wgl_not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let (_, body) = decode(wrong).await;
    assert!(body["detail"].is_string());
    let basic = app
        .client
        .get(&url)
        .basic_auth("user", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    let create = app
        .client
        .post(&url)
        .json(&json!({"url": "https://example.com", "name": "n", "type": "production", "events": ["connector_synced"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status().as_u16(), 401);
    assert_eq!(
        app.get("/api/v1/webhooks").await.1["items"],
        json!([]),
        "nothing was created"
    );
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn one_organization_cannot_see_or_touch_another() {
    let app = spawn_app().await;
    let other = app.other_org().await;
    let hook = app
        .create_webhook("https://example.com/a", "production", &["connector_synced"])
        .await;
    let connector = app.create_connector("production").await;
    let hook_path = format!("/api/v1/webhooks/{}", id(&hook, "webhook_id"));
    let connector_path = format!("/api/v1/connectors/{}", id(&connector, "id"));

    assert_eq!(other.get(&hook_path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        other.patch(&hook_path, json!({"name": "mine"})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(other.delete(&hook_path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(other.get(&connector_path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        other
            .post(&format!("{connector_path}/syncs"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(other.get("/api/v1/webhooks").await.1["items"], json!([]));
    assert_eq!(other.get("/api/v1/connectors").await.1["items"], json!([]));
    assert_ne!(
        other.get("/api/v1/webhooks/signature-key").await.1["signature_key"],
        app.get("/api/v1/webhooks/signature-key").await.1["signature_key"]
    );
    assert_eq!(app.get(&hook_path).await.1, hook, "untouched");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = spawn_app().await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let r = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&app.api_key)
        .json(&json!({"url": "https://example.com", "name": huge, "type": "production", "events": ["connector_synced"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(app.get("/api/v1/webhooks").await.1["items"], json!([]));
}

#[tokio::test]
async fn connectors_validate_their_fields() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/connectors",
            json!({"environment": "prod", "display_name": "", "integration_slug": "s", "categories": ["HRIS"],
                   "origin_id": "o", "end_user_name": "n", "end_user_email": "not-an-email"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let locs: Vec<_> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"][1].clone())
        .collect();
    assert_eq!(
        locs,
        [
            json!("environment"),
            json!("display_name"),
            json!("end_user_email")
        ]
    );
    assert_eq!(app.get("/api/v1/connectors").await.1["items"], json!([]));
    let connector = app.create_connector("development").await;
    let path = format!("/api/v1/connectors/{}", id(&connector, "id"));
    let (status, patched) = app
        .patch(&path, json!({"connector_status": "RELINK_NEEDED"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["connector_status"], "RELINK_NEEDED");
    assert_eq!(
        app.patch(&path, json!({"connector_status": "BROKEN"}))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn a_webhook_whose_attempts_all_fail_for_the_set_time_is_disabled_until_enabled_again() {
    use std::time::Duration;
    let app = spawn_app_with(|c| {
        c.auto_disable_after = Duration::from_secs(1);
        c.retry_backoff = waggle::config::Backoff(vec![Duration::from_millis(100); 2]);
    })
    .await;
    let receiver = Receiver::start(200).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/h", closed.local_addr().unwrap());
    drop(closed);
    let events = ["connector_data_modified"];
    let dead = app.create_webhook(&closed_url, "production", &events).await;
    let live = app
        .create_webhook(&receiver.url("/h"), "production", &events)
        .await;
    let dead_path = format!("/api/v1/webhooks/{}", id(&dead, "webhook_id"));
    let live_path = format!("/api/v1/webhooks/{}", id(&live, "webhook_id"));
    let connector = app.create_connector("production").await;
    let changes = format!("/api/v1/connectors/{}/changes", id(&connector, "id"));
    let change = json!({"model": "employee", "ids": ["e1"]});

    // Changes keep coming, ten a second, while the dead destination fails every attempt.
    let started = std::time::Instant::now();
    let producer = {
        let (app, changes, change) = (app.with_key(&app.api_key), changes.clone(), change.clone());
        tokio::spawn(async move {
            loop {
                app.post(&changes, change.clone()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let disabled = wait_for(
        "the failing webhook disabled",
        Duration::from_secs(15),
        || async {
            let (_, w) = app.get(&dead_path).await;
            (w["is_enabled"] == false).then_some(w)
        },
    )
    .await;
    producer.abort();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "disabled too soon"
    );
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("failed for 1s"), "{reason}");
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    // The healthy one stays as it was; only it gets new events.
    let (_, live_now) = app.get(&live_path).await;
    assert_eq!(live_now["is_enabled"], true);
    assert_eq!(live_now["disabled_reason"], serde_json::Value::Null);
    let (status, out) = app.post(&changes, change.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(out["deliveries"], 1);

    // Enabling it again clears the reason, and its failing spell starts afresh.
    let (status, enabled) = app.patch(&dead_path, json!({"is_enabled": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(enabled["is_enabled"], true);
    assert_eq!(enabled["disabled_reason"], serde_json::Value::Null);
    assert_eq!(enabled["disabled_at"], serde_json::Value::Null);
    let (_, out) = app.post(&changes, change).await;
    assert_eq!(out["deliveries"], 2);
    assert_eq!(app.get(&dead_path).await.1["is_enabled"], true);
}
