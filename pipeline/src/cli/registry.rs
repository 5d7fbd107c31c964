//! The arms every kind of config document shares (`exports`, `webhooks`, `segments`):
//! `delete`, `pause` and `resume`, over
//! [`Registry`](crate::storage::registry::Registry).

use std::path::Path;

use super::DataArgs;
use crate::storage::registry::{Kind, Pausable, Registry};

/// A kind the command line prints after a change.
pub trait Printed: Kind {
    fn print(&self);
}

/// `… delete ID`.
pub async fn delete<K: Kind>(
    file: Option<&Path>,
    data: DataArgs,
    env: &str,
    id: &str,
) -> anyhow::Result<()> {
    let (_, store) = super::open_store(file, data)?;
    Registry::<K>::new(store).delete(env, id).await?;
    println!("deleted {} {id}", K::NOUN);
    Ok(())
}

/// `… pause ID` and `… resume ID`.
pub async fn set_paused<K: Pausable + Printed>(
    file: Option<&Path>,
    data: DataArgs,
    env: &str,
    id: &str,
    paused: bool,
) -> anyhow::Result<()> {
    let (_, store) = super::open_store(file, data)?;
    let item = Registry::<K>::new(store)
        .set_paused(env, id, paused, None)
        .await?;
    item.print();
    Ok(())
}
