//! Destination checks end to end, on loopback only: under `--allow-destination
//! 127.0.0.1/32`, 127.0.0.2 stands for every refused address. Refused at create and
//! PATCH (422) in every spelling, at Test URL and at delivery (`destination_refused`,
//! at once, never retried), and on a redirect hop; no byte reaches it. The other ranges
//! and spellings are tested on the check itself (`domain::destination`), never by
//! connecting.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;

use crate::failures::answering;
use crate::helpers::*;

async fn allow_list_app() -> TestApp {
    spawn_app_with(|c| {
        c.allow_private_destinations = false;
        c.allow_destinations = vec!["127.0.0.1/32".parse().unwrap()];
        c.retry_backoff = waggle::config::Backoff(vec![Duration::from_millis(10); 4]);
    })
    .await
}

/// A receiver on 127.0.0.2: the refused address.
async fn refused_receiver() -> Receiver {
    Receiver::from_listener(TcpListener::bind("127.0.0.2:0").await.unwrap(), 200).await
}

#[tokio::test]
async fn a_refused_address_is_refused_in_every_spelling_and_nothing_reaches_it() {
    let app = allow_list_app().await;
    let refused = refused_receiver().await;
    let port = refused.addr.port();
    let hook = app
        .create_webhook("http://127.0.0.1:9/", "production", &["connector_synced"])
        .await;
    let hook_path = format!("/api/v1/webhooks/{}", id(&hook, "webhook_id"));
    for host in [
        "127.0.0.2",
        "2130706434",
        "0177.0.0.2",
        "0x7f000002",
        "127.2",
        "[::ffff:127.0.0.2]",
        "[::ffff:7f00:2]",
        "[::1]",
        "0.0.0.0",
        "[::]",
    ] {
        let url = format!("http://{host}:{port}/hook");
        let (status, body) = app
            .post(
                "/api/v1/webhooks",
                json!({"url": url, "name": "n", "type": "production", "events": ["connector_synced"]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "url"]), "{body}");
        assert_eq!(body["detail"][0]["type"], "value_error.url.private");
        let (status, body) = app.patch(&hook_path, json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");

        let (status, tested) = app
            .post("/api/v1/webhooks/test-url", json!({"url": url}))
            .await;
        assert_eq!(status, StatusCode::OK, "{url}: {tested}");
        assert_eq!(tested["error"], "destination_refused", "{url}: {tested}");
        assert!(
            tested["duration_ms"].as_f64().unwrap() < 500.0,
            "refused at once: {tested}"
        );
    }
    // localhost's names are loopback whatever the resolver says: its 127.0.0.1 is
    // allowed, its ::1 is not, and the test goes to the address allowed.
    let allowed = Receiver::start(200).await;
    let (_, tested) = app
        .post(
            "/api/v1/webhooks/test-url",
            json!({"url": format!("http://localhost.:{}/t", allowed.addr.port())}),
        )
        .await;
    assert_eq!(tested["response_code"], 200, "{tested}");
    allowed.wait_for(1).await;

    let (_, unchanged) = app.get(&hook_path).await;
    assert_eq!(unchanged, hook, "no refused PATCH changed the webhook");
    assert_eq!(refused.count(), 0, "nothing reached the refused address");
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_ends_the_delivery_as_refused() {
    let app = allow_list_app().await;
    let refused = refused_receiver().await;
    let answer = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.2:{}/stolen\r\ncontent-length: 0\r\n\r\n",
        refused.addr.port()
    );
    let redirecting = answering(answer.into_bytes().leak()).await;
    app.create_webhook(&redirecting, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = app.wait_settled(1).await;
    assert_eq!(logs[0]["status"], "failed", "{}", logs[0]);
    assert_eq!(logs[0]["error"], "destination_refused");
    assert_eq!(logs[0]["attempts"], 1, "a refusal is not retried");
    let detail = app.log_detail(logs[0]["id"].as_str().unwrap()).await;
    let message = detail["response"][0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.2"), "{message}");
    assert_eq!(refused.count(), 0, "nothing reached the refused address");
}
