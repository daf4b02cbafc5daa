//! `GET /api/v1/stats`: each webhook's deliveries, outcomes and answer times over the last
//! hour and day, from real deliveries to real receivers; only the caller's organization.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::failures::closed_port_url;
use crate::helpers::*;

fn of<'a>(stats: &'a Value, webhook: &Value) -> &'a Value {
    stats["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["webhook_id"] == webhook["webhook_id"])
        .unwrap_or_else(|| panic!("no figures of {webhook} in {stats}"))
}

#[tokio::test]
async fn each_webhook_has_its_deliveries_outcomes_and_answer_times() {
    let app = spawn_app_with(|c| {
        c.retry_backoff = waggle::config::Backoff(vec![Duration::from_millis(10); 2]);
    })
    .await;
    let ok = Receiver::start(200).await;
    let broken = Receiver::start(500).await;
    let answering = app
        .create_webhook(&ok.url("/ok"), "production", &["connector_sync_started"])
        .await;
    let erring = app
        .create_webhook(
            &broken.url("/500"),
            "production",
            &["connector_sync_started"],
        )
        .await;
    let gone = app
        .create_webhook(
            &closed_port_url(),
            "production",
            &["connector_sync_started"],
        )
        .await;
    let idle = app
        .create_webhook(&ok.url("/idle"), "development", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    for _ in 0..3 {
        app.start_sync(&connector).await;
    }
    app.wait_settled(9).await;

    let (status, stats) = app.get("/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert!(stats["generated_at"].is_string());
    assert_eq!(stats["webhooks"].as_array().unwrap().len(), 4);
    let answered = of(&stats, &answering);
    assert_eq!(answered["last_hour"]["deliveries"], 3, "{answered}");
    assert_eq!(answered["last_hour"]["succeeded"], 3);
    assert_eq!(answered["last_hour"]["success_rate"], 1.0);
    let p50 = answered["last_hour"]["p50_ms"]
        .as_f64()
        .expect("answer times");
    let p99 = answered["last_hour"]["p99_ms"]
        .as_f64()
        .expect("answer times");
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 10_000.0, "{answered}");
    assert_eq!(answered["last_day"], answered["last_hour"]);
    let hourly = answered["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 24);
    assert_eq!(
        hourly[23]["succeeded"], 3,
        "this hour is the last: {hourly:?}"
    );
    assert!(hourly[..23]
        .iter()
        .all(|h| h["succeeded"] == 0 && h["failed"] == 0));

    let erred = of(&stats, &erring);
    assert_eq!(
        (
            &erred["last_day"]["failed"],
            &erred["last_day"]["success_rate"]
        ),
        (&json!(3), &json!(0.0)),
        "{erred}"
    );
    assert!(
        erred["last_day"]["p50_ms"].is_number(),
        "a 500 is an answer"
    );
    let unreachable = of(&stats, &gone);
    assert_eq!(unreachable["last_day"]["failed"], 3, "{unreachable}");
    assert_eq!(
        unreachable["last_day"]["p50_ms"],
        Value::Null,
        "no answer, no time"
    );
    let quiet = of(&stats, &idle);
    assert_eq!(quiet["last_day"]["deliveries"], 0);
    assert_eq!(quiet["last_day"]["success_rate"], Value::Null);

    // One webhook; a malformed id, an unknown one, and another organization's.
    let id = answering["webhook_id"].as_str().unwrap();
    let (_, one) = app.get(&format!("/api/v1/stats?webhook_id={id}")).await;
    assert_eq!(one["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(one["webhooks"][0]["last_day"], answered["last_day"]);
    let (status, _) = app.get("/api/v1/stats?webhook_id=nope").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .get(&format!(
            "/api/v1/stats?webhook_id={}",
            uuid::Uuid::now_v7()
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = app.other_org().await;
    let (status, theirs) = other.get(&format!("/api/v1/stats?webhook_id={id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    let (_, theirs) = other.get("/api/v1/stats").await;
    assert_eq!(theirs["webhooks"], json!([]));
}
