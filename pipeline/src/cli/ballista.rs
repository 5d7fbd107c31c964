//! `tidemark ballista scheduler|executor`: the roles of a Ballista cluster that runs
//! tidemark's SQL (`--engine ballista://HOST:PORT` on `jobs` and `sql`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::ballista::roles;

#[derive(Subcommand, Debug)]
pub enum BallistaCommand {
    /// Run a Ballista scheduler with tidemark's UDFs.
    Scheduler {
        /// Address to listen on (gRPC).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// Seconds without a heartbeat before an executor is dropped (its tasks run on
        /// the others; with none left, running jobs fail after as long again).
        #[arg(long, default_value_t = 60)]
        executor_timeout: u64,
    },
    /// Run a Ballista executor with tidemark's UDFs and object stores ([storage] options).
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long, value_parser = parse_host_port)]
        scheduler: (String, u16),
        /// Address for Arrow Flight (shuffle reads); gRPC listens on the next port
        /// unless --grpc-port says otherwise.
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: SocketAddr,
        #[arg(long)]
        grpc_port: Option<u16>,
        /// The host name others reach this executor at (needed with --bind 0.0.0.0 on
        /// several machines; e.g. the pod's DNS name).
        #[arg(long)]
        advertise: Option<String>,
        /// Tasks run at once [default: one per core].
        #[arg(long, default_value_t = 0)]
        concurrent_tasks: usize,
        /// Directory for shuffle files [default: a temporary directory].
        #[arg(long)]
        work_dir: Option<String>,
        /// Seconds between heartbeats (keep well under the scheduler's --executor-timeout).
        #[arg(long, default_value_t = 10)]
        heartbeat: u64,
    },
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(|p| (h.to_string(), p))
            .ok_or_else(|| format!("'{s}': '{p}' is not a port number")),
        _ => Err(format!("'{s}' is not HOST:PORT")),
    }
}

pub fn run(file: Option<&Path>, cmd: BallistaCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    match cmd {
        BallistaCommand::Scheduler {
            bind,
            executor_timeout,
        } => rt.block_on(roles::scheduler(bind, executor_timeout.max(1)))?,
        BallistaCommand::Executor {
            scheduler,
            bind,
            grpc_port,
            advertise,
            concurrent_tasks,
            work_dir,
            heartbeat,
        } => {
            let config = super::load_config(file, Default::default())?;
            let grpc_port = match grpc_port {
                Some(p) => p,
                None => bind.port().checked_add(1).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--bind: port {} leaves no port for gRPC; set --grpc-port",
                        bind.port()
                    )
                })?,
            };
            rt.block_on(roles::executor(roles::ExecutorOptions {
                scheduler_host: scheduler.0,
                scheduler_port: scheduler.1,
                bind,
                grpc_port,
                advertise,
                concurrent_tasks,
                storage_options: config.storage.options.clone(),
                work_dir,
                heartbeat_secs: heartbeat.max(1),
            }))?
        }
    }
    Ok(ExitCode::SUCCESS)
}
