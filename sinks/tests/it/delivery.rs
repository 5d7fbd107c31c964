//! The client and an endpoint task against a real local HTTP server: SSRF refusals at
//! connect time, signatures checked by the `standardwebhooks` crate, redirects and
//! capped bodies, TLS verification and connection reuse.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use tidemark_sinks::address::blocked_examples;
use tidemark_sinks::client::{ClientOptions, Failure, FailureKind, Response, SafeClient};
use tidemark_sinks::clock::SystemClock;
use tidemark_sinks::retry::RetryPolicy;
use tidemark_sinks::sign::Secret;
use tidemark_sinks::webhook::{Endpoint, Message, Report, Settings, Status, Target};
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

/// A POST with no extra headers.
async fn post_to(c: &SafeClient, url: &url::Url, body: Bytes) -> Result<Response, Failure> {
    c.send(reqwest::Method::POST, url, Default::default(), body)
        .await
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allow_listed() {
    let (port, seen) = receiver().await;
    let strict = client(&[]);
    let body = Bytes::from_static(b"{}");
    // A hostname that resolves to 127.0.0.1, the literal, and its IPv4-mapped IPv6 form.
    for host in ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"] {
        let url = format!("http://{host}:{port}/ok").parse().unwrap();
        let f = post_to(&strict, &url, body.clone()).await.unwrap_err();
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
        let f = post_to(&strict, &url, body.clone()).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Blocked, "{ip}: {}", f.message);
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the receiver"
    );
    let e = post_to(
        &strict,
        &"ftp://example.com/".parse().unwrap(),
        body.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.message, "scheme ftp is not http or https");

    let open = client(&["127.0.0.0/8"]);
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("http://{host}:{port}/ok").parse().unwrap();
        let r = post_to(&open, &url, body.clone()).await.unwrap();
        assert_eq!(r.status, 204, "{host}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn redirects_are_not_followed_and_bodies_are_capped() {
    let (port, _) = receiver().await;
    let c = client(&["127.0.0.0/8"]);
    let url = format!("http://127.0.0.1:{port}/moved").parse().unwrap();
    let r = post_to(&c, &url, Bytes::new()).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.location.as_deref(), Some("http://127.0.0.1:1/ok"));
    let url = format!("http://127.0.0.1:{port}/big").parse().unwrap();
    let r = post_to(&c, &url, Bytes::new()).await.unwrap();
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

// A private CA and a leaf certificate for localhost and 127.0.0.1 (valid until 2126),
// made with openssl for these tests only.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBnjCCAUOgAwIBAgIUOeYcZ7O9/VEwsiktuT6tYHshjjIwCgYIKoZIzj0EAwIw\nGzEZMBcGA1UEAwwQdGlkZW1hcmsgdGVzdCBDQTAgFw0yNjExMjkxMzQ0MzNaGA8y\nMTI2MTEwNTEzNDQzM1owGzEZMBcGA1UEAwwQdGlkZW1hcmsgdGVzdCBDQTBZMBMG\nByqGSM49AgEGCCqGSM49AwEHA0IABA6/QhA/qQMLDkmagx1NlA+kroNO+0IQeGRi\ndotQ9TUNNtJ/m+JZ13gB7U2vmW8wLhXcXSZhCin8Rbld5Mxk1qajYzBhMB0GA1Ud\nDgQWBBTSxf1GeK6z8rsXt5m/7JI002qtWDAfBgNVHSMEGDAWgBTSxf1GeK6z8rsX\nt5m/7JI002qtWDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAKBggq\nhkjOPQQDAgNJADBGAiEAlRQ8kNT+VCpXpfDBYn9KOTM+WUT7wATVekjoBSldEAwC\nIQCgamBA7yP6VpUPdvlnkoeIC3HoLxMDqsnpS3pA0fHQwA==\n-----END CERTIFICATE-----";
const TEST_LEAF: &str = "-----BEGIN CERTIFICATE-----\nMIIBsTCCAVegAwIBAgIUdiUEJnSjDrNJVTdDVGUw9S+ZVhAwCgYIKoZIzj0EAwIw\nGzEZMBcGA1UEAwwQdGlkZW1hcmsgdGVzdCBDQTAgFw0yNjExMjkxMzQ0MzNaGA8y\nMTI2MTEwNTEzNDQzM1owFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0C\nAQYIKoZIzj0DAQcDQgAEcoYqrA+qzHbP3m2HKMWtLms3BKoNaVGwFnr9gne1dDmr\no3yAGWWXNEOz4Ivo6bk2lZHhiIKsCfvU5eZqV2auk6N+MHwwGgYDVR0RBBMwEYIJ\nbG9jYWxob3N0hwR/AAABMAkGA1UdEwQCMAAwEwYDVR0lBAwwCgYIKwYBBQUHAwEw\nHQYDVR0OBBYEFL2pGwGUzHaGiw7jNI81I/pdCHO1MB8GA1UdIwQYMBaAFNLF/UZ4\nrrPyuxe3mb/skjTTaq1YMAoGCCqGSM49BAMCA0gAMEUCIQC1ZuL5Yk51RnXGEtGo\nnR/2GygmOe0CQT0WY/HpPBso/QIgDB5pwioePOEqbCZsp6LEWOoUtd5c7LqnJwHO\nt6SM3bk=\n-----END CERTIFICATE-----";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCsxvKqaR49X6tVj4\nvlSs01uoQSbv62D6vXtrHlwuzSihRANCAARyhiqsD6rMds/ebYcoxa0uazcEqg1p\nUbAWev2Cd7V0OaujfIAZZZc0Q7Pgi+jpuTaVkeGIgqwJ+9Tl5mpXZq6T\n-----END PRIVATE KEY-----";

/// An HTTP/1.1 server (TLS with the test certificate when `tls`) answering 200 with the
/// request's Host header; counts the connections it accepted.
async fn plain_or_tls_server(tls: bool, keep_alive: bool) -> (u16, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(TEST_LEAF.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let host = req.headers()["host"].to_str().unwrap_or("").to_string();
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from(host)),
                    ))
                });
                let server = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .clone();
                if tls {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = server
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                } else {
                    let _ = server
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                }
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn https_is_verified_and_connections_are_reused() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let (port, accepted) = plain_or_tls_server(true, true).await;
    let url: url::Url = format!("https://localhost:{port}/hook?x=1")
        .parse()
        .unwrap();
    // Only the web PKI is trusted: the private CA's certificate is refused.
    let f = post_to(&client(&["127.0.0.0/8"]), &url, Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::Connect, "{}", f.message);
    assert!(
        f.message.contains("invalid peer certificate"),
        "{}",
        f.message
    );
    // Trusting the CA: by name and by IP (both in the certificate), one connection each
    // however many requests go one after another.
    let trusting = SafeClient::new(ClientOptions {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        extra_roots: vec![CertificateDer::from_pem_slice(TEST_CA.as_bytes()).unwrap()],
        ..Default::default()
    })
    .unwrap();
    let before = accepted.load(Ordering::SeqCst);
    for host in ["localhost", "127.0.0.1"] {
        let url: url::Url = format!("https://{host}:{port}/hook").parse().unwrap();
        for _ in 0..5 {
            let r = post_to(&trusting, &url, Bytes::from_static(b"{}"))
                .await
                .unwrap();
            assert_eq!(
                (r.status, &r.body[..]),
                (200, format!("{host}:{port}").as_bytes())
            );
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst) - before, 2);
    // A server that closes every connection after its response: each request gets a new
    // one and none fails.
    let (port, accepted) = plain_or_tls_server(false, false).await;
    let url: url::Url = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
    for _ in 0..5 {
        let r = post_to(&trusting, &url, Bytes::new()).await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}
