//! `tidemark users erase|erasures`, `tidemark vacuum`, `tidemark retention`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::{DataArgs, Target};
use crate::auth::validate_environment;
use crate::jobs::Runner;
use crate::profiles::erase::{self, ErasureStatus};

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Erase a user everywhere: events, profile changes, profile, event stats.
    Erase {
        /// The user id.
        id: String,
        #[command(flatten)]
        at: Target,
    },
    /// The recorded erasures and whether files holding their rows are left.
    Erasures {
        #[arg(long)]
        env: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
}

fn describe(s: &ErasureStatus) -> String {
    let e = &s.erasure;
    let rows: Vec<String> = e
        .rows_deleted
        .iter()
        .map(|(t, n)| format!("{t} {}", n.map_or("?".into(), |n| n.to_string())))
        .collect();
    let state = if s.complete {
        "complete: no file in the store holds the erased rows".to_string()
    } else {
        format!(
            "pending: {} old file(s) still hold erased rows; VACUUM deletes them from {}",
            s.files_pending,
            s.vacuum_eligible_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        )
    };
    format!(
        "erasure {} in {} at {}: rows deleted: {}\n  {state}",
        e.id,
        e.environment,
        e.completed_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        rows.join(", ")
    )
}

pub fn run(file: Option<&Path>, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        match cmd {
            UsersCommand::Erase {
                id,
                at: Target { env, data },
            } => {
                let (config, store) = super::open_store(file, data)?;
                let runner =
                    Runner::new(store.clone(), crate::jobs::JobOptions::from_config(&config));
                let erasure = erase::erase(&runner, &env, &id, "cli").await?;
                let status = erase::status(&store, &erasure, config.retention.vacuum_after).await?;
                println!("{}", describe(&status));
            }
            UsersCommand::Erasures { env, json, data } => {
                if let Some(e) = &env {
                    validate_environment(e)?;
                }
                let (config, store) = super::open_store(file, data)?;
                let mut all = Vec::new();
                for e in erase::list(&store, env.as_deref()).await? {
                    all.push(erase::status(&store, &e, config.retention.vacuum_after).await?);
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else if all.is_empty() {
                    println!("no erasures");
                } else {
                    for s in &all {
                        println!("{}", describe(s));
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `tidemark vacuum`: deletes files that left their tables more than `retention` ago.
pub fn vacuum(
    file: Option<&Path>,
    data: DataArgs,
    retention: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        let (config, store) = super::open_store(file, data)?;
        let retention = retention.unwrap_or(config.retention.vacuum_after);
        let deleted = crate::storage::retention::vacuum_all(
            &store,
            retention,
            &crate::jobs::defs::pending_tables(),
        )
        .await?;
        for (table, n) in &deleted {
            println!("{table}: {n} file(s) deleted");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `tidemark retention`: deletes events older than each environment's retention.
pub fn retention(file: Option<&Path>, data: DataArgs) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        let (config, store) = super::open_store(file, data)?;
        let deleted = crate::storage::retention::apply_retention(&store, &config.retention).await?;
        if deleted.is_empty() {
            println!("no events older than the retention");
        }
        for (env, n) in &deleted {
            println!(
                "{env}: deleted {} event(s) older than {} days",
                n.map_or("?".into(), |n| n.to_string()),
                config.retention.days(env)
            );
        }
        let keep = config.webhooks.deliveries_retention;
        let rows = crate::webhooks::log::apply_retention(&store, keep, chrono::Utc::now()).await?;
        if rows > 0 {
            println!(
                "deliveries: deleted {rows} attempt(s) older than {}",
                humantime::format_duration(keep)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
