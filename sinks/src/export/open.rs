//! Opening an export's object-store destination under the server's rules, since the
//! environment admin who configures an export is not the server's operator:
//!
//! - every connection the store makes (to its endpoint, to a credentials or metadata
//!   service, after a redirect) goes through [`GuardedConnector`], which resolves names
//!   itself and drops every address the [`AddressPolicy`] refuses, refuses IP-literal hosts
//!   in refused ranges, and uses no proxy — the same guard as webhooks, with the same
//!   `allow_networks`;
//! - an endpoint option given as an IP literal in a refused range is refused when the
//!   export is created, as webhook URLs are;
//! - `file://` destinations must fall under one of the operator's `file_roots` (none by
//!   default), after symlinks are resolved;
//! - unknown options are refused by name (object_store would ignore them silently).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Component, Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
};
use object_store::path::Path;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreScheme};
use url::{Host, Url};

use crate::address::AddressPolicy;
use crate::{Error, Result};

/// What an environment's destinations may reach: the address policy of every outbound
/// connection, and the local directories `file://` destinations may write under.
#[derive(Debug, Clone, Default)]
pub struct DestinationRules {
    pub policy: Arc<AddressPolicy>,
    /// Allowed roots of `file://` destinations (empty: `file://` refused).
    pub file_roots: Vec<PathBuf>,
}

/// Opens an object-store URL with its options (credentials, endpoint, region: the keys
/// `object_store` knows, e.g. `aws_access_key_id`, `aws_endpoint`,
/// `google_service_account`, `azure_storage_account_name`), under `rules`. `field` names
/// the destination in errors.
pub fn open_store(
    url: &Url,
    options: &BTreeMap<String, String>,
    field: &str,
    rules: &DestinationRules,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let invalid = |message: String| Error::invalid(field, message);
    let unsupported = || {
        invalid(format!(
            "unsupported scheme {}://; use s3://, gs://, az://, file:// or https://",
            url.scheme()
        ))
    };
    let (scheme, prefix) = ObjectStoreScheme::parse(url).map_err(|_| unsupported())?;
    check_endpoints(options, &rules.policy)?;
    let connector = GuardedConnector {
        policy: rules.policy.clone(),
    };
    let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut b = object_store::aws::AmazonS3Builder::new().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(option_key(k)?, v);
            }
            b.with_http_connector(connector)
                .build()
                .map(|s| Arc::new(s) as _)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(option_key(k)?, v);
            }
            b.with_http_connector(connector)
                .build()
                .map(|s| Arc::new(s) as _)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::new().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(option_key(k)?, v);
            }
            b.with_http_connector(connector)
                .build()
                .map(|s| Arc::new(s) as _)
        }
        ObjectStoreScheme::Local => {
            no_options(options)?;
            let dir = allowed_dir(url, &rules.file_roots).map_err(invalid)?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| invalid(format!("cannot create {}: {e}", dir.display())))?;
            // The prefix is the directory itself: names are joined under it.
            return object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map(|s| (Arc::new(s) as Arc<dyn ObjectStore>, Path::default()))
                .map_err(|e| invalid(e.to_string()));
        }
        ObjectStoreScheme::Memory => {
            no_options(options)?;
            Ok(Arc::new(object_store::memory::InMemory::new()) as _)
        }
        _ => return Err(unsupported()),
    };
    let store = built.map_err(|e| invalid(e.to_string()))?;
    Ok((store, prefix))
}

/// An option name as the builder's key type, or an error naming it.
fn option_key<K: FromStr>(name: &str) -> Result<K> {
    name.to_ascii_lowercase().parse().map_err(|_| {
        Error::invalid(
            format!("options.{name}"),
            format!("'{name}' is not an option of this destination's store"),
        )
    })
}

fn no_options(options: &BTreeMap<String, String>) -> Result<()> {
    match options.keys().next() {
        None => Ok(()),
        Some(k) => Err(Error::invalid(
            format!("options.{k}"),
            "file:// and memory:// destinations take no options",
        )),
    }
}

/// Options whose value is a URL the store connects to: an IP literal in a refused range is
/// refused now (hostnames are checked when they resolve), and proxies are refused outright
/// (a proxy connects on our behalf, unchecked).
fn check_endpoints(options: &BTreeMap<String, String>, policy: &AddressPolicy) -> Result<()> {
    for (k, v) in options {
        let key = k.to_ascii_lowercase();
        if key.contains("proxy") {
            return Err(Error::invalid(
                format!("options.{k}"),
                "proxies are not supported for export destinations",
            ));
        }
        if !(key.contains("endpoint") || key.ends_with("_url") || key.contains("authority")) {
            continue;
        }
        // Only http(s) URLs: under another scheme the URL parser keeps an address as an
        // opaque name (`httq://127.0.0.1` has no IP host), so it could not be judged here.
        let u = match Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                return Err(Error::invalid(
                    format!("options.{k}"),
                    format!("'{v}' is not an http:// or https:// URL"),
                ));
            }
        };
        if let Some(ip) = literal_ip(&u)
            && let Err(reason) = policy.check(ip)
        {
            return Err(Error::invalid(
                format!("options.{k}"),
                format!("'{v}' is refused: {reason} (allow it with webhooks.allow_networks)"),
            ));
        }
    }
    Ok(())
}

fn literal_ip(u: &Url) -> Option<IpAddr> {
    match u.host()? {
        Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        // `169.254.169.254..` is a name to the URL parser but spells an address
        Host::Domain(d) => d.trim_end_matches('.').parse().ok(),
    }
}

/// The local directory of a `file://` destination if it lies under one of `roots` once
/// symlinks are resolved, or why not.
pub fn allowed_dir(url: &Url, roots: &[PathBuf]) -> std::result::Result<PathBuf, String> {
    if roots.is_empty() {
        return Err(
            "file:// destinations are off on this server (its operator lists the \
             directories they may use in exports.file_roots)"
                .into(),
        );
    }
    let path = url
        .to_file_path()
        .map_err(|()| format!("'{url}' is not a local path"))?;
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("'{}' contains '..'", path.display()));
    }
    let resolved = resolve_existing(&path)?;
    for root in roots {
        let Ok(root) = root.canonicalize() else {
            continue; // a root that does not exist allows nothing
        };
        if resolved.starts_with(&root) {
            return Ok(resolved);
        }
    }
    let listed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(format!(
        "'{}' is not under an allowed directory (exports.file_roots: {})",
        path.display(),
        listed.join(", ")
    ))
}

/// `path` with its longest existing ancestor canonicalized (symlinks resolved) and the
/// rest appended, so a destination that does not exist yet is judged where it will be.
fn resolve_existing(path: &FsPath) -> std::result::Result<PathBuf, String> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                return Ok(rest.iter().rev().fold(real, |p, part| p.join(part)));
            }
            Err(_) => match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => return Err(format!("cannot resolve '{}'", path.display())),
            },
        }
    }
}

/// object_store's HTTP connector with the address guard: its own resolver keeps only
/// allowed addresses, IP-literal hosts are checked per request and per redirect, and no
/// proxy is used. Timeouts, `allow_http` and certificate settings of the store's client
/// options are kept.
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    pub policy: Arc<AddressPolicy>,
}

impl HttpConnector for GuardedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let get = |key| options.get_config_value(&key);
        let generic = |e: reqwest::Error| object_store::Error::Generic {
            store: "export destination",
            source: Box::new(e),
        };
        let redirect_policy = self.policy.clone();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver {
                policy: self.policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let refused = attempt
                    .url()
                    .host()
                    .and_then(|h| literal_ip_of(&h))
                    .and_then(|ip| redirect_policy.check(ip).err());
                match refused {
                    Some(reason) => attempt.error(Blocked(reason)),
                    None if attempt.previous().len() >= 10 => attempt.stop(),
                    None => attempt.follow(),
                }
            }))
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .https_only(get(ClientConfigKey::AllowHttp).as_deref() != Some("true"));
        if let Some(t) =
            get(ClientConfigKey::Timeout).and_then(|t| humantime::parse_duration(&t).ok())
        {
            builder = builder.timeout(t);
        }
        if let Some(t) =
            get(ClientConfigKey::ConnectTimeout).and_then(|t| humantime::parse_duration(&t).ok())
        {
            builder = builder.connect_timeout(t);
        }
        if get(ClientConfigKey::AllowInvalidCertificates).as_deref() == Some("true") {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(generic)?;
        Ok(HttpClient::new(Guarded {
            client,
            policy: self.policy.clone(),
        }))
    }
}

fn literal_ip_of(host: &Host<&str>) -> Option<IpAddr> {
    match host {
        Host::Ipv4(v4) => Some(IpAddr::V4(*v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(*v6)),
        Host::Domain(_) => None,
    }
}

/// The error of a refused destination.
#[derive(Debug)]
struct Blocked(String);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "destination refused: {}", self.0)
    }
}

impl std::error::Error for Blocked {}

#[derive(Debug)]
struct Guarded {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

#[async_trait::async_trait]
impl HttpService for Guarded {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let host = req.uri().host().unwrap_or_default();
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        if let Ok(ip) = ip
            && let Err(reason) = self.policy.check(ip)
        {
            return Err(HttpError::new(HttpErrorKind::Unknown, Blocked(reason)));
        }
        match self.client.call(req).await {
            // A refusal by the resolver or the redirect policy, said plainly and not retried
            // (reqwest's own message is "error sending request").
            Err(e) => match find_blocked(&e) {
                Some(reason) => Err(HttpError::new(HttpErrorKind::Unknown, Blocked(reason))),
                None => Err(e),
            },
            ok => ok,
        }
    }
}

/// The reason of a [`Blocked`] error anywhere in `e`'s source chain.
fn find_blocked(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(b) = err.downcast_ref::<Blocked>() {
            return Some(b.0.clone());
        }
        current = err.source();
    }
    None
}

/// Resolves with the system resolver and keeps only the addresses the policy allows.
struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            match crate::client::resolve(&policy, &host, 0).await {
                Ok(allowed) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                Err((_, message)) => Err(Box::new(Blocked(message)) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(roots: Vec<PathBuf>) -> DestinationRules {
        DestinationRules {
            policy: Arc::new(AddressPolicy::default()),
            file_roots: roots,
        }
    }

    fn err(url: &str, options: &[(&str, &str)], rules: &DestinationRules) -> String {
        let options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match open_store(&Url::parse(url).unwrap(), &options, "destination", rules) {
            Ok(_) => panic!("{url} {options:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn endpoints_in_refused_ranges_unknown_options_and_proxies_are_refused() {
        let r = rules(vec![]);
        let cases = [
            (
                "s3://b/p",
                ("aws_endpoint", "http://169.254.169.254/latest"),
                "options.aws_endpoint: 'http://169.254.169.254/latest' is refused: 169.254.169.254 is a link-local address",
            ),
            (
                "s3://b/p",
                ("aws_endpoint", "http://127.0.0.1:9000"),
                "options.aws_endpoint: 'http://127.0.0.1:9000' is refused: 127.0.0.1 is a loopback address",
            ),
            (
                "s3://b/p",
                ("aws_metadata_endpoint", "http://[::ffff:10.0.0.1]"),
                "options.aws_metadata_endpoint: 'http://[::ffff:10.0.0.1]' is refused: 10.0.0.1 is a private address",
            ),
            (
                // found by the url_check fuzz target: under a scheme that is not http(s)
                // the address was an opaque name, so it passed unjudged
                "s3://b/p",
                ("aws_endpoint", "httq://127.0.0.1:9000"),
                "options.aws_endpoint: 'httq://127.0.0.1:9000' is not an http:// or https:// URL",
            ),
            (
                // found by url_check: trailing dots make the address a name to the parser
                "s3://b/p",
                ("aws_endpoint", "http://169.254.169.254%2e%2e/"),
                "options.aws_endpoint: 'http://169.254.169.254%2e%2e/' is refused: 169.254.169.254 is a link-local address",
            ),
            (
                "s3://b/p",
                ("aws_endpoint", "127.0.0.1:9000"),
                "options.aws_endpoint: '127.0.0.1:9000' is not an http:// or https:// URL",
            ),
            (
                "gs://b/p",
                ("google_frobnicate", "x"),
                "options.google_frobnicate: 'google_frobnicate' is not an option",
            ),
            (
                "s3://b/p",
                ("aws_proxy_url", "http://proxy:3128"),
                "options.aws_proxy_url: proxies are not supported",
            ),
            (
                "ftp://h/p",
                ("aws_region", "x"),
                "destination: unsupported scheme ftp://",
            ),
        ];
        for (url, option, want) in cases {
            let got = err(url, &[option], &r);
            assert!(got.starts_with(want), "{url} {option:?}: {got}");
        }
        // allow_networks lets an operator's own endpoint through.
        let allowed = DestinationRules {
            policy: Arc::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])),
            file_roots: vec![],
        };
        let options = BTreeMap::from([
            (
                "aws_endpoint".to_string(),
                "http://127.0.0.1:9000".to_string(),
            ),
            ("aws_allow_http".to_string(), "true".to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
        ]);
        open_store(
            &Url::parse("s3://b/p").unwrap(),
            &options,
            "destination",
            &allowed,
        )
        .expect("allowed endpoint");
    }

    #[test]
    fn file_destinations_stay_under_the_operators_roots() {
        let tmp = std::env::temp_dir().join(format!("tidemark-roots-{}", std::process::id()));
        let root = tmp.join("root");
        let outside = tmp.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let link = root.join("escape");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let url = |p: &FsPath| Url::from_file_path(p).unwrap().to_string();

        let off = err(&url(&root.join("x")), &[], &rules(vec![]));
        assert!(off.contains("file:// destinations are off"), "{off}");
        let r = rules(vec![root.clone()]);
        let cases = [
            (url(&outside.join("x")), "is not under an allowed directory"),
            (url(&link.join("x")), "is not under an allowed directory"),
            (
                format!("{}/a/../../outside", url(&root)),
                "is not under an allowed directory",
            ),
            (
                "file:///etc/cron.d".to_string(),
                "is not under an allowed directory",
            ),
        ];
        for (u, want) in cases {
            let got = err(&u, &[], &r);
            assert!(got.contains(want), "{u}: {got}");
        }
        let got = err(&url(&root.join("x")), &[("aws_region", "x")], &r);
        assert!(got.contains("take no options"), "{got}");
        let (_, prefix) = open_store(
            &Url::parse(&url(&root.join("new/dir"))).unwrap(),
            &BTreeMap::new(),
            "destination",
            &r,
        )
        .expect("inside the root");
        assert_eq!(prefix, Path::default());
        assert!(root.join("new/dir").is_dir());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[tokio::test]
    async fn the_connector_refuses_blocked_hosts_at_connect_time() {
        use object_store::{ObjectStoreExt, PutPayload};
        // A name that resolves to loopback, and a loopback IP literal: both refused
        // before any connection, with the reason in the error.
        for endpoint in ["http://localhost:9", "http://127.0.0.1:9"] {
            let connector = GuardedConnector {
                policy: Arc::new(AddressPolicy::default()),
            };
            let store = object_store::aws::AmazonS3Builder::new()
                .with_url("s3://b/p")
                .with_endpoint(endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("k")
                .with_secret_access_key("s")
                .with_retry(object_store::RetryConfig {
                    max_retries: 0,
                    ..Default::default()
                })
                .with_http_connector(connector)
                .build()
                .unwrap();
            let e = store
                .put(&Path::from("x"), PutPayload::from_static(b"1"))
                .await
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains("destination refused") && e.contains("loopback"),
                "{endpoint}: {e}"
            );
        }
    }
}
