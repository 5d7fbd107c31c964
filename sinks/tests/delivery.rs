//! The client and an endpoint task against a real local HTTP server: SSRF refusals at
//! connect time, signatures checked by the `standardwebhooks` crate, redirects and
//! capped bodies.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use tidemark_sinks::client::{ClientOptions, FailureKind, SafeClient, blocked_examples};
use tidemark_sinks::clock::SystemClock;
use tidemark_sinks::endpoint::{Endpoint, Message, Report, Settings, Status, Target};
use tidemark_sinks::retry::RetryPolicy;
use tidemark_sinks::sign::Secret;
use tokio::sync::mpsc;

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = Router::new()
        .route(
            "/ok",
            post(move |headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push((headers, body));
                    StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/moved",
            post(|| async { (StatusCode::FOUND, [("location", "http://127.0.0.1:1/ok")]) }),
        )
        .route(
            "/big",
            post(|| async {
                (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(1 << 20)).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

fn client(allow: &[&str]) -> SafeClient {
    SafeClient::new(ClientOptions {
        allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allow_listed() {
    let (port, seen) = receiver().await;
    let strict = client(&[]);
    let body = Bytes::from_static(b"{}");
    // A hostname that resolves to 127.0.0.1, the literal, and its IPv4-mapped IPv6 form.
    for host in ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"] {
        let url = format!("http://{host}:{port}/ok").parse().unwrap();
        let f = strict
            .send(
                reqwest::Method::POST,
                &url,
                Default::default(),
                body.clone(),
            )
            .await
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Blocked, "{host}: {}", f.message);
        assert!(f.message.contains("loopback"), "{host}: {}", f.message);
    }
    // Every blocked range, as an IP literal (refused before any connection).
    for ip in blocked_examples() {
        let host = if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let url = format!("http://{host}:{port}/ok").parse().unwrap();
        let f = strict
            .send(
                reqwest::Method::POST,
                &url,
                Default::default(),
                body.clone(),
            )
            .await
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Blocked, "{ip}: {}", f.message);
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the receiver"
    );
    let e = strict
        .send(
            reqwest::Method::POST,
            &"ftp://example.com/".parse().unwrap(),
            Default::default(),
            body.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.message, "scheme ftp is not http or https");

    let open = client(&["127.0.0.0/8"]);
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("http://{host}:{port}/ok").parse().unwrap();
        let r = open
            .send(
                reqwest::Method::POST,
                &url,
                Default::default(),
                body.clone(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 204, "{host}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn redirects_are_not_followed_and_bodies_are_capped() {
    let (port, _) = receiver().await;
    let c = client(&["127.0.0.0/8"]);
    let url = format!("http://127.0.0.1:{port}/moved").parse().unwrap();
    let r = c
        .send(
            reqwest::Method::POST,
            &url,
            Default::default(),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.location.as_deref(), Some("http://127.0.0.1:1/ok"));
    let url = format!("http://127.0.0.1:{port}/big").parse().unwrap();
    let r = c
        .send(
            reqwest::Method::POST,
            &url,
            Default::default(),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.body.len()), (500, 64 * 1024));
}

#[tokio::test]
async fn endpoint_signs_every_attempt_verifiably() {
    let (port, seen) = receiver().await;
    let old = Secret::generate();
    let new = Secret::generate();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let endpoint = Endpoint::spawn(
        "wh_test".into(),
        Target {
            url: format!("http://localhost:{port}/ok").parse().unwrap(),
            method: reqwest::Method::POST,
            headers: vec![("x-team".into(), "data".into())],
            secrets: vec![new.clone(), old.clone()],
            max_in_flight: 4,
            rate_per_sec: None,
            paused: false,
        },
        Settings {
            policy: RetryPolicy::default(),
            pause_after: Duration::from_secs(3600),
        },
        client(&["127.0.0.0/8"]),
        Arc::new(SystemClock),
        tx,
        None,
    );
    // Bodies with spacing and non-ASCII text: signed and sent byte for byte.
    let bodies: Vec<String> = (0..20)
        .map(|i| format!("{{\"n\": {i},  \"name\":\"Zoë \\u00e9\"}}"))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        endpoint.send(Message {
            id: format!("msg_{i}"),
            body: Bytes::from(b.clone()),
            attempts: 0,
            not_before: None,
            tag: 7,
        });
    }
    let mut delivered = 0;
    while delivered < 20 {
        let Some(Report::Attempt(a)) = rx.recv().await else {
            panic!("no report")
        };
        assert_eq!(
            (a.status, a.attempt, a.tag, a.http_status),
            (Status::Delivered, 1, 7, Some(204))
        );
        delivered += 1;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    for (headers, body) in seen.iter() {
        let id = headers["webhook-id"].to_str().unwrap();
        let i: usize = id.trim_start_matches("msg_").parse().unwrap();
        assert_eq!(body, bodies[i].as_bytes());
        assert_eq!(headers["x-team"], "data");
        assert_eq!(headers["content-type"], "application/json");
        // Both the rotated-out and the new secret verify (space-separated signatures).
        for secret in [&old, &new] {
            standardwebhooks::Webhook::new(&secret.expose())
                .unwrap()
                .verify(body, headers)
                .unwrap();
        }
        let other = Secret::generate();
        assert!(
            standardwebhooks::Webhook::new(&other.expose())
                .unwrap()
                .verify(body, headers)
                .is_err()
        );
    }
}
