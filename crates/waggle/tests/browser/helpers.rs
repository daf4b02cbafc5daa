//! The app on a real socket with a fresh SQLite file and two organizations with dashboard
//! users, receivers on loopback, a cookie-keeping HTTP client for the dashboard, and
//! waiting on conditions with deadlines.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use waggle::config::Config;
use waggle::orgs::{self, Admin};
use waggle::startup::App;

pub use crate::support::{wait_for, Receiver};

/// A destination on loopback that answers every request 200 with a small JSON body.
pub async fn receiver() -> Receiver {
    Receiver::answering(200, "application/json", r#"{"received":true}"#).await
}

pub const PASSWORD: &str = "correct horse battery";

/// An organization with its API key and dashboard login.
pub struct Org {
    pub api_key: String,
    pub email: String,
}

pub struct TestApp {
    pub address: String,
    pub first: Org,
    pub second: Org,
    pub api: reqwest::Client,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_database(format!("sqlite://{}/w.db", dir.path().display()));
    config.allow_private_destinations = true;
    configure(&mut config);
    let app = App::build(config).await.expect("app builds");
    let store = app.store();
    let mut orgs = Vec::new();
    for (name, email) in [
        ("First Org", "first@example.com"),
        ("Second Org", "second@example.com"),
    ] {
        let created = orgs::create(
            store.as_ref(),
            name,
            Some(Admin {
                email,
                password: PASSWORD,
            }),
        )
        .await
        .expect("organization");
        orgs.push(Org {
            api_key: created.api_key,
            email: email.to_owned(),
        });
    }
    let address = format!("http://{}", app.local_addr());
    let cancel = app.cancel_token();
    tokio::spawn(app.run_until_stopped());
    let second = orgs.pop().expect("two orgs");
    let first = orgs.pop().expect("two orgs");
    TestApp {
        address,
        first,
        second,
        api: reqwest::Client::new(),
        cancel,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A REST API call as `org`.
    pub async fn api(
        &self,
        org: &Org,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .api
            .request(method, self.url(path))
            .bearer_auth(&org.api_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API call");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create_webhook(&self, org: &Org, name: &str, url: &str) -> String {
        let (status, body) = self
            .api(
                org,
                "POST",
                "/api/v1/webhooks",
                Some(json!({
                    "url": url, "name": name, "type": "production",
                    "events": ["connector_sync_started", "connector_synced"]
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["webhook_id"].as_str().expect("webhook id").to_owned()
    }

    /// A production connector of `org` starts a sync: a `connector_sync_started` event.
    pub async fn start_sync(&self, org: &Org) -> Value {
        let (status, connector) = self
            .api(
                org,
                "POST",
                "/api/v1/connectors",
                Some(json!({
                    "environment": "production", "display_name": "BreatheHR",
                    "integration_slug": "breathehr", "categories": ["HRIS"], "origin_id": "user_123",
                    "end_user_name": "John Doe", "end_user_email": "abc@xyz.com"
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{connector}");
        let id = connector["id"].as_str().expect("connector id");
        let (status, sync) = self
            .api(
                org,
                "POST",
                &format!("/api/v1/connectors/{id}/syncs"),
                Some(json!({"initial_sync": true})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{sync}");
        sync
    }

    pub async fn logs(&self, org: &Org) -> Vec<Value> {
        let (status, body) = self.api(org, "GET", "/api/v1/webhooks/logs", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().expect("items").clone()
    }

    pub async fn signature_key(&self, org: &Org) -> String {
        let (status, body) = self
            .api(org, "GET", "/api/v1/webhooks/signature-key", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["signature_key"].as_str().expect("key").to_owned()
    }
}

/// A dashboard visitor over plain HTTP: keeps the cookies it is given, follows no redirect.
pub struct Visitor {
    client: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

/// A page as the visitor got it.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The value of the first hidden `csrf_token` field.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.body.find(marker).expect("a csrf_token field") + marker.len();
        let end = self.body[start..].find('"').expect("end of the value") + start;
        self.body[start..end].to_owned()
    }
}

impl Visitor {
    pub fn new(app: &TestApp) -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: app.address.clone(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = value.to_str().expect("cookie");
            let pair = text.split(';').next().expect("pair");
            let (name, value) = pair.split_once('=').expect("name=value");
            self.cookies.retain(|(k, _)| k != name);
            let expired = text.contains("Max-Age=0");
            if !expired {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Page {
            status: StatusCode::from_u16(response.status().as_u16()).expect("status"),
            location: response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| v.to_str().expect("location").to_owned()),
            body: response.text().await.expect("body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.keep(response).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .expect("POST");
        self.keep(response).await
    }

    /// Signs in through the login form; answers the page the form returned.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        let csrf = form.csrf();
        self.post(
            "/login",
            &[
                ("email", email),
                ("password", password),
                ("csrf_token", &csrf),
                ("next", "/webhooks"),
            ],
        )
        .await
    }

    pub fn has_session(&self) -> bool {
        self.cookies.iter().any(|(k, _)| k == "waggle_session")
    }
}
