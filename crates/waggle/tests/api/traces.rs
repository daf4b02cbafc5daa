//! Trace export over OTLP/HTTP (`--otlp-endpoint`), received by a collector of the test's
//! own that decodes what the real binary sends with OpenTelemetry's own message types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::helpers::*;
use crate::retry_policies::scripted;

/// A span as the collector received it; ids in hex, attributes as text.
#[derive(Debug, Clone)]
struct SpanSeen {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP trace collector on a free loopback port.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<SpanSeen>>>,
}

impl Collector {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                let all = request
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans);
                for span in all.flat_map(|s| s.spans) {
                    let attributes = span
                        .attributes
                        .into_iter()
                        .map(|kv| {
                            let value = match kv.value.and_then(|v| v.value) {
                                Some(AnyValue::StringValue(s)) => s,
                                Some(AnyValue::IntValue(i)) => i.to_string(),
                                Some(AnyValue::BoolValue(b)) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key, value)
                        })
                        .collect();
                    kept.lock().unwrap().push(SpanSeen {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes,
                    });
                }
                ""
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    fn spans(&self) -> Vec<SpanSeen> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn each_attempt_is_a_span_in_the_trace_of_the_call_that_made_its_delivery() {
    let collector = Collector::start().await;
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let key = org_create(&db_url)["api_key"].as_str().unwrap().to_owned();
    // The first attempt gets a 503 the webhook retries: the retry is claimed from the
    // store, so the context must have been kept there.
    let (url, count) = scripted(&["503 Service Unavailable", "200 OK"]).await;
    let mut server = serve(&db_url, free_port(), &["--otlp-endpoint", &collector.url]).await;
    let base = server.address.clone();
    let client = reqwest::Client::new();
    call(
        &client,
        &key,
        format!("{base}/api/v1/webhooks"),
        json!({
        "url": url, "name": "h", "type": "production", "events": ["connector_sync_started"],
        "retry_policy": {"delays": ["300ms"]}, "retry_on_status": [503]}),
    )
    .await
    .expect("webhook created");
    let connector = call(&client, &key, format!("{base}/api/v1/connectors"), json!({
        "environment": "production", "display_name": "BreatheHR", "integration_slug": "breathehr",
        "categories": ["HRIS"], "origin_id": "u", "end_user_name": "John Doe", "end_user_email": "a@b.c"}))
    .await
    .expect("connector created");

    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let started = client
        .post(format!(
            "{base}/api/v1/connectors/{}/syncs",
            id(&connector, "id")
        ))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success(), "{}", started.status());
    let logs = format!("{base}/api/v1/webhooks/logs");
    let delivery = wait_for(
        "the delivery to succeed",
        Duration::from_secs(20),
        || async {
            let page = fetch(&client, &key, logs.clone()).await;
            let log = page["items"][0].clone();
            (log["status"] == "delivered" && log["response_code"] == 200).then_some(log)
        },
    )
    .await;
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
    let delivery_id = id(&delivery, "id");
    // The last spans are sent on the way out.
    server.terminate().await;

    let spans = wait_for("the spans to arrive", Duration::from_secs(15), || async {
        let spans = collector.spans();
        let attempts = spans
            .iter()
            .filter(|s| s.attributes.get("delivery_id") == Some(&delivery_id))
            .count();
        (attempts == 2).then_some(spans)
    })
    .await;
    let request = spans
        .iter()
        .find(|s| s.name == "POST /api/v1/connectors/{connector_id}/syncs")
        .unwrap_or_else(|| panic!("no span of the sync call in {spans:#?}"));
    assert_eq!(
        request.trace_id, trace_id,
        "the call joins the caller's trace"
    );
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.attributes["http.response.status_code"], "201");
    let mut attempts: Vec<&SpanSeen> = spans
        .iter()
        .filter(|s| s.attributes.get("delivery_id") == Some(&delivery_id))
        .collect();
    attempts.sort_by_key(|s| s.attributes["attempt"].clone());
    for (span, (number, status)) in attempts.iter().zip([("1", "503"), ("2", "200")]) {
        assert_eq!(span.trace_id, trace_id, "{span:#?}");
        assert_eq!(span.parent_span_id, request.span_id, "{span:#?}");
        assert_eq!(span.attributes["attempt"], number);
        assert_eq!(span.attributes["http.response.status_code"], status);
        assert_eq!(span.attributes["event_type"], "connector_sync_started");
    }
    // A call that names no trace starts one of its own.
    let created = spans
        .iter()
        .find(|s| s.name == "POST /api/v1/connectors")
        .expect("a span of the connector's creation");
    assert_ne!(created.trace_id, trace_id);
    assert!(created.parent_span_id.is_empty(), "{created:#?}");
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_refused_at_start() {
    let out = std::process::Command::new(waggle_bin())
        .args(["serve", "--otlp-endpoint", "collector:4318", "--database"])
        .arg(format!(
            "sqlite://{}/never.db",
            tempfile::tempdir().unwrap().path().display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--otlp-endpoint"), "{stderr}");
    assert!(stderr.contains("http or https"), "{stderr}");
}
