//! One attempt of one delivery over HTTP (SPEC §3, §4, §6): sign, POST, follow redirects
//! under the destination checks, and either keep the response or name the network-layer
//! failure in the provider's categories.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::write::GzDecoder;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, LOCATION, USER_AGENT,
};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

use crate::domain::attempt::{AttemptResult, FailureCategory, MAX_RESPONSE_BODY};
use crate::domain::destination::{host_ip, localhost_addresses, DestinationPolicy};
use crate::domain::signature::SigningKeys;

/// The most of an answer's head (status line and headers) one attempt reads; a larger
/// head is a `remote_protocol_error`.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Redirect hops followed before the attempt fails with "too many redirects".
pub const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Which addresses an attempt may connect to, on every hop.
    pub destinations: DestinationPolicy,
    pub signature_header: HeaderName,
    /// The whole exchange of one attempt, redirects included.
    pub attempt_timeout: Duration,
    /// Idle connections kept open to one host: as many as may be in use at once, since
    /// many webhooks can share a host, and a pool that closes what a burst opened pays
    /// for a connect and a close on the next burst, per delivery.
    pub max_idle_per_host: usize,
}

/// What one attempt sent and how it ended.
#[derive(Debug, Clone)]
pub struct SentAttempt {
    pub request_headers: Vec<(String, String)>,
    pub duration: Duration,
    pub result: AttemptResult,
}

/// hyper's pooled client over TCP (TLS for https), names resolved by [`GuardedResolver`].
/// Not reqwest: its layers (redirects, retries, decompression, its own URL type) cost
/// more per request than hyper's exchange itself, and waggle does each of those its own
/// way, hop by hop, under its own checks.
type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The HTTP client every delivery goes through; cheap to clone, sharing one pool.
#[derive(Clone)]
pub struct Sender {
    client: HttpClient,
    config: Arc<SenderConfig>,
    /// Destination URLs parsed so far, shared by every clone. Every attempt to a webhook
    /// goes to the same URL, and parsing it (its host through IDNA processing) cost more
    /// than the rest of building the request.
    parsed: Arc<Mutex<HashMap<String, Destination>>>,
}

/// A destination URL, parsed both ways: [`Url`] for the checks and for joining
/// redirects, [`Uri`] for the request.
#[derive(Clone)]
struct Destination {
    url: Url,
    uri: Uri,
}

impl Destination {
    fn parse(url: &str) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|e| e.to_string())?;
        Self::from_url(url)
    }

    fn from_url(url: Url) -> Result<Self, String> {
        let uri = url.as_str().parse::<Uri>().map_err(|e| e.to_string())?;
        Ok(Self { url, uri })
    }
}

/// URLs [`Sender`] keeps parsed at most; past that it starts over.
const PARSED_URLS: usize = 10_000;

/// A destination that resolved only to addresses the operator refuses.
#[derive(Debug, thiserror::Error)]
#[error("destination {name} resolves only to refused addresses: {why}")]
struct RefusedDestination {
    name: String,
    why: String,
}

/// Looks up the addresses of a host name: the system's resolver, or a test's.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: String) -> BoxFuture<std::io::Result<Vec<IpAddr>>>;
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The operating system's resolver (getaddrinfo, on a blocking thread).
struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Resolves names and drops the addresses deliveries may not reach. hyper connects to
/// the addresses this returns and looks up nothing else, so the check holds for the
/// address actually connected to (a name that answers differently the next time gains
/// nothing), on every redirect hop.
#[derive(Clone)]
struct GuardedResolver {
    destinations: Arc<DestinationPolicy>,
    lookup: Arc<dyn Lookup>,
}

type BoxError = Box<dyn StdError + Send + Sync>;
type Resolving = BoxFuture<Result<std::vec::IntoIter<SocketAddr>, BoxError>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = match localhost_addresses(&host) {
                Some(loopback) => loopback.to_vec(),
                None => resolver.lookup.lookup(host.clone()).await?,
            };
            let mut refused = None;
            let addrs: Vec<SocketAddr> = found
                .into_iter()
                .filter(|ip| match resolver.destinations.check(*ip) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            match (addrs.is_empty(), refused) {
                (true, Some(why)) => Err(Box::new(RefusedDestination {
                    name: host,
                    why: why.to_string(),
                }) as BoxError),
                (true, None) => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                )
                .into()),
                (false, _) => Ok(addrs.into_iter()),
            }
        })
    }
}

impl Sender {
    pub fn new(config: SenderConfig) -> anyhow::Result<Self> {
        Self::with_lookup(config, Arc::new(SystemLookup))
    }

    /// A sender that looks names up with `lookup` (tests answer names as they wish).
    pub fn with_lookup(config: SenderConfig, lookup: Arc<dyn Lookup>) -> anyhow::Result<Self> {
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver {
            destinations: Arc::new(config.destinations.clone()),
            lookup,
        });
        tcp.enforce_http(false); // https too, through the TLS layer
        tcp.set_nodelay(true);
        // Inside the attempt's own limit, so that a connect that hangs is named as such.
        tcp.set_connect_timeout(Some(config.attempt_timeout * 3 / 4));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            // A delivery's head and body are a few hundred bytes each: copied into one
            // buffer and written at once, they cost less than a vectored write of two.
            .http1_writev(false)
            // What one connection may buffer of an answer's head: a receiver sending
            // megabytes of headers is refused once this is full instead of holding
            // hyper's default of about 400 KiB per attempt.
            .http1_max_buf_size(MAX_RESPONSE_HEAD)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            config: Arc::new(config),
            parsed: Arc::default(),
        })
    }

    pub fn attempt_timeout(&self) -> Duration {
        self.config.attempt_timeout
    }

    /// POSTs `body`, signed with `keys`, to `url`, with `delivery_id` in `webhook-id`,
    /// within the attempt timeout.
    pub async fn send(
        &self,
        url: &str,
        delivery_id: &str,
        body: Bytes,
        key: &SigningKeys,
    ) -> SentAttempt {
        let deadline = Instant::now() + self.config.attempt_timeout;
        self.send_until(url, delivery_id, body, key, deadline).await
    }

    /// As [`Sender::send`], with whatever is left until `deadline`.
    pub async fn send_until(
        &self,
        url: &str,
        delivery_id: &str,
        body: Bytes,
        key: &SigningKeys,
        deadline: Instant,
    ) -> SentAttempt {
        let started = Instant::now();
        let headers = self.headers(delivery_id, &body, key);
        let request_headers = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        // The one timer of the attempt: it covers every hop and the reading of the
        // response, so the requests carry none of their own.
        let result =
            match tokio::time::timeout_at(deadline.into(), self.exchange(url, headers, body)).await
            {
                Ok(result) => result,
                Err(_) => AttemptResult::Failure {
                    category: FailureCategory::ReadTimeout,
                    message: format!(
                        "no complete response within {:?}",
                        self.config.attempt_timeout
                    ),
                },
            };
        SentAttempt {
            request_headers,
            duration: started.elapsed(),
            result,
        }
    }

    fn headers(
        &self,
        delivery_id: &str,
        body: &[u8],
        keys: &SigningKeys,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let value = |s: &str| HeaderValue::from_str(s).expect("ASCII header value");
        let now = crate::domain::time::now();
        let timestamp = now.timestamp();
        vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                USER_AGENT,
                HeaderValue::from_static(concat!("waggle/", env!("CARGO_PKG_VERSION"))),
            ),
            (HeaderName::from_static("webhook-id"), value(delivery_id)),
            (
                self.config.signature_header.clone(),
                value(&keys.current.sign(body)),
            ),
            // The Standard Webhooks scheme, with the same key (and, during a rotation's
            // grace, the key it replaced).
            (
                HeaderName::from_static("webhook-timestamp"),
                value(&timestamp.to_string()),
            ),
            (
                HeaderName::from_static("webhook-signature"),
                value(&keys.sign_standard(delivery_id, timestamp, body, now)),
            ),
        ]
    }

    /// The request and its redirects, until a response that ends the attempt.
    async fn exchange(
        &self,
        url: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> AttemptResult {
        let mut destination = match self.parse(url) {
            Ok(destination) => destination,
            Err(e) => {
                return failure(
                    FailureCategory::LocalProtocolError,
                    format!("invalid URL: {e}"),
                )
            }
        };
        let mut method = Method::POST;
        let mut body = Some(body);
        for hop in 0..=MAX_REDIRECTS {
            if let Some(refused) = self.check_hop(&destination.url) {
                return refused;
            }
            let request = match build_request(&method, &destination.uri, &headers, &body) {
                Ok(request) => request,
                Err(e) => {
                    return failure(
                        FailureCategory::LocalProtocolError,
                        format!("invalid request: {e}"),
                    )
                }
            };
            let response = match self.client.request(request).await {
                Ok(response) => response,
                Err(e) => return classify(&e, e.is_connect()),
            };
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            match (status.is_redirection(), location) {
                (true, Some(location)) if is_followed(status) => {
                    if hop == MAX_REDIRECTS {
                        return failure(
                            FailureCategory::TooManyRedirects,
                            format!("more than {MAX_REDIRECTS} redirects; last to {location}"),
                        );
                    }
                    let next = destination
                        .url
                        .join(&location)
                        .map_err(|e| e.to_string())
                        .and_then(Destination::from_url);
                    destination = match next {
                        Ok(next) => next,
                        Err(e) => {
                            return failure(
                                FailureCategory::RemoteProtocolError,
                                format!("invalid redirect location '{location}': {e}"),
                            )
                        }
                    };
                    // 307 and 308 repeat the request as it was; the others turn it into a GET.
                    if !matches!(
                        status,
                        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
                    ) {
                        method = Method::GET;
                        body = None;
                    }
                }
                _ => return read_response(response).await,
            }
        }
        unreachable!("the last hop returns")
    }

    fn parse(&self, url: &str) -> Result<Destination, String> {
        if let Some(parsed) = self.parsed.lock().expect("URL cache lock").get(url) {
            return Ok(parsed.clone());
        }
        let parsed = Destination::parse(url)?;
        let mut cache = self.parsed.lock().expect("URL cache lock");
        if cache.len() >= PARSED_URLS {
            cache.clear();
        }
        cache.insert(url.to_owned(), parsed.clone());
        Ok(parsed)
    }

    /// Refuses a hop whose scheme is not HTTP or whose IP-literal host is not allowed;
    /// names are checked by the resolver.
    fn check_hop(&self, url: &Url) -> Option<AttemptResult> {
        if !matches!(url.scheme(), "http" | "https") {
            return Some(failure(
                FailureCategory::UnsupportedProtocol,
                format!("unsupported URL scheme '{}'", url.scheme()),
            ));
        }
        let ip = url.host().as_ref().and_then(host_ip)?;
        let refused = self.config.destinations.check(ip).err()?;
        Some(failure(
            FailureCategory::DestinationRefused,
            refused.to_string(),
        ))
    }
}

/// One hop's request: the attempt's headers (no content type without a body), and what
/// any HTTP client sends besides: `accept`, and `accept-encoding` for the gzip that
/// [`read_response`] decodes.
fn build_request(
    method: &Method,
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: &Option<Bytes>,
) -> http::Result<Request<Full<Bytes>>> {
    let mut request = Request::builder().method(method.clone()).uri(uri.clone());
    for (name, value) in headers {
        if body.is_some() || *name != CONTENT_TYPE {
            request = request.header(name, value);
        }
    }
    request
        .header(ACCEPT, HeaderValue::from_static("*/*"))
        .header(ACCEPT_ENCODING, HeaderValue::from_static("gzip"))
        .body(Full::new(body.clone().unwrap_or_default()))
}

fn is_followed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn failure(category: FailureCategory, message: String) -> AttemptResult {
    AttemptResult::Failure { category, message }
}

/// Keeps the status, the headers and the first 64 KiB of the body, decoded when it came
/// gzipped (then without the `content-encoding` and `content-length` of the encoded one).
async fn read_response(response: hyper::Response<Incoming>) -> AttemptResult {
    let (parts, mut incoming) = response.into_parts();
    let gzipped = parts
        .headers
        .get(CONTENT_ENCODING)
        .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| !gzipped || (*n != CONTENT_ENCODING && *n != CONTENT_LENGTH))
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Kept::new(gzipped);
    while !body.is_full() {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    if let Err(e) = body.push(&chunk) {
                        return decoding_failure(&e);
                    }
                }
            }
            Some(Err(e)) => return classify(&e, false),
            None => break,
        }
    }
    match body.finish() {
        Ok(body) => AttemptResult::Response {
            status: parts.status.as_u16(),
            headers,
            body,
        },
        Err(e) => decoding_failure(&e),
    }
}

/// The part of a response body that is kept: at most [`MAX_RESPONSE_BODY`] bytes, after
/// decoding when it is gzipped.
enum Kept {
    Plain(Capped),
    /// `seen` tells an empty body (nothing to decode) from a truncated one.
    Gzip {
        decoder: Box<GzDecoder<Capped>>,
        seen: bool,
    },
}

impl Kept {
    fn new(gzipped: bool) -> Self {
        if gzipped {
            Kept::Gzip {
                decoder: Box::new(GzDecoder::new(Capped::default())),
                seen: false,
            }
        } else {
            Kept::Plain(Capped::default())
        }
    }

    fn is_full(&self) -> bool {
        match self {
            Kept::Plain(body) => body.is_full(),
            Kept::Gzip { decoder, .. } => decoder.get_ref().is_full(),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            Kept::Plain(body) => body.write_all(chunk),
            Kept::Gzip { decoder, seen } => {
                *seen |= !chunk.is_empty();
                decoder.write_all(chunk)
            }
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        Ok(match self {
            Kept::Plain(body) => body.0,
            // Nothing to decode, or enough decoded: the rest of the stream is not read.
            Kept::Gzip { mut decoder, seen } if !seen || decoder.get_ref().is_full() => {
                std::mem::take(decoder.get_mut()).0
            }
            Kept::Gzip { decoder, .. } => decoder.finish()?.0,
        })
    }
}

/// The first [`MAX_RESPONSE_BODY`] bytes written to it; the rest is dropped, so that a
/// small gzipped body that inflates to gigabytes holds no more memory than a plain one.
#[derive(Default)]
struct Capped(Vec<u8>);

impl Capped {
    fn is_full(&self) -> bool {
        self.0.len() >= MAX_RESPONSE_BODY
    }
}

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = MAX_RESPONSE_BODY - self.0.len();
        self.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decoding_failure(error: &std::io::Error) -> AttemptResult {
    failure(
        FailureCategory::DecodingError,
        format!("error decoding response body: {error}"),
    )
}

/// Names a request failure in the provider's categories, from the innermost cause that
/// tells: our own refusal, the operating system's error, or hyper's protocol verdict.
/// `connecting`: the failure came before any request was written.
fn classify(error: &(dyn StdError + 'static), connecting: bool) -> AttemptResult {
    let message = chain(error);
    let mut hyper_error = None;
    let mut io_error = None;
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<RefusedDestination>().is_some() {
            return failure(FailureCategory::DestinationRefused, message);
        }
        if hyper_error.is_none() {
            hyper_error = e.downcast_ref::<hyper::Error>();
        }
        if io_error.is_none() {
            io_error = e.downcast_ref::<std::io::Error>();
        }
        source = e.source();
    }
    let category = if connecting {
        match io_error.map(|e| e.kind()) {
            Some(std::io::ErrorKind::TimedOut) => FailureCategory::ConnectTimeout,
            _ => FailureCategory::ConnectError,
        }
    } else if let Some(category) = io_error.and_then(|e| from_io(e.kind())) {
        category
    } else if let Some(h) = hyper_error {
        if h.is_parse()
            || h.is_parse_status()
            || h.is_parse_too_large()
            || h.is_incomplete_message()
        {
            FailureCategory::RemoteProtocolError
        } else if h.is_user() {
            FailureCategory::LocalProtocolError
        } else if h.is_body_write_aborted() {
            FailureCategory::WriteError
        } else if h.is_timeout() {
            FailureCategory::ReadTimeout
        } else if h.is_closed() || h.is_canceled() {
            FailureCategory::CloseError
        } else {
            FailureCategory::ReadError
        }
    } else {
        FailureCategory::ReadError
    };
    failure(category, message)
}

fn from_io(kind: std::io::ErrorKind) -> Option<FailureCategory> {
    use std::io::ErrorKind::*;
    Some(match kind {
        ConnectionRefused | NotConnected | AddrNotAvailable | HostUnreachable
        | NetworkUnreachable => FailureCategory::ConnectError,
        ConnectionReset | ConnectionAborted => FailureCategory::ReadError,
        BrokenPipe => FailureCategory::WriteError,
        UnexpectedEof => FailureCategory::RemoteProtocolError,
        TimedOut => FailureCategory::ReadTimeout,
        _ => return None,
    })
}

/// The error and its causes, outermost first.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers a name with each of `answers` in turn (the last one from then on), and
    /// counts the lookups: a name whose owner changes what it resolves to.
    struct Rebinding {
        answers: Vec<Vec<IpAddr>>,
        lookups: AtomicUsize,
    }

    impl Lookup for Rebinding {
        fn lookup(&self, _host: String) -> BoxFuture<std::io::Result<Vec<IpAddr>>> {
            let n = self.lookups.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers[n.min(self.answers.len() - 1)].clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    /// A receiver on `ip:port` that answers 204 and closes each connection, so that
    /// every attempt connects (and looks the name up) anew; it counts connections.
    async fn receiver(ip: &str, port: u16) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket
                        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        (port, connections)
    }

    fn guarded_sender(lookup: Arc<dyn Lookup>) -> Sender {
        Sender::with_lookup(
            SenderConfig {
                destinations: DestinationPolicy {
                    allow_private: false,
                    allowed: vec!["127.0.0.1/32".parse().unwrap()],
                },
                signature_header: HeaderName::from_static("x-signature"),
                attempt_timeout: Duration::from_secs(5),
                max_idle_per_host: 8,
            },
            lookup,
        )
        .unwrap()
    }

    async fn send(sender: &Sender, url: &str) -> SentAttempt {
        let keys = SigningKeys {
            current: crate::domain::signature::SignatureKey::generate(),
            retiring: None,
        };
        sender
            .send(url, "d", Bytes::from_static(b"{}"), &keys)
            .await
    }

    #[tokio::test]
    async fn the_connection_goes_to_the_address_that_was_checked() {
        let (port, allowed) = receiver("127.0.0.1", 0).await;
        let (_, refused) = receiver("127.0.0.2", port).await;
        let url = format!("http://rebinding.test:{port}/hook");
        let allowed_ip: IpAddr = "127.0.0.1".parse().unwrap();
        let refused_ip: IpAddr = "127.0.0.2".parse().unwrap();

        // First an allowed address, then a refused one: the second attempt is refused at
        // once, and nothing connects to the refused address.
        let lookup = Arc::new(Rebinding {
            answers: vec![vec![allowed_ip], vec![refused_ip]],
            lookups: AtomicUsize::new(0),
        });
        let sender = guarded_sender(lookup.clone());
        let first = send(&sender, &url).await;
        assert!(
            matches!(first.result, AttemptResult::Response { status: 204, .. }),
            "{:?}",
            first.result
        );
        let second = send(&sender, &url).await;
        match &second.result {
            AttemptResult::Failure { category, message } => {
                assert_eq!(*category, FailureCategory::DestinationRefused);
                assert!(message.contains("127.0.0.2"), "{message}");
                assert!(message.contains("loopback"), "{message}");
            }
            other => panic!("the rebound name was reached: {other:?}"),
        }
        assert!(second.duration < Duration::from_secs(1), "refused at once");
        assert_eq!(lookup.lookups.load(Ordering::SeqCst), 2, "one lookup each");
        assert_eq!(allowed.load(Ordering::SeqCst), 1);
        assert_eq!(refused.load(Ordering::SeqCst), 0);

        // A name answering both: only the allowed one is connected to, every time.
        let both = guarded_sender(Arc::new(Rebinding {
            answers: vec![vec![refused_ip, allowed_ip]],
            lookups: AtomicUsize::new(0),
        }));
        for _ in 0..3 {
            let sent = send(&both, &url).await;
            assert!(
                matches!(sent.result, AttemptResult::Response { status: 204, .. }),
                "{:?}",
                sent.result
            );
        }
        assert_eq!(allowed.load(Ordering::SeqCst), 4);
        assert_eq!(refused.load(Ordering::SeqCst), 0);
    }
}
