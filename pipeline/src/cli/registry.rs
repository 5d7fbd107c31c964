//! The arms every kind of config document shares (`exports`, `webhooks`, `segments`):
//! `delete`, `pause` and `resume`, over
//! [`Registry`](crate::storage::registry::Registry).

use std::path::Path;

use super::Target;
use crate::storage::registry::{Kind, Pausable, Registry};

/// One item of a kind: its id, in an environment of a store.
#[derive(clap::Args, Debug, Clone)]
pub struct One {
    pub id: String,
    #[command(flatten)]
    pub at: Target,
}

/// The items of an environment, as text or JSON.
#[derive(clap::Args, Debug, Clone)]
pub struct Listing {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: Target,
}

/// A kind the command line prints after a change.
pub trait Printed: Kind {
    fn print(&self);
}

/// `… delete ID`.
pub async fn delete<K: Kind>(file: Option<&Path>, one: One) -> anyhow::Result<()> {
    let One { id, at } = one;
    let (_, store) = super::open_store(file, at.data)?;
    Registry::<K>::new(store).delete(&at.env, &id).await?;
    println!("deleted {} {id}", K::NOUN);
    Ok(())
}

/// `… pause ID` and `… resume ID`.
pub async fn set_paused<K: Pausable + Printed>(
    file: Option<&Path>,
    one: One,
    paused: bool,
) -> anyhow::Result<()> {
    let One { id, at } = one;
    let (_, store) = super::open_store(file, at.data)?;
    let item = Registry::<K>::new(store)
        .set_paused(&at.env, &id, paused, None)
        .await?;
    item.print();
    Ok(())
}
