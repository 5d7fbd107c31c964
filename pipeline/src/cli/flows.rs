//! `tidemark flows add|update|publish|list|show|start|preview|runs|run|retry|cancel|pause|
//! resume|delete`: the same operations as `/v1/{env}/flows`, on the store directly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::{Target, registry};
use crate::flows::def::{Flow, Flows, Validation};
use crate::flows::{runs, start};
use crate::problem::{Subject, WriteError};
use crate::storage::Store;

#[derive(Subcommand, Debug)]
pub enum FlowsCommand {
    /// Store a flow (a .json, .yaml or .yml file) and print its signing secret once.
    Add {
        file: PathBuf,
        /// Publish it at once (runs start on published versions only).
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        at: Target,
    },
    /// Replace a flow's draft with a file.
    Update {
        id: String,
        file: PathBuf,
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        at: Target,
    },
    /// Publish the draft as the next version.
    Publish(registry::One),
    /// The flows of an environment, with their run counts.
    List(registry::Listing),
    /// One flow: its draft and published version.
    Show(registry::One),
    /// Start runs now (one user, several, or a segment's members).
    Start {
        id: String,
        #[command(flatten)]
        who: Who,
        /// A variable, NAME=VALUE (VALUE as JSON when it parses, else text); repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Starts with the same key within 24 h start nothing new.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        at: Target,
    },
    /// Render the flow's requests for one user; sends nothing, stores nothing.
    Preview {
        id: String,
        #[arg(long)]
        user: String,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Preview the published version instead of the draft.
        #[arg(long)]
        published: bool,
        #[command(flatten)]
        at: Target,
    },
    /// The runs of a flow, newest first.
    Runs(RunsArgs),
    /// One run with its log.
    Run {
        id: String,
        run: String,
        #[command(flatten)]
        at: Target,
    },
    /// Retry failed runs: the ones named, or every one that failed since --since.
    Retry {
        id: String,
        runs: Vec<String>,
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        at: Target,
    },
    /// Cancel active runs.
    Cancel {
        id: String,
        #[arg(required = true)]
        runs: Vec<String>,
        #[command(flatten)]
        at: Target,
    },
    Pause(registry::One),
    Resume(registry::One),
    Delete(registry::One),
}

/// Who a start is for.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Who {
    #[arg(long)]
    user: Option<String>,
    /// Comma-separated user ids.
    #[arg(long, value_delimiter = ',')]
    users: Option<Vec<String>>,
    #[arg(long)]
    segment: Option<String>,
}

/// Which runs `flows runs` lists.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    id: String,
    /// running, waiting, completed, exited, failed, cancelled or capped.
    #[arg(long)]
    status: Option<String>,
    /// Runs started since (24h, 7d, or an RFC 3339 time).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Target,
}

impl registry::Printed for Flow {
    fn print(&self) {
        let state = if self.paused {
            format!(
                "paused ({})",
                self.paused_reason.as_deref().unwrap_or("no reason")
            )
        } else {
            "enabled".into()
        };
        let published = self
            .published
            .map_or("not published".to_string(), |v| format!("published v{v}"));
        println!(
            "{:<28} {:<16} {:<10} {}",
            self.id,
            published,
            state,
            self.draft["name"].as_str().unwrap_or_default()
        );
    }
}

fn vars(list: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for v in list {
        let Some((name, value)) = v.split_once('=') else {
            anyhow::bail!("--var {v:?}: expected NAME=VALUE");
        };
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

fn refused(subject: Subject, what: &str) -> impl Fn(WriteError) -> anyhow::Error + '_ {
    move |e| match e {
        WriteError::Invalid(p) => anyhow::anyhow!("{what}: {}", subject.listing(&p)),
        WriteError::Other(e) => e.into(),
    }
}

async fn validation(
    config: &crate::config::Config,
    store: &Store,
    env: &str,
) -> anyhow::Result<(Validation, crate::webhooks::Context)> {
    let hooks = crate::webhooks::Context::new(config, store)?;
    Ok((
        Validation::load(
            store,
            env,
            hooks.clone(),
            config.limits.max_properties_depth,
        )
        .await?,
        hooks,
    ))
}

pub fn run(file: Option<&Path>, cmd: FlowsCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        match cmd {
            FlowsCommand::Add {
                file: doc,
                publish,
                at,
            } => add(file, doc, publish, at).await?,
            FlowsCommand::Update {
                id,
                file: doc,
                publish,
                at,
            } => update(file, id, doc, publish, at).await?,
            FlowsCommand::Publish(registry::One { id, at }) => {
                let (config, store) = super::open_store(file, at.data)?;
                let (v, _) = validation(&config, &store, &at.env).await?;
                publish_one(&store, &at.env, &id, &v).await?;
            }
            FlowsCommand::List(registry::Listing { json, at }) => list(file, json, at).await?,
            FlowsCommand::Show(registry::One { id, at }) => {
                let (_, store) = super::open_store(file, at.data)?;
                let f = Flows::new(store).get(&at.env, &id).await?;
                println!("{}", serde_json::to_string_pretty(&f.public())?);
            }
            FlowsCommand::Start {
                id,
                who,
                vars: list,
                idempotency_key,
                at,
            } => start_runs(file, id, who, list, idempotency_key, at).await?,
            FlowsCommand::Preview {
                id,
                user,
                vars: list,
                published,
                at,
            } => preview(file, id, user, list, published, at).await?,
            FlowsCommand::Runs(r) => list_runs(file, r).await?,
            FlowsCommand::Run { id, run, at } => {
                let (_, store) = super::open_store(file, at.data)?;
                let r = runs::get(&store, &at.env, &id, &run).await?;
                let spec = crate::flows::store::FlowStore::new(&store, &at.env)
                    .version(&id, r.version)
                    .await?
                    .map(|v| v.spec);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs::public(&r, spec.as_ref()))?
                );
            }
            FlowsCommand::Retry {
                id,
                runs: list,
                since,
                at,
            } => retry(file, id, list, since, at).await?,
            FlowsCommand::Cancel { id, runs: list, at } => {
                let (_, store) = super::open_store(file, at.data)?;
                Flows::new(store.clone()).get(&at.env, &id).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs::cancel(&store, &at.env, &id, list).await?)?
                );
            }
            FlowsCommand::Pause(one) => registry::set_paused::<Flow>(file, one, true).await?,
            FlowsCommand::Resume(one) => registry::set_paused::<Flow>(file, one, false).await?,
            FlowsCommand::Delete(one) => registry::delete::<Flow>(file, one).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn add(file: Option<&Path>, doc: PathBuf, publish: bool, at: Target) -> anyhow::Result<()> {
    let input = super::segments::read_definition(&doc)?;
    let (config, store) = super::open_store(file, at.data)?;
    let (v, hooks) = validation(&config, &store, &at.env).await?;
    let shown = doc.display().to_string();
    let (flow, secret) = Flows::new(store.clone())
        .create(&at.env, &input, &v, hooks.key()?)
        .await
        .map_err(refused(Subject::Flow, &shown))?;
    println!("added flow {}", flow.id);
    println!("signing secret (shown once): {}", secret.expose());
    if publish {
        publish_one(&store, &at.env, &flow.id, &v).await?;
    }
    Ok(())
}

async fn update(
    file: Option<&Path>,
    id: String,
    doc: PathBuf,
    publish: bool,
    at: Target,
) -> anyhow::Result<()> {
    let input = super::segments::read_definition(&doc)?;
    let (config, store) = super::open_store(file, at.data)?;
    let (v, _) = validation(&config, &store, &at.env).await?;
    let shown = doc.display().to_string();
    Flows::new(store.clone())
        .update(&at.env, &id, &input, &v)
        .await
        .map_err(refused(Subject::Flow, &shown))?;
    println!("updated the draft of flow {id}");
    if publish {
        publish_one(&store, &at.env, &id, &v).await?;
    }
    Ok(())
}

async fn list(file: Option<&Path>, json: bool, at: Target) -> anyhow::Result<()> {
    let (_, store) = super::open_store(file, at.data)?;
    let all = Flows::new(store.clone()).list(&at.env).await?;
    let stats = crate::flows::stats(&store, &at.env).await?;
    if json {
        let items: Vec<Value> = all
            .values()
            .map(|f| {
                let mut v = f.public();
                v["runs"] = stats.get(&f.id).cloned().unwrap_or(json!({}));
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else if all.is_empty() {
        println!("no flows in environment {}", at.env);
    } else {
        for f in all.values() {
            registry::Printed::print(f);
            if let Some(s) = stats.get(&f.id) {
                println!("    runs: {s}");
            }
        }
    }
    Ok(())
}

async fn start_runs(
    file: Option<&Path>,
    id: String,
    who: Who,
    list: Vec<String>,
    idempotency_key: Option<String>,
    at: Target,
) -> anyhow::Result<()> {
    let (config, store) = super::open_store(file, at.data)?;
    let mut input = json!({"variables": vars(&list)?, "idempotency_key": idempotency_key});
    match (who.user, who.users, who.segment) {
        (Some(u), _, _) => input["user_id"] = json!(u),
        (_, Some(us), _) => input["user_ids"] = json!(us),
        (_, _, Some(s)) => input["segment"] = json!(s),
        _ => anyhow::bail!("give --user, --users or --segment"),
    }
    let out = start::start(
        &store,
        &at.env,
        &id,
        &input,
        "cli",
        config.limits.max_properties_depth,
    )
    .await
    .map_err(refused(Subject::Start, "start"))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn preview(
    file: Option<&Path>,
    id: String,
    user: String,
    list: Vec<String>,
    published: bool,
    at: Target,
) -> anyhow::Result<()> {
    let (config, store) = super::open_store(file, at.data)?;
    let f = Flows::new(store.clone()).get(&at.env, &id).await?;
    let spec = if published {
        start::published(&store, &at.env, &f).await?.1
    } else {
        let (v, _) = validation(&config, &store, &at.env).await?;
        v.check(&f.draft)
            .map_err(|p| anyhow::anyhow!("{}", Subject::Flow.listing(&p)))?
    };
    let input = json!({"user_id": user, "variables": vars(&list)?});
    let out = start::preview(
        &store,
        &at.env,
        &f,
        &spec,
        &input,
        config.limits.max_properties_depth,
    )
    .await
    .map_err(refused(Subject::Start, "preview"))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn list_runs(file: Option<&Path>, args: RunsArgs) -> anyhow::Result<()> {
    let RunsArgs {
        id,
        status,
        since,
        user,
        limit,
        json,
        at,
    } = args;
    let (_, store) = super::open_store(file, at.data)?;
    Flows::new(store.clone()).get(&at.env, &id).await?;
    let filter = runs::Filter {
        status: status
            .map(|s| runs::parse_status(&s))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--status: {e}"))?,
        since: since
            .map(|s| crate::webhooks::parse_time(&s))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        user_id: user,
        limit,
    };
    let found = runs::list(&store, &at.env, &id, &filter).await?;
    if json {
        let items: Vec<Value> = found.iter().map(|r| runs::public(r, None)).collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else if found.is_empty() {
        println!("no runs");
    } else {
        for r in &found {
            println!(
                "{}  {:<10} {:<20} step {:<16} {}",
                r.id,
                r.status.as_str(),
                r.user_id,
                r.step.as_deref().unwrap_or("-"),
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn retry(
    file: Option<&Path>,
    id: String,
    list: Vec<String>,
    since: Option<String>,
    at: Target,
) -> anyhow::Result<()> {
    let (_, store) = super::open_store(file, at.data)?;
    Flows::new(store.clone()).get(&at.env, &id).await?;
    let out = match (since, list.is_empty()) {
        (Some(s), true) => {
            let t = crate::webhooks::parse_time(&s).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            runs::retry_failed_since(&store, &at.env, &id, t).await?
        }
        (None, false) => runs::retry(&store, &at.env, &id, list).await?,
        _ => anyhow::bail!("give run ids or --since, not both or neither"),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn publish_one(store: &Store, env: &str, id: &str, v: &Validation) -> anyhow::Result<()> {
    let (_, version) = Flows::new(store.clone())
        .publish(env, id, v)
        .await
        .map_err(refused(Subject::Flow, id))?;
    println!("published flow {id} as version {version}");
    Ok(())
}
