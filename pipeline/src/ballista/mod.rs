//! Running tidemark's SQL on an Apache DataFusion Ballista cluster.
//!
//! The client side stays tidemark: it opens the Delta tables, plans every query itself and
//! commits every result exactly as the embedded engine does (same cursors, same `txn`,
//! same crash safety). Only execution moves: a planned query is sent to the scheduler as
//! a physical plan and its rows stream back. So the plan must hold nothing an executor
//! cannot rebuild from bytes:
//!
//! - Delta tables are resolved on the client into the Parquet files of a snapshot, or the
//!   files added since a cursor ([`scan::FilesTable`]); the plan carries a plain Parquet
//!   scan of those files with their partition values, so executors need nothing of Delta
//!   (deltalake's own scan nodes have no codec);
//! - inputs the embedded engine keeps in memory (`new_events`, `counted_events`) become
//!   views over those scans, so executors read files instead of the client shipping rows;
//! - our UDFs are found by name in the executors' and the scheduler's registries
//!   ([`roles`]).
//!
//! - [`Engine`]: where a session's queries run, parsed from `--engine`; kept in the
//!   session's config so every collect in the jobs goes the same way ([`collect`]).
//! - [`scan`]: the Parquet-files table provider.
//! - [`roles`]: `tidemark ballista scheduler` and `tidemark ballista executor`.

pub mod roles;
pub mod scan;

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;

use crate::{Error, Result};

/// Where queries run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Engine {
    /// In this process (DataFusion).
    #[default]
    Embedded,
    /// On the Ballista cluster whose scheduler listens at `host:port`.
    Ballista { host: String, port: u16 },
}

impl Engine {
    /// `embedded`, or `ballista://host:port` (port 50050 when left out).
    pub fn parse(text: &str) -> std::result::Result<Engine, String> {
        let text = text.trim();
        if text == "embedded" {
            return Ok(Engine::Embedded);
        }
        let Some(rest) = text.strip_prefix("ballista://") else {
            return Err(format!(
                "'{text}' is not an engine: use 'embedded' or 'ballista://HOST:PORT'"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("'{text}': port '{p}' is not a port number"))?;
                (h, port)
            }
            None => (rest, 50050),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("'{text}': no scheduler host"));
        }
        Ok(Engine::Ballista {
            host: host.to_string(),
            port,
        })
    }

    /// The scheduler's gRPC URL.
    fn scheduler_url(&self) -> Option<String> {
        match self {
            Engine::Embedded => None,
            Engine::Ballista { host, port } => Some(format!("http://{host}:{port}")),
        }
    }

    pub fn is_embedded(&self) -> bool {
        *self == Engine::Embedded
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Embedded => write!(f, "embedded"),
            Engine::Ballista { host, port } => write!(f, "ballista://{host}:{port}"),
        }
    }
}

/// `config` with `engine` attached, for [`engine_of`]. For a cluster, dynamic filters
/// are off: Ballista's scheduler swaps hash-join inputs between stages by the sizes it
/// measured, and DataFusion 55 refuses to swap a join whose dynamic filter was already
/// built ("Cannot swap HashJoinExec inputs after dynamic filters have been
/// constructed"); the task then never finishes.
pub fn with_engine(mut config: SessionConfig, engine: &Engine) -> SessionConfig {
    if !engine.is_embedded() {
        config
            .options_mut()
            .optimizer
            .enable_dynamic_filter_pushdown = false;
        config
            .options_mut()
            .optimizer
            .enable_join_dynamic_filter_pushdown = false;
        config
            .options_mut()
            .optimizer
            .enable_topk_dynamic_filter_pushdown = false;
        config
            .options_mut()
            .optimizer
            .enable_aggregate_dynamic_filter_pushdown = false;
    }
    config.with_extension(Arc::new(engine.clone()))
}

/// The engine a session was made for (embedded when none was attached).
pub fn engine_of(ctx: &SessionContext) -> Engine {
    ctx.state()
        .config()
        .get_extension::<Engine>()
        .map(|e| (*e).clone())
        .unwrap_or_default()
}

/// The rows of `table` (table `name`) for a query of `ctx`: deltalake's provider on the
/// embedded engine, the snapshot's Parquet files on a cluster.
pub async fn provider(
    ctx: &SessionContext,
    name: &str,
    table: &deltalake::DeltaTable,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    if engine_of(ctx).is_embedded() {
        table.update_datafusion_session(&ctx.state())?;
        return Ok(table.table_provider().await?);
    }
    Ok(Arc::new(scan::FilesTable::of(name, table, None).await?))
}

/// How long one [`collect`] may take on a cluster (a session-config extension; none: no
/// bound). Ballista's client waits for its job as long as the scheduler keeps it, and a
/// scheduler that lost a stage's executors can keep it forever.
#[derive(Debug, Clone, Copy)]
pub struct StepTimeout(pub std::time::Duration);

/// Runs `df` on the session's engine and returns its rows. On a cluster, a step that
/// outlasts the session's [`StepTimeout`] fails with an error naming the engine.
pub async fn collect(ctx: &SessionContext, df: DataFrame) -> Result<Vec<RecordBatch>> {
    let engine = engine_of(ctx);
    if engine.is_embedded() {
        return Ok(df.collect().await?);
    }
    let limit = ctx
        .state()
        .config()
        .get_extension::<StepTimeout>()
        .map(|t| t.0)
        .unwrap_or(std::time::Duration::MAX);
    // execute_stream's errors already name the engine; the stream's do not
    let run = async {
        let stream = execute_stream(ctx, df)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        stream
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| Error::Unavailable(format!("{engine}: {e}")))
    };
    match tokio::time::timeout(limit, run).await {
        Ok(rows) => rows,
        Err(_) => Err(Error::Unavailable(format!(
            "{engine}: the step did not finish within jobs.engine_timeout ({})",
            humantime::format_duration(limit)
        ))),
    }
}

/// Runs `df` on the session's engine, streaming its rows. On Ballista the client plans
/// the query (with its own registrations) and submits the physical plan; the rows come
/// back from the executors. A plan that reads no files (catalog queries, `VALUES`) runs
/// here: there is nothing for a cluster to do, and catalog scans have no codec.
pub async fn execute_stream(
    ctx: &SessionContext,
    df: DataFrame,
) -> datafusion::common::Result<SendableRecordBatchStream> {
    let engine = engine_of(ctx);
    let Some(url) = engine.scheduler_url() else {
        return df.execute_stream().await;
    };
    use ballista_core::extension::SessionConfigExt;
    let task_ctx = df.task_ctx();
    let plan = df.create_physical_plan().await?;
    if !reads_files(&plan) {
        return datafusion::physical_plan::execute_stream(plan, Arc::new(task_ctx));
    }
    let config = SessionConfig::new_with_ballista()
        .with_target_partitions(ctx.state().config().target_partitions());
    let codec = config.ballista_physical_extension_codec();
    let session_id = uuid::Uuid::new_v4().to_string();
    ballista_core::execution_plans::execute_physical_plan::<
        datafusion_proto::protobuf::PhysicalPlanNode,
    >(
        url,
        &ballista_core::config::BallistaConfig::default(),
        plan,
        codec.as_ref(),
        session_id,
        config,
    )
    .await
    .map_err(|e| datafusion::error::DataFusionError::Execution(format!("{engine}: {e}")))
}

/// Whether any node of `plan` scans files.
fn reads_files(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<datafusion::datasource::source::DataSourceExec>()
        .is_some_and(|d| {
            d.data_source()
                .downcast_ref::<datafusion::datasource::physical_plan::FileScanConfig>()
                .is_some()
        })
        || plan.children().into_iter().any(reads_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_and_refuse() {
        let b = |h: &str, p| {
            Ok(Engine::Ballista {
                host: h.into(),
                port: p,
            })
        };
        let cases: Vec<(&str, std::result::Result<Engine, ()>)> = vec![
            ("embedded", Ok(Engine::Embedded)),
            (
                "ballista://127.0.0.1:50050",
                b("127.0.0.1", 50050).map_err(|_: ()| ()),
            ),
            ("ballista://sched", b("sched", 50050).map_err(|_: ()| ())),
            (
                "ballista://sched:7000/",
                b("sched", 7000).map_err(|_: ()| ()),
            ),
            ("ballista://:7000", Err(())),
            ("ballista://h:0", Err(())),
            ("ballista://h:x", Err(())),
            ("http://h:1", Err(())),
            ("", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(Engine::parse(text).map_err(|_| ()), want, "{text}");
        }
        let e = Engine::parse("ballista://h:x").unwrap_err();
        assert!(e.contains("port 'x'"), "{e}");
        assert_eq!(
            Engine::parse("ballista://h").unwrap().to_string(),
            "ballista://h:50050"
        );
    }
}
