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
    ctx.register_table(job.parts(), df.into_view())?;
    let merged = ctx.sql(job.merge_sql()).await?.into_view();
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
