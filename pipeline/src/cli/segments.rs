//! `tidemark segments add|list|preview|explain|delete` (definitions as JSON or YAML files).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::{DataArgs, Target, registry};
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
    List(registry::Listing),
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
    Delete(registry::One),
}

/// The largest definition file read (a definition is a few KB; the HTTP API takes
/// `limits.max_body_bytes`).
const MAX_DEFINITION_BYTES: u64 = 1024 * 1024;

/// The deepest flow nesting (`[` / `{`) a YAML definition may have, as deep as JSON
/// definitions may nest (serde_json's limit). The text is measured first, in one loop,
/// so no parser ever sees deeper input (libyaml, behind the former serde_yaml, took time
/// quadratic in that depth: 1,000,000 levels ran for more than 20 minutes).
const MAX_YAML_FLOW_DEPTH: usize = 128;

/// Reads a definition: YAML for `.yaml`/`.yml`, JSON otherwise.
pub(super) fn read_definition(path: &Path) -> anyhow::Result<Value> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?
        .len();
    if size > MAX_DEFINITION_BYTES {
        anyhow::bail!(
            "{shown}: the file is {size} bytes, more than the limit of {MAX_DEFINITION_BYTES} for a definition"
        );
    }
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if yaml {
        let depth = yaml_flow_depth(&text);
        if depth > MAX_YAML_FLOW_DEPTH {
            anyhow::bail!(
                "{shown}: not valid YAML: it nests [ and {{ {depth} levels deep, more than the limit of {MAX_YAML_FLOW_DEPTH}"
            );
        }
        serde_saphyr::from_str(&text).map_err(|e| {
            let e = e.to_string();
            anyhow::anyhow!(
                "{shown}: not valid YAML: {}",
                e.trim_start_matches("error: ")
            )
        })
    } else {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{shown}: not valid JSON: {e}"))
    }
}

/// How deep `[` and `{` nest in a YAML text, outside quoted scalars and comments. A
/// bracket inside a plain scalar counts too: it can only overestimate.
fn yaml_flow_depth(text: &str) -> usize {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double,
        Comment,
    }
    let (mut state, mut depth, mut max, mut escaped) = (In::Plain, 0usize, 0usize, false);
    let mut prev = b'\n';
    for &b in text.as_bytes() {
        match state {
            In::Plain => match b {
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'\'' => state = In::Single,
                b'"' => state = In::Double,
                b'#' if prev.is_ascii_whitespace() => state = In::Comment,
                _ => {}
            },
            // '' inside single quotes is a quote: leaving and entering again is the same.
            In::Single if b == b'\'' => state = In::Plain,
            In::Double if escaped => escaped = false,
            In::Double if b == b'\\' => escaped = true,
            In::Double if b == b'"' => state = In::Plain,
            In::Comment if b == b'\n' => state = In::Plain,
            _ => {}
        }
        prev = b;
    }
    max
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
            } => add(file, &def_file, replace, env, data).await?,
            SegmentsCommand::List(registry::Listing {
                json,
                at: Target { env, data },
            }) => list(file, json, env, data).await?,
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
            SegmentsCommand::Delete(one) => {
                registry::delete::<crate::segments::store::Stored>(file, one).await?
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `segments add`: stores the definition, then evaluates the segments at once (not at a
/// serve's next `segments.interval`).
async fn add(
    file: Option<&Path>,
    def_file: &Path,
    replace: bool,
    env: String,
    data: DataArgs,
) -> anyhow::Result<()> {
    let doc = read_definition(def_file)?;
    let (config, store) = super::open_store(file, data)?;
    match Segments::new(store.clone()).put(&env, doc, replace).await {
        Ok(s) => println!(
            "{} segment {} (version {})",
            if replace { "updated" } else { "added" },
            s.definition["id"].as_str().unwrap_or_default(),
            s.version
        ),
        Err(WriteError::Invalid(p)) => return Err(problems_error(def_file, &p)),
        Err(WriteError::Other(e)) => return Err(e.into()),
    }
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
    Ok(())
}

/// `segments list`.
async fn list(file: Option<&Path>, json: bool, env: String, data: DataArgs) -> anyhow::Result<()> {
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_flow_depth_counts_brackets_outside_quotes_and_comments() {
        assert_eq!(yaml_flow_depth("a: 1\nb: [1, 2]\n"), 1);
        assert_eq!(yaml_flow_depth("a: {b: [c, {d: []}]}\n"), 4);
        assert_eq!(
            yaml_flow_depth("a: '[[[['\nb: \"{{\\\"[[\"\n# [[[[\nc: x # {{\n"),
            0
        );
        let n = 1_000_000;
        let deep = format!("c: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(yaml_flow_depth(&deep), n);
    }

    #[test]
    fn a_deep_or_large_definition_file_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("deep.yaml");
        let n = 400_000;
        std::fs::write(
            &deep,
            format!("id: s\nconditions: {}{}\n", "[".repeat(n), "]".repeat(n)),
        )
        .unwrap();
        let e = read_definition(&deep).unwrap_err().to_string();
        assert!(
            e.ends_with("it nests [ and { 400000 levels deep, more than the limit of 128"),
            "{e}"
        );
        let big = dir.path().join("big.json");
        std::fs::write(&big, " ".repeat(2 * 1024 * 1024)).unwrap();
        let e = read_definition(&big).unwrap_err().to_string();
        assert!(
            e.contains("2097152 bytes, more than the limit of 1048576"),
            "{e}"
        );
        let json = dir.path().join("deep.json");
        std::fs::write(&json, format!("{}{}", "[".repeat(n), "]".repeat(n))).unwrap();
        let e = read_definition(&json).unwrap_err().to_string();
        assert!(e.contains("recursion limit exceeded"), "{e}");
    }
}
