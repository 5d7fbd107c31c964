//! `tidemark import FILE.csv --env ENV [--map column=field] [--dry-run]`.
//!
//! Exit codes: 0 every row applied, 2 some rows failed (the others were applied, or would
//! be with --dry-run), 1 the file was refused as a whole.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use super::Target;
use crate::users::import::{self, ImportOptions, ImportReport, MAX_BYTES};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The CSV file (header row first; column `id` required).
    file: PathBuf,
    /// Map a CSV column to a custom field of another name (repeatable).
    #[arg(long = "map", value_name = "COLUMN=FIELD", value_parser = parse_map)]
    map: Vec<(String, String)>,
    /// Validate every row, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: Target,
}

fn parse_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, f)) if !c.trim().is_empty() && !f.trim().is_empty() => {
            Ok((c.trim().to_string(), f.trim().to_string()))
        }
        _ => Err(format!("'{s}' is not COLUMN=FIELD")),
    }
}

fn print_report(r: &ImportReport) {
    println!(
        "{}{} row(s): {} {}, {} failed; {} change(s) in {} commit(s), {:.1} s",
        if r.dry_run { "dry run: " } else { "" },
        r.rows,
        r.applied,
        if r.dry_run { "valid" } else { "applied" },
        r.failed,
        r.changes,
        r.commits,
        r.seconds
    );
    for e in &r.errors {
        match &e.column {
            Some(c) => println!("line {}, column {c}: {}", e.line, e.reason),
            None => println!("line {}: {}", e.line, e.reason),
        }
    }
    if r.failed as usize > r.errors.len() {
        println!(
            "... and more (only the first {} are listed)",
            r.errors.len()
        );
    }
}

pub fn run(file: Option<&Path>, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let meta = std::fs::metadata(&args.file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    if meta.len() > MAX_BYTES {
        anyhow::bail!(
            "{}: {} bytes, more than the limit of {MAX_BYTES} (128 MB)",
            args.file.display(),
            meta.len()
        );
    }
    let (config, store) = super::open_store(file, args.at.data)?;
    let f = std::fs::File::open(&args.file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let reader: Box<dyn std::io::Read + Send> =
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let pb = ProgressBar::new(meta.len()).with_style(
                ProgressStyle::with_template(
                    "{spinner} {bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}",
                )?
                .progress_chars("=> "),
            );
            Box::new(pb.wrap_read(f))
        } else {
            Box::new(f)
        };
    let opts = ImportOptions {
        map: args.map.into_iter().collect(),
        dry_run: args.dry_run,
        max_id_len: config.limits.max_string_len,
    };
    let rt = super::runtime()?;
    let report = rt.block_on(import::import(&store, &args.at.env, reader, opts))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
