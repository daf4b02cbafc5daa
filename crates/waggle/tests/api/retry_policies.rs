//! Retry policies of a webhook's own: its schedule (`retry_policy`), the statuses it
//! retries besides network failures (`retry_on_status`), a receiver's `Retry-After`, and
//! the fields as the API takes and gives them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::failures::{attempt_starts, closed_port_url, misbehaving};
use crate::helpers::*;

/// A receiver answering its n-th request with the n-th of `answers` (the last one from
/// then on), each a status line and header lines; it counts the requests.
pub(crate) async fn scripted(answers: &'static [&'static str]) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let url = misbehaving(move |mut socket| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let head = answers[n.min(answers.len() - 1)];
            let answer =
                format!("HTTP/1.1 {head}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    (url, count)
}

async fn webhook_with(app: &TestApp, url: &str, rules: Value) -> Value {
    let mut body = json!({
        "url": url, "name": "hook", "type": "production", "events": ["connector_sync_started"]
    });
    body.as_object_mut()
        .unwrap()
        .extend(rules.as_object().unwrap().clone());
    let (status, created) = app.post("/api/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

/// One event to every production webhook of `app`; then the settled log of each, by
/// webhook id, with its detail.
async fn deliver(app: &TestApp, webhooks: usize, limit: Duration) -> Vec<Value> {
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = wait_for("deliveries to settle", limit, || async {
        let logs = app.all_logs("").await;
        (logs.len() == webhooks && logs.iter().all(|l| l["status"] != "pending")).then_some(logs)
    })
    .await;
    let mut details = Vec::new();
    for log in logs {
        details.push(app.log_detail(log["id"].as_str().unwrap()).await);
    }
    details
}

fn of<'a>(details: &'a [Value], webhook: &Value) -> &'a Value {
    details
        .iter()
        .find(|d| d["webhook_id"] == webhook["webhook_id"])
        .expect("a log of the webhook")
}

fn statuses(detail: &Value) -> Vec<Value> {
    detail["response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status_code"].clone())
        .collect()
}

#[tokio::test]
async fn the_statuses_a_webhook_lists_are_retried_on_its_own_delays() {
    let app = spawn_app().await;
    const FLAKY: &[&str] = &["503 Service Unavailable", "429 Too Many Requests", "200 OK"];
    let (flaky_url, flaky) = scripted(FLAKY).await;
    let retrying = webhook_with(
        &app,
        &flaky_url,
        json!({"retry_policy": {"delays": ["300ms", "300ms", "300ms"]}, "retry_on_status": [429, 503]}),
    )
    .await;
    assert_eq!(
        retrying["retry_policy"],
        json!({"delays": ["300ms", "300ms", "300ms"]})
    );
    assert_eq!(retrying["retry_on_status"], json!([429, 503]));
    // The same answers to a webhook that lists no status: the first one ends it.
    let (plain_url, plain) = scripted(FLAKY).await;
    let standard = webhook_with(&app, &plain_url, json!({})).await;
    assert_eq!(standard["retry_policy"], "standard");
    assert_eq!(standard["retry_on_status"], json!([]));
    // A status it does not list ends it too.
    const GONE: &[&str] = &["500 Internal Server Error", "200 OK"];
    let (gone_url, gone) = scripted(GONE).await;
    let unlisted = webhook_with(&app, &gone_url, json!({"retry_on_status": [503]})).await;

    let details = deliver(&app, 3, Duration::from_secs(20)).await;
    let retried = of(&details, &retrying);
    assert_eq!(retried["status"], "delivered", "{retried}");
    assert_eq!(retried["response_code"], 200);
    assert_eq!(statuses(retried), [503, 429, 200]);
    let starts = attempt_starts(retried);
    for pair in starts.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(
            (300..1_500).contains(&gap),
            "waited {gap} ms, the schedule says 300"
        );
    }
    assert_eq!(flaky.load(Ordering::SeqCst), 3);

    let once = of(&details, &standard);
    assert_eq!(statuses(once), [503], "{once}");
    assert_eq!(once["status"], "delivered");
    let once = of(&details, &unlisted);
    assert_eq!(statuses(once), [500], "{once}");
    // Give a wrongful retry time to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(plain.load(Ordering::SeqCst), 1);
    assert_eq!(gone.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_status_retried_to_the_end_of_the_budget_keeps_its_last_answer() {
    let app = spawn_app().await;
    let (url, count) = scripted(&["502 Bad Gateway"]).await;
    webhook_with(
        &app,
        &url,
        json!({"retry_policy": {"delays": ["100ms", "100ms"]}, "retry_on_status": [502]}),
    )
    .await;
    let details = deliver(&app, 1, Duration::from_secs(20)).await;
    assert_eq!(statuses(&details[0]), [502, 502, 502], "1 + 2 retries");
    assert_eq!(details[0]["response_code"], 502);
    let (_, errors) = app.get("/api/v1/webhooks/logs?errors_only=true").await;
    assert_eq!(errors["items"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "no attempt past the budget"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_next_wait() {
    let app = spawn_app().await;
    // Asks for 1 s where the schedule waits 30 s: retried after about 1 s.
    let (sooner_url, _) =
        scripted(&["429 Too Many Requests\r\nretry-after: 1", "204 No Content"]).await;
    let sooner = webhook_with(
        &app,
        &sooner_url,
        json!({"retry_policy": {"delays": ["30s"]}, "retry_on_status": [429]}),
    )
    .await;
    // Asks for an hour where the schedule waits 1 s: retried after 1 s.
    let (later_url, _) = scripted(&[
        "503 Service Unavailable\r\nretry-after: 3600",
        "204 No Content",
    ])
    .await;
    let later = webhook_with(
        &app,
        &later_url,
        json!({"retry_policy": {"delays": ["1s"]}, "retry_on_status": [503]}),
    )
    .await;
    let details = deliver(&app, 2, Duration::from_secs(20)).await;
    for webhook in [&sooner, &later] {
        let detail = of(&details, webhook);
        assert_eq!(statuses(detail)[1], 204, "{detail}");
        let starts = attempt_starts(detail);
        let gap = (starts[1] - starts[0]).num_milliseconds();
        assert!(
            (1_000..3_000).contains(&gap),
            "retried after {gap} ms: {detail}"
        );
    }
}

#[tokio::test]
async fn network_failures_follow_the_webhooks_own_budget_and_no_window() {
    let app = spawn_app_with(|c| {
        c.retry_window = Duration::from_millis(200);
    })
    .await;
    let own = webhook_with(
        &app,
        &closed_port_url(),
        json!({"retry_policy": {"delays": ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]}}),
    )
    .await;
    let standard = webhook_with(&app, &closed_port_url(), json!({})).await;
    let details = deliver(&app, 2, Duration::from_secs(20)).await;
    let failed = of(&details, &own);
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["response"].as_array().unwrap().len(),
        7,
        "1 + 6 retries past a 200 ms window"
    );
    let failed = of(&details, &standard);
    assert!(
        failed["response"].as_array().unwrap().len() <= 2,
        "the standard schedule keeps the operator's window: {failed}"
    );
}

#[tokio::test]
async fn retry_fields_are_checked_and_changed_by_patch() {
    let app = spawn_app().await;
    let receiver = crate::support::Receiver::start(200).await;
    for (bad, field) in [
        (json!({"retry_policy": "forever"}), "retry_policy"),
        (json!({"retry_policy": {"delays": []}}), "retry_policy"),
        (json!({"retry_policy": {"delays": ["25h"]}}), "retry_policy"),
        (
            json!({"retry_policy": {"delays": vec!["1s"; 21]}}),
            "retry_policy",
        ),
        (json!({"retry_policy": {"waits": ["1s"]}}), "retry_policy"),
        (json!({"retry_on_status": [404]}), "retry_on_status"),
    ] {
        let mut body = json!({
            "url": receiver.url("/h"), "name": "hook", "type": "production",
            "events": ["connector_synced"]
        });
        body.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let (status, answer) = app.post("/api/v1/webhooks", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {answer}");
        assert_eq!(
            answer["detail"][0]["loc"],
            json!(["body", field]),
            "{answer}"
        );
    }
    let (_, listed) = app.get("/api/v1/webhooks").await;
    assert_eq!(listed["items"], json!([]), "nothing was made");

    let hook = webhook_with(
        &app,
        &receiver.url("/h"),
        json!({"retry_policy": "extended"}),
    )
    .await;
    let path = format!("/api/v1/webhooks/{}", hook["webhook_id"].as_str().unwrap());
    let (status, changed) = app
        .patch(&path, json!({"retry_policy": {"delays": ["5s", "1h 30m"]}, "retry_on_status": [504, 408, 504]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["retry_policy"], json!({"delays": ["5s", "1h 30m"]}));
    assert_eq!(changed["retry_on_status"], json!([408, 504]));
    let (status, answer) = app.patch(&path, json!({"retry_on_status": [200]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (_, read) = app.get(&path).await;
    assert_eq!(read, changed, "a refused change changes nothing");
    let (_, changed) = app
        .patch(
            &path,
            json!({"retry_policy": "standard", "retry_on_status": []}),
        )
        .await;
    assert_eq!(changed["retry_policy"], "standard");
    assert_eq!(changed["retry_on_status"], json!([]));
}

#[tokio::test]
async fn a_webhooks_own_budget_holds_across_a_kill_and_a_restart() {
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = org_create(&db_url);
    let key = org["api_key"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let (url, count) = scripted(&["503 Service Unavailable"]).await;
    let mut server = serve(&db_url, free_port(), &[]).await;
    let base = server.address.clone();
    call(
        &client,
        &key,
        format!("{base}/api/v1/webhooks"),
        json!({
            "url": url, "name": "h", "type": "production", "events": ["connector_sync_started"],
            "retry_policy": {"delays": ["1s", "1s", "1s", "1s", "1s"]}, "retry_on_status": [503]
        }),
    )
    .await
    .expect("webhook created");
    let connector = call(&client, &key, format!("{base}/api/v1/connectors"), json!({
        "environment": "production", "display_name": "BreatheHR", "integration_slug": "breathehr",
        "categories": ["HRIS"], "origin_id": "u", "end_user_name": "John Doe", "end_user_email": "a@b.c"}))
    .await
    .expect("connector created");
    let syncs = format!(
        "{base}/api/v1/connectors/{}/syncs",
        connector["id"].as_str().unwrap()
    );
    call(&client, &key, syncs, json!({}))
        .await
        .expect("sync started");
    let logs = format!("{base}/api/v1/webhooks/logs");
    wait_for("two attempts logged", Duration::from_secs(20), || async {
        let page = fetch(&client, &key, logs.clone()).await;
        (page["items"][0]["attempts"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    server.kill_9();

    // Another process takes the delivery where the first left it: six attempts in all.
    let server = serve(&db_url, free_port(), &[]).await;
    let logs = format!("{}/api/v1/webhooks/logs", server.address);
    let settled = wait_for(
        "the delivery to settle",
        Duration::from_secs(30),
        || async {
            let page = fetch(&client, &key, logs.clone()).await;
            let log = page["items"][0].clone();
            (log["status"] != "pending").then_some(log)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let made = count.load(Ordering::SeqCst);
    // A claim the kill interrupted counts as an attempt (it may have reached the
    // receiver unlogged); the kill most likely fell in a wait, and then all six are logged.
    let logged = settled["attempts"].as_u64().unwrap() as usize;
    assert!(
        (5..=6).contains(&made),
        "{made} attempts for a budget of 6: {settled}"
    );
    assert!(
        logged <= made && made - logged <= 1,
        "{logged} logged of {made}: {settled}"
    );
}
