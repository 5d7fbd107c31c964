//! How tidemark's readers (`tidemark sql`, the API, the segment job) see the derived
//! tables: each job's published rows and its pending runs after the published mark
//! (registered together as [`Job::parts`]) folded by its merge SQL under [`Job::view`],
//! and `profiles` as `sql/jobs/profiles_view.sql` over the activity and attribute views
//! and the field registry. So they see every run at once, while other Delta readers see
//! the published tables, one row per key, up to `jobs.publish_interval` later.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::prelude::{SessionContext, col, lit};

use super::defs::{ALL, Job, PROFILES_VIEW_SQL};
use super::publish::{self, Published};
use crate::Result;
use crate::storage::Store;
use crate::users::fields::FieldsDoc;

/// Registers `job`'s merged view as [`Job::view`] over `parts` (rows of the job's
/// columns), restricted to `environment` when given.
pub async fn register(
    ctx: &SessionContext,
    job: Job,
    parts: datafusion::dataframe::DataFrame,
    environment: Option<&str>,
) -> Result<()> {
    let mut df = parts;
    if let Some(env) = environment {
        df = df.filter(col("environment").eq(lit(env)))?;
    }
    ctx.deregister_table(job.parts())?;
    ctx.register_table(job.parts(), df.into_view())?;
    let merged = ctx.sql(job.merge_sql()).await?.into_view();
    ctx.deregister_table(job.view())?;
    ctx.register_table(job.view(), merged)?;
    Ok(())
}

/// Registers every job's view (empty when its table does not exist yet), the
/// `field_registry` and `profiles`.
pub async fn register_all(
    ctx: &SessionContext,
    store: &Store,
    environment: Option<&str>,
) -> Result<()> {
    for job in ALL {
        let parts = parts(ctx, store, job).await?;
        register(ctx, job, parts, environment).await?;
    }
    let fields = crate::users::fields::Registry::new(store.clone())
        .all()
        .await?;
    ctx.register_batch("field_registry", registry_batch(&fields, environment)?)?;
    let profiles = ctx.sql(PROFILES_VIEW_SQL).await?.into_view();
    ctx.register_table("profiles", profiles)?;
    Ok(())
}

/// Readers of a few profiles (one profile, a page of the list, a webhook's users): the
/// views [`register_all`] registered, re-registered over the rows of some users only.
///
/// A filter on `profiles.user_id` stops at the view's full outer join (its `user_id` is a
/// `coalesce` of both sides), so without this every read merges every user. Narrowed, the
/// filter sits on each job's parts, below the merges, and reaches the Delta scans (whose
/// files are sorted by user id).
pub struct Narrowing {
    /// Each job's parts as [`register_all`] registered them (every user).
    parts: Vec<(Job, datafusion::dataframe::DataFrame)>,
}

impl Narrowing {
    /// Takes the parts of `ctx` (a session of [`register_all`]) before any narrowing.
    pub async fn of(ctx: &SessionContext) -> Result<Narrowing> {
        let mut parts = Vec::with_capacity(ALL.len());
        for job in ALL {
            parts.push((job, ctx.table(job.parts()).await?));
        }
        Ok(Narrowing { parts })
    }

    /// Re-registers every job's view and `profiles` in `ctx` over the rows whose user
    /// `users` (an expression on `user_id`) selects; replaces an earlier narrowing.
    pub async fn apply(
        &self,
        ctx: &SessionContext,
        users: datafusion::prelude::Expr,
    ) -> Result<()> {
        for (job, parts) in &self.parts {
            register(ctx, *job, parts.clone().filter(users.clone())?, None).await?;
        }
        let profiles = ctx.sql(PROFILES_VIEW_SQL).await?.into_view();
        ctx.deregister_table("profiles")?;
        ctx.register_table("profiles", profiles)?;
        Ok(())
    }
}

/// The rows of `job` its view merges: the published rows and the pending runs after the
/// published mark. Pending is read first: a publish that commits in between only moves
/// the mark over runs the published table then holds.
pub async fn parts(
    ctx: &SessionContext,
    store: &Store,
    job: Job,
) -> Result<datafusion::dataframe::DataFrame> {
    let pending = store.load_table(job.pending()).await?;
    let published = store.load_table(job.table()).await?;
    let after = match publish::published_state(published.as_ref(), job).await? {
        Published::Current { through } => through,
        Published::Missing | Published::OldLayout => None,
    };
    let mut parts = match published {
        Some(table) => ctx
            .read_table(crate::ballista::provider(ctx, job.table(), &table).await?)?
            .select(publish::job_columns(job))?,
        None => {
            let empty: Arc<dyn TableProvider> =
                Arc::new(MemTable::try_new(job.schema(), vec![vec![]])?);
            ctx.read_table(empty)?
        }
    };
    if let Some(pending) = pending {
        parts = parts.union(publish::pending_rows(ctx, &pending, job, after, None).await?)?;
    }
    Ok(parts)
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
