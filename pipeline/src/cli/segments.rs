//! `tidemark segments add|list|preview|explain|delete` (definitions as JSON or YAML files).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::{DataArgs, Target};
use crate::problem::Problem;
use crate::problem::{Subject, WriteError};
use crate::segments::store::Segments;
use crate::segments::{compile, preview};
use crate::storage::lease::Leases;

#[derive(Subcommand, Debug)]
pub enum SegmentsCommand {
    /// Store a definition (a .json, .yaml or .yml file); --replace updates an existing one.
    Add {
        file: PathBuf,
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        at: Target,
    },
    /// The definitions of an environment.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: Target,
    },
    /// Count the members of an unsaved definition and show 20 of them.
    Preview {
        file: PathBuf,
        #[command(flatten)]
        at: Target,
    },
    /// The SQL a stored definition compiles to, with its bound values.
    Explain {
        id: String,
        #[command(flatten)]
        at: Target,
    },
    /// Evaluate every segment once and record who entered and exited.
    Run {
        /// Evaluate as of this time (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// The members of a segment (after the last evaluation).
    Members {
        id: String,
        #[command(flatten)]
        at: Target,
    },
    /// Delete a definition.
    Delete {
        id: String,
        #[command(flatten)]
        at: Target,
    },
}

/// Reads a definition: YAML for `.yaml`/`.yml`, JSON otherwise.
fn read_definition(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if yaml {
        serde_yaml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid YAML: {e}", path.display()))
    } else {
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", path.display()))
    }
}

fn problems_error(path: &Path, problems: &[Problem]) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", path.display(), Subject::Segment.listing(problems))
}

pub fn run(file: Option<&Path>, cmd: SegmentsCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        match cmd {
            SegmentsCommand::Add {
                file: def_file,
                replace,
                at: Target { env, data },
            } => {
                let doc = read_definition(&def_file)?;
                let (config, store) = super::open_store(file, data)?;
                match Segments::new(store.clone()).put(&env, doc, replace).await {
                    Ok(s) => println!(
                        "{} segment {} (version {})",
                        if replace { "updated" } else { "added" },
                        s.definition["id"].as_str().unwrap_or_default(),
                        s.version
                    ),
                    Err(WriteError::Invalid(p)) => return Err(problems_error(&def_file, &p)),
                    Err(WriteError::Other(e)) => return Err(e.into()),
                }
                // Evaluated at once, not at a serve's next `segments.interval`.
                let leases = Leases::new(&store, config.lease_ttl);
                let now = chrono::Utc::now().timestamp_micros();
                let runs = crate::segments::job::run_all(&leases, now)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "the segment is stored, but evaluating it failed: {e}; \
                         `tidemark segments run` (or a running serve) evaluates it"
                        )
                    })?;
                print_runs(&runs);
            }
            SegmentsCommand::List {
                json,
                at: Target { env, data },
            } => {
                let (_, store) = super::open_store(file, data)?;
                let all = Segments::new(store).list(&env).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else if all.is_empty() {
                    println!("no segments in environment {env}");
                } else {
                    for (id, s) in &all {
                        println!(
                            "{id:<32} v{:<4} {}",
                            s.version,
                            s.definition["name"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
            SegmentsCommand::Preview {
                file: def_file,
                at: Target { env, data },
            } => {
                preview_file(file, def_file, env, data).await?;
            }
            SegmentsCommand::Explain {
                id,
                at: Target { env, data },
            } => {
                explain(file, id, env, data).await?;
            }
            SegmentsCommand::Run { now, data } => {
                run_segments(file, now, data).await?;
            }
            SegmentsCommand::Members {
                id,
                at: Target { env, data },
            } => {
                let (_, store) = super::open_store(file, data)?;
                let page = crate::segments::members(&store, &env, &id, 1000, None).await?;
                for m in page.members {
                    println!("{}", m["user_id"].as_str().unwrap_or_default());
                }
            }
            SegmentsCommand::Delete {
                id,
                at: Target { env, data },
            } => {
                let (_, store) = super::open_store(file, data)?;
                Segments::new(store).delete(&env, &id).await?;
                println!("deleted segment {id}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `segments preview`: the member count and a sample of an unsaved definition.
async fn preview_file(
    file: Option<&Path>,
    def_file: PathBuf,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let mut doc = read_definition(&def_file)?;
    if let Some(o) = doc.as_object_mut() {
        o.entry("id").or_insert_with(|| "preview".into());
        o.entry("name").or_insert_with(|| "preview".into());
    }
    let (_, store) = super::open_store(file, data)?;
    let segment = Segments::new(store.clone())
        .validate(&env, &doc)
        .await?
        .map_err(|p| problems_error(&def_file, &p))?;
    let compiled = compile::compile(&segment, &env, chrono::Utc::now().timestamp_micros());
    let ctx = crate::query::session(&store, Some(&env)).await?;
    let (count, sample) = preview(&ctx, &compiled, 20).await?;
    println!("{count} member(s)");
    for id in sample {
        println!("  {id}");
    }
    Ok(())
}

/// `segments run`: evaluates every segment now (or at `--now`).
async fn run_segments(
    file: Option<&Path>,
    now: Option<String>,
    data: DataArgs,
) -> anyhow::Result<()> {
    let now = match now {
        None => chrono::Utc::now().timestamp_micros(),
        Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map_err(|e| anyhow::anyhow!("--now: '{t}' is not an RFC 3339 time: {e}"))?
            .timestamp_micros(),
    };
    let (config, store) = super::open_store(file, data)?;
    let leases = Leases::new(&store, config.lease_ttl);
    print_runs(&crate::segments::job::run_all(&leases, now).await?);
    Ok(())
}

/// One line per environment evaluated.
fn print_runs(runs: &[crate::segments::job::SegmentRun]) {
    for r in runs {
        println!(
            "{}: run {}, {} segment(s), {} entered, {} exited{}",
            r.environment,
            r.run,
            r.segments,
            r.entered,
            r.exited,
            if r.repaired > 0 {
                format!(", {} change(s) of an interrupted run completed", r.repaired)
            } else {
                String::new()
            }
        );
    }
}

/// `segments explain`: the compiled SQL of a stored segment and its bound values.
async fn explain(
    file: Option<&Path>,
    id: String,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let (_, store) = super::open_store(file, data)?;
    let segments = Segments::new(store);
    let stored = segments.get(&env, &id).await?;
    let segment = segments
        .validate(&env, &stored.definition)
        .await?
        .map_err(|p| problems_error(Path::new(&id), &p))?;
    let c = compile::compile(&segment, &env, chrono::Utc::now().timestamp_micros());
    println!("{}", c.sql);
    for (i, p) in c.params.iter().enumerate() {
        println!("-- ${} = {p}", i + 1);
    }
    Ok(())
}
