//! The outbound HTTP client of every sink: refuses private destinations at connect time,
//! follows no redirects, caps what it reads of a response, and times out.
//!
//! Hostnames go through [`GuardedResolver`], which drops every resolved address that the
//! [`AddressPolicy`] refuses, so the connection can only go to an address that was
//! checked (a DNS answer that changes between a check and the connect cannot slip past).
//! IP-literal URLs never reach a resolver and are checked before the request starts. No
//! proxy is used (one would connect on our behalf, unchecked).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::{Host, Url};

use crate::{Error, Result};

/// Address ranges refused unless allow-listed, with the name used in errors.
const BLOCKED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "CGNAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique local (ULA)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// Which destination addresses may be connected to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// Blocks the private ranges except those inside `allow`.
    pub fn new(allow: Vec<IpNet>) -> AddressPolicy {
        AddressPolicy { allow }
    }

    /// Parses CIDR ranges (`127.0.0.0/8`, `::1/128`); `field` names the setting.
    pub fn parse_allow(items: &[String], field: &str) -> Result<Vec<IpNet>> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<IpNet>().map_err(|e| {
                    Error::invalid(
                        format!("{field}[{i}]"),
                        format!("{s:?} is not a CIDR range: {e}"),
                    )
                })
            })
            .collect()
    }

    /// `Err(reason)` when `ip` may not be connected to.
    pub fn check(&self, ip: IpAddr) -> std::result::Result<(), String> {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) reaches the IPv4 host: judge that.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match blocked_range(ip) {
            Some(name) => Err(format!("{ip} is a {name} address")),
            None => Ok(()),
        }
    }
}

fn blocked_range(ip: IpAddr) -> Option<&'static str> {
    BLOCKED.iter().find_map(|(cidr, name)| {
        let net: IpNet = cidr.parse().ok()?;
        net.contains(&ip).then_some(*name)
    })
}

/// Resolves with the system resolver, then keeps only the addresses the policy allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
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
                return Err(
                    Box::new(Error::Blocked(format!("{host} resolves to {why}")))
                        as Box<dyn std::error::Error + Send + Sync>,
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Timeouts and limits of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub allow: Vec<IpNet>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            allow: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_response_bytes: 64 * 1024,
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
#[derive(Debug, Clone)]
pub struct SafeClient {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
    max_response_bytes: usize,
}

impl SafeClient {
    pub fn new(options: ClientOptions) -> Result<SafeClient> {
        let policy = Arc::new(AddressPolicy::new(options.allow));
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::invalid("http client", e.to_string()))?;
        Ok(SafeClient {
            http,
            policy,
            max_response_bytes: options.max_response_bytes,
        })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
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
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(fail("the URL has no host".into())),
        };
        self.policy.check(ip).map_err(fail)
    }

    /// Sends one request with `body`; never follows a redirect.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> std::result::Result<Response, Failure> {
        self.check_url(url)?;
        let started = Instant::now();
        let request = self
            .http
            .request(method, url.clone())
            .headers(headers)
            .body(body);
        let failed = |e: reqwest::Error, started: Instant| Failure {
            kind: if chain_has_blocked(&e) {
                FailureKind::Blocked
            } else if e.is_timeout() {
                FailureKind::Timeout
            } else if e.is_connect() {
                FailureKind::Connect
            } else {
                FailureKind::Other
            },
            message: error_chain(&e),
            latency: started.elapsed(),
        };
        let mut response = request.send().await.map_err(|e| failed(e, started))?;
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let location = header(reqwest::header::LOCATION);
        let status = response.status().as_u16();
        let mut body = BytesMut::new();
        // Read at most the cap; the rest is dropped with the connection.
        while body.len() < self.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_response_bytes - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => return Err(failed(e, started)),
            }
        }
        Ok(Response {
            status,
            retry_after,
            location,
            body: body.freeze(),
            latency: started.elapsed(),
        })
    }
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

fn chain_has_blocked(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if matches!(err.downcast_ref::<Error>(), Some(Error::Blocked(_))) {
            return true;
        }
        current = err.source();
    }
    false
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

/// Addresses the tests and docs use as examples of each blocked range.
pub fn blocked_examples() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
        IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6("fd00::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("fe80::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("ff02::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("::ffff:10.0.0.1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_blocked_range_is_refused_and_public_addresses_pass() {
        let policy = AddressPolicy::default();
        for ip in blocked_examples() {
            assert!(policy.check(ip).is_err(), "{ip} should be refused");
        }
        for ok in [
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
            "172.32.0.1",
        ] {
            let ip: IpAddr = ok.parse().unwrap();
            assert_eq!(policy.check(ip), Ok(()), "{ok}");
        }
        let e = policy
            .check("::ffff:127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(e, "127.0.0.1 is a loopback address");
    }

    #[test]
    fn allow_list_opens_only_its_range() {
        let allow = AddressPolicy::parse_allow(&["127.0.0.0/8".into()], "allow").unwrap();
        let policy = AddressPolicy::new(allow);
        assert_eq!(policy.check("127.0.0.2".parse().unwrap()), Ok(()));
        assert_eq!(policy.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert!(policy.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check("::1".parse().unwrap()).is_err());
        let e =
            AddressPolicy::parse_allow(&["127.0.0.0/8".into(), "nope".into()], "webhooks.allow")
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with("webhooks.allow[1]: \"nope\" is not a CIDR range"),
            "{e}"
        );
    }
}
