//! `tidemark exports add|list|status|run|backfill|pause|resume|delete`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{DataArgs, Target, registry};
use crate::exports::Context;
use crate::exports::batched::parse_bound;
use crate::exports::def::{Export, Exports};
use crate::exports::worker::{self, Runner};
use crate::problem::{Subject, WriteError};

#[derive(Subcommand, Debug)]
pub enum ExportsCommand {
    /// Schedule an export (prints its id; for an https:// destination, its signing secret).
    Add(AddArgs),
    /// List exports.
    List(registry::Listing),
    /// The last good window, lag and errors of an export.
    Status {
        id: String,
        #[command(flatten)]
        at: Target,
    },
    /// Run an export's closed windows now (even if paused or backing off).
    Run {
        id: String,
        #[command(flatten)]
        at: Target,
    },
    /// Re-export the windows from..to (their objects are replaced, never duplicated).
    Backfill {
        id: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        at: Target,
    },
    Pause(registry::One),
    Resume(registry::One),
    Delete(registry::One),
}

impl registry::Printed for Export {
    fn print(&self) {
        print_export(self);
    }
}

fn print_export(e: &Export) {
    let state = if e.paused {
        format!(
            "paused ({})",
            e.paused_reason.as_deref().unwrap_or("no reason")
        )
    } else {
        "enabled".into()
    };
    println!(
        "{}  {} every {} as {} -> {}  {}",
        e.id,
        e.source.name(),
        e.interval.name(),
        e.format.name(),
        e.destination,
        state
    );
}

/// `exports add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// events, profiles, event_stats, segment_members, segment_changes or sql.
    #[arg(long)]
    source: String,
    /// 1m, 5m, 15m, 1h (default) or 1d.
    #[arg(long)]
    interval: Option<String>,
    /// parquet (default, zstd), ndjson (gzip) or csv.
    #[arg(long)]
    format: Option<String>,
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///dir or
    /// https://host/path.
    #[arg(long)]
    destination: String,
    /// An object-store option "name=value" (credentials, endpoint, region; repeat).
    #[arg(long = "option", value_name = "NAME=VALUE")]
    options: Vec<String>,
    /// For source events: an event-name glob (repeat).
    #[arg(long = "event", value_name = "GLOB")]
    events: Vec<String>,
    /// For source events: a category (repeat).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// For source sql: the query; {window_start} and {window_end} are replaced.
    #[arg(long)]
    sql: Option<String>,
    /// The first window (RFC 3339; default: the current window).
    #[arg(long)]
    start: Option<String>,
    /// For https:// destinations: the signing secret (whsec_…; default: generated).
    #[arg(long)]
    secret: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    at: Target,
}

pub fn run(file: Option<&std::path::Path>, cmd: ExportsCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        match cmd {
            ExportsCommand::Add(args) => add(file, args).await?,
            ExportsCommand::List(registry::Listing {
                json,
                at: Target { env, data },
            }) => {
                let (_, store) = super::open_store(file, data)?;
                let all = Exports::new(store).list(&env).await?;
                if json {
                    let list: Vec<Value> = all.values().map(Export::public).collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else if all.is_empty() {
                    println!("no exports in environment {env}");
                } else {
                    all.values().for_each(print_export);
                }
            }
            ExportsCommand::Status {
                id,
                at: Target { env, data },
            } => {
                status(file, id, env, data).await?;
            }
            ExportsCommand::Run {
                id,
                at: Target { env, data },
            } => {
                let (config, store) = super::open_store(file, data)?;
                let ctx = Context::new(&config, &store)?;
                let ex = Exports::new(store.clone()).get(&env, &id).await?;
                let r = Runner::new(store, ctx)
                    .run_now(&env, &ex, chrono::Utc::now())
                    .await?;
                println!("{}", serde_json::to_string_pretty(&r)?);
                if let Some(e) = r["error"].as_str() {
                    anyhow::bail!("export {id}: {e}");
                }
            }
            ExportsCommand::Backfill {
                id,
                from,
                to,
                at: Target { env, data },
            } => {
                backfill(file, id, from, to, env, data).await?;
            }
            ExportsCommand::Pause(one) => registry::set_paused::<Export>(file, one, true).await?,
            ExportsCommand::Resume(one) => registry::set_paused::<Export>(file, one, false).await?,
            ExportsCommand::Delete(one) => registry::delete::<Export>(file, one).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `exports add`: schedules the export and prints its id (and an HTTPS secret once).
async fn add(file: Option<&std::path::Path>, args: AddArgs) -> anyhow::Result<()> {
    let AddArgs {
        source,
        interval,
        format,
        destination,
        options,
        events,
        categories,
        sql,
        start,
        secret,
        description,
        at: Target { env, data },
    } = args;
    let (config, store) = super::open_store(file, data)?;
    let ctx = Context::new(&config, &store)?;
    let mut input = json!({"source": source, "destination": destination});
    let mut opts = serde_json::Map::new();
    for (i, o) in options.iter().enumerate() {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--option[{i}]: {o:?} must be NAME=VALUE"))?;
        opts.insert(k.trim().to_string(), json!(v));
    }
    if !opts.is_empty() {
        input["options"] = Value::Object(opts);
    }
    if !events.is_empty() || !categories.is_empty() {
        input["filter"] = json!({"events": events, "categories": categories});
    }
    for (name, v) in [
        ("interval", interval),
        ("format", format),
        ("sql", sql),
        ("start", start),
        ("secret", secret),
        ("description", description),
    ] {
        if let Some(v) = v {
            input[name] = json!(v);
        }
    }
    let (ex, secret) = match Exports::new(store).create(&env, &input, &ctx).await {
        Ok(x) => x,
        Err(WriteError::Invalid(p)) => anyhow::bail!(Subject::Export.listing(&p)),
        Err(WriteError::Other(e)) => return Err(e.into()),
    };
    println!("added export {}", ex.id);
    if let Some(s) = secret {
        println!("signing secret (shown only now): {}", s.expose());
    }
    Ok(())
}

/// `exports backfill`: re-exports the windows of a range, with a progress bar.
async fn backfill(
    file: Option<&std::path::Path>,
    id: String,
    from: String,
    to: String,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let (from, to) = (parse_bound(&from, "--from")?, parse_bound(&to, "--to")?);
    let (config, store) = super::open_store(file, data)?;
    let ctx = Context::new(&config, &store)?;
    let ex = Exports::new(store.clone()).get(&env, &id).await?;
    let windows = worker::backfill_windows(&ex, from, to)?;
    let bar = indicatif::ProgressBar::new(windows.len() as u64);
    let done = Runner::new(store, ctx)
        .backfill(&env, &ex, &windows, |r| {
            bar.inc(1);
            bar.println(format!(
                "{}  {} rows in {} file(s)",
                r.window.name(),
                r.rows,
                r.files.len()
            ));
        })
        .await;
    bar.finish_and_clear();
    let done = done?;
    let rows: u64 = done.iter().map(|r| r.rows).sum();
    println!("backfilled {} window(s), {rows} rows", done.len());
    Ok(())
}

/// `exports status`: the last good window, lag, errors and backoff.
async fn status(
    file: Option<&std::path::Path>,
    id: String,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let (config, store) = super::open_store(file, data)?;
    let ctx = Context::new(&config, &store)?;
    let ex = Exports::new(store.clone()).get(&env, &id).await?;
    let s = worker::status(&store, &ctx, &env, &ex, chrono::Utc::now()).await?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
