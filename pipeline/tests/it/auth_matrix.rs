//! The auth matrix (issue 16): every endpoint x every key (none, malformed, revoked,
//! ingest, read, admin of the path's environment, admin of another environment),
//! asserting the status. [`ENDPOINTS`] is the one table of who may call what; the README's
//! API reference lists the same rows (checked here too).

use std::collections::BTreeMap;

use serde_json::json;

use crate::harness::{Backend, TestStore, client};

/// Which keys an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key (health, readiness, metrics).
    Public,
    /// An ingest or admin key of the path's environment.
    Ingest,
    /// A read or admin key of the path's environment.
    Read,
    /// An admin key of the path's environment.
    Admin,
    /// Any valid key, of any environment and role.
    AnyKey,
    /// No key: a signed, expiring link that the list answer gives.
    Link,
    /// An ingest or admin key of any environment: the SDK endpoints, whose path names
    /// none (the key's environment is written to).
    SdkKey,
}

impl Access {
    /// As the README's API reference writes it.
    fn readme(self) -> &'static str {
        match self {
            Access::Public => "none",
            Access::Ingest => "ingest, admin",
            Access::Read => "read, admin",
            Access::Admin => "admin",
            Access::AnyKey => "any key",
            Access::Link => "signed link",
            Access::SdkKey => "ingest, admin (of the key's environment)",
        }
    }
}

use Access::*;

/// Every route of `tidemark serve`: method, path, who may call it.
pub const ENDPOINTS: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
    ("GET", "/console/", Public),
    ("POST", "/v1/{env}/events", Ingest),
    ("POST", "/v1/batch", SdkKey),
    ("POST", "/v1/track", SdkKey),
    ("POST", "/v1/identify", SdkKey),
    ("POST", "/v1/page", SdkKey),
    ("POST", "/v1/screen", SdkKey),
    ("POST", "/v1/group", SdkKey),
    ("POST", "/v1/alias", SdkKey),
    ("POST", "/batch/", SdkKey),
    ("POST", "/capture/", SdkKey),
    ("POST", "/e/", SdkKey),
    ("POST", "/i/v0/e/", SdkKey),
    ("POST", "/v1/{env}/query", Read),
    ("GET", "/v1/{env}/events/stream", Read),
    ("GET", "/v1/whoami", AnyKey),
    ("GET", "/v1/{env}/keys", Admin),
    ("POST", "/v1/{env}/keys", Admin),
    ("DELETE", "/v1/{env}/keys/{id}", Admin),
    ("GET", "/v1/{env}/users", Read),
    ("GET", "/v1/{env}/users/{id}", Read),
    ("PUT", "/v1/{env}/users/{id}", Ingest),
    ("DELETE", "/v1/{env}/users/{id}", Admin),
    ("POST", "/v1/{env}/users:batch", Ingest),
    ("POST", "/v1/{env}/imports", Ingest),
    ("GET", "/v1/{env}/fields", Read),
    ("POST", "/v1/{env}/fields", Admin),
    ("DELETE", "/v1/{env}/fields/{name}", Admin),
    ("GET", "/v1/{env}/segments", Read),
    ("POST", "/v1/{env}/segments", Admin),
    ("POST", "/v1/{env}/segments:preview", Read),
    ("GET", "/v1/{env}/segments/{id}", Read),
    ("PUT", "/v1/{env}/segments/{id}", Admin),
    ("DELETE", "/v1/{env}/segments/{id}", Admin),
    ("GET", "/v1/{env}/segments/{id}/members", Read),
    ("GET", "/v1/{env}/webhooks", Admin),
    ("POST", "/v1/{env}/webhooks", Admin),
    ("GET", "/v1/{env}/webhooks/{id}", Admin),
    ("PATCH", "/v1/{env}/webhooks/{id}", Admin),
    ("DELETE", "/v1/{env}/webhooks/{id}", Admin),
    ("POST", "/v1/{env}/webhooks/{id}/pause", Admin),
    ("POST", "/v1/{env}/webhooks/{id}/resume", Admin),
    ("POST", "/v1/{env}/webhooks/{id}/test", Admin),
    ("POST", "/v1/{env}/webhooks/{id}/recover", Admin),
    ("POST", "/v1/{env}/webhooks/{id}/rotate-secret", Admin),
    ("GET", "/v1/{env}/webhooks/{id}/deliveries", Admin),
    ("GET", "/v1/{env}/analytics/batched", Read),
    ("GET", "/v1/{env}/analytics/batched/{file}", Link),
    ("GET", "/v1/{env}/exports", Admin),
    ("POST", "/v1/{env}/exports", Admin),
    ("GET", "/v1/{env}/exports/{id}", Admin),
    ("DELETE", "/v1/{env}/exports/{id}", Admin),
    ("GET", "/v1/{env}/exports/{id}/status", Admin),
    ("POST", "/v1/{env}/exports/{id}/pause", Admin),
    ("POST", "/v1/{env}/exports/{id}/resume", Admin),
    ("POST", "/v1/{env}/exports/{id}/run", Admin),
    ("POST", "/v1/{env}/exports/{id}/backfill", Admin),
    ("GET", "/v1/{env}/flows", Admin),
    ("POST", "/v1/{env}/flows", Admin),
    ("GET", "/v1/{env}/flows/{id}", Admin),
    ("PUT", "/v1/{env}/flows/{id}", Admin),
    ("DELETE", "/v1/{env}/flows/{id}", Admin),
    ("POST", "/v1/{env}/flows/{id}/publish", Admin),
    ("POST", "/v1/{env}/flows/{id}/start", Admin),
    ("POST", "/v1/{env}/flows/{id}/preview", Admin),
    ("POST", "/v1/{env}/flows/{id}/retry", Admin),
    ("POST", "/v1/{env}/flows/{id}/pause", Admin),
    ("POST", "/v1/{env}/flows/{id}/resume", Admin),
    ("GET", "/v1/{env}/flows/{id}/runs", Admin),
    ("GET", "/v1/{env}/flows/{id}/runs/{run}", Admin),
    ("POST", "/v1/{env}/flows/{id}/runs/{run}/cancel", Admin),
    ("POST", "/v1/{env}/flows/{id}/runs/{run}/retry", Admin),
];

/// The keys tried on every endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Missing,
    Malformed,
    Revoked,
    Ingest,
    Read,
    Admin,
    OtherEnvAdmin,
}

const KEYS: [Key; 7] = [
    Key::Missing,
    Key::Malformed,
    Key::Revoked,
    Key::Ingest,
    Key::Read,
    Key::Admin,
    Key::OtherEnvAdmin,
];

/// What the status must be: exactly `Some(code)`, or `None` for "got past auth" (neither
/// 401 nor 403: the handler's own answer).
fn expected(access: Access, key: Key) -> Option<u16> {
    let allowed = match (access, key) {
        (Public, _) => return None,
        // A download link is checked by its signature; a key neither helps nor hurts.
        (Link, _) => return Some(403),
        (_, Key::Missing | Key::Malformed | Key::Revoked) => return Some(401),
        (AnyKey, _) => return None,
        (SdkKey, k) => k != Key::Read,
        (_, Key::OtherEnvAdmin) => return Some(403),
        (_, Key::Admin) => true,
        (Ingest, k) => k == Key::Ingest,
        (Read, k) => k == Key::Read,
        (Admin, _) => false,
    };
    if allowed { None } else { Some(403) }
}

/// A body the endpoint reads (auth is checked first, so any will do).
fn body_for(method: &str, path: &str) -> Option<(&'static str, String)> {
    match method {
        "GET" | "DELETE" => None,
        _ if path.ends_with("/imports") => Some(("text/csv", "id\nx\n".into())),
        _ if path.ends_with("/query") => Some((
            "application/json",
            json!({"sql": "SELECT 1 AS one"}).to_string(),
        )),
        _ if path.ends_with("/events") => Some((
            "application/json",
            json!([{"event_name": "auth-matrix", "user_id": "m"}]).to_string(),
        )),
        _ => Some(("application/json", "{}".into())),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_by_every_key() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(&[], &[]);
    let mut keys: BTreeMap<Key, Option<String>> = BTreeMap::new();
    keys.insert(Key::Missing, None);
    keys.insert(Key::Malformed, Some("Bearer tm_not-a-key".into()));
    keys.insert(Key::Ingest, Some(format!("Bearer {}", node.ingest_key())));
    keys.insert(
        Key::Admin,
        Some(format!("Bearer {}", node.admin_key.clone().unwrap())),
    );
    for (k, role, env) in [
        (Key::Read, "read", "default"),
        (Key::OtherEnvAdmin, "admin", "other"),
        (Key::Revoked, "read", "default"),
    ] {
        keys.insert(k, Some(format!("Bearer {}", ts.create_key(env, role))));
    }
    let revoked = keys[&Key::Revoked].clone().unwrap();
    ts.cli_ok(&["keys", "revoke", &revoked["Bearer tm_".len()..][..12]]);
    // The server re-reads keys every 2 s; wait until the new ones and the revocation show.
    let http = client();
    let probe = |auth: String| {
        let http = http.clone();
        let url = node.url("/v1/default/fields");
        async move {
            http.get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while probe(revoked.clone()).await != 401
        || probe(keys[&Key::Read].clone().unwrap()).await != 200
    {
        assert!(std::time::Instant::now() < deadline, "keys not refreshed");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let mut wrong = Vec::new();
    let mut tried = 0;
    for (method, path, access) in ENDPOINTS {
        let url = node.url(
            &path
                .replace("{env}", "default")
                .replace("{id}", "nope")
                .replace("{name}", "nope")
                .replace("{file}", "nope.ndjson")
                .replace("{run}", "nope"),
        );
        for key in KEYS {
            let mut req = http.request(method.parse().unwrap(), &url);
            if let Some(auth) = &keys[&key] {
                req = req.header("authorization", auth);
            }
            if let Some((ct, body)) = body_for(method, path) {
                req = req.header("content-type", ct).body(body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            // An event stream never ends: its status is the answer.
            let endless = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "text/event-stream");
            let text = if endless {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            tried += 1;
            let ok = match expected(*access, key) {
                Some(code) => status == code,
                None => status != 401 && status != 403 && status < 500,
            };
            // Every refusal is JSON that says what was wrong.
            let explained = status < 400
                || serde_json::from_str::<serde_json::Value>(&text)
                    .is_ok_and(|v| v["message"].as_str().is_some_and(|m| !m.is_empty()));
            if !ok || !explained {
                wrong.push(format!(
                    "{method} {path} with {key:?}: {status} (want {:?}) {text}",
                    expected(*access, key)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {tried}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(tried, ENDPOINTS.len() * KEYS.len());
    eprintln!(
        "auth matrix: {tried} requests, {} endpoints x {} keys",
        ENDPOINTS.len(),
        KEYS.len()
    );
}

/// The README's API reference (between `<!-- api-reference -->` markers) lists exactly
/// [`ENDPOINTS`].
#[test]
fn the_readme_lists_the_same_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("<!-- api-reference -->")
        .nth(1)
        .expect("README has an <!-- api-reference --> section");
    let rows: Vec<(String, String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect();
            (cells[0].clone(), cells[1].clone(), cells[2].clone())
        })
        .collect();
    let want: Vec<(String, String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), a.readme().to_string()))
        .collect();
    assert_eq!(rows, want);
}

/// The keys API: whoami, list (no secrets), create (the key once, working at once),
/// revoke (refused at once), another environment's key is not found, bad roles named.
#[tokio::test(flavor = "multi_thread")]
async fn keys_over_http() {
    use crate::harness::call;
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(&[], &[]);
    let admin = node.admin_key.clone().unwrap();
    let other = ts.create_key("other", "read");
    let url = |p: &str| node.url(p);
    let (s, me) = call("GET", &url("/v1/whoami"), &admin, None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["environment"], "default");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["key_id"].as_str().unwrap(), &admin["tm_".len()..][..12]);

    let (s, made) = call(
        "POST",
        &url("/v1/default/keys"),
        &admin,
        Some(json!({"role": "read"})),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    let (s, me) = call("GET", &url("/v1/whoami"), &key, None).await;
    assert_eq!((s, me["role"].as_str()), (200, Some("read")), "{me}");
    let (_, list) = call("GET", &url("/v1/default/keys"), &admin, None).await;
    let text = list.to_string();
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "admin, ingest, the new read key: {list}");
    assert!(ids.contains(&made["id"].as_str().unwrap()));
    assert!(
        !ids.contains(&&other["tm_".len()..][..12]),
        "another environment's key listed"
    );
    assert!(
        !text.contains("secret") && !text.contains(&key[16..]),
        "{text}"
    );
    assert_eq!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["current"] == true)
            .count(),
        1
    );

    for (body, msg) in [
        (
            json!({"role": "owner"}),
            "role: 'owner' is not one of ingest, read, admin",
        ),
        (json!({}), "role"),
        (json!({"role": "read", "env": "x"}), "env"),
    ] {
        let (s, b) = call("POST", &url("/v1/default/keys"), &admin, Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(b["message"].as_str().unwrap().contains(msg), "{body}: {b}");
    }
    let other_id = &other["tm_".len()..][..12];
    let (s, b) = call(
        "DELETE",
        &url(&format!("/v1/default/keys/{other_id}")),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("in environment 'default'"),
        "{b}"
    );
    let (s, _) = call("GET", &url("/v1/whoami"), &other, None).await;
    assert_eq!(s, 200, "the other environment's key still works");

    let id = made["id"].as_str().unwrap();
    let (s, b) = call(
        "DELETE",
        &url(&format!("/v1/default/keys/{id}")),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["revoked"]["revoked_at"].is_string(), "{b}");
    let (s, _) = call("GET", &url("/v1/whoami"), &key, None).await;
    assert_eq!(s, 401, "a revoked key is refused at once on this node");
    let (s, _) = call("GET", &url("/v1/whoami"), "tm_nope", None).await;
    assert_eq!(s, 401);
    node.terminate();
}
