//! Building the `events` Arrow record batch of a validated batch, column by column.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::record_batch::RecordBatch;

use super::event::Event;
use crate::storage::events_table;

/// Builds the `events` record batch of the events whose `keep` flag is set.
/// Events without an `event_id` get a UUIDv7.
pub fn build_batch(
    environment: &str,
    received_at_us: i64,
    events: &[Event<'_>],
    keep: &[bool],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = keep.iter().filter(|k| **k).count();
    let text_bytes: usize = events
        .iter()
        .map(|e| e.event_name.len() + e.user_id.len() + e.properties.as_deref().map_or(0, str::len))
        .sum();
    let mut env = StringBuilder::with_capacity(n, n * environment.len());
    let mut id = StringBuilder::with_capacity(n, n * 36);
    let mut name = StringBuilder::with_capacity(n, text_bytes / 4 + n * 8);
    let mut category = StringBuilder::with_capacity(n, n * 8);
    let mut user = StringBuilder::with_capacity(n, text_bytes / 4 + n * 8);
    let mut occurred = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut platform = StringBuilder::with_capacity(n, n * 8);
    let mut props = StringBuilder::with_capacity(n, text_bytes);
    let mut date = Date32Builder::with_capacity(n);
    let day = received_at_us.div_euclid(86_400_000_000) as i32;
    let mut uuid_buf = uuid::Uuid::encode_buffer();
    for (e, _) in events.iter().zip(keep).filter(|(_, k)| **k) {
        env.append_value(environment);
        match &e.event_id {
            Some(v) => id.append_value(v),
            None => id.append_value(
                uuid::Uuid::now_v7()
                    .hyphenated()
                    .encode_lower(&mut uuid_buf),
            ),
        }
        name.append_value(&e.event_name);
        category.append_value(e.category.as_str());
        user.append_value(&e.user_id);
        occurred.append_value(e.occurred_at.unwrap_or(received_at_us));
        received.append_value(received_at_us);
        platform.append_option(e.platform.as_deref());
        props.append_option(e.properties.as_deref());
        date.append_value(day);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(env.finish()),
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(category.finish()),
        Arc::new(user.finish()),
        Arc::new(occurred.finish()),
        Arc::new(received.finish()),
        Arc::new(platform.finish()),
        Arc::new(props.finish()),
        Arc::new(date.finish()),
    ];
    RecordBatch::try_new(events_table::schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::ingest::event::{BodyFormat, parse_batch};

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn batches_have_the_table_schema_and_generated_ids() {
        let body = r#"[{"event_name":"a","user_id":"u1"},{"event_id":"x","event_name":"b","user_id":"u2","platform":"web"}]"#;
        let ev = parse_batch(body.as_bytes(), BodyFormat::JsonArray, &limits()).unwrap();
        let b = build_batch("default", 1_714_564_800_000_000, &ev, &[true, true]).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema(), events_table::schema());
        let ids = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(
            uuid::Uuid::parse_str(ids.value(0))
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(ids.value(1), "x");
        let only_second = build_batch("default", 0, &ev, &[false, true]).unwrap();
        assert_eq!(only_second.num_rows(), 1);
    }
}
