//! For the job tests: events written straight into the `events` table (bypassing ingest,
//! so tests control ids, times and commits), and a naive in-memory computation of
//! `profiles` and `event_stats` written independently of the SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use tidemark::storage::{Store, events_table};

pub const MINUTE: i64 = 60_000_000;
pub const HOUR: i64 = 60 * MINUTE;
/// 2026-01-01T00:00:00Z in microseconds.
pub const T0: i64 = 1_767_225_600_000_000;

#[derive(Debug, Clone)]
pub struct Ev {
    pub env: String,
    pub id: String,
    pub name: String,
    pub category: String,
    pub user: String,
    pub occurred: i64,
    pub received: i64,
    pub platform: Option<String>,
}

pub fn batch(evs: &[Ev]) -> RecordBatch {
    let s = |f: &dyn Fn(&Ev) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(evs.iter().map(f)))
    };
    let ts = |f: &dyn Fn(&Ev) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(evs.iter().map(f)).with_timezone("UTC"),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        s(&|e| &e.env),
        s(&|e| &e.id),
        s(&|e| &e.name),
        s(&|e| &e.category),
        s(&|e| &e.user),
        ts(&|e| e.occurred),
        ts(&|e| e.received),
        Arc::new(StringArray::from(
            evs.iter().map(|e| e.platform.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec![None::<&str>; evs.len()])),
        Arc::new(Date32Array::from_iter_values(
            evs.iter()
                .map(|e| e.received.div_euclid(86_400_000_000) as i32),
        )),
    ];
    RecordBatch::try_new(events_table::schema(), columns).unwrap()
}

/// Appends `evs` as one commit of `events`.
pub async fn commit(store: &Store, evs: &[Ev]) {
    let table = events_table::open_or_create(store).await.unwrap();
    events_table::append(table, vec![batch(evs)], None, 0)
        .await
        .unwrap();
}

/// One row of `profiles` with timestamps as microseconds.
pub type ProfileRow = (String, String, Vec<Option<i64>>, i64, Option<String>);
/// One row of `event_stats`.
pub type StatRow = (String, String, String, Option<i64>, Option<i64>, i64);

#[derive(Debug, Default, PartialEq)]
pub struct Tables {
    pub profiles: Vec<ProfileRow>,
    pub stats: Vec<StatRow>,
}

/// The tables as the job SQL should compute them, from every event ever committed.
pub fn expected(all: &[Ev], window: i64, skew: i64) -> Tables {
    // Dedup: order each id's copies by received time; a copy within `window` of the
    // previous copy is not counted.
    let mut by_id: BTreeMap<(&str, &str), Vec<&Ev>> = BTreeMap::new();
    for e in all {
        by_id.entry((&e.env, &e.id)).or_default().push(e);
    }
    let mut counted: Vec<&Ev> = Vec::new();
    for copies in by_id.values_mut() {
        copies.sort_by_key(|e| e.received);
        let mut prev: Option<i64> = None;
        for e in copies.iter() {
            if prev.is_none_or(|p| e.received - p > window) {
                counted.push(e);
            }
            prev = Some(e.received);
        }
    }
    let at = |e: &Ev| {
        if e.occurred > e.received + skew {
            e.received
        } else {
            e.occurred
        }
    };
    #[derive(Default)]
    struct P {
        created: Option<i64>,
        seen: Vec<i64>,
        by_platform: HashMap<&'static str, i64>,
        count: i64,
        last: Option<(i64, String)>,
        updated: Option<i64>,
    }
    let mut profiles: BTreeMap<(String, String), P> = BTreeMap::new();
    let mut stats: BTreeMap<(String, String, String), (i64, i64, i64)> = BTreeMap::new();
    for e in &counted {
        let t = at(e);
        let p = profiles.entry((e.env.clone(), e.user.clone())).or_default();
        p.created = Some(p.created.map_or(e.received, |c| c.min(e.received)));
        p.updated = Some(p.updated.map_or(e.received, |c| c.max(e.received)));
        if e.category != "system" {
            p.count += 1;
            let candidate = (t, e.name.clone());
            if p.last.as_ref().is_none_or(|l| candidate > *l) {
                p.last = Some(candidate);
            }
            p.seen.push(t);
            let family = e
                .platform
                .as_deref()
                .and_then(tidemark_udfs::platform::platform_bucket);
            if let Some(f) = family {
                let v = p.by_platform.entry(f).or_insert(t);
                *v = (*v).max(t);
            }
        }
        let s = stats
            .entry((e.env.clone(), e.user.clone(), e.name.clone()))
            .or_insert((t, t, 0));
        s.0 = s.0.min(t);
        s.1 = s.1.max(t);
        s.2 += 1;
    }
    let profiles = profiles
        .into_iter()
        .map(|((env, user), p)| {
            let fam = |f: &str| p.by_platform.get(f).copied();
            let times = vec![
                p.created,
                p.seen.iter().min().copied(),
                p.seen.iter().max().copied(),
                fam("ios"),
                fam("android"),
                fam("web"),
                fam("server"),
                p.last.as_ref().map(|l| l.0),
                p.updated,
            ];
            (env, user, times, p.count, p.last.map(|l| l.1))
        })
        .collect();
    let stats = stats
        .into_iter()
        .map(|((env, user, name), (f, l, c))| (env, user, name, Some(f), Some(l), c))
        .collect();
    Tables { profiles, stats }
}

fn opt_i64(a: &dyn Array, i: usize) -> Option<i64> {
    let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
    (!a.is_null(i)).then(|| a.value(i))
}

fn string(a: &dyn Array, i: usize) -> Option<String> {
    let a = a.as_any().downcast_ref::<StringArray>().unwrap();
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

const PROFILE_SQL: &str = "SELECT environment, user_id, \
    CAST(created_at AS BIGINT), CAST(first_seen_at AS BIGINT), CAST(last_seen_at AS BIGINT), \
    CAST(last_seen_ios_at AS BIGINT), CAST(last_seen_android_at AS BIGINT), \
    CAST(last_seen_web_at AS BIGINT), CAST(last_seen_server_at AS BIGINT), \
    CAST(last_event_at AS BIGINT), CAST(updated_at AS BIGINT), \
    CAST(event_count AS BIGINT) AS n, CAST(last_event_name AS VARCHAR) AS last_name \
    FROM profiles ORDER BY environment, user_id";

const STATS_SQL: &str = "SELECT environment, user_id, CAST(event_name AS VARCHAR) AS name, \
    CAST(first_at AS BIGINT), CAST(last_at AS BIGINT), CAST(\"count\" AS BIGINT) \
    FROM event_stats ORDER BY environment, user_id, event_name";

/// The tables as tidemark's readers see them (`tidemark sql`'s session).
pub async fn actual(store: &Store) -> Tables {
    let ctx = tidemark::query::session(store, None).await.unwrap();
    read(&ctx).await
}

/// The published Delta tables as any Delta reader sees them (no tidemark views).
pub async fn published(store: &Store) -> Tables {
    let ctx = datafusion::prelude::SessionContext::new();
    for name in ["profiles", "event_stats"] {
        let table = store.load_table(name).await.unwrap().expect(name);
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table(name, table.table_provider().await.unwrap())
            .unwrap();
    }
    read(&ctx).await
}

async fn read(ctx: &datafusion::prelude::SessionContext) -> Tables {
    let cast = |b: &RecordBatch, i: usize| -> ArrayRef {
        arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap()
    };
    let mut out = Tables::default();
    for b in tidemark::query::run(ctx, PROFILE_SQL).await.unwrap() {
        let (env, user, name) = (cast(&b, 0), cast(&b, 1), cast(&b, 12));
        for r in 0..b.num_rows() {
            let times = (2..=10).map(|c| opt_i64(b.column(c).as_ref(), r)).collect();
            out.profiles.push((
                string(&env, r).unwrap(),
                string(&user, r).unwrap(),
                times,
                opt_i64(b.column(11).as_ref(), r).unwrap(),
                string(&name, r),
            ));
        }
    }
    for b in tidemark::query::run(ctx, STATS_SQL).await.unwrap() {
        let (env, user, name) = (cast(&b, 0), cast(&b, 1), cast(&b, 2));
        for r in 0..b.num_rows() {
            out.stats.push((
                string(&env, r).unwrap(),
                string(&user, r).unwrap(),
                string(&name, r).unwrap(),
                opt_i64(b.column(3).as_ref(), r),
                opt_i64(b.column(4).as_ref(), r),
                opt_i64(b.column(5).as_ref(), r).unwrap(),
            ));
        }
    }
    out
}
