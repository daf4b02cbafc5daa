//! Ordered delivery: a webhook with `ordered: true` gets each connector's events in the
//! order the API accepted them, a delivery in retry holding the ones behind it (`blocked`
//! in the logs) until it succeeds or ends; other connectors and webhooks are not held.
//! The same rule on three PostgreSQL nodes is in `multinode`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// One request an [`OrderReceiver`] got.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub connector: String,
    /// The event's `data.id` (the sync job's id for sync events).
    pub event: String,
    pub delivery: String,
    pub answered: u16,
    pub at: Instant,
}

/// A receiver that answers 503 to a share of requests at random (from a seed, so a
/// failing run can be replayed), to the events `fail_first` names on their first try and
/// to those `fail_always` names every time, and 200 to the rest; it records every arrival
/// in order.
#[derive(Clone)]
pub struct OrderReceiver {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    seed: Arc<AtomicU64>,
    /// Out of 100.
    fail_percent: u64,
    fail_first: Arc<Mutex<Vec<String>>>,
    fail_always: Arc<Mutex<Vec<String>>>,
}

impl OrderReceiver {
    pub async fn start(fail_percent: u64, seed: u64) -> (Self, String) {
        let receiver = Self {
            arrivals: Arc::default(),
            seed: Arc::new(AtomicU64::new(seed)),
            fail_percent,
            fail_first: Arc::default(),
            fail_always: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ordered", listener.local_addr().unwrap());
        let state = receiver.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { AxumStatus::from_u16(state.answer(&headers, &body)).unwrap() }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    /// Fails the first try of each delivery of this event.
    pub fn fail_first(&self, event: &str) {
        self.fail_first.lock().unwrap().push(event.to_owned());
    }

    /// Fails every try of this event.
    pub fn fail_always(&self, event: &str) {
        self.fail_always.lock().unwrap().push(event.to_owned());
    }

    fn answer(&self, headers: &HeaderMap, body: &[u8]) -> u16 {
        let body: Value = serde_json::from_slice(body).unwrap_or_default();
        let delivery = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let event = body["data"]["id"].as_str().unwrap_or_default().to_owned();
        let mut arrivals = self.arrivals.lock().unwrap();
        let tried = arrivals.iter().any(|a| a.delivery == delivery);
        // xorshift: a sequence of its own, the same for the same seed.
        let mut x = self.seed.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::SeqCst);
        let held = (!tried && self.fail_first.lock().unwrap().contains(&event))
            || self.fail_always.lock().unwrap().contains(&event);
        let answered = if held || x % 100 < self.fail_percent {
            503
        } else {
            200
        };
        arrivals.push(Arrival {
            connector: body["connector"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            event,
            delivery,
            answered,
            at: Instant::now(),
        });
        answered
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Checks that the events of each connector in `sent` (in the order the API accepted
    /// them) arrived in that order: every try of an event comes after the last try of the
    /// one before, and each got its 200. Answers how many tries were failed.
    pub fn assert_in_order(&self, sent: &HashMap<String, Vec<String>>) -> usize {
        let arrivals = self.arrivals();
        for (connector, events) in sent {
            let tries: Vec<&Arrival> = arrivals
                .iter()
                .filter(|a| &a.connector == connector)
                .collect();
            let position = |event: &str| {
                events
                    .iter()
                    .position(|e| e == event)
                    .expect("a sent event")
            };
            let mut reached = 0;
            for a in &tries {
                let at = position(&a.event);
                assert!(
                    at >= reached,
                    "connector {connector}: event {at} tried after event {reached}: {tries:#?}"
                );
                reached = at;
            }
            for event in events {
                assert!(
                    tries.iter().any(|a| &a.event == event && a.answered == 200),
                    "connector {connector}: event {event} never delivered"
                );
            }
        }
        arrivals.iter().filter(|a| a.answered != 200).count()
    }
}

/// A webhook on `url` for sync starts, in order, retrying 503s quickly.
pub fn ordered_webhook(url: &str) -> Value {
    json!({
        "url": url, "name": "in order", "type": "production",
        "events": ["connector_sync_started"], "ordered": true,
        "retry_policy": {"delays": ["20ms", "20ms", "20ms", "20ms", "20ms", "20ms", "20ms", "20ms"]},
        "retry_on_status": [503]
    })
}

#[tokio::test]
async fn each_connectors_events_arrive_in_the_order_accepted_despite_failures() {
    let app = spawn_app().await;
    let seed = std::env::var("WAGGLE_ORDER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u64>() | 1);
    eprintln!("ordered delivery: receiver seed {seed} (WAGGLE_ORDER_SEED replays it)");
    let (receiver, url) = OrderReceiver::start(30, seed).await;
    let (status, webhook) = app.post("/api/v1/webhooks", ordered_webhook(&url)).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    assert_eq!(webhook["ordered"], true);
    let connectors = [
        app.create_connector("production").await,
        app.create_connector("production").await,
        app.create_connector("production").await,
    ];
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for round in 0..15 {
        for connector in &connectors {
            let sync = app.start_sync(connector).await;
            sent.entry(connector["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(sync["id"].as_str().unwrap().to_owned());
            if round % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    wait_for("every event delivered", Duration::from_secs(60), || async {
        let logs = app.all_logs("").await;
        (logs.len() == 45 && logs.iter().all(|l| l["status"] == "delivered")).then_some(())
    })
    .await;
    let failed = receiver.assert_in_order(&sent);
    assert!(
        failed > 0,
        "the receiver failed nothing: the test proved nothing"
    );
}

#[tokio::test]
async fn a_delivery_in_retry_holds_only_the_ones_behind_it_of_its_connector() {
    let app = spawn_app().await;
    let (receiver, url) = OrderReceiver::start(0, 1).await;
    let mut ordered = ordered_webhook(&url);
    ordered["retry_policy"] = json!({"delays": ["1500ms"]});
    let (status, webhook) = app.post("/api/v1/webhooks", ordered).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    // The same events to a webhook that does not ask for order: never held.
    let (unordered_receiver, unordered_url) = OrderReceiver::start(0, 1).await;
    let mut unordered = ordered_webhook(&unordered_url);
    unordered["ordered"] = json!(false);
    unordered["retry_policy"] = json!({"delays": ["1500ms"]});
    app.post("/api/v1/webhooks", unordered).await;
    let held = app.create_connector("production").await;
    let other = app.create_connector("production").await;

    let first = app.start_sync(&held).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    receiver.fail_first(&first_id);
    unordered_receiver.fail_first(&first_id);
    let second = app.start_sync(&held).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let elsewhere = app.start_sync(&other).await;
    let elsewhere_id = elsewhere["id"].as_str().unwrap().to_owned();

    // While the first waits for its retry, the second is blocked, and says so.
    let blocked = wait_for("the second blocked", Duration::from_secs(10), || async {
        let logs = app
            .all_logs(&format!(
                "webhook_id={}",
                webhook["webhook_id"].as_str().unwrap()
            ))
            .await;
        logs.into_iter().find(|l| l["status"] == "blocked")
    })
    .await;
    assert_eq!(blocked["next_attempt_at"], Value::Null);
    assert_eq!(blocked["attempts"], 0);
    let delivered = |receiver: &OrderReceiver, event: &str| {
        receiver
            .arrivals()
            .iter()
            .find(|a| a.event == event && a.answered == 200)
            .map(|a| a.at)
    };
    // The other connector's event and the unordered webhook's are not held.
    wait_for("the others delivered", Duration::from_secs(10), || async {
        (delivered(&receiver, &elsewhere_id).is_some()
            && delivered(&unordered_receiver, &second_id).is_some())
        .then_some(())
    })
    .await;
    assert!(
        delivered(&receiver, &first_id).is_none(),
        "the first is still in retry"
    );
    assert!(
        delivered(&receiver, &second_id).is_none(),
        "the second is held"
    );

    // Once the first succeeds, the second goes.
    wait_for(
        "the held one delivered",
        Duration::from_secs(10),
        || async { delivered(&receiver, &second_id).map(|_| ()) },
    )
    .await;
    let sent = HashMap::from([(
        held["id"].as_str().unwrap().to_owned(),
        vec![first_id.clone(), second_id.clone()],
    )]);
    receiver.assert_in_order(&sent);
    assert!(
        delivered(&unordered_receiver, &second_id) < delivered(&unordered_receiver, &first_id),
        "without order, the second went first"
    );
}

#[tokio::test]
async fn a_delivery_that_fails_for_good_lets_the_next_go() {
    let app = spawn_app().await;
    let (receiver, url) = OrderReceiver::start(0, 1).await;
    let mut hook = ordered_webhook(&url);
    hook["retry_policy"] = json!({"delays": ["50ms"]});
    app.post("/api/v1/webhooks", hook).await;
    let connector = app.create_connector("production").await;
    let first = app.start_sync(&connector).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    // Both tries of the first fail: it ends with its 503, and the second goes.
    receiver.fail_always(&first_id);
    let second = app.start_sync(&connector).await;
    let logs = app.wait_settled(2).await;
    let codes: Vec<&Value> = logs.iter().map(|l| &l["response_code"]).collect();
    assert_eq!(codes, [&json!(200), &json!(503)], "newest first: {logs:?}");
    let arrivals = receiver.arrivals();
    let events: Vec<&str> = arrivals.iter().map(|a| a.event.as_str()).collect();
    let second_id = second["id"].as_str().unwrap();
    assert_eq!(events, [first_id.as_str(), first_id.as_str(), second_id]);
}
