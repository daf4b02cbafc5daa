//! `waggle listen`: a local receiver for developers writing their handler. It prints each
//! delivery it gets (event, connector, size, and whether each scheme's signature is valid
//! under the key it was given), and answers 200, or forwards the delivery to the
//! developer's own handler and relays that answer's status and body back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// What `waggle listen` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Listen {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long, default_value_t = 3001)]
    pub port: u16,
    /// The organization's signature key (`whsk_…`, or its `whsec_…` form), to check each
    /// delivery's signatures with.
    #[arg(long, env = "WAGGLE_SIGNATURE_KEY", hide_env_values = true)]
    pub signature_key: Option<String>,
    /// Forward each delivery (same body, same headers) to this URL, and answer waggle
    /// with its status and body.
    #[arg(long, value_name = "URL")]
    pub forward: Option<String>,
}

struct Listener {
    /// The key as UTF-8, as both schemes use it.
    key: Option<String>,
    forward: Option<String>,
    client: reqwest::Client,
}

/// Serves until ctrl-c. Prints the address it listens on first.
pub async fn run(listen: Listen) -> anyhow::Result<()> {
    let key = listen.signature_key.as_deref().map(raw_key).transpose()?;
    let listener = Arc::new(Listener {
        key,
        forward: listen.forward.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], listen.port));
    let socket = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "listening on http://{}/ {}",
        socket.local_addr()?,
        match &listen.forward {
            Some(url) => format!("(forwarding to {url})"),
            None => "(answering 200)".to_owned(),
        }
    );
    let app = axum::Router::new().fallback(receive).with_state(listener);
    axum::serve(socket, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The key's UTF-8 bytes as a string, from the key or its `whsec_` form.
fn raw_key(given: &str) -> anyhow::Result<String> {
    let given = given.trim();
    let Some(encoded) = given.strip_prefix("whsec_") else {
        return Ok(given.to_owned());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .context("the whsec_ key is not valid base64")?;
    String::from_utf8(bytes).context("the whsec_ key is not a waggle signature key")
}

async fn receive(
    State(listener): State<Arc<Listener>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let event = payload["webhook"]["event"]
        .as_str()
        .unwrap_or("(not a waggle event)");
    let connector = payload["connector"]["id"].as_str().unwrap_or("-");
    let (provider, standard) = match &listener.key {
        None => ("no key given".to_owned(), "no key given".to_owned()),
        Some(key) => (
            validity(waggle_verify::verify(
                key,
                &body,
                header(waggle_verify::SIGNATURE_HEADER),
            )),
            validity(
                waggle_verify::verify_standard(
                    key,
                    header(waggle_verify::STANDARD_ID_HEADER),
                    header(waggle_verify::STANDARD_TIMESTAMP_HEADER),
                    header(waggle_verify::STANDARD_SIGNATURE_HEADER),
                    &body,
                    chrono::Utc::now().timestamp(),
                )
                .is_ok(),
            ),
        ),
    };
    let (status, answer) = match &listener.forward {
        None => (StatusCode::OK, Bytes::new()),
        Some(url) => forward(&listener.client, url, &headers, body.clone()).await,
    };
    println!(
        "{}  POST {}  {event}  connector {connector}  {} bytes  {}: {provider}  {}: {standard}  -> {}",
        chrono::Utc::now().format("%H:%M:%S%.3f"),
        uri.path(),
        body.len(),
        waggle_verify::SIGNATURE_HEADER,
        waggle_verify::STANDARD_SIGNATURE_HEADER,
        status.as_u16(),
    );
    (status, answer).into_response()
}

fn validity(valid: bool) -> String {
    if valid {
        "signature valid"
    } else {
        "signature invalid"
    }
    .to_owned()
}

/// POSTs the delivery to `url` with its headers; the answer's status and body, or a 502
/// when the handler could not be reached.
async fn forward(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    match request.send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default())
        }
        Err(e) => {
            println!("forwarding to {url} failed: {e}");
            (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string()))
        }
    }
}
