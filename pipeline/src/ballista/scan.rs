//! [`FilesTable`]: a Delta snapshot (or the files added since a cursor) resolved on the
//! client into its Parquet files, each with its partition values, and scanned as plain
//! Parquet. Its physical plan is a `DataSourceExec` of a `ParquetSource`, which
//! datafusion-proto encodes, so a Ballista executor can run it knowing nothing of Delta.
//! Our tables have no deletion vectors and no column mapping, so the files' rows are the
//! snapshot's rows.

use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use deltalake::kernel::Add;

use crate::{Error, Result};

/// Explicit Parquet files with their partition values.
#[derive(Debug)]
pub struct FilesTable {
    /// File columns, then partition columns (what the scan answers).
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_cols: Vec<FieldRef>,
    store_url: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
}

/// One data file of a table: its path relative to the table, size, partition values.
struct DataFile {
    path: String,
    size: u64,
    partitions: std::collections::HashMap<String, Option<String>>,
}

impl FilesTable {
    /// The files of `snapshot` of table `name` (every file when `adds` is `None`, else
    /// only `adds`, which must be live in it).
    pub async fn of(name: &str, snapshot: &DeltaTable, adds: Option<&[Add]>) -> Result<FilesTable> {
        let table_schema = snapshot.table_provider().await?.schema();
        let partition_names: Vec<String> =
            snapshot.snapshot()?.metadata().partition_columns().to_vec();
        let files: Vec<DataFile> = match adds {
            Some(adds) => adds
                .iter()
                .map(|a| DataFile {
                    path: a.path.clone(),
                    size: a.size.max(0) as u64,
                    partitions: a.partition_values.clone(),
                })
                .collect(),
            None => snapshot
                .snapshot()?
                .log_data()
                .iter()
                .map(|f| DataFile {
                    path: f.path().to_string(),
                    size: f.size().max(0) as u64,
                    partitions: f.partition_values_map(),
                })
                .collect(),
        };
        let partition_cols: Vec<FieldRef> = partition_names
            .iter()
            .map(|p| {
                table_schema
                    .field_with_name(p)
                    .map(|f| Arc::new(f.clone()))
                    .map_err(|_| Error::Invalid(format!("{name}: no partition column {p}")))
            })
            .collect::<Result<_>>()?;
        let file_schema = Arc::new(Schema::new(
            table_schema
                .fields()
                .iter()
                .filter(|f| !partition_names.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_cols.iter().cloned());
        let base = snapshot.table_url();
        let store_url = match base.scheme() {
            "file" => ObjectStoreUrl::local_filesystem(),
            "s3" => ObjectStoreUrl::parse(format!("s3://{}", base.host_str().unwrap_or("")))?,
            other => {
                return Err(Error::Invalid(format!(
                    "data: a {other}:// store lives in one process; a Ballista cluster needs a directory all executors see, or s3://"
                )));
            }
        };
        let files = files
            .into_iter()
            .map(|f| {
                let path = format!("{}/{}", base.path().trim_end_matches('/'), f.path);
                let path = object_store::path::Path::from_url_path(&path)
                    .map_err(|e| Error::Invalid(format!("{name}: file {}: {e}", f.path)))?;
                let mut file = PartitionedFile::new(path.to_string(), f.size);
                file.partition_values = partition_cols
                    .iter()
                    .map(|c| match f.partitions.get(c.name()).cloned().flatten() {
                        Some(v) => ScalarValue::try_from_string(v, c.data_type()),
                        None => ScalarValue::try_from(c.data_type()),
                    })
                    .collect::<datafusion::common::Result<_>>()?;
                Ok(file)
            })
            .collect::<Result<_>>()?;
        Ok(FilesTable {
            schema: Arc::new(Schema::new(fields)),
            file_schema,
            partition_cols,
            store_url,
            files,
        })
    }

    pub fn num_files(&self) -> usize {
        self.files.len()
    }
}

#[async_trait]
impl TableProvider for FilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_cols.clone())
            .build();
        let source = Arc::new(ParquetSource::new(table_schema));
        // Files dealt round-robin into at most target_partitions groups (one task each).
        let n = state
            .config()
            .target_partitions()
            .clamp(1, self.files.len().max(1));
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
        for (i, f) in self.files.iter().enumerate() {
            groups[i % n].push(f.clone());
        }
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
