//! `tidemark keys create|list|revoke`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{DataArgs, Target};
use crate::auth::{KeyAdmin, Role};
use crate::storage::docs::Docs;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; the key is printed alone on the last line of stdout.
    /// The environment (`--env`) is created if it does not exist.
    Create {
        /// What the key may do.
        #[arg(long, value_parser = ["ingest", "read", "admin"])]
        role: String,
        #[command(flatten)]
        at: Target,
    },
    /// List keys (ids, environments, roles; never the secrets).
    List {
        /// Only keys of this environment.
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke a key by id (the 12 hex characters after `tm_`) or by the whole key.
    Revoke {
        /// Key id, or the key itself.
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

fn admin(file: Option<&Path>, data: DataArgs) -> anyhow::Result<KeyAdmin> {
    let (_, store) = super::open_store(file, data)?;
    Ok(KeyAdmin::new(Docs::new(
        store.object_store(),
        store.paths().clone(),
    )))
}

pub fn run(file: Option<&Path>, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        match cmd {
            KeysCommand::Create {
                role,
                at:
                    Target {
                        env: environment,
                        data,
                    },
            } => {
                let role: Role = role.parse()?;
                let admin = admin(file, data)?;
                let key = admin.create_key(&environment, role).await?;
                println!(
                    "created {} key {} for environment '{}'",
                    key.record.role, key.record.id, key.record.environment
                );
                println!("{}", key.token);
            }
            KeysCommand::List { environment, data } => {
                let admin = admin(file, data)?;
                let keys = admin.keys().await?;
                println!(
                    "{:<14} {:<16} {:<8} {:<26} REVOKED",
                    "ID", "ENVIRONMENT", "ROLE", "CREATED"
                );
                for k in keys
                    .keys
                    .iter()
                    .filter(|k| environment.as_deref().is_none_or(|e| e == k.environment))
                {
                    println!(
                        "{:<14} {:<16} {:<8} {:<26} {}",
                        k.id,
                        k.environment,
                        k.role,
                        k.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        k.revoked_at
                            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
            KeysCommand::Revoke { id, data } => {
                let id = id
                    .strip_prefix("tm_")
                    .and_then(|rest| rest.split('_').next())
                    .unwrap_or(&id)
                    .to_string();
                let admin = admin(file, data)?;
                let k = admin.revoke_key(&id).await?;
                println!(
                    "revoked {} key {} of environment '{}'",
                    k.role, k.id, k.environment
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
