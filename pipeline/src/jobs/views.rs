//! How readers see the derived tables: each job's partial rows (registered as
//! [`Job::parts`]) folded by its merge SQL under [`Job::view`], and `profiles` as
//! `sql/jobs/profiles_view.sql` over the activity and attribute views and the field
//! registry.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::prelude::{SessionContext, col, lit};

use super::defs::{ALL, Job, PROFILES_VIEW_SQL};
use crate::Result;
use crate::storage::Store;
use crate::users::fields::FieldsDoc;

/// Registers `job`'s merged view as [`Job::view`] over `parts` (the Delta table's
/// provider), restricted to `environment` when given.
pub async fn register(
    ctx: &SessionContext,
    job: Job,
    parts: Arc<dyn TableProvider>,
    environment: Option<&str>,
) -> Result<()> {
    let mut df = ctx.read_table(parts)?;
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
        let parts: Arc<dyn TableProvider> = match store.load_table(job.table()).await? {
            Some(table) => {
                table.update_datafusion_session(&ctx.state())?;
                table.table_provider().await?
            }
            None => Arc::new(MemTable::try_new(job.schema(), vec![vec![]])?),
        };
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
