//! `GET /metrics`: scraped while a real load runs, and read with a Prometheus text parser.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// The sum of a counter's samples whose labels include all of `labels`.
fn total(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_count_attempts_and_api_calls_by_label_without_ids() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/h", closed.local_addr().unwrap());
    drop(closed);
    let events = ["connector_data_modified"];
    let live = app
        .create_webhook(&receiver.url("/h"), "production", &events)
        .await;
    let dead = app.create_webhook(&closed_url, "production", &events).await;
    let connector = app.create_connector("production").await;
    let changes = format!("/api/v1/connectors/{}/changes", id(&connector, "id"));
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = response.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        (
            text.clone(),
            prometheus_parse::Scrape::parse(lines).expect("valid text format"),
        )
    };

    // 100 changes from 4 clients, scraped while they run.
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let (app, changes) = (app.with_key(&app.api_key), changes.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    let (status, _) = app
                        .post(&changes, json!({"model": "employee", "ids": ["e1"]}))
                        .await;
                    assert_eq!(status, 202);
                }
            })
        })
        .collect();
    let (_, during) = scrape().await;
    assert!(during
        .samples
        .iter()
        .any(|s| s.metric.starts_with("waggle_")));
    for p in producers {
        p.await.unwrap();
    }
    receiver.wait_for(100).await;

    let (text, after) = wait_for("the attempts counted", Duration::from_secs(10), || async {
        let (text, scrape) = scrape().await;
        let delivered = total(
            &scrape,
            "waggle_attempts_total",
            &[("outcome", "delivered"), ("status", "2xx")],
        );
        let refused = total(
            &scrape,
            "waggle_attempts_total",
            &[("failure_category", "connect_error")],
        );
        (delivered >= 100.0 && refused >= 1.0).then_some((text, scrape))
    })
    .await;
    let route = "/api/v1/connectors/:connector_id/changes";
    assert!(
        total(
            &after,
            "waggle_api_requests_total",
            &[("route", route), ("status", "202"), ("method", "POST")]
        ) >= 100.0
    );
    // The latency histogram has its buckets.
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "waggle_attempt_duration_seconds"
            && matches!(s.value, prometheus_parse::Value::Histogram(_))));
    // No organization, webhook or connector id is a label anywhere.
    for needle in [
        id(&live, "webhook_id"),
        id(&dead, "webhook_id"),
        id(&connector, "id"),
    ] {
        assert!(!text.contains(&needle), "{needle} is in the metrics");
    }
}
