//! How tidemark's readers (`tidemark sql`, the API, the segment job) see the derived
//! tables: each job's published rows and its pending runs after the published mark
//! (registered together as [`Job::parts`]) folded by its merge SQL under [`Job::view`]
//! (only the keys the pending runs touch are merged, see [`register`]),
//! and `profiles` as `sql/jobs/profiles_view.sql` over the activity and attribute views
//! and the field registry. So they see every run at once, while other Delta readers see
//! the published tables, one row per key, up to `jobs.publish_interval` later.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::JoinType;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{Expr, SessionContext, cast, col, lit};

use super::defs::{ALL, Job, PROFILES_VIEW_SQL};
use super::publish::{self, Published};
use crate::Result;
use crate::storage::Store;
use crate::users::fields::FieldsDoc;

/// The rows `job`'s view merges, of one environment when the session has one.
#[derive(Clone)]
pub struct Parts {
    job: Job,
    /// One row per key.
    published: DataFrame,
    /// The pending runs after the published mark; `None` when there are none.
    pending: Option<DataFrame>,
}

impl Parts {
    /// These parts restricted to the rows `filter` keeps.
    fn filter(&self, filter: &Expr) -> Result<Parts> {
        Ok(Parts {
            job: self.job,
            published: self.published.clone().filter(filter.clone())?,
            pending: match &self.pending {
                Some(p) => Some(p.clone().filter(filter.clone())?),
                None => None,
            },
        })
    }

    /// Published and pending rows together.
    fn all(&self) -> Result<DataFrame> {
        Ok(match &self.pending {
            Some(p) => self.published.clone().union(p.clone())?,
            None => self.published.clone(),
        })
    }
}

/// Registers `parts` as [`Job::parts`] and their merge as [`Job::view`].
///
/// Only the keys the pending runs touch need merging: the published rows hold one row per
/// key, so a published row whose key no pending row has is its own merge. The view is
/// those rows (an anti join against the pending keys) and the merge SQL over the touched
/// keys' published rows and the pending rows; with nothing pending, the published rows.
async fn register(ctx: &SessionContext, parts: &Parts) -> Result<()> {
    let job = parts.job;
    let keys: Vec<&str> = ["environment", "user_id"]
        .into_iter()
        .chain(job.key_columns().iter().copied())
        .collect();
    if !crate::ballista::engine_of(ctx).is_embedded() {
        // On a cluster every row goes through the merge: with the shortcut's plans, Ballista
        // 55's executors lost the stages of `profiles` queries (a debug assertion in the
        // reset of a top-k sort when a stage is deserialized) in the Ballista test.
        replace(ctx, job.parts(), parts.all()?)?;
        let merged = ctx.sql(job.merge_sql()).await?;
        return replace(ctx, job.view(), merged);
    }
    let (untouched, touched) = match &parts.pending {
        None => (parts.published.clone(), None),
        Some(pending) => {
            let pending_keys = pending.clone().select_columns(&keys)?.distinct()?;
            let untouched = parts.published.clone().join(
                pending_keys.clone(),
                JoinType::LeftAnti,
                &keys,
                &keys,
                None,
            )?;
            let touched = parts
                .published
                .clone()
                .join(pending_keys, JoinType::LeftSemi, &keys, &keys, None)?
                .union(pending.clone())?;
            (untouched, Some(touched))
        }
    };
    // the merge SQL reads `Job::parts`: the touched rows while it is planned
    let touched_parts = match &touched {
        Some(t) => t.clone(),
        None => empty_parts(ctx, job)?,
    };
    replace(ctx, job.parts(), touched_parts)?;
    let merged = ctx.sql(job.merge_sql()).await?;
    let columns: Vec<Expr> = merged
        .schema()
        .fields()
        .iter()
        .map(|f| cast(col(ident_of(f.name())), f.data_type().clone()).alias(f.name()))
        .collect();
    let view = match touched {
        Some(_) => untouched.select(columns)?.union(merged)?,
        None => untouched.select(columns)?,
    };
    replace(ctx, job.view(), view)?;
    replace(ctx, job.parts(), parts.all()?)?;
    Ok(())
}

fn empty_parts(ctx: &SessionContext, job: Job) -> Result<DataFrame> {
    Ok(ctx.read_table(Arc::new(MemTable::try_new(job.schema(), vec![vec![]])?))?)
}

/// A column reference to `name` as written (no parsing of dots or case).
fn ident_of(name: &str) -> datafusion::common::Column {
    datafusion::common::Column::new_unqualified(name)
}

fn replace(ctx: &SessionContext, name: &str, df: DataFrame) -> Result<()> {
    ctx.deregister_table(name)?;
    ctx.register_table(name, df.into_view())?;
    Ok(())
}

/// Registers every job's view (empty when its table does not exist yet), the
/// `field_registry` and `profiles`; returns the parts, for [`Narrowing`].
pub async fn register_all(
    ctx: &SessionContext,
    store: &Store,
    environment: Option<&str>,
) -> Result<Narrowing> {
    let mut all = Vec::with_capacity(ALL.len());
    for job in ALL {
        let parts = parts(ctx, store, job, environment).await?;
        register(ctx, &parts).await?;
        all.push(parts);
    }
    let fields = crate::users::fields::Registry::new(store.clone())
        .all()
        .await?;
    ctx.register_batch("field_registry", registry_batch(&fields, environment)?)?;
    let profiles = ctx.sql(PROFILES_VIEW_SQL).await?.into_view();
    ctx.register_table("profiles", profiles)?;
    Ok(Narrowing { parts: all })
}

/// Readers of a few profiles (one profile, a page of the list, a webhook's users): the
/// views [`register_all`] registered, re-registered over the rows of some users only.
///
/// A filter on `profiles.user_id` stops at the view's full outer join (its `user_id` is a
/// `coalesce` of both sides), so without this every read merges every user. Narrowed, the
/// filter sits on each job's parts, below the merges, and reaches the Delta scans (whose
/// files are sorted by user id).
#[derive(Clone)]
pub struct Narrowing {
    /// Each job's parts as [`register_all`] read them (every user).
    parts: Vec<Parts>,
}

impl Narrowing {
    /// Re-registers every job's view and `profiles` in `ctx` over the rows whose user
    /// `users` (an expression on `user_id`) selects; replaces an earlier narrowing.
    pub async fn apply(&self, ctx: &SessionContext, users: Expr) -> Result<()> {
        for parts in &self.parts {
            register(ctx, &parts.filter(&users)?).await?;
        }
        let profiles = ctx.sql(PROFILES_VIEW_SQL).await?;
        replace(ctx, "profiles", profiles)
    }
}

/// The rows of `job` its view merges: the published rows and the pending runs after the
/// published mark, of `environment` when given. Pending is read first: a publish that
/// commits in between only moves the mark over runs the published table then holds.
async fn parts(
    ctx: &SessionContext,
    store: &Store,
    job: Job,
    environment: Option<&str>,
) -> Result<Parts> {
    let pending = store.load_table(job.pending()).await?;
    let published = store.load_table(job.table()).await?;
    let after = match publish::published_state(published.as_ref(), job).await? {
        Published::Current { through } => through,
        Published::Missing | Published::OldLayout => None,
    };
    let in_env = |df: DataFrame| -> Result<DataFrame> {
        Ok(match environment {
            Some(env) => df.filter(col("environment").eq(lit(env)))?,
            None => df,
        })
    };
    let published = match published {
        Some(table) => ctx
            .read_table(crate::ballista::provider(ctx, job.table(), &table).await?)?
            .select(publish::job_columns(job))?,
        None => {
            let empty: Arc<dyn TableProvider> =
                Arc::new(MemTable::try_new(job.schema(), vec![vec![]])?);
            ctx.read_table(empty)?
        }
    };
    let runs_after = publish::pending_runs(pending.as_ref())?
        .into_iter()
        .any(|run| after.is_none_or(|a| run > a));
    let pending = match pending {
        Some(pending) if runs_after => Some(in_env(
            publish::pending_rows(ctx, &pending, job, after, None).await?,
        )?),
        _ => None,
    };
    Ok(Parts {
        job,
        published: in_env(published)?,
        pending,
    })
}

/// The declared fields as rows: environment, name, type, since_change_id.
fn registry_batch(doc: &FieldsDoc, environment: Option<&str>) -> Result<RecordBatch> {
    let defs: Vec<_> = doc
        .environments
        .iter()
        .filter(|(env, _)| environment.is_none_or(|e| e == env.as_str()))
        .flat_map(|(env, fields)| fields.values().map(move |f| (env.as_str(), f)))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("since_change_id", DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(defs.iter().map(|(e, _)| *e))),
            Arc::new(StringArray::from_iter_values(
                defs.iter().map(|(_, f)| f.name.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                defs.iter().map(|(_, f)| f.field_type.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                defs.iter().map(|(_, f)| f.since_change_id.as_str()),
            )),
        ],
    )?)
}
