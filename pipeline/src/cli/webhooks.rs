//! `tidemark webhooks add|list|show|update|pause|resume|delete|test|deliveries|recover|
//! rotate-secret` and `tidemark sinks run` (the delivery worker on its own).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{DataArgs, Target, registry};
use crate::problem::Problem;
use crate::problem::{Subject, WriteError};
use crate::supervisor::Supervisor;
use crate::webhooks::follow::Follower;
use crate::webhooks::subscription::{self, Subscription, Subscriptions};
use crate::webhooks::{self, Context};

/// Settings of a subscription given as flags (add and update).
#[derive(Args, Debug, Default)]
pub struct SubscriptionArgs {
    /// Destination URL (http:// or https://).
    #[arg(long)]
    url: Option<String>,
    /// POST (default) or PUT.
    #[arg(long)]
    method: Option<String>,
    /// A custom header "Name: value" (repeat for several).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Event-name glob to receive, `*` = any characters (repeat; default: all).
    #[arg(long = "event", value_name = "GLOB")]
    events: Vec<String>,
    /// Category to receive: platform, sdk, custom, system (repeat; default: all).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// Events per message (1..1000; default 1).
    #[arg(long)]
    max_events: Option<u64>,
    /// How long a partial batch waits for more events (ms; default 1000).
    #[arg(long)]
    max_wait_ms: Option<u64>,
    /// Add each event's user profile (tags, fields, activity).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    include_profile: Option<bool>,
    /// Attempts per second at most.
    #[arg(long)]
    rate_limit: Option<u64>,
    /// Requests in flight at most (1..64; default 8).
    #[arg(long)]
    max_in_flight: Option<u64>,
    #[arg(long)]
    description: Option<String>,
}

impl SubscriptionArgs {
    /// The flags as the JSON object the API takes.
    fn to_json(&self) -> anyhow::Result<Value> {
        let mut o = serde_json::Map::new();
        if let Some(u) = &self.url {
            o.insert("url".into(), json!(u));
        }
        if let Some(m) = &self.method {
            o.insert("method".into(), json!(m));
        }
        if !self.headers.is_empty() {
            let mut h = serde_json::Map::new();
            for (i, line) in self.headers.iter().enumerate() {
                let (name, value) = line.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!("--header[{i}]: {line:?} must be \"Name: value\"")
                })?;
                h.insert(name.trim().to_string(), json!(value.trim()));
            }
            o.insert("headers".into(), Value::Object(h));
        }
        if !self.events.is_empty() || !self.categories.is_empty() {
            o.insert(
                "filter".into(),
                json!({"events": self.events, "categories": self.categories}),
            );
        }
        for (name, v) in [
            ("max_events", self.max_events),
            ("max_wait_ms", self.max_wait_ms),
            ("rate_limit", self.rate_limit),
            ("max_in_flight", self.max_in_flight),
        ] {
            if let Some(v) = v {
                o.insert(name.into(), json!(v));
            }
        }
        if let Some(b) = self.include_profile {
            o.insert("include_profile".into(), json!(b));
        }
        if let Some(d) = &self.description {
            o.insert("description".into(), json!(d));
        }
        Ok(Value::Object(o))
    }
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Create a subscription; prints its signing secret (shown only now).
    Add {
        #[command(flatten)]
        sub: SubscriptionArgs,
        /// Use this secret (whsec_<base64 of 24-64 bytes>) instead of a generated one.
        #[arg(long)]
        secret: Option<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        at: Target,
    },
    /// The subscriptions of an environment.
    List(registry::Listing),
    /// Change settings of a subscription (only the flags given).
    Update {
        id: String,
        #[command(flatten)]
        sub: SubscriptionArgs,
        #[command(flatten)]
        at: Target,
    },
    /// Stop delivering (messages keep queueing; nothing is dropped).
    Pause(registry::One),
    /// Deliver again, backlog first.
    Resume(registry::One),
    /// Delete a subscription and its queued messages.
    Delete(registry::One),
    /// Send one signed test message now and show the response.
    Test {
        id: String,
        #[command(flatten)]
        at: Target,
    },
    /// The newest delivery attempts of a subscription.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only attempts with this status: delivered, retrying, failed, gone.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: Target,
    },
    /// Send again the messages that failed since a time (RFC 3339 or a duration ago).
    Recover {
        id: String,
        #[arg(long)]
        since: String,
        #[command(flatten)]
        at: Target,
    },
    /// Replace the signing secret; the old one keeps signing for --grace (default 24h).
    RotateSecret {
        id: String,
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        grace: Option<humantime::Duration>,
        #[command(flatten)]
        at: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum SinksCommand {
    /// Run the delivery workers (webhooks, exports) until Ctrl-C / SIGTERM.
    Run {
        #[command(flatten)]
        data: DataArgs,
    },
}

fn problems_error(problems: &[Problem]) -> anyhow::Error {
    anyhow::anyhow!(Subject::Webhook.listing(problems))
}

fn written(
    r: Result<subscription::Subscription, WriteError>,
) -> anyhow::Result<subscription::Subscription> {
    match r {
        Ok(s) => Ok(s),
        Err(WriteError::Invalid(p)) => Err(problems_error(&p)),
        Err(WriteError::Other(e)) => Err(e.into()),
    }
}

impl registry::Printed for Subscription {
    fn print(&self) {
        print_sub(self);
    }
}

fn print_sub(s: &subscription::Subscription) {
    let state = if s.paused {
        format!(
            "paused ({})",
            s.paused_reason.as_deref().unwrap_or("no reason")
        )
    } else {
        "enabled".into()
    };
    println!(
        "{}  {} {}  events={} categories={} max_events={}  {}",
        s.id,
        s.method,
        s.url,
        if s.filter.events.is_empty() {
            "*".into()
        } else {
            s.filter.events.join(",")
        },
        if s.filter.categories.is_empty() {
            "*".into()
        } else {
            s.filter.categories.join(",")
        },
        s.max_events,
        state
    );
}

pub fn run(file: Option<&std::path::Path>, cmd: WebhooksCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        match cmd {
            WebhooksCommand::Add {
                sub,
                secret,
                paused,
                at: Target { env, data },
            } => {
                add(file, sub, secret, paused, env, data).await?;
            }
            WebhooksCommand::List(registry::Listing {
                json,
                at: Target { env, data },
            }) => {
                list(file, json, env, data).await?;
            }
            WebhooksCommand::Update {
                id,
                sub,
                at: Target { env, data },
            } => {
                update(file, id, sub, env, data).await?;
            }
            WebhooksCommand::Pause(one) => {
                registry::set_paused::<Subscription>(file, one, true).await?
            }
            WebhooksCommand::Resume(one) => {
                registry::set_paused::<Subscription>(file, one, false).await?
            }
            WebhooksCommand::Delete(one) => registry::delete::<Subscription>(file, one).await?,
            WebhooksCommand::Test {
                id,
                at: Target { env, data },
            } => {
                if !send_test(file, id, env, data).await? {
                    return Ok(ExitCode::from(2));
                }
            }
            WebhooksCommand::Deliveries {
                id,
                limit,
                status,
                json,
                at: Target { env, data },
            } => {
                deliveries(file, id, limit, status, json, env, data).await?;
            }
            WebhooksCommand::Recover {
                id,
                since,
                at: Target { env, data },
            } => {
                recover(file, id, since, env, data).await?;
            }
            WebhooksCommand::RotateSecret {
                id,
                secret,
                grace,
                at: Target { env, data },
            } => {
                rotate_secret(file, id, secret, grace, env, data).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn sinks(file: Option<&std::path::Path>, cmd: SinksCommand) -> anyhow::Result<ExitCode> {
    let SinksCommand::Run { data } = cmd;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let (config, store) = super::open_store(file, data)?;
        let webhooks = Context::new(&config, &store)?;
        let exports = crate::exports::Context::new(&config, &store)?;
        // Without a master key neither sink can run: say why instead of idling.
        webhooks.key()?;
        let mut sup = Supervisor::new();
        let started =
            crate::node::passes::start_sinks(&mut sup, &config, &store, &webhooks, &exports);
        if started == 0 {
            anyhow::bail!(
                "nothing to run: webhooks.enabled, flows.enabled and exports.enabled are all false"
            );
        }
        println!(
            "tidemark: delivering {} from {}",
            sup.names().join(" and "),
            config.data
        );
        super::serve::shutdown_signal().await;
        sup.shutdown(std::time::Duration::from_secs(10)).await;
        println!("tidemark: sinks stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// `webhooks add`: creates the subscription and prints its secret once.
async fn add(
    file: Option<&std::path::Path>,
    sub: SubscriptionArgs,
    secret: Option<String>,
    paused: bool,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let (config, store) = super::open_store(file, data)?;
    let ctx = Context::new(&config, &store)?;
    let mut input = sub.to_json()?;
    if let Some(s) = secret {
        input["secret"] = json!(s);
    }
    if paused {
        input["enabled"] = json!(false);
    }
    let start = Follower::new(store.clone())?.head(-1).await?;
    let created = Subscriptions::new(store)
        .create(&env, &input, ctx.key()?, start, &|u| ctx.check_url(u))
        .await;
    let (s, secret) = match created {
        Ok(x) => x,
        Err(WriteError::Invalid(p)) => return Err(problems_error(&p)),
        Err(WriteError::Other(e)) => return Err(e.into()),
    };
    println!("added webhook {}", s.id);
    println!("signing secret (shown only now): {}", secret.expose());
    Ok(())
}

/// `webhooks deliveries`: the latest attempts of a subscription.
async fn deliveries(
    file: Option<&std::path::Path>,
    id: String,
    limit: usize,
    status: Option<String>,
    json: bool,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    if !(1..=1000).contains(&limit) {
        anyhow::bail!("--limit: must be from 1 to 1000");
    }
    if let Some(s) = &status
        && !["delivered", "retrying", "failed", "gone"].contains(&s.as_str())
    {
        anyhow::bail!("--status: '{s}' is not one of delivered, retrying, failed, gone");
    }
    let (_, store) = super::open_store(file, data)?;
    Subscriptions::new(store.clone()).get(&env, &id).await?;
    let rows = webhooks::log::recent(&store, &env, &id, status.as_deref(), limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no deliveries yet");
    } else {
        for r in rows {
            println!(
                "{}  {}  attempt {}  {:<9} http={} {}ms {}",
                r["at"].as_str().unwrap_or_default(),
                r["message_id"].as_str().unwrap_or_default(),
                r["attempt"],
                r["status"].as_str().unwrap_or_default(),
                r["http_status"],
                r["latency_ms"],
                r["error"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

/// `webhooks rotate-secret`: a new secret; the old one signs during the grace period.
async fn rotate_secret(
    file: Option<&std::path::Path>,
    id: String,
    secret: Option<String>,
    grace: Option<humantime::Duration>,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let (config, store) = super::open_store(file, data)?;
    let ctx = Context::new(&config, &store)?;
    let new = match secret {
        Some(s) => tidemark_sinks::sign::Secret::parse(&s).map_err(|e| anyhow::anyhow!("--{e}"))?,
        None => tidemark_sinks::sign::Secret::generate(),
    };
    let grace = grace.map_or(ctx.config.rotation_grace, Into::into);
    let grace =
        chrono::Duration::from_std(grace).map_err(|_| anyhow::anyhow!("--grace: too long"))?;
    let key = ctx.key()?;
    written(
        Subscriptions::new(store)
            .rotate_secret(&env, &id, key, &new, grace)
            .await,
    )?;
    println!("new signing secret (shown only now): {}", new.expose());
    println!(
        "the previous secret keeps signing for {}",
        humantime::format_duration(grace.to_std().unwrap_or_default())
    );
    Ok(())
}

/// `webhooks update`: changes the fields given.
async fn update(
    file: Option<&std::path::Path>,
    id: String,
    sub: SubscriptionArgs,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let (config, store) = super::open_store(file, data)?;
    let ctx = Context::new(&config, &store)?;
    let input = sub.to_json()?;
    let s = written(
        Subscriptions::new(store)
            .update(&env, &id, &input, &ctx)
            .await,
    )?;
    print_sub(&s);
    Ok(())
}

/// `webhooks recover`: asks the worker to re-send messages failed since a time.
async fn recover(
    file: Option<&std::path::Path>,
    id: String,
    since: String,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let since = webhooks::parse_time(&since).map_err(|m| anyhow::anyhow!("--since: {m}"))?;
    let (_, store) = super::open_store(file, data)?;
    written(
        Subscriptions::new(store)
            .request_recover(&env, &id, since)
            .await,
    )?;
    println!(
        "recovery of messages failed since {} requested; the worker re-sends them",
        since.to_rfc3339()
    );
    Ok(())
}

/// `webhooks list`: the subscriptions of an environment.
async fn list(
    file: Option<&std::path::Path>,
    json: bool,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let (_, store) = super::open_store(file, data)?;
    let all = Subscriptions::new(store).list(&env).await?;
    if json {
        let list: Vec<Value> = all.values().map(|s| s.public()).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if all.is_empty() {
        println!("no webhooks in environment {env}");
    } else {
        all.values().for_each(print_sub);
    }
    Ok(())
}

/// `webhooks test`: one signed message now; whether it was delivered (exit 2 if not).
async fn send_test(
    file: Option<&std::path::Path>,
    id: String,
    env: String,
    data: DataArgs,
) -> anyhow::Result<bool> {
    let (config, store) = super::open_store(file, data)?;
    let ctx = Context::new(&config, &store)?;
    let sub = Subscriptions::new(store).get(&env, &id).await?;
    let result = webhooks::send_test(&ctx, &env, &sub).await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(result["delivered"] == json!(true))
}
