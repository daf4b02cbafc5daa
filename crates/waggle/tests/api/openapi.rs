//! The OpenAPI document: served without a key, naming every route the API has and no
//! other, and the tenant wall walked from it: every operation that takes an id, called
//! by another organization with the first one's real ids, finds nothing and changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

async fn document(app: &TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every (method, path template) the document names.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// The names of the path's `{parameters}`.
fn path_ids(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn fill(path: &str, ids: &BTreeMap<&str, String>) -> String {
    let mut filled = path.to_owned();
    for name in path_ids(path) {
        let id = ids.get(name).unwrap_or_else(|| {
            panic!("{path}: no id for {{{name}}}; give the tenant walk one of that kind")
        });
        filled = filled.replace(&format!("{{{name}}}"), id);
    }
    filled
}

/// The example the document gives for an operation's request body, if it takes one.
fn example_body(doc: &Value, op: &Value) -> Option<Value> {
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    if schema.is_null() {
        return None;
    }
    let reference = schema["$ref"].as_str().or_else(|| {
        schema["oneOf"]
            .as_array()?
            .iter()
            .find_map(|s| s["$ref"].as_str())
    })?;
    let name = reference.rsplit('/').next().unwrap();
    let example = doc["components"]["schemas"][name]["example"].clone();
    assert!(!example.is_null(), "the schema {name} has no example");
    Some(example)
}

impl TestApp {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        decode(request.send().await.expect("call")).await
    }
}

/// The source files that make the API's routes.
fn api_sources() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_document_names_every_route_and_only_those() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);

    // Routes are only made by `routes!`, which takes each route from its handler's
    // documentation: a route added any other way would be missing from the document.
    let mut handlers = 0;
    for (file, text) in api_sources() {
        for forbidden in [".route(", ".route_service(", ".nest_service("] {
            assert!(
                !text.contains(forbidden),
                "{file} makes a route with `{forbidden}`: use `routes!` and document it"
            );
        }
        for call in text.split("routes!(").skip(1) {
            let list = &call[..call.find(')').unwrap()];
            handlers += list.split(',').filter(|h| !h.trim().is_empty()).count();
        }
    }
    assert_eq!(
        handlers,
        ops.len(),
        "every handler given to routes! is one operation of the document"
    );
    let ids: BTreeSet<&str> = ops
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ops.len(), "operation ids are unique");

    // Every documented operation exists on the server (its own 404 for an unknown id
    // is not the "no such route" one), and a method the document does not name on a
    // documented path is refused as not allowed.
    let unknown: BTreeMap<&str, String> = ops
        .iter()
        .flat_map(|(_, path, _)| path_ids(path))
        .map(|name| (name, "01890000-0000-7000-8000-000000000000".to_owned()))
        .collect();
    let paths: BTreeSet<&String> = ops.iter().map(|(_, path, _)| path).collect();
    for path in paths {
        let filled = fill(path, &unknown);
        for method in METHODS {
            let documented = doc["paths"][path].get(method).is_some();
            let (status, body) = app.call(method, &filled, Some(json!({}))).await;
            if documented {
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: {body}"
                );
                assert_ne!(
                    body,
                    json!({"detail": "resource not found"}),
                    "{method} {path} is documented but the server has no such route"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} answers but is not documented: {body}"
                );
            }
        }
    }
}

/// What the first organization has, as its own key reads it: every list, and every
/// documented read of one of its resources.
async fn everything(app: &TestApp, doc: &Value, ids: &BTreeMap<&str, String>) -> Vec<Value> {
    let mut seen = Vec::new();
    for (method, path, _) in operations(doc) {
        // What the service says of itself, not what an organization stored.
        if method != "get"
            || path.ends_with("/openapi.json")
            || path == "/healthz"
            || path == "/metrics"
        {
            continue;
        }
        let (status, mut body) = app.call("get", &fill(&path, ids), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path} by its owner: {body}");
        // The moment figures are made changes with every call, not what they count.
        if let Some(body) = body.as_object_mut() {
            body.remove("generated_at");
        }
        // When a key was last used changes with every call, not with what is stored.
        if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                item.as_object_mut().unwrap().remove("last_used_at");
            }
        }
        seen.push(json!({"path": path, "body": body}));
    }
    seen
}

#[tokio::test]
async fn another_organization_finds_none_of_the_first_ones_resources_by_id() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let receiver = Receiver::start(200).await;
    let hook = app
        .create_webhook(
            &receiver.url("/hook"),
            "production",
            &["connector_sync_started"],
        )
        .await;
    let connector = app.create_connector("production").await;
    let sync = app.start_sync(&connector).await;
    receiver.wait_for(1).await;
    let logs = app.wait_settled(1).await;
    let (status, key) = app
        .post("/api/v1/api-keys", json!({"name": "second"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let recover = format!("/api/v1/webhooks/{}/recover", id(&hook, "webhook_id"));
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, recovery) = app.post(&recover, json!({"since": since})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{recovery}");
    // Done before the walk: a recovery's progress is not what the walk is watching.
    let read = format!("{recover}/{}", id(&recovery, "id"));
    wait_for(
        "the recovery to finish",
        Duration::from_secs(20),
        || async { (app.get(&read).await.1["status"] == "done").then_some(()) },
    )
    .await;
    let ids: BTreeMap<&str, String> = [
        ("webhook_id", id(&hook, "webhook_id")),
        ("recovery_id", id(&recovery, "id")),
        ("connector_id", id(&connector, "id")),
        ("sync_id", id(&sync, "id")),
        ("log_id", id(&logs[0], "id")),
        ("key_id", id(&key, "id")),
    ]
    .into();
    let before = everything(&app, &doc, &ids).await;

    let other = app.other_org().await;
    let mut walked = Vec::new();
    for (method, path, op) in operations(&doc) {
        if path_ids(&path).is_empty() {
            continue;
        }
        let filled = fill(&path, &ids);
        let (status, body) = other.call(&method, &filled, example_body(&doc, &op)).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} by another organization: {body}"
        );
        walked.push(format!("{} {path}", method.to_uppercase()));
    }
    assert!(walked.len() >= 14, "walked only {walked:?}");

    assert_eq!(
        everything(&app, &doc, &ids).await,
        before,
        "the first organization's resources changed"
    );
    assert_eq!(receiver.count(), 1, "nothing was sent again");
}
