//! `tidemark serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{AckMode, Overrides};
use crate::node;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Storage root: a directory, s3://bucket/prefix or memory:// [default: ./tidemark-data]
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8420]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Write-ahead log directory [default: <data>/_tidemark/wal for a local data directory]
    #[arg(long, value_name = "DIR")]
    pub wal_dir: Option<PathBuf>,
    /// When to acknowledge a batch: after the WAL fsync, or after the Delta commit.
    #[arg(long, value_enum)]
    pub ack: Option<AckArg>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum AckArg {
    Wal,
    Commit,
}

pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(file: Option<&Path>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(
        file,
        Overrides {
            data: args.data,
            listen: args.listen,
            wal_dir: args.wal_dir,
            ack: args.ack.map(|a| match a {
                AckArg::Wal => AckMode::Wal,
                AckArg::Commit => AckMode::Commit,
            }),
        },
    )?;
    let rt = super::runtime()?;
    let code = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listen: cannot bind {}: {e}", config.listen))?;
        node::run(config, listener, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    });
    // Every task was stopped in order and everything acknowledged is committed. Dropping
    // the runtime now would drop the futures of a Delta read that a late task still blocks
    // on in the kernel's executor, which then panics ("TokioMultiThreadExecutor has
    // crashed"); the process exits instead and the OS frees the rest.
    std::mem::forget(rt);
    code
}
