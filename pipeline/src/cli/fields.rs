//! `tidemark fields add|list|delete`: the custom field registry of an environment.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{Target, registry};
use crate::users::fields::{FieldType, Registry};

#[derive(Subcommand, Debug)]
pub enum FieldsCommand {
    /// Declare a custom field.
    Add {
        /// [a-z][a-z0-9_]{0,63}, not a built-in profile field.
        name: String,
        #[arg(long = "type", value_enum)]
        field_type: FieldType,
        /// A human-readable label.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        at: Target,
    },
    /// List the fields of an environment.
    List(registry::Listing),
    /// Delete a field: its values disappear from profiles.
    Delete {
        name: String,
        #[command(flatten)]
        at: Target,
    },
}

pub fn run(file: Option<&Path>, cmd: FieldsCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        match cmd {
            FieldsCommand::Add {
                name,
                field_type,
                label,
                at: Target { env, data },
            } => {
                let (_, store) = super::open_store(file, data)?;
                let def = Registry::new(store)
                    .add(&env, &name, field_type, label)
                    .await?;
                println!(
                    "added field {} ({}) to environment {env}",
                    def.name,
                    def.field_type.as_str()
                );
            }
            FieldsCommand::List(registry::Listing {
                json,
                at: Target { env, data },
            }) => {
                let (_, store) = super::open_store(file, data)?;
                let fields = Registry::new(store).list(&env).await?;
                if json {
                    let list: Vec<_> = fields.into_values().collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else if fields.is_empty() {
                    println!("no fields in environment {env}");
                } else {
                    println!("{:<32} {:<9} {:<25} LABEL", "NAME", "TYPE", "CREATED");
                    for f in fields.values() {
                        println!(
                            "{:<32} {:<9} {:<25} {}",
                            f.name,
                            f.field_type.as_str(),
                            f.created_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            f.label.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            FieldsCommand::Delete {
                name,
                at: Target { env, data },
            } => {
                let (_, store) = super::open_store(file, data)?;
                Registry::new(store).delete(&env, &name).await?;
                println!("deleted field {name} from environment {env}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
