//! `tidemark jobs run|rebuild|publish|status`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::DataArgs;
use crate::jobs::{Runner, status};
use crate::node::refresh::{self, Schedule};

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Run the jobs: continuously (polling for new commits) or, with --once, until caught up.
    Run {
        #[command(flatten)]
        data: DataArgs,
        /// One pass over what is pending, then exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        engine: EngineArg,
    },
    /// Recompute every derived table from all of `events`.
    Rebuild {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        engine: EngineArg,
    },
    /// Fold the pending rows into the published tables now (serve and `jobs run` do it
    /// every `jobs.publish_interval`).
    Publish(DataArgs),
    /// Each job's cursor and its lag behind `events`.
    Status {
        #[command(flatten)]
        data: DataArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where the job SQL runs.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArg {
    /// `embedded` (this process) or `ballista://HOST:PORT` (a Ballista cluster of
    /// `tidemark ballista` roles; results are committed from here as embedded).
    #[arg(long, default_value = "embedded", value_parser = crate::ballista::Engine::parse)]
    pub engine: crate::ballista::Engine,
}

impl Default for EngineArg {
    fn default() -> Self {
        EngineArg {
            engine: crate::ballista::Engine::Embedded,
        }
    }
}

fn runner(file: Option<&Path>, data: DataArgs) -> anyhow::Result<(Runner, crate::config::Config)> {
    runner_on(file, data, EngineArg::default())
}

fn runner_on(
    file: Option<&Path>,
    data: DataArgs,
    engine: EngineArg,
) -> anyhow::Result<(Runner, crate::config::Config)> {
    let (config, store) = super::open_store(file, data)?;
    let mut options = crate::jobs::JobOptions::from_config(&config);
    options.engine = engine.engine;
    Ok((Runner::new(store, options), config))
}

fn print_reports(reports: &[crate::jobs::RunReport]) {
    for r in reports {
        println!("{}: {}", r.job, r.summary());
    }
}

fn print_published(reports: &[crate::jobs::publish::PublishReport]) {
    for r in reports {
        println!("{}: {}", r.job, r.summary());
    }
}

/// `jobs run --once`: runs the jobs until caught up, then publishes.
async fn run_once(runner: Runner) -> anyhow::Result<ExitCode> {
    let mut total = 0;
    loop {
        let reports = runner.run_once().await?;
        if reports.is_empty() {
            break;
        }
        total += reports.len();
        print_reports(&reports);
    }
    if total == 0 {
        println!("jobs are up to date");
    }
    print_published(&runner.publish().await?);
    Ok(ExitCode::SUCCESS)
}

/// `jobs run`: the job loop until Ctrl-C or SIGTERM.
async fn run_loop(runner: Runner, config: crate::config::Config) -> anyhow::Result<ExitCode> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::serve::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    println!(
        "tidemark: running jobs every {:?}",
        config.jobs.poll_interval
    );
    let schedule = Schedule::of(&config.jobs);
    refresh::run_loop(runner, schedule, None, Default::default(), stop_rx).await;
    println!("tidemark: stopped");
    Ok(ExitCode::SUCCESS)
}

pub fn run(file: Option<&Path>, cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    match cmd {
        JobsCommand::Run { data, once, engine } => {
            let (runner, config) = runner_on(file, data, engine)?;
            if once {
                rt.block_on(run_once(runner))
            } else {
                rt.block_on(run_loop(runner, config))
            }
        }
        JobsCommand::Rebuild { data, engine } => {
            let (runner, _) = runner_on(file, data, engine)?;
            let bar = ProgressBar::new(Runner::rebuild_steps());
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let reports = rt.block_on(runner.rebuild(Some(&bar)));
            bar.finish_and_clear();
            let reports = reports?;
            if reports.is_empty() {
                println!("no events table yet: nothing to rebuild");
            }
            print_reports(&reports);
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Publish(data) => {
            let (runner, _) = runner(file, data)?;
            let reports = rt.block_on(runner.publish())?;
            if reports.is_empty() {
                println!("nothing pending: the published tables are up to date");
            }
            print_published(&reports);
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Status { data, json } => {
            let (runner, _) = runner(file, data)?;
            let statuses = rt.block_on(runner.status())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                for s in &statuses {
                    println!("{}", status::describe(s));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
