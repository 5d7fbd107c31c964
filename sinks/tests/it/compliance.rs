//! The compliance test every sink passes (Vector's `run_and_assert_sink_compliance`):
//! each sink delivers one payload to a real local receiver that answers from a script,
//! and the test asserts that the payload is acked only after a 2xx, that it is retried
//! exactly when `retry::judge` classifies the answer as retryable (5xx, 429 with its
//! `Retry-After`, timeouts, 408/409/425), that any other 4xx fails it at once, that a 410
//! stops it,
//! and that every attempt's signature verifies with the `standardwebhooks` crate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use tidemark_sinks::client::{ClientOptions, SafeClient};
use tidemark_sinks::clock::SystemClock;
use tidemark_sinks::export::{Destination, HttpTarget};
use tidemark_sinks::retry::{RetryPolicy, Verdict, judge};
use tidemark_sinks::sign::Secret;
use tidemark_sinks::webhook::{Endpoint, Message, Report, Settings, Status, Target};
use tokio::sync::mpsc;

/// One scripted answer of the receiver; after the script it answers 204.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// Answers only after the client's timeout.
    Slow,
}

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    id: String,
    verified: bool,
    status: u16,
}

#[derive(Clone)]
struct Receiver {
    script: Arc<Mutex<Vec<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    secret: Secret,
}

async fn receive(r: Receiver, headers: HeaderMap, body: Bytes) -> Response {
    let verified = standardwebhooks::Webhook::new(&r.secret.expose())
        .unwrap()
        .verify(&body, &headers)
        .is_ok();
    let answer = {
        let mut script = r.script.lock().unwrap();
        (!script.is_empty()).then(|| script.remove(0))
    };
    let status = match answer {
        None | Some(Answer::Slow) => 204,
        Some(Answer::Status(s)) => s,
        Some(Answer::TooMany) => 429,
    };
    // Recorded on arrival: a slow answer's request counts even if its client gave up.
    r.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        id: headers["webhook-id"].to_str().unwrap().to_string(),
        verified,
        status,
    });
    if let Some(Answer::Slow) = answer {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let code = StatusCode::from_u16(status).unwrap();
    match answer {
        Some(Answer::TooMany) => (code, [("retry-after", "1")], "slow down").into_response(),
        _ => (code, "answer").into_response(),
    }
}

async fn receiver(script: Vec<Answer>, secret: &Secret) -> (url::Url, Receiver) {
    let r = Receiver {
        script: Arc::new(Mutex::new(script)),
        seen: Arc::default(),
        secret: secret.clone(),
    };
    let state = r.clone();
    let app = Router::new().route(
        "/in",
        post(move |h: HeaderMap, b: Bytes| receive(state.clone(), h, b)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/in").parse().unwrap(), r)
}

/// Four attempts 10 ms apart: only a `Retry-After` makes a sink wait longer.
fn policy() -> RetryPolicy {
    let ms = Duration::from_millis(10);
    RetryPolicy {
        schedule: vec![Duration::ZERO, ms, ms, ms],
        jitter: 0.0,
    }
}

fn client() -> SafeClient {
    SafeClient::new(ClientOptions {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    NotDelivered,
}

#[derive(Debug, Clone, Copy)]
enum Sink {
    Webhook,
    ExportHttps,
}

/// Has `sink` deliver one payload to `url`; returns its outcome and when it said so.
async fn deliver(sink: Sink, url: url::Url, secret: &Secret) -> (Outcome, Instant) {
    let body = Bytes::from_static(br#"{"type":"events","events":[{"n":1}]}"#);
    match sink {
        Sink::Webhook => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let endpoint = Endpoint::spawn(
                "wh_compliance".into(),
                Target {
                    url,
                    method: reqwest::Method::POST,
                    headers: Vec::new(),
                    secrets: vec![secret.clone()],
                    max_in_flight: 1,
                    rate_per_sec: None,
                    paused: false,
                },
                Settings {
                    policy: policy(),
                    pause_after: Duration::from_secs(3600),
                },
                client(),
                Arc::new(SystemClock),
                tx,
                None,
            );
            endpoint.send(Message {
                id: "msg_compliance".into(),
                body,
                attempts: 0,
                not_before: None,
                tag: 1,
            });
            loop {
                let report = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
                let Ok(Some(Report::Attempt(a))) = report else {
                    continue;
                };
                match a.status {
                    Status::Retrying => continue,
                    Status::Delivered => return (Outcome::Delivered, Instant::now()),
                    Status::Failed | Status::Gone => {
                        return (Outcome::NotDelivered, Instant::now());
                    }
                }
            }
        }
        Sink::ExportHttps => {
            let dest = Destination::Http(Box::new(HttpTarget {
                url,
                headers: Default::default(),
                secrets: vec![secret.clone()],
                client: client(),
                retry: policy(),
            }));
            let put = dest
                .put("events/w.ndjson", body, "application/x-ndjson")
                .await;
            let outcome = match put {
                Ok(()) => Outcome::Delivered,
                Err(_) => Outcome::NotDelivered,
            };
            (outcome, Instant::now())
        }
    }
}

/// What `retry::judge` says of a bare answer with `status`.
fn classified(status: u16) -> Verdict {
    let response = tidemark_sinks::client::Response {
        status,
        retry_after: None,
        location: None,
        body: Bytes::new(),
        latency: Duration::ZERO,
    };
    judge(&response, chrono::Utc::now())
}

/// Runs `script` against `sink`: the outcome and every request the receiver saw.
async fn run(sink: Sink, script: Vec<Answer>) -> (Outcome, Instant, Vec<Seen>) {
    let secret = Secret::generate();
    let (url, r) = receiver(script, &secret).await;
    let (outcome, at) = deliver(sink, url, &secret).await;
    // Anything sent after the outcome would show up here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = r.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| s.verified),
        "{sink:?}: a signature did not verify"
    );
    let ids: Vec<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "{sink:?}: one webhook-id: {ids:?}"
    );
    (outcome, at, seen)
}

async fn compliance(sink: Sink) {
    // Delivered at once: one request, acked.
    let (outcome, _, seen) = run(sink, vec![]).await;
    assert_eq!((outcome, seen.len()), (Outcome::Delivered, 1), "{sink:?}");

    // 5xx are retried; the ack comes only after the 2xx.
    let script = vec![
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(502),
    ];
    let (outcome, acked_at, seen) = run(sink, script).await;
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![500, 503, 502, 204], "{sink:?}");
    assert_eq!(outcome, Outcome::Delivered, "{sink:?}");
    assert!(acked_at >= seen[3].at, "{sink:?}: acked before the 2xx");

    // 429 waits out its Retry-After (the policy alone would retry after 10 ms).
    let (outcome, _, seen) = run(sink, vec![Answer::TooMany]).await;
    assert_eq!((outcome, seen.len()), (Outcome::Delivered, 2), "{sink:?}");
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "{sink:?}: retried after {gap:?}"
    );

    // A timeout is retried.
    let (outcome, _, seen) = run(sink, vec![Answer::Slow]).await;
    assert_eq!((outcome, seen.len()), (Outcome::Delivered, 2), "{sink:?}");

    // Every attempt failing: not delivered, after exactly the policy's attempts.
    let script = vec![Answer::Status(500); 4];
    let (outcome, _, seen) = run(sink, script).await;
    assert_eq!(
        (outcome, seen.len()),
        (Outcome::NotDelivered, 4),
        "{sink:?}"
    );

    // Each 4xx exactly as the retry module classifies it; 410 stops the sink.
    for status in [400, 401, 404, 408, 409, 410, 413, 425, 429] {
        let (outcome, _, seen) = run(sink, vec![Answer::Status(status)]).await;
        let want = match classified(status) {
            Verdict::Retry { .. } => (Outcome::Delivered, 2),
            Verdict::Gone | Verdict::Rejected { .. } => (Outcome::NotDelivered, 1),
            Verdict::Delivered => unreachable!("{status} is not a success"),
        };
        assert_eq!((outcome, seen.len()), want, "{sink:?}: HTTP {status}");
    }
}

#[tokio::test]
async fn the_webhook_sink_complies() {
    compliance(Sink::Webhook).await;
}

#[tokio::test]
async fn the_https_export_destination_complies() {
    compliance(Sink::ExportHttps).await;
}
