//! The `tidemark` command line.
//!
//! - `serve`: run a node (ingest API, flusher) on the embedded default.
//! - `keys`: create, list and revoke API keys.
//! - `jobs`: run, rebuild and inspect the SQL jobs that derive profiles and event stats.
//! - `fields`: the custom field registry; `import`: bulk CSV import of profiles.
//! - `users`: erase a user, list erasures; `vacuum` and `retention` housekeeping.
//! - `segments`: segment definitions, previews and their SQL.
//! - `webhooks`: webhook subscriptions; `sinks run`: the delivery worker on its own.
//! - `flows`: flows, their starts, previews and runs.
//! - `sql`: query the tables straight from the store.
//! - `ballista`: the scheduler and executor roles of a Ballista cluster.
//! - `config`: print an example configuration.
//!
//! `exports` manages scheduled exports; `registry` holds the arms every kind of config
//! document shares (`delete`, `pause`, `resume`, `list` arguments).

mod ballista;
mod exports;
mod fields;
mod flows;
mod import;
mod jobs;
mod keys;
mod registry;
mod segments;
mod serve;
mod sql;
mod users;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "tidemark",
    version,
    about = "Self-hosted customer data pipeline"
)]
pub struct Cli {
    /// Config file (default: ./tidemark.toml when it exists).
    #[arg(long, global = true, env = "TIDEMARK_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data lives; shared by the commands that touch the store.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Storage root: a directory, s3://bucket/prefix or memory:// [default: ./tidemark-data]
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
}

/// The environment a command acts on, and where its data lives: the same `--env` rule for
/// every command (default `default`, the environment `serve` creates; checked before
/// anything is opened).
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The environment [a-z0-9][a-z0-9_-]{0,62}.
    #[arg(long, env = "TIDEMARK_ENV", default_value = "default", value_parser = parse_environment)]
    pub env: String,
    #[command(flatten)]
    pub data: DataArgs,
}

fn parse_environment(s: &str) -> Result<String, String> {
    crate::auth::validate_environment(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the pipeline: ingest API, write-ahead log, flusher, compaction.
    Serve(serve::ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run, rebuild and inspect the SQL jobs (profiles, event_stats).
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Declare, list and delete custom profile fields.
    #[command(subcommand)]
    Fields(fields::FieldsCommand),
    /// Import profiles from a CSV file (exit 2 when some rows failed).
    Import(import::ImportArgs),
    /// Define, preview and explain segments.
    #[command(subcommand)]
    Segments(segments::SegmentsCommand),
    /// Erase users and follow erasures.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Webhook subscriptions: add, list, update, pause, resume, delete, test, deliveries,
    /// recover, rotate-secret.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Scheduled bulk exports: add, list, status, run, backfill, pause, resume, delete.
    #[command(subcommand)]
    Exports(exports::ExportsCommand),
    /// Flows: add, update, publish, list, show, start, preview, runs, run, retry, cancel,
    /// pause, resume, delete.
    #[command(subcommand)]
    Flows(flows::FlowsCommand),
    /// Run the sinks (webhook delivery and exports) without the rest of the node.
    #[command(subcommand)]
    Sinks(webhooks::SinksCommand),
    /// Delete files that left their tables (DELETE, compaction) long enough ago.
    Vacuum {
        /// Files that left a table more than this long ago [default: retention.vacuum_after]
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<std::time::Duration>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Delete events older than each environment's retention (retention.events_days) and
    /// delivery attempts older than webhooks.deliveries_retention.
    Retention(DataArgs),
    /// Run a read-only SQL query over the tables, straight from the store.
    Sql(sql::SqlArgs),
    /// The roles of an Apache DataFusion Ballista cluster for `--engine ballista://…`.
    #[command(subcommand)]
    Ballista(ballista::BallistaCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print an example tidemark.toml with every setting and its default.
    Example,
    /// Print the configuration in effect after all layers.
    Show(DataArgs),
}

fn load_config(
    cli_config: Option<&std::path::Path>,
    overrides: Overrides,
) -> anyhow::Result<Config> {
    Ok(Config::load(cli_config, &overrides)?)
}

/// The configuration (with `--data` applied) and the store it names.
fn open_store(
    cli_config: Option<&std::path::Path>,
    data: DataArgs,
) -> anyhow::Result<(Config, crate::storage::Store)> {
    let config = load_config(
        cli_config,
        Overrides {
            data: data.data,
            ..Default::default()
        },
    )?;
    let store = crate::storage::Store::open_config(&config.data, &config.storage)?;
    Ok((config, store))
}

/// The stack of each runtime thread. Walks over a parsed query recurse once per level of
/// its expressions (the parser, the read-only check, dropping the tree), and a query may
/// nest up to `query::depth::MAX_EXPRESSION_DEPTH` levels: measured, 998 chained `+` took
/// more than tokio's default 2 MiB in a debug build. Only the pages a thread touches are
/// memory; the rest is address space.
const THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()?)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tidemark=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let file = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => serve::run(file, args),
        Command::Keys(cmd) => keys::run(file, cmd),
        Command::Jobs(cmd) => jobs::run(file, cmd),
        Command::Fields(cmd) => fields::run(file, cmd),
        Command::Import(args) => import::run(file, args),
        Command::Segments(cmd) => segments::run(file, cmd),
        Command::Users(cmd) => users::run(file, cmd),
        Command::Webhooks(cmd) => webhooks::run(file, cmd),
        Command::Exports(cmd) => exports::run(file, cmd),
        Command::Flows(cmd) => flows::run(file, cmd),
        Command::Sinks(cmd) => webhooks::sinks(file, cmd),
        Command::Vacuum { retention, data } => users::vacuum(file, data, retention),
        Command::Retention(data) => users::retention(file, data),
        Command::Sql(args) => sql::run(file, args),
        Command::Ballista(cmd) => ballista::run(file, cmd),
        Command::Config(ConfigCommand::Example) => {
            print!("{}", Config::example());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show(data)) => {
            let config = load_config(
                file,
                Overrides {
                    data: data.data,
                    ..Default::default()
                },
            )?;
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
