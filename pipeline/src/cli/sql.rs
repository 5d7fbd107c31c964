//! `tidemark sql`.

use std::path::Path;
use std::process::ExitCode;

use crate::query::{self, Format};

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// Storage root: a directory, s3://bucket/prefix or memory:// [default: ./tidemark-data]
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// Only this environment's rows are visible.
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// The query (read-only).
    pub sql: String,
}

pub fn run(file: Option<&Path>, args: SqlArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = super::open_store(file, super::DataArgs { data: args.data })?;
    if let Some(env) = &args.environment {
        crate::auth::validate_environment(env)?;
    }
    let rt = super::runtime()?;
    rt.block_on(async move {
        let ctx = query::session(&store, args.environment.as_deref()).await?;
        let batches = query::run(&ctx, &args.sql).await?;
        println!("{}", query::render(&batches, args.format)?);
        Ok(ExitCode::SUCCESS)
    })
}
