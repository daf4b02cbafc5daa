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
            &[
                ("outcome", "delivered"),
                ("status", "2xx"),
                ("event_type", "connector_data_modified"),
            ],
        );
        // The last retries, claimed from the store, know their event's type too.
        let refused = total(
            &scrape,
            "waggle_attempts_total",
            &[
                ("failure_category", "connect_error"),
                ("outcome", "failed"),
                ("event_type", "connector_data_modified"),
            ],
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

/// The value of the one sample of `name` whose labels include `labels`, gauge or counter.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test]
async fn the_queue_and_the_store_are_gauged_on_the_metrics_listener_alone() {
    // The real binary, a process of its own: the gauges are its own.
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = org_create(&db_url);
    let key = org["api_key"].as_str().unwrap().to_owned();
    let (port, metrics_port) = (free_port(), free_port());
    let metrics_at = format!("127.0.0.1:{metrics_port}");
    let server = serve(
        &db_url,
        port,
        &[
            "--metrics-listen",
            &metrics_at,
            "--retry-backoff",
            "30s",
            "--retry-window",
            "2m",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/h", closed.local_addr().unwrap());
    drop(closed);
    let api = |path: &str| format!("{}/api/v1{path}", server.address);
    call(
        &client,
        &key,
        api("/webhooks"),
        json!({"url": closed_url, "name": "down", "type": "production",
               "events": ["connector_data_modified"]}),
    )
    .await
    .expect("webhook created");
    let connector = call(
        &client,
        &key,
        api("/connectors"),
        json!({"environment": "production", "display_name": "HR", "integration_slug": "hr",
               "categories": ["HRIS"], "origin_id": "o", "end_user_name": "n",
               "end_user_email": "n@example.com"}),
    )
    .await
    .expect("connector created");
    for n in 0..3 {
        call(
            &client,
            &key,
            api(&format!("/connectors/{}/changes", id(&connector, "id"))),
            json!({"model": "department", "ids": [format!("d{n}")]}),
        )
        .await
        .expect("accepted");
    }
    // Each first attempt finds nothing listening, and its retry waits 30 s: three
    // scheduled, none due or claimed, once the gauges are read again (every 5 s).
    let scrape = wait_for("the queue gauged", Duration::from_secs(20), || async {
        let text = client
            .get(format!("http://{metrics_at}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).ok()?;
        let queue = |state| value(&scrape, "waggle_queue_deliveries", &[("state", state)]);
        (queue("scheduled") == Some(3.0) && queue("claimed") == Some(0.0)).then_some(scrape)
    })
    .await;
    assert_eq!(
        value(&scrape, "waggle_queue_deliveries", &[("state", "due")]),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "waggle_queue_oldest_due_seconds", &[]),
        Some(0.0),
        "nothing is due yet"
    );
    assert_eq!(
        value(
            &scrape,
            "waggle_deliveries_created_total",
            &[("event_type", "connector_data_modified")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&scrape, "waggle_dispatcher_deliveries_held", &[]),
        Some(0.0)
    );
    match backend() {
        Backend::Sqlite => assert!(scrape
            .samples
            .iter()
            .any(|s| s.metric == "waggle_sqlite_group_commit_writes"
                && matches!(s.value, prometheus_parse::Value::Histogram(_)))),
        Backend::Postgres => assert!(value(
            &scrape,
            "waggle_postgres_pool_connections",
            &[("state", "idle")]
        )
        .is_some()),
    }
    // The API's listener does not serve them.
    let here = client
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(here.status(), 404);
}
