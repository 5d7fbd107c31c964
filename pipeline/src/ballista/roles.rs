//! The Ballista roles of the `tidemark` binary: a scheduler and executors that know our
//! UDFs and the object stores tidemark supports.
//!
//! - the scheduler builds its sessions with [`session_builder`] (Ballista's default
//!   session plus our UDFs), so a submitted plan's UDF calls decode;
//! - an executor takes a function registry with our UDFs, and a runtime producer whose
//!   object-store registry opens `s3://BUCKET` with the options of `[storage]` (the same
//!   as `serve` uses; the local filesystem is built in).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::RuntimeProducer;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::SessionState;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::registry::FunctionRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;
use url::Url;

use crate::storage::Store;
use crate::{Error, Result};

/// Ballista's default session with our UDFs: what the scheduler plans and decodes with.
pub fn session_builder(config: SessionConfig) -> datafusion::common::Result<SessionState> {
    let mut state = ballista_core::utils::default_session_builder(config)?;
    for udf in tidemark_udfs::all() {
        state.register_udf(Arc::new(udf))?;
    }
    Ok(state)
}

/// Runs a scheduler on `bind` until the process is stopped. An executor silent for
/// `executor_timeout_secs` is dropped and its tasks run elsewhere; with none left, running
/// jobs fail after as long again.
pub async fn scheduler(bind: SocketAddr, executor_timeout_secs: u64) -> Result<()> {
    let mut config = SchedulerConfig::default()
        .with_hostname(bind.ip().to_string())
        .with_port(bind.port())
        .with_override_session_builder(Arc::new(session_builder))
        .with_no_executors_grace_period_seconds(executor_timeout_secs);
    config.executor_timeout_seconds = executor_timeout_secs;
    config.expire_dead_executor_interval_seconds = config
        .expire_dead_executor_interval_seconds
        .min(executor_timeout_secs.div_ceil(2).max(1));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::Unavailable(format!("ballista scheduler: {e}")))?;
    println!("tidemark: ballista scheduler on {bind}");
    start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(|e| Error::Unavailable(format!("ballista scheduler on {bind}: {e}")))
}

/// How an executor is run.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// The Arrow Flight (shuffle) address; the gRPC port is `grpc_port`.
    pub bind: SocketAddr,
    pub grpc_port: u16,
    /// The host other executors and the scheduler reach this one at (default: the bind
    /// address, or Ballista's own guess when that is 0.0.0.0).
    pub advertise: Option<String>,
    /// Tasks run at once (0: one per core).
    pub concurrent_tasks: usize,
    /// `[storage]` options, for `s3://` stores.
    pub storage_options: BTreeMap<String, String>,
    /// Where shuffle files go (a temporary directory when `None`).
    pub work_dir: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_secs: u64,
}

/// What an executor decodes a task's function calls with: Ballista's default registry
/// (DataFusion's core scalar, aggregate and window functions), the nested (array)
/// functions it leaves out and the job SQL uses (`array_sort`, `array_to_string`, ...),
/// and our UDFs, each under its aliases too, as the scheduler's session knows them. A plan calling a function missing here fails on the executor with
/// "PhysicalExtensionCodec is not provided for scalar function".
fn executor_functions() -> BallistaFunctionRegistry {
    let mut functions = BallistaFunctionRegistry::default();
    let core = datafusion::functions::all_default_functions();
    let nested = datafusion::functions_nested::all_default_nested_functions();
    let ours = tidemark_udfs::all().into_iter().map(Arc::new);
    for udf in core.into_iter().chain(nested).chain(ours) {
        for name in std::iter::once(udf.name()).chain(udf.aliases().iter().map(String::as_str)) {
            functions
                .scalar_functions
                .insert(name.to_string(), udf.clone());
        }
    }
    functions
}

/// Runs an executor until the process is stopped (or the scheduler stops it).
pub async fn executor(opts: ExecutorOptions) -> Result<()> {
    let functions = executor_functions();
    let registry = Arc::new(StoreRegistry::new(opts.storage_options.clone()));
    let work_dir = opts.work_dir.clone();
    let runtime: RuntimeProducer = Arc::new(move |_config: &SessionConfig| {
        let mut builder = RuntimeEnvBuilder::new().with_object_store_registry(registry.clone());
        if let Some(dir) = &work_dir {
            builder = builder.with_temp_file_path(dir.clone());
        }
        Ok(Arc::new(builder.build()?))
    });
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        external_host: opts
            .advertise
            .clone()
            .or_else(|| (!opts.bind.ip().is_unspecified()).then(|| opts.bind.ip().to_string())),
        port: opts.bind.port(),
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler_host.clone(),
        scheduler_port: opts.scheduler_port,
        vcores: opts.concurrent_tasks,
        work_dir: opts.work_dir.clone(),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: opts.heartbeat_secs,
        override_function_registry: Some(Arc::new(functions)),
        override_runtime_producer: Some(runtime),
        ..Default::default()
    };
    println!(
        "tidemark: ballista executor on {} (grpc {}), scheduler {}:{}",
        opts.bind, opts.grpc_port, opts.scheduler_host, opts.scheduler_port
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Unavailable(format!("ballista executor: {e}")))
}

/// Object stores by URL: the local filesystem (built in), and `s3://BUCKET` opened on
/// first use with the `[storage]` options, as [`Store::open`] opens it.
#[derive(Debug)]
pub struct StoreRegistry {
    inner: DefaultObjectStoreRegistry,
    s3: std::sync::Mutex<std::collections::HashMap<String, Arc<dyn ObjectStore>>>,
    options: BTreeMap<String, String>,
}

impl StoreRegistry {
    pub fn new(options: BTreeMap<String, String>) -> StoreRegistry {
        StoreRegistry {
            inner: DefaultObjectStoreRegistry::new(),
            s3: Default::default(),
            options,
        }
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        let bucket = url.host_str().unwrap_or_default().to_string();
        if url.scheme() != "s3" || bucket.is_empty() {
            return self.inner.get_store(url);
        }
        let mut stores = self.s3.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&bucket) {
            return Ok(s.clone());
        }
        let store = Store::open(&format!("s3://{bucket}"), &self.options)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
            .object_store();
        stores.insert(bucket, store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scalar function the scheduler plans with decodes on an executor: a job's SQL
    /// may call any of them (the profiles view sorts with `array_sort`).
    #[test]
    fn executors_know_every_scalar_function_the_scheduler_plans_with() {
        let planned = session_builder(SessionConfig::new()).unwrap();
        let known = executor_functions().scalar_functions;
        let mut missing: Vec<&String> = planned
            .scalar_functions()
            .keys()
            .filter(|name| !known.contains_key(*name))
            .collect();
        missing.sort();
        assert!(missing.is_empty(), "executors lack {missing:?}");
        for name in ["array_sort", "array_to_string", "json_get_str"] {
            assert!(known.contains_key(name), "{name}");
        }
    }
}
