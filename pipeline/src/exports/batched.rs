//! The batched pull API: events by `received_at` hour, each closed hour with download
//! links that work without an API key until they expire.
//!
//! A link names the environment, the hour, the format and the `events` version the
//! listing saw, and carries `expires` and an HMAC-SHA256 token over all of them under a
//! key derived from the master key. The file is rendered from `events` as of that
//! version, ordered by `(received_at, event_id)`: downloading it twice gives the same
//! bytes, whatever was committed or compacted in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::TimestampMicrosecondType;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use datafusion::prelude::{SessionContext, col, lit};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::export::Format;

use super::Context;
use super::run::{FileOptions, write_files};
use super::source::{EVENT_COLUMNS, plan};
use super::window::{Interval, sql_timestamp};
use crate::jobs::inputs::events_at;
use crate::storage::{Store, events_table};
use crate::{Error, Result};

pub const MAX_RANGE_DAYS: i64 = 30;
const TOKEN_PURPOSE: &str = "tidemark batched downloads v1";

/// An hour's key: `YYYY-MM-DDTHH` of the hour's end, UTC.
pub fn hour_key(start: DateTime<Utc>) -> String {
    (start + Duration::hours(1))
        .format("%Y-%m-%dT%H")
        .to_string()
}

/// The hour (its start) a key names.
pub fn parse_hour_key(key: &str) -> Option<DateTime<Utc>> {
    let end = NaiveDateTime::parse_from_str(&format!("{key}:00:00"), "%Y-%m-%dT%H:%M:%S").ok()?;
    Some(Utc.from_utc_datetime(&end) - Duration::hours(1))
}

/// A `from` / `to` parameter: RFC 3339, `YYYY-MM-DDTHH` (an hour key: the hour's end) or
/// `YYYY-MM-DD` (midnight UTC).
pub fn parse_bound(text: &str, field: &str) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    if let Some(start) = parse_hour_key(text) {
        return Ok(start + Duration::hours(1));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(Utc.from_utc_datetime(&t));
    }
    Err(Error::Invalid(format!(
        "{field}: {text:?} is not a time; use RFC 3339 (2026-11-29T10:00:00Z), an hour \
         (2026-11-29T10) or a date (2026-11-29)"
    )))
}

/// `from` rounded down and `to` rounded up to hours, at most 30 days apart.
pub fn hour_range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let (from, to) = (Interval::Hour.floor(from), Interval::Hour.ceil(to));
    if to <= from {
        return Err(Error::Invalid("to: must be after from".into()));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(Error::Invalid(format!(
            "to: the range from {from} to {to} is longer than {MAX_RANGE_DAYS} days; \
             ask for at most {MAX_RANGE_DAYS} days at a time"
        )));
    }
    Ok((from, to))
}

/// What a download link names.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub environment: String,
    pub hour: DateTime<Utc>,
    pub format: Format,
    pub version: i64,
    pub expires: i64,
}

impl Link {
    fn message(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.environment,
            hour_key(self.hour),
            self.format.name(),
            self.version,
            self.expires
        )
    }

    fn mac(&self, key: &MasterKey) -> Hmac<Sha256> {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.derive(TOKEN_PURPOSE)) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(self.message().as_bytes());
        mac
    }

    pub fn token(&self, key: &MasterKey) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(key).finalize().into_bytes())
    }

    /// The file name in the URL path: `{hour key}.{ext}`.
    pub fn file(&self) -> String {
        format!("{}.{}", hour_key(self.hour), self.format.extension())
    }

    /// The path and query of the link.
    pub fn path(&self, key: &MasterKey) -> String {
        format!(
            "/v1/{}/analytics/batched/{}?version={}&expires={}&token={}",
            self.environment,
            self.file(),
            self.version,
            self.expires,
            self.token(key)
        )
    }

    /// Checks the token (constant time) and then the expiry.
    pub fn verify(
        &self,
        token: &str,
        key: &MasterKey,
        now: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        let given = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| LinkError::Invalid)?;
        self.mac(key)
            .verify_slice(&given)
            .map_err(|_| LinkError::Invalid)?;
        if now.timestamp() >= self.expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    Invalid,
    Expired,
}

/// Parses `{hour key}.{ext}` of a download path.
pub fn parse_file(file: &str) -> Option<(DateTime<Utc>, Format)> {
    let (key, ext) = file.split_once('.')?;
    let format = [Format::Parquet, Format::Ndjson, Format::Csv]
        .into_iter()
        .find(|f| f.extension() == ext)?;
    Some((parse_hour_key(key)?, format))
}

/// `events` as of `version`, one environment's rows, as table `events`.
async fn session_at(store: &Store, environment: &str, version: i64) -> Result<SessionContext> {
    let ctx = crate::jobs::inputs::session(None)?;
    super::run::tune(&ctx);
    if version < 0 {
        let empty = datafusion::catalog::MemTable::try_new(events_table::schema(), vec![vec![]])?;
        ctx.register_table("events", Arc::new(empty))?;
        return Ok(ctx);
    }
    let table = events_table::open_or_create(store).await?;
    let table = events_at(&table, version).await.map_err(|e| match e {
        Error::Delta(e) => Error::NotFound(format!(
            "events version {version} is no longer available ({e}); list the hours again"
        )),
        e => e,
    })?;
    table.update_datafusion_session(&ctx.state())?;
    let view = ctx
        .read_table(table.table_provider().await?)?
        .filter(col(events_table::col::ENVIRONMENT).eq(lit(environment)))?
        .into_view();
    ctx.register_table("events", view)?;
    Ok(ctx)
}

/// The listing of `GET /v1/{env}/analytics/batched`: each closed hour of `[from, to)`
/// with its links (none for an hour without events).
pub async fn list(
    store: &Store,
    ctx: &Context,
    environment: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    format: Format,
    base_url: &str,
    now: DateTime<Utc>,
) -> Result<Value> {
    let key = ctx.key()?;
    let closed_until = Interval::Hour.floor(now - ctx.close_delay());
    let until = to.min(closed_until);
    let version = crate::webhooks::follow::Follower::new(store.clone())?
        .head(-1)
        .await?;
    let mut counts: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    if from < until && version >= 0 {
        let session = session_at(store, environment, version).await?;
        let sql = format!(
            "SELECT date_trunc('hour', received_at) AS h, count(*) AS n FROM events \
             WHERE received_at >= {} AND received_at < {} GROUP BY 1",
            sql_timestamp(from),
            sql_timestamp(until)
        );
        for batch in plan(&session, &sql).await?.collect().await? {
            let hours = batch.column(0).as_primitive::<TimestampMicrosecondType>();
            let n = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| Error::Invalid("count is not Int64".into()))?;
            for i in 0..batch.num_rows() {
                if let Some(t) = DateTime::from_timestamp_micros(hours.value(i)) {
                    counts.insert(t, n.value(i));
                }
            }
        }
    }
    let ttl = Duration::from_std(ctx.config.download_ttl).unwrap_or(Duration::minutes(15));
    let expires = (now + ttl).timestamp();
    let mut hours = serde_json::Map::new();
    let mut rows = serde_json::Map::new();
    let mut h = from;
    while h < until {
        let n = counts.get(&h).copied().unwrap_or(0);
        let links: Vec<Value> = if n > 0 {
            let link = Link {
                environment: environment.to_string(),
                hour: h,
                format,
                version,
                expires,
            };
            vec![Value::String(format!("{base_url}{}", link.path(key)))]
        } else {
            Vec::new()
        };
        hours.insert(hour_key(h), Value::Array(links));
        rows.insert(hour_key(h), json!(n));
        h += Duration::hours(1);
    }
    Ok(json!({
        "environment": environment,
        "format": format.name(),
        "from": from,
        "to": to,
        "closed_until": closed_until,
        "expires_at": DateTime::from_timestamp(expires, 0),
        "hours": hours,
        "rows": rows,
    }))
}

/// The bytes of one hour's file (the download behind a link).
pub async fn render(store: &Store, link: &Link) -> Result<Bytes> {
    let session = session_at(store, &link.environment, link.version).await?;
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE received_at >= {} AND received_at < {} \
         ORDER BY received_at, event_id",
        sql_timestamp(link.hour),
        sql_timestamp(link.hour + Duration::hours(1))
    );
    let df = plan(&session, &sql).await?;
    let options = FileOptions {
        max_rows_per_file: u64::MAX,
        encode: Default::default(),
    };
    let mut out = None;
    write_files(df, link.format, &options, |_, _, bytes| {
        out = Some(bytes);
        async { Ok(()) }
    })
    .await?;
    match out {
        Some(b) => Ok(b),
        // No rows (an erased hour): an empty file of the format.
        None => {
            let schema = plan(&session, &sql).await?.schema().inner().clone();
            tidemark_sinks::export::FileWriter::new(link.format, schema, &Default::default())
                .and_then(|w| w.finish())
                .map_err(|e| Error::Unavailable(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn hour_keys_name_the_hours_end() {
        assert_eq!(hour_key(t("2026-11-29T10:00:00Z")), "2026-11-29T11");
        assert_eq!(hour_key(t("2026-11-29T23:00:00Z")), "2026-11-30T00");
        assert_eq!(
            parse_hour_key("2026-11-30T00"),
            Some(t("2026-11-29T23:00:00Z"))
        );
        assert_eq!(parse_hour_key("2026-11-30T24"), None);
        assert_eq!(
            parse_file("2026-11-29T11.ndjson.gz"),
            Some((t("2026-11-29T10:00:00Z"), Format::Ndjson))
        );
        assert_eq!(parse_file("2026-11-29T11.xml"), None);
    }

    #[test]
    fn ranges_round_outward_and_stop_at_30_days() {
        let (f, to) = hour_range(t("2026-11-29T10:59:59Z"), t("2026-11-29T12:00:01Z")).expect("ok");
        assert_eq!(
            (f, to),
            (t("2026-11-29T10:00:00Z"), t("2026-11-29T13:00:00Z"))
        );
        assert!(hour_range(t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z")).is_ok());
        let e = hour_range(t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:01Z")).unwrap_err();
        assert!(e.to_string().starts_with("to: the range"), "{e}");
        let e = hour_range(t("2026-11-02T00:00:00Z"), t("2026-11-01T00:00:00Z")).unwrap_err();
        assert_eq!(e.to_string(), "to: must be after from");
        assert_eq!(
            parse_bound("2026-11-29T11", "from").expect("key"),
            t("2026-11-29T11:00:00Z")
        );
        assert_eq!(
            parse_bound("2026-11-29", "from").expect("date"),
            t("2026-11-29T00:00:00Z")
        );
        let e = parse_bound("yesterday", "from").unwrap_err().to_string();
        assert!(e.starts_with("from: \"yesterday\" is not a time"), "{e}");
    }

    #[test]
    fn tokens_cover_every_part_and_expire() {
        let key = MasterKey::parse(
            &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
            "k",
        )
        .expect("key");
        let now = t("2026-11-29T12:00:00Z");
        let link = Link {
            environment: "prod".into(),
            hour: t("2026-11-29T10:00:00Z"),
            format: Format::Csv,
            version: 12,
            expires: now.timestamp() + 900,
        };
        let token = link.token(&key);
        assert_eq!(link.verify(&token, &key, now), Ok(()));
        let changed = [
            Link {
                environment: "staging".into(),
                ..link.clone()
            },
            Link {
                hour: t("2026-11-29T11:00:00Z"),
                ..link.clone()
            },
            Link {
                format: Format::Parquet,
                ..link.clone()
            },
            Link {
                version: 13,
                ..link.clone()
            },
            Link {
                expires: link.expires + 3600,
                ..link.clone()
            },
        ];
        for other in changed {
            assert_eq!(
                other.verify(&token, &key, now),
                Err(LinkError::Invalid),
                "{other:?}"
            );
        }
        assert_eq!(
            link.verify("not base64!", &key, now),
            Err(LinkError::Invalid)
        );
        let other_key = MasterKey::parse(
            &base64::engine::general_purpose::STANDARD.encode([8u8; 32]),
            "k",
        )
        .expect("key");
        assert_eq!(
            link.verify(&token, &other_key, now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            link.verify(&token, &key, now + Duration::seconds(900)),
            Err(LinkError::Expired)
        );
    }
}
