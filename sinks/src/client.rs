//! The outbound HTTP client of every sink: refuses private destinations at connect time,
//! follows no redirects, caps what it reads of a response, and times out.
//!
//! Hostnames are resolved by the client itself, which drops every address the
//! [`AddressPolicy`] refuses and connects only to one of those checked (a DNS answer that
//! changes between a check and the connect cannot slip past). IP-literal URLs are checked
//! before anything else. No proxy is used (one would connect on our behalf, unchecked).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::Method;
use http::header::{HOST, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use url::{Host, Url};

use crate::address::AddressPolicy;
use crate::{Error, Result};

/// Resolves `host` with the system resolver and keeps only the addresses the policy
/// allows; the connection then goes to one of exactly these addresses.
pub(crate) async fn resolve(
    policy: &AddressPolicy,
    host: &str,
    port: u16,
) -> std::result::Result<Vec<SocketAddr>, (FailureKind, String)> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| (FailureKind::Connect, format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut refused = Vec::new();
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| match policy.check(a.ip()) {
            Ok(()) => true,
            Err(reason) => {
                refused.push(reason);
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        let why = if refused.is_empty() {
            "no addresses".to_string()
        } else {
            refused.join(", ")
        };
        return Err((FailureKind::Blocked, format!("{host} resolves to {why}")));
    }
    Ok(allowed)
}

/// Timeouts and limits of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub allow: Vec<IpNet>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Certificate authorities trusted besides the web PKI's (a private CA).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            allow: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_response_bytes: 64 * 1024,
            extra_roots: Vec::new(),
        }
    }
}

/// What came back: the status, the headers a sink acts on, and at most
/// `max_response_bytes` of the body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub body: Bytes,
    pub latency: Duration,
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    Blocked,
    Connect,
    Timeout,
    Other,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub latency: Duration,
}

/// The guarded client; cheap to clone (one connection pool).
///
/// HTTP/1.1 over hyper's connection API with its own small pool: one connection per
/// request in flight, kept for reuse only after its response was read to the end. (It
/// replaced reqwest here: its per-request layers, redirect and retry policies this client
/// never uses among them, cost more CPU than the signing and logging of a delivery.)
#[derive(Clone)]
pub struct SafeClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SafeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeClient")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    https: bool,
    host: String,
    port: u16,
}

struct Inner {
    policy: Arc<AddressPolicy>,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: usize,
    tls: tokio_rustls::TlsConnector,
    user_agent: HeaderValue,
    idle: Mutex<HashMap<PoolKey, Vec<(Sender, Instant)>>>,
}

/// Idle connections kept per destination, and for how long.
const MAX_IDLE_PER_HOST: usize = 64;
const IDLE_FOR: Duration = Duration::from_secs(60);

type Fail = (FailureKind, String);

impl SafeClient {
    pub fn new(options: ClientOptions) -> Result<SafeClient> {
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in options.extra_roots {
            roots
                .add(cert)
                .map_err(|e| Error::invalid("extra_roots", e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid("http client", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(SafeClient {
            inner: Arc::new(Inner {
                policy: Arc::new(AddressPolicy::new(options.allow)),
                connect_timeout: options.connect_timeout,
                timeout: options.timeout,
                max_response_bytes: options.max_response_bytes,
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                user_agent: HeaderValue::from_static(concat!(
                    "tidemark/",
                    env!("CARGO_PKG_VERSION")
                )),
                idle: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.inner.policy
    }

    /// Checks a URL's scheme and, for an IP literal, its address (hostnames are checked
    /// when they resolve).
    pub fn check_url(&self, url: &Url) -> std::result::Result<(), Failure> {
        let fail = |message: String| Failure {
            kind: FailureKind::Blocked,
            message,
            latency: Duration::ZERO,
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail(format!(
                "scheme {} is not http or https",
                url.scheme()
            )));
        }
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            // An address with trailing dots (`169.254.169.254..`, also spelled `%2e%2e`) is
            // a name to the URL parser; judged as the address it spells (fuzz target
            // url_check). Other names are checked when they resolve.
            Some(Host::Domain(d)) => match d.trim_end_matches('.').parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return Ok(()),
            },
            None => return Err(fail("the URL has no host".into())),
        };
        self.inner.policy.check(ip).map_err(fail)
    }

    /// Sends one request with `body`; never follows a redirect. The whole exchange
    /// (connect, send, response, capped body) is bounded by the client's timeout.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> std::result::Result<Response, Failure> {
        self.check_url(url)?;
        let started = Instant::now();
        let exchanged = tokio::time::timeout(
            self.inner.timeout,
            self.exchange(method, url, headers, body),
        )
        .await;
        match exchanged {
            Ok(Ok(mut response)) => {
                response.latency = started.elapsed();
                Ok(response)
            }
            Ok(Err((kind, message))) => Err(Failure {
                kind,
                message,
                latency: started.elapsed(),
            }),
            Err(_) => Err(Failure {
                kind: FailureKind::Timeout,
                message: format!(
                    "no complete response within {} ms (timeout)",
                    self.inner.timeout.as_millis()
                ),
                latency: started.elapsed(),
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &Url,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> std::result::Result<Response, Fail> {
        let host = url
            .host_str()
            .ok_or((FailureKind::Blocked, "the URL has no host".to_string()))?;
        let key = PoolKey {
            https: url.scheme() == "https",
            host: host.to_string(),
            port: url.port_or_known_default().unwrap_or(80),
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        headers.insert(
            HOST,
            HeaderValue::from_str(&authority).map_err(|e| (FailureKind::Other, e.to_string()))?,
        );
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, self.inner.user_agent.clone());
        }
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = path
            .parse()
            .map_err(|e| (FailureKind::Other, format!("url {url}: {e}")))?;
        *request.headers_mut() = headers;

        let (mut sender, reused) = match self.checkout(&key).await {
            Some(s) => (s, true),
            None => (self.connect(&key, url).await?, false),
        };
        let response = match sender.try_send_request(request).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                // Never written (an idle connection the server had closed): once more
                // on a new connection.
                Some(request) if reused => {
                    sender = self.connect(&key, url).await?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| (FailureKind::Other, error_chain(&e)))?
                }
                _ => return Err((FailureKind::Other, error_chain(e.error()))),
            },
        };
        let header = |name: HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header(RETRY_AFTER);
        let location = header(LOCATION);
        let status = response.status().as_u16();
        let mut incoming = response.into_body();
        let mut body = BytesMut::new();
        let cap = self.inner.max_response_bytes;
        let mut complete = false;
        // Read at most the cap; the rest is dropped with the connection.
        while body.len() < cap {
            match incoming.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(chunk) = frame.into_data() {
                        let room = cap - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                }
                Some(Err(e)) => return Err((FailureKind::Other, error_chain(&e))),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        if !complete && incoming.is_end_stream() {
            complete = true;
        }
        if complete {
            self.checkin(key, sender);
        }
        Ok(Response {
            status,
            retry_after,
            location,
            body: body.freeze(),
            latency: Duration::ZERO,
        })
    }

    /// An idle connection to `key` that is still open and ready, if one is pooled.
    async fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        loop {
            let (mut sender, since) = {
                let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(key)?.pop()?
            };
            if sender.is_closed() || since.elapsed() > IDLE_FOR {
                continue;
            }
            // Ready at once unless the connection is closing (then try the next).
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(|(s, at)| !s.is_closed() && at.elapsed() <= IDLE_FOR);
        if list.len() < MAX_IDLE_PER_HOST {
            list.push((sender, Instant::now()));
        }
    }

    /// A new connection to one of the destination's allowed addresses (TLS verified
    /// against the web PKI for https), its driver spawned.
    async fn connect(&self, key: &PoolKey, url: &Url) -> std::result::Result<Sender, Fail> {
        let addrs = match url.host() {
            Some(Host::Ipv4(v4)) => vec![SocketAddr::new(IpAddr::V4(v4), key.port)],
            Some(Host::Ipv6(v6)) => vec![SocketAddr::new(IpAddr::V6(v6), key.port)],
            Some(Host::Domain(d)) => resolve(&self.inner.policy, d, key.port).await?,
            None => return Err((FailureKind::Blocked, "the URL has no host".into())),
        };
        let limit = self.inner.connect_timeout;
        let stream = tokio::time::timeout(limit, connect_any(&addrs))
            .await
            .map_err(|_| {
                (
                    FailureKind::Timeout,
                    format!(
                        "connect to {} timed out after {} ms",
                        key.host,
                        limit.as_millis()
                    ),
                )
            })??;
        let _ = stream.set_nodelay(true);
        if key.https {
            let name = match url.host() {
                Some(Host::Ipv4(v4)) => ServerName::IpAddress(IpAddr::V4(v4).into()),
                Some(Host::Ipv6(v6)) => ServerName::IpAddress(IpAddr::V6(v6).into()),
                _ => ServerName::try_from(key.host.clone())
                    .map_err(|e| (FailureKind::Connect, format!("{}: {e}", key.host)))?,
            };
            let tls = tokio::time::timeout(limit, self.inner.tls.connect(name, stream))
                .await
                .map_err(|_| {
                    (
                        FailureKind::Timeout,
                        format!("TLS handshake with {} timed out", key.host),
                    )
                })?
                .map_err(|e| (FailureKind::Connect, format!("TLS with {}: {e}", key.host)))?;
            handshake(tls).await
        } else {
            handshake(stream).await
        }
    }
}

/// Starts HTTP/1.1 on `io` and spawns the connection's driver.
async fn handshake<T>(io: T) -> std::result::Result<Sender, Fail>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| (FailureKind::Connect, error_chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "http connection ended");
        }
    });
    Ok(sender)
}

/// Connects to the first address that accepts.
async fn connect_any(addrs: &[SocketAddr]) -> std::result::Result<TcpStream, Fail> {
    let mut last = String::from("no addresses");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err((FailureKind::Connect, last))
}

/// `(name, value)` pairs as a header map; the error names the header.
pub fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::with_capacity(pairs.len() + 4);
    for (name, value) in pairs {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| Error::invalid(format!("headers.{name}"), e.to_string()))?;
        let v = HeaderValue::from_str(value)
            .map_err(|e| Error::invalid(format!("headers.{name}"), e.to_string()))?;
        map.append(n, v);
    }
    Ok(map)
}

/// "outer: inner: innermost", without repeats.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}
