//! The one way data-team queries run, whichever door they came through: a slot of the
//! environment's [`Gate`], the time-travel rewrite, the statement [`policy`], a session
//! of the environment's views with a memory pool of its own, parameters, and a deadline
//! that covers planning, execution and the sending of every row.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::limits::{Gate, QueryError};
use super::{depth, policy, time_travel};
use crate::config::QueryConfig;
use crate::storage::Store;

/// What a door adds to a query's session before planning.
pub type SessionSetup = dyn Fn(&SessionContext) -> crate::Result<()> + Send + Sync;

/// Runs queries against one store under one [`QueryConfig`].
pub struct Engine {
    store: Store,
    config: QueryConfig,
    gate: Gate,
    /// Where queries execute (`tidemark sql --engine`); the servers' doors are embedded.
    cluster: crate::ballista::Engine,
}

/// A planned query (its schema and parameters are known before any row is computed),
/// ready to run once or, as a prepared statement, many times with different parameters.
#[derive(Clone)]
pub struct Planned {
    ctx: SessionContext,
    plan: LogicalPlan,
    environment: Option<String>,
}

/// Rows as they are computed; the environment's slot is held until it is dropped.
pub struct Rows {
    pub schema: SchemaRef,
    pub stream: BoxStream<'static, Result<RecordBatch, QueryError>>,
}

impl Engine {
    pub fn new(store: Store, config: QueryConfig) -> Engine {
        let gate = Gate::new(config.max_concurrent);
        Engine {
            store,
            config,
            gate,
            cluster: crate::ballista::Engine::Embedded,
        }
    }

    /// This engine executing on `cluster` (planning stays here).
    pub fn on(mut self, cluster: crate::ballista::Engine) -> Engine {
        self.cluster = cluster;
        self
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Plans `sql` (one statement, `$1`, `$2`, … for parameters) for `environment`
    /// (`None`: every environment, for `tidemark sql` on the store itself).
    pub async fn prepare(
        &self,
        environment: Option<&str>,
        sql: &str,
    ) -> Result<Planned, QueryError> {
        depth::check(sql, depth::MAX_EXPRESSION_DEPTH).map_err(QueryError::Invalid)?;
        let (sql, as_of) = time_travel::rewrite(sql).map_err(QueryError::Invalid)?;
        let config = &self.config;
        let mut statements =
            DFParser::parse_sql(&sql).map_err(|e| QueryError::from_datafusion(e, config))?;
        let statement = match (statements.pop_front(), statements.is_empty()) {
            (Some(s), true) => s,
            (None, _) => return Err(QueryError::Invalid("the query is empty".into())),
            (Some(_), false) => {
                return Err(QueryError::Invalid(
                    "send one statement per query (found more than one)".into(),
                ));
            }
        };
        self.prepare_statement(environment, statement, &as_of).await
    }

    /// Plans a statement parsed by a door (Postgres parses its own), with the
    /// time-travel references [`time_travel::rewrite`] took out of its text.
    pub async fn prepare_statement(
        &self,
        environment: Option<&str>,
        statement: DfStatement,
        as_of: &[time_travel::AsOf],
    ) -> Result<Planned, QueryError> {
        self.prepare_statement_with(environment, statement, as_of, &|_| Ok(()))
            .await
    }

    /// [`Engine::prepare_statement`] with `setup` applied to the session first (the
    /// Postgres door adds `pg_catalog` and its functions).
    pub async fn prepare_statement_with(
        &self,
        environment: Option<&str>,
        statement: DfStatement,
        as_of: &[time_travel::AsOf],
        setup: &SessionSetup,
    ) -> Result<Planned, QueryError> {
        policy::check(&statement).map_err(QueryError::Refused)?;
        let _slot = self.gate.enter(environment.unwrap_or("*"))?;
        let timeout = self.config.timeout;
        let planning = self.plan_inner(environment, statement, as_of, setup);
        tokio::time::timeout(timeout, planning)
            .await
            .map_err(|_| QueryError::Timeout(timeout))?
    }

    async fn plan_inner(
        &self,
        environment: Option<&str>,
        statement: DfStatement,
        as_of: &[time_travel::AsOf],
        setup: &SessionSetup,
    ) -> Result<Planned, QueryError> {
        let config = &self.config;
        let df_err = |e: DataFusionError| QueryError::from_datafusion(e, config);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.max_memory_bytes)))
            .build_arc()
            .map_err(df_err)?;
        let ctx = super::session_on(&self.store, environment, Some(runtime), &self.cluster).await?;
        super::register_as_of(&ctx, &self.store, environment, as_of).await?;
        setup(&ctx)?;
        let plan = ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(df_err)?;
        read_only().verify_plan(&plan).map_err(df_err)?;
        Ok(Planned {
            ctx,
            plan,
            environment: environment.map(str::to_string),
        })
    }

    /// Runs a planned query with `params` for its placeholders, streaming its rows. The
    /// stream ends with [`QueryError::Timeout`] at `query.timeout`.
    pub async fn execute(
        &self,
        planned: &Planned,
        params: Vec<ScalarValue>,
    ) -> Result<Rows, QueryError> {
        let params = ParamValues::List(params.into_iter().map(Into::into).collect());
        self.execute_params(planned, params).await
    }

    /// [`Engine::execute`] with parameters as a door decoded them.
    pub async fn execute_params(
        &self,
        planned: &Planned,
        params: ParamValues,
    ) -> Result<Rows, QueryError> {
        let config = self.config.clone();
        let permit = self
            .gate
            .enter(planned.environment.as_deref().unwrap_or("*"))?;
        let deadline = Instant::now() + config.timeout;
        let timeout = config.timeout;
        let no_params = matches!(&params, ParamValues::List(l) if l.is_empty());
        let plan = if no_params {
            planned.plan.clone()
        } else {
            planned
                .plan
                .clone()
                .with_param_values(params)
                .map_err(|e| QueryError::from_datafusion(e, &config))?
        };
        let ctx = planned.ctx.clone();
        let start = async {
            let df = ctx.execute_logical_plan(plan).await?;
            crate::ballista::execute_stream(&ctx, df).await
        };
        let stream = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| QueryError::Timeout(timeout))?
            .map_err(|e| QueryError::from_datafusion(e, &config))?;
        let schema = stream.schema();
        struct State {
            stream: datafusion::physical_plan::SendableRecordBatchStream,
            _permit: OwnedSemaphorePermit,
            config: QueryConfig,
            done: bool,
        }
        let state = State {
            stream,
            _permit: permit,
            config,
            done: false,
        };
        let stream = futures::stream::unfold(state, move |mut s| async move {
            if s.done {
                return None;
            }
            match tokio::time::timeout_at(deadline, s.stream.next()).await {
                Ok(Some(Ok(batch))) => Some((Ok(batch), s)),
                Ok(Some(Err(e))) => {
                    s.done = true;
                    let e = QueryError::from_datafusion(e, &s.config);
                    Some((Err(e), s))
                }
                Ok(None) => None,
                Err(_) => {
                    s.done = true;
                    Some((Err(QueryError::Timeout(timeout)), s))
                }
            }
        });
        Ok(Rows {
            schema,
            stream: stream.boxed(),
        })
    }

    /// Plans and runs `sql`.
    pub async fn query(
        &self,
        environment: Option<&str>,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Rows, QueryError> {
        let planned = self.prepare(environment, sql).await?;
        self.execute(&planned, params).await
    }
}

impl Planned {
    /// The answer's columns.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    pub fn plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// The types DataFusion inferred for `$1`, `$2`, … in order (`None`: unknown).
    pub fn parameter_types(&self) -> Result<Vec<Option<arrow::datatypes::DataType>>, QueryError> {
        let types = self
            .plan
            .get_parameter_types()
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        let mut ordered: Vec<(usize, Option<arrow::datatypes::DataType>)> = types
            .into_iter()
            .filter_map(|(k, v)| k.trim_start_matches('$').parse().ok().map(|n| (n, v)))
            .collect();
        ordered.sort_by_key(|(n, _)| *n);
        Ok(ordered.into_iter().map(|(_, t)| t).collect())
    }

    /// The parameters as a schema (`$1`, `$2`, …; `Null` where the type is unknown), as
    /// Flight SQL describes a prepared statement's parameters.
    pub fn parameter_schema(&self) -> Result<arrow::datatypes::Schema, QueryError> {
        use arrow::datatypes::{DataType, Field};
        let fields: Vec<Field> = self
            .parameter_types()?
            .into_iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("${}", i + 1), t.unwrap_or(DataType::Null), true))
            .collect();
        Ok(arrow::datatypes::Schema::new(fields))
    }
}

impl Rows {
    /// Every row in memory (the REPL's table output and tests).
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>, QueryError> {
        let mut out = Vec::new();
        while let Some(b) = self.stream.next().await {
            out.push(b?);
        }
        Ok(out)
    }
}

/// The options every query is planned with: no DDL, DML or `SET` even if the statement
/// check let one through.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}
