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

/// `config` with `engine` attached, for [`engine_of`].
pub fn with_engine(config: SessionConfig, engine: &Engine) -> SessionConfig {
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

/// Runs `df` on the session's engine and returns its rows. On Ballista the client plans
/// the query (with its own registrations) and submits the physical plan; the rows come
/// back through the scheduler's result locations.
pub async fn collect(ctx: &SessionContext, df: DataFrame) -> Result<Vec<RecordBatch>> {
    let engine = engine_of(ctx);
    let Some(url) = engine.scheduler_url() else {
        return Ok(df.collect().await?);
    };
    use ballista_core::extension::SessionConfigExt;
    let plan = df.create_physical_plan().await?;
    let config = SessionConfig::new_with_ballista()
        .with_target_partitions(ctx.state().config().target_partitions());
    let codec = config.ballista_physical_extension_codec();
    let session_id = uuid::Uuid::new_v4().to_string();
    let stream = ballista_core::execution_plans::execute_physical_plan::<
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
    .map_err(|e| Error::Unavailable(format!("{engine}: {e}")))?;
    stream
        .try_collect()
        .await
        .map_err(|e| Error::Unavailable(format!("{engine}: {e}")))
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
