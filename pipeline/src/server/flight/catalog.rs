//! The catalog commands of Flight SQL (catalogs, schemas, tables, table types, SQL info):
//! the schema of each answer and its rows.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, ProstMessageExt, SqlInfo,
};
use tonic::Status;

use super::internal;
use crate::query::encode::plain_schema;

/// The tables of an environment: name, schema and `TABLE` or `VIEW`.
pub(super) type Tables = [(String, Arc<Schema>, &'static str)];

/// A catalog command of Flight SQL: the schema of its answer, and its rows. `GetFlightInfo`
/// and `DoGet` of every one go through [`FlightDoor::describe`] and
/// [`FlightDoor::catalog`].
pub(super) trait Catalog: ProstMessageExt + Clone + Send + 'static {
    /// Whether the rows list the environment's tables.
    const NEEDS_TABLES: bool = false;

    fn schema(&self) -> SchemaRef;

    fn rows(self, tables: &Tables)
    -> Result<(SchemaRef, Result<RecordBatch, FlightError>), Status>;
}

impl Catalog for CommandGetCatalogs {
    fn schema(&self) -> SchemaRef {
        (*self).into_builder().schema()
    }

    fn rows(self, _: &Tables) -> Result<(SchemaRef, Result<RecordBatch, FlightError>), Status> {
        let mut builder = self.into_builder();
        builder.append("datafusion");
        Ok((builder.schema(), builder.build()))
    }
}

impl Catalog for CommandGetDbSchemas {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder().schema()
    }

    fn rows(self, _: &Tables) -> Result<(SchemaRef, Result<RecordBatch, FlightError>), Status> {
        let mut builder = self.into_builder();
        builder.append("datafusion", "public");
        Ok((builder.schema(), builder.build()))
    }
}

impl Catalog for CommandGetTables {
    const NEEDS_TABLES: bool = true;

    fn schema(&self) -> SchemaRef {
        self.clone().into_builder().schema()
    }

    fn rows(
        self,
        tables: &Tables,
    ) -> Result<(SchemaRef, Result<RecordBatch, FlightError>), Status> {
        let mut builder = self.into_builder();
        for (name, schema, kind) in tables {
            builder
                .append("datafusion", "public", name, *kind, &plain_schema(schema))
                .map_err(|e| internal("listing tables", e))?;
        }
        Ok((builder.schema(), builder.build()))
    }
}

impl Catalog for CommandGetTableTypes {
    fn schema(&self) -> SchemaRef {
        (*self).into_builder().schema()
    }

    fn rows(self, _: &Tables) -> Result<(SchemaRef, Result<RecordBatch, FlightError>), Status> {
        let mut builder = self.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        Ok((builder.schema(), builder.build()))
    }
}

impl Catalog for CommandGetSqlInfo {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder(&SQL_INFO).schema()
    }

    fn rows(self, _: &Tables) -> Result<(SchemaRef, Result<RecordBatch, FlightError>), Status> {
        let builder = self.into_builder(&SQL_INFO);
        Ok((builder.schema(), builder.build()))
    }
}

/// What `GetSqlInfo` answers, built once.
pub(super) static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "tidemark");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.build().expect("static sql info")
});
