//! Rate limits per API key (`--rate-limit N`: N per second, bursts of 2 × N): every
//! authenticated answer carries `X-RateLimit-*`; past the burst a key gets 429 with
//! `Retry-After` and its call changes nothing, while other keys go on; 0 turns it off.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::*;

async fn call(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/webhooks"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn a_key_past_its_burst_waits_and_its_call_changes_nothing() {
    // One a second, bursts of two: the third call in a row is over, and a second
    // passes before a call would be let through again.
    let app = spawn_app_with(|c| c.rate_limit = 1).await;
    let other = app.other_org().await;
    for left in [1, 0] {
        let response = call(&app, &app.api_key).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), Some(1));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some(left));
        assert!(header(&response, "x-ratelimit-reset").unwrap() >= 1);
    }

    // Past the burst: refused, with when to come back, and nothing is written.
    let (status, refused) = app
        .post(
            "/api/v1/webhooks",
            json!({"url": "https://example.com/h", "name": "h", "type": "production",
                   "events": ["connector_synced"]}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("rate limit"),
        "{refused}"
    );
    let response = call(&app, &app.api_key).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(header(&response, "retry-after"), Some(1));
    assert_eq!(header(&response, "x-ratelimit-remaining"), Some(0));

    // Another organization's key is not held back.
    assert_eq!(call(&other, &other.api_key).await.status().as_u16(), 200);

    // Once the bucket refills, the key calls again; the refused create left nothing.
    let listed = wait_for("the key to call again", Duration::from_secs(10), || async {
        let (status, listed) = app.get("/api/v1/webhooks").await;
        (status == StatusCode::OK).then_some(listed)
    })
    .await;
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn without_a_limit_no_call_is_held_and_no_header_is_sent() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    for _ in 0..50 {
        let response = call(&app, &app.api_key).await;
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.headers().get("x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn calls_without_a_valid_key_are_401_without_limit_headers() {
    let app = spawn_app_with(|c| c.rate_limit = 5).await;
    for key in ["wgl_not_a_key", ""] {
        let response = call(&app, key).await;
        assert_eq!(response.status().as_u16(), 401);
        assert!(response.headers().get("x-ratelimit-limit").is_none());
    }
}
