//! The HTTPS export destination: one POST per file, signed like a webhook, retried within
//! a run as [`crate::delivery::decide`] says (the export's own backoff retries the window
//! later).

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::format::sha256_hex;
use crate::client::SafeClient;
use crate::delivery::{Attempted, Status, decide};
use crate::retry::{RetryPolicy, judge, judge_failure};
use crate::sign::Secret;
use crate::{Error, Result};

/// An HTTPS endpoint that receives one signed POST per file.
#[derive(Clone)]
pub struct HttpTarget {
    pub url: Url,
    pub headers: HeaderMap,
    pub secrets: Vec<Secret>,
    pub client: SafeClient,
    /// Attempts within one run; the export's own backoff retries the window later.
    pub retry: RetryPolicy,
}

/// Longest wait between two attempts of one run (a longer `Retry-After` is cut to this).
const MAX_WAIT: Duration = Duration::from_secs(300);

impl HttpTarget {
    /// The headers of one attempt: the target's own, the content type, the file name and
    /// the Standard Webhooks signature of `id` at `at` (seconds).
    fn headers(
        &self,
        name: &str,
        id: &str,
        at: i64,
        body: &[u8],
        content_type: &str,
    ) -> Result<HeaderMap> {
        let mut headers = self.headers.clone();
        let ct = HeaderValue::from_str(content_type)
            .map_err(|e| Error::Export(format!("content type {content_type:?}: {e}")))?;
        headers.insert(CONTENT_TYPE, ct);
        if let Ok(v) = HeaderValue::from_str(name) {
            headers.insert(HeaderName::from_static("tidemark-export-file"), v);
        }
        crate::sign::set_headers(&mut headers, &self.secrets, id, at, body);
        Ok(headers)
    }

    /// POSTs one file, signed like a webhook, until it is delivered or
    /// [`decide`] says it failed (410 Gone, or no attempt left). The `webhook-id` is
    /// derived from the file name, so a re-sent file carries the same id and receivers can
    /// de-duplicate.
    pub(super) async fn post(&self, name: &str, bytes: Bytes, content_type: &str) -> Result<()> {
        let id = format!("exp_{}", &sha256_hex(name.as_bytes())[..32]);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let at = chrono::Utc::now();
            let headers = self.headers(name, &id, at.timestamp(), &bytes, content_type)?;
            let verdict = match self
                .client
                .send(http::Method::POST, &self.url, headers, bytes.clone())
                .await
            {
                Ok(r) => judge(&r, at),
                Err(f) => judge_failure(&f),
            };
            // The export's own schedule pauses a failing export, not this loop.
            let attempted = Attempted {
                at,
                attempts,
                failing_since: None,
                paused: true,
                jitter: rand::random::<f64>(),
            };
            let d = decide(verdict, attempted, &self.retry, Duration::MAX);
            match (d.status, d.next_attempt_at) {
                (Status::Delivered, _) => return Ok(()),
                (Status::Retrying, Some(next)) => {
                    let wait = (next - at).to_std().unwrap_or_default().min(MAX_WAIT);
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    return Err(Error::Export(format!(
                        "POST {name} to {}: {} after {attempts} attempt(s)",
                        self.url,
                        d.error.unwrap_or_default()
                    )));
                }
            }
        }
    }
}
