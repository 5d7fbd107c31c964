//! The URL checks of webhook subscriptions (`webhooks::checks::check_url` with the
//! delivery client's `check_url`, as the API runs them) and of export destinations
//! (`tidemark_sinks::export::open_store` under the default rules and one file root):
//! - an accepted webhook URL is http(s) with a host, no credentials, at most 2048
//!   characters, and its host, if an address in any form the URL parser reads (decimal,
//!   hex, IPv6, mapped), is one the address policy allows; a host kept as a name is not
//!   an address literal;
//! - an accepted destination has no proxy option and no endpoint-like option whose host
//!   is a refused address; a `file://` one lies under the root once symlinks are resolved;
//! - every refusal names its field (`url`, `destination` or `options.<key>`).
//!
//! An input is text: the URL on the first line, then optionally one `key=value` option
//! (the seeds in `corpus/url_check` are readable).
#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tidemark::webhooks::checks;
use tidemark_sinks::address::AddressPolicy;
use tidemark_sinks::client::{ClientOptions, SafeClient};
use tidemark_sinks::export::{DestinationRules, open_store};
use url::{Host, Url};

struct Fixture {
    client: SafeClient,
    rules: DestinationRules,
    /// The file root, canonical.
    root: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join("tidemark-fuzz-url");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("inside")).expect("root");
        let _ = std::os::unix::fs::symlink("/etc", root.join("out"));
        let root = root.canonicalize().expect("canonical root");
        Fixture {
            client: SafeClient::new(ClientOptions::default()).expect("client"),
            rules: DestinationRules {
                policy: Arc::new(AddressPolicy::default()),
                file_roots: vec![root.clone()],
            },
            root,
        }
    })
}

fn literal_ip(u: &Url) -> Option<IpAddr> {
    match u.host()? {
        Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        Host::Domain(d) => {
            let d = d.trim_end_matches('.');
            assert!(d.parse::<IpAddr>().is_err(), "address {d} kept as a name");
            None
        }
    }
}

fn check_webhook(f: &Fixture, text: &str) {
    let value = serde_json::Value::String(text.to_string());
    match checks::check_url(&value, &|u| f.client.check_url(u).map_err(|e| e.message)) {
        Ok(u) => {
            assert!(matches!(u.scheme(), "http" | "https"), "scheme of {u}");
            assert!(u.host().is_some(), "no host: {u}");
            assert!(
                u.username().is_empty() && u.password().is_none(),
                "credentials: {u}"
            );
            assert!(text.len() <= 2048);
            if let Some(ip) = literal_ip(&u) {
                assert!(
                    f.rules.policy.check(ip).is_ok(),
                    "webhook {text:?} accepted with the refused address {ip}"
                );
            }
        }
        Err(p) => {
            assert_eq!(p.field.as_deref(), Some("url"));
            assert!(!p.message.is_empty());
        }
    }
}

fn check_destination(f: &Fixture, text: &str, options: &BTreeMap<String, String>) {
    let Ok(url) = Url::parse(text) else { return };
    match open_store(&url, options, "destination", &f.rules) {
        Ok(_) => {
            for (k, v) in options {
                let k = k.to_ascii_lowercase();
                assert!(!k.contains("proxy"), "a proxy option accepted");
                let endpoint =
                    k.contains("endpoint") || k.ends_with("_url") || k.contains("authority");
                if let (true, Ok(u)) = (endpoint, Url::parse(v))
                    && let Some(ip) = literal_ip(&u)
                {
                    assert!(
                        f.rules.policy.check(ip).is_ok(),
                        "option {k}={v:?} accepted with the refused address {ip}"
                    );
                }
            }
            if url.scheme() == "file" {
                let path = url.to_file_path().expect("an accepted file URL is a path");
                let mut resolved = PathBuf::new();
                for c in path.components() {
                    resolved.push(c);
                    if let Ok(r) = resolved.canonicalize() {
                        resolved = r;
                    }
                }
                assert!(
                    resolved.starts_with(&f.root),
                    "file destination {text:?} accepted outside the root: {}",
                    resolved.display()
                );
            }
        }
        Err(tidemark_sinks::Error::Invalid { field, message }) => {
            assert!(
                field == "destination" || field.starts_with("options."),
                "refusal names {field:?}"
            );
            assert!(!message.is_empty());
        }
        Err(other) => panic!("destination {text:?} refused without a field: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    let (url, option) = text.split_once('\n').unwrap_or((text, ""));
    check_webhook(f, url);
    let options: BTreeMap<String, String> = option
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
    check_destination(f, url, &options);
});
