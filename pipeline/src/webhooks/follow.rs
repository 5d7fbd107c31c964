//! Following `events` by version: the rows each new commit appended, read straight from
//! its Parquet files (no snapshot needed; a file that compaction later removed is still
//! there until VACUUM). A commit that removes rows (erasure, retention) appends no new
//! events: its rewritten files hold rows delivered before, so it is skipped.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use deltalake::kernel::Action;
use deltalake::logstore::{LogStoreRef, get_actions};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::ObjectStoreExt;
use serde_json::value::RawValue;

use crate::storage::Store;
use crate::storage::events_table::{self, col};
use crate::{Error, Result};

/// One appended event, with its JSON form for payloads.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub version: i64,
    pub environment: String,
    pub event_id: String,
    pub event_name: String,
    pub category: String,
    pub user_id: String,
    /// `{"event_id":…,"event_name":…,…,"properties":{…}}`.
    pub json: String,
}

pub struct Follower {
    store: Store,
    log: LogStoreRef,
}

fn micros_to_rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

impl Follower {
    pub fn new(store: Store) -> Result<Follower> {
        let log = store.delta_table(events_table::TABLE)?.log_store();
        Ok(Follower { store, log })
    }

    /// The newest committed version after `after` (`after` itself when none is newer).
    pub async fn head(&self, after: i64) -> Result<i64> {
        Ok(self
            .log
            .get_latest_version(after.max(0) as u64)
            .await
            .map(|v| v as i64)
            .unwrap_or(after))
    }

    /// Whether `version` is still in the log (log retention removes old entries).
    pub async fn has_version(&self, version: i64) -> Result<bool> {
        Ok(version >= 0 && self.log.read_commit_entry(version as u64).await?.is_some())
    }

    /// The events appended by the commits after `after` (at most `max_commits` of them,
    /// stopping at the first version not committed yet) in environments `envs`; returns
    /// the last version read and the events in order. Each version is one object read
    /// (no listing of the log).
    pub async fn read(
        &self,
        after: i64,
        max_commits: i64,
        envs: &HashSet<String>,
    ) -> Result<(i64, Vec<NewEvent>)> {
        let mut out = Vec::new();
        let mut last = after;
        for version in after + 1..=after + max_commits {
            let Some(bytes) = self.log.read_commit_entry(version as u64).await? else {
                break;
            };
            let actions = get_actions(version as u64, &bytes)?;
            let removes_rows = actions
                .iter()
                .any(|a| matches!(a, Action::Remove(r) if r.data_change));
            if !removes_rows {
                for action in &actions {
                    let Action::Add(add) = action else { continue };
                    if !add.data_change {
                        continue;
                    }
                    let env = add
                        .partition_values
                        .get(col::ENVIRONMENT)
                        .cloned()
                        .flatten()
                        .unwrap_or_default();
                    if !envs.contains(&env) {
                        continue;
                    }
                    let path = self
                        .store
                        .paths()
                        .table_file(events_table::TABLE, &add.path);
                    let bytes = self.store.object_store().get(&path).await?.bytes().await?;
                    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                        .map_err(|e| Error::Invalid(format!("events file {}: {e}", add.path)))?
                        .build()
                        .map_err(|e| Error::Invalid(format!("events file {}: {e}", add.path)))?;
                    for batch in reader {
                        decode(&batch?, version, &env, &mut out)?;
                    }
                }
            }
            last = version;
        }
        Ok((last, out))
    }
}

fn decode(b: &RecordBatch, version: i64, env: &str, out: &mut Vec<NewEvent>) -> Result<()> {
    let column = |name: &str| {
        b.column_by_name(name)
            .ok_or_else(|| Error::Invalid(format!("events file without column {name}")))
    };
    let text = |name: &str| -> Result<_> {
        column(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::Invalid(format!("events.{name} is not text")))
    };
    let time = |name: &str| -> Result<_> {
        column(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| Error::Invalid(format!("events.{name} is not a timestamp")))
    };
    let (ids, names, cats, users) = (
        text(col::EVENT_ID)?,
        text(col::EVENT_NAME)?,
        text(col::CATEGORY)?,
        text(col::USER_ID)?,
    );
    let (platforms, props) = (text(col::PLATFORM)?, text(col::PROPERTIES)?);
    let (occurred, received) = (time(col::OCCURRED_AT)?, time(col::RECEIVED_AT)?);
    for i in 0..b.num_rows() {
        let properties = if props.is_null(i) {
            None
        } else {
            RawValue::from_string(props.value(i).to_string()).ok()
        };
        let json = serde_json::json!({
            "event_id": ids.value(i),
            "event_name": names.value(i),
            "category": cats.value(i),
            "user_id": users.value(i),
            "occurred_at": micros_to_rfc3339(occurred.value(i)),
            "received_at": micros_to_rfc3339(received.value(i)),
            "platform": (!platforms.is_null(i)).then(|| platforms.value(i)),
            "properties": properties,
        });
        out.push(NewEvent {
            version,
            environment: env.to_string(),
            event_id: ids.value(i).to_string(),
            event_name: names.value(i).to_string(),
            category: cats.value(i).to_string(),
            user_id: users.value(i).to_string(),
            json: json.to_string(),
        });
    }
    Ok(())
}
