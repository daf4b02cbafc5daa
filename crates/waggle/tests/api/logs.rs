//! The logs API: every filter, cursor pagination, attempt detail and resend.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn every_filter_selects_exactly_its_logs() {
    let app = spawn_app().await;
    let ok = Receiver::start(200).await;
    let missing = Receiver::start(404).await;
    let hook_ok = app
        .create_webhook(
            &ok.url("/ok"),
            "production",
            &["connector_sync_started", "connector_synced"],
        )
        .await;
    let hook_404 = app
        .create_webhook(
            &missing.url("/missing"),
            "production",
            &["connector_sync_started"],
        )
        .await;
    let c1 = app.create_connector("production").await;
    let c2 = app.create_connector("production").await;
    let s1 = app.start_sync(&c1).await; // ok + 404
    app.post(
        &format!(
            "/api/v1/connectors/{}/syncs/{}/complete",
            id(&c1, "id"),
            id(&s1, "id")
        ),
        json!({}),
    )
    .await; // ok
    app.start_sync(&c2).await; // ok + 404
    let logs = app.wait_settled(5).await;
    let newest = logs[0]["created_at"].as_str().unwrap().to_owned();

    let count = |query: &'static str| {
        let app = &app;
        async move { app.all_logs(query).await.len() }
    };
    let hook_ok_id = id(&hook_ok, "webhook_id");
    let hook_404_id = id(&hook_404, "webhook_id");
    assert_eq!(
        app.all_logs(&format!("webhook_id={hook_ok_id}"))
            .await
            .len(),
        3
    );
    assert_eq!(
        app.all_logs(&format!("webhook_id={hook_404_id}"))
            .await
            .len(),
        2
    );
    assert_eq!(
        app.all_logs(&format!("connector_id={}", id(&c1, "id")))
            .await
            .len(),
        3
    );
    assert_eq!(count("webhook_action=connector_synced").await, 1);
    assert_eq!(
        count("webhook_action=connector_synced,connector_sync_started").await,
        5
    );
    assert_eq!(count("response_code=404").await, 2);
    assert_eq!(count("response_code=200,404").await, 5);
    assert_eq!(count("errors_only=true").await, 2);
    assert_eq!(count("errors_only=false").await, 5);
    assert_eq!(
        count("created_at_from=2000-01-01&created_at_to=2100-01-01T00:00:00").await,
        5
    );
    assert_eq!(count("created_at_to=2000-01-01T00:00:00Z").await, 0);
    // The newest event (the second connector's sync) made two deliveries at one instant.
    assert_eq!(
        app.all_logs(&format!("created_at_from={}", newest.replace('+', "%2B")))
            .await
            .len(),
        2
    );
    let combined = app
        .all_logs(&format!(
            "webhook_id={hook_404_id}&connector_id={}&errors_only=true",
            id(&c2, "id")
        ))
        .await;
    assert_eq!(combined.len(), 1);
    assert_eq!(combined[0]["response_code"], 404);
    assert_eq!(combined[0]["webhook_action"], "connector_sync_started");
    assert_eq!(combined[0]["method"], "POST");
    assert_eq!(combined[0]["integration_name"], "breathehr");
    assert_eq!(combined[0]["end_user_name"], "John Doe");
    assert_eq!(combined[0]["origin_id"], "user_123");
    assert_eq!(combined[0]["webhook_name"], "hook");
    assert_eq!(combined[0]["url"], missing.url("/missing").as_str());

    for bad in [
        "page_size=0",
        "page_size=51",
        "webhook_action=sync_done",
        "response_code=abc",
        "response_code=999",
        "created_at_from=yesterday",
        "created_at_to=2024-13-40",
        "errors_only=perhaps",
        "errors_only=",
        "webhook_id=nope",
        "connector_id=1",
        "cursor=***",
        "created_at_from=2024-02-01&created_at_to=2024-01-01",
    ] {
        let (status, body) = app.get(&format!("/api/v1/webhooks/logs?{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["detail"][0]["loc"][0], "query", "{bad}: {body}");
    }
}

#[tokio::test]
async fn pages_cover_every_log_once_newest_first() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    app.create_webhook(
        &receiver.url("/h"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    for _ in 0..23 {
        app.start_sync(&connector).await;
    }
    app.wait_settled(23).await;
    let (_, first) = app.get("/api/v1/webhooks/logs").await;
    assert_eq!(first["page_size"], 25);
    assert_eq!(first["items"].as_array().unwrap().len(), 23);
    assert!(first["cursor"].is_null());
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = app
            .get(&format!(
                "/api/v1/webhooks/logs?page_size=5&cursor={cursor}"
            ))
            .await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                l["created_at"].as_str().unwrap().to_owned(),
            )
        }));
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 23);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, no repeats");
    sorted.dedup();
    assert_eq!(sorted.len(), 23);
}

#[tokio::test]
async fn detail_has_one_request_and_response_per_attempt_and_resend_sends_the_same_body() {
    let app = spawn_app().await;
    let receiver = Receiver::start(202).await;
    let hook = app
        .create_webhook(
            &receiver.url("/h"),
            "production",
            &["connector_sync_started"],
        )
        .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = app.wait_settled(1).await;
    let log_id = id(&logs[0], "id");
    let detail = app.log_detail(&log_id).await;
    let sent = receiver.wait_for(1).await;
    assert_eq!(
        detail["request"][0]["body"],
        sent[0].json(),
        "the log shows the bytes sent"
    );
    assert_eq!(detail["request"].as_array().unwrap().len(), 1);
    assert_eq!(detail["response"].as_array().unwrap().len(), 1);
    let request = &detail["request"][0];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["url"], receiver.url("/h").as_str());
    assert_eq!(request["headers"]["webhook-id"], log_id.as_str());
    assert_eq!(
        request["body"]["webhook"]["event"],
        "connector_sync_started"
    );
    let response = &detail["response"][0];
    assert_eq!(response["status_code"], 202);
    assert_eq!(response["body"], "ok");
    assert!(response["headers"]["content-length"].is_string());
    assert!(response["duration_ms"].as_f64().unwrap() >= 0.0);

    // The webhook moves: the resend goes to its new URL, with the body first sent.
    let (status, moved) = app
        .patch(
            &format!("/api/v1/webhooks/{}", id(&hook, "webhook_id")),
            json!({"url": receiver.url("/moved")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let (status, resent) = app
        .post(&format!("/api/v1/webhooks/logs/{log_id}/resend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resent}");
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].body, got[1].body, "resend sends the same bytes");
    assert_eq!(
        (got[0].path.as_str(), got[1].path.as_str()),
        ("/h", "/moved")
    );
    assert_ne!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "as a new delivery"
    );
    assert_eq!(got[1].header("webhook-id"), resent["id"].as_str().unwrap());
    let logs = app.wait_settled(2).await;
    assert_eq!(logs[0]["id"], resent["id"]);
    let resent_detail = app.log_detail(resent["id"].as_str().unwrap()).await;
    assert_eq!(resent_detail["request"][0]["body"], got[1].json());

    let other = app.other_org().await;
    assert_eq!(
        other
            .get(&format!("/api/v1/webhooks/logs/{log_id}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        other
            .post(&format!("/api/v1/webhooks/logs/{log_id}/resend"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert!(other.all_logs("").await.is_empty());
    assert_eq!(
        app.get("/api/v1/webhooks/logs/not-an-id").await.0,
        StatusCode::NOT_FOUND
    );
}

/// `last_triggered_at` is the latest attempt's start, to within a second: a batch of
/// outcomes writes the webhook's row only when it moves it by that much.
#[tokio::test]
async fn last_triggered_at_follows_attempts_to_within_a_second() {
    use chrono::{DateTime, Utc};
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    let hook = app
        .create_webhook(
            &receiver.url("/h"),
            "production",
            &["connector_data_modified"],
        )
        .await;
    let connector = app.create_connector("production").await;
    let changes = format!("/api/v1/connectors/{}/changes", id(&connector, "id"));
    let change = || async {
        let (status, body) = app
            .post(&changes, json!({"model": "employee", "ids": ["e1"]}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    };
    let path = format!("/api/v1/webhooks/{}", id(&hook, "webhook_id"));
    let triggered = || async {
        let (_, hook) = app.get(&path).await;
        let at = hook["last_triggered_at"].as_str()?.to_owned();
        assert!(at.ends_with("+00:00"), "{at}");
        Some(at.parse::<DateTime<Utc>>().unwrap())
    };
    // Each attempt's start, oldest first.
    let starts = || async {
        let mut starts = Vec::new();
        for log in app.all_logs("").await {
            let (_, detail) = app
                .get(&format!("/api/v1/webhooks/logs/{}", id(&log, "id")))
                .await;
            starts.extend(crate::failures::attempt_starts(&detail));
        }
        starts.sort();
        starts
    };

    change().await;
    app.wait_settled(1).await;
    let first = starts().await[0];
    assert_eq!(triggered().await, Some(first), "the first attempt sets it");

    // Attempts a second or more later move it; one within a second of those may not.
    wait_for(
        "a second past the first attempt",
        Duration::from_secs(5),
        || async { (Utc::now() >= first + chrono::Duration::seconds(1)).then_some(()) },
    )
    .await;
    change().await;
    change().await;
    app.wait_settled(3).await;
    let all = starts().await;
    let (second, last) = (all[1], all[2]);
    let now = triggered().await.unwrap();
    assert!(
        now >= second && now <= last,
        "{now} outside [{second}, {last}]"
    );
    assert!(
        last - now < chrono::Duration::seconds(1),
        "{now} lags {last}"
    );
}
