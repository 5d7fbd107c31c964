//! One registry of config documents. A kind of document (scheduled exports, webhook
//! subscriptions, segment definitions; flows next) is a map environment -> id -> item kept
//! in one versioned config document ([`super::docs`]). [`Registry`] reads, creates,
//! changes, pauses and deletes items for every kind; what an item is, and how what a user
//! sent is validated and applied to it, belongs to the kind ([`Kind`], [`Apply`],
//! [`Pausable`]). A new kind is an `impl`, not a copy.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Store;
use super::docs::ByEnvironment;
use super::paths::Doc;
use crate::problem::{Problem, WriteError};
use crate::{Error, Result};

/// A kind of config document.
pub trait Kind: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The config document that holds the items.
    const DOC: Doc;
    /// What users call one item ("export", "webhook", "segment").
    const NOUN: &'static str;

    /// The error for an item that is not there: "no webhook 'wh_…' in environment 'prod'".
    fn not_found(environment: &str, id: &str) -> Error {
        Error::NotFound(format!(
            "no {} '{id}' in environment '{environment}'",
            Self::NOUN
        ))
    }

    /// Records that the item changed at `now` (its `updated_at`).
    fn touch(&mut self, now: DateTime<Utc>);

    /// Runs after item `id` was deleted: state kept beside the document goes with it.
    fn deleted(store: &Store, environment: &str, id: &str) -> impl Future<Output = ()> + Send {
        let _ = (store, environment, id);
        async {}
    }
}

/// A kind whose items a user pauses and resumes.
pub trait Pausable: Kind {
    /// Pauses (with `reason`, or a user's) or resumes the item.
    fn set_paused(&mut self, paused: bool, reason: Option<&str>);

    /// Runs after item `id` was resumed by a user.
    fn resumed(
        store: &Store,
        environment: &str,
        id: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (store, environment, id);
        async { Ok(()) }
    }
}

/// How a kind validates what a user sent and applies it to an item.
pub trait Apply: Kind {
    /// What validation reads besides the input (a destination policy, the field registry).
    type Context: ?Sized + Sync;
    /// What the input carries that is not stored as sent (a secret shown once).
    type Extra;

    /// Applies the fields present in `input` to `self` (`creating`: a new item, so the
    /// required fields must be there), or returns every problem found.
    fn apply(
        &mut self,
        input: &Value,
        creating: bool,
        ctx: &Self::Context,
    ) -> std::result::Result<Self::Extra, Vec<Problem>>;
}

/// The items of one kind in a store.
pub struct Registry<K> {
    store: Store,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Registry {
            store: self.store.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Registry<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kind", &std::any::type_name::<K>())
            .finish()
    }
}

impl<K: Kind> Registry<K> {
    pub fn new(store: Store) -> Registry<K> {
        Registry {
            store,
            kind: PhantomData,
        }
    }

    /// The store the items are kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every environment's items.
    pub async fn all(&self) -> Result<ByEnvironment<K>> {
        self.store.docs().by_environment(K::DOC).await
    }

    pub async fn list(&self, environment: &str) -> Result<BTreeMap<String, K>> {
        Ok(self.all().await?.take(environment))
    }

    pub async fn get(&self, environment: &str, id: &str) -> Result<K> {
        self.list(environment)
            .await?
            .remove(id)
            .ok_or_else(|| K::not_found(environment, id))
    }

    /// Stores `item` as `id`, in place of what was there.
    pub async fn insert(&self, environment: &str, id: &str, item: &K) -> Result<()> {
        self.write(environment, id, |_| Ok(item.clone())).await?;
        Ok(())
    }

    /// Stores what `make` returns from the current item (`None`: there is none); an
    /// error of `make` leaves the document as it was.
    pub async fn write(
        &self,
        environment: &str,
        id: &str,
        mut make: impl FnMut(Option<&K>) -> Result<K> + Send,
    ) -> Result<K> {
        let mut written = None;
        self.store
            .docs()
            .update(K::DOC, |d: Option<ByEnvironment<K>>| {
                let mut d = d.unwrap_or_default();
                let env = d.environments.entry(environment.to_string()).or_default();
                let item = make(env.get(id))?;
                env.insert(id.to_string(), item.clone());
                written = Some(item);
                Ok(d)
            })
            .await?;
        written.ok_or_else(|| K::not_found(environment, id))
    }

    /// Applies `change` to item `id` and stores it (touched); a refused change (invalid
    /// input) writes nothing.
    pub async fn modify(
        &self,
        environment: &str,
        id: &str,
        mut change: impl FnMut(&mut K) -> std::result::Result<(), WriteError> + Send,
    ) -> std::result::Result<K, WriteError> {
        let mut invalid = None;
        let written = self
            .write(environment, id, |current| {
                let mut item = current
                    .cloned()
                    .ok_or_else(|| K::not_found(environment, id))?;
                match change(&mut item) {
                    Ok(()) => {}
                    Err(WriteError::Invalid(p)) => {
                        invalid = Some(p);
                        return Err(Error::Invalid("invalid".into()));
                    }
                    Err(WriteError::Other(e)) => return Err(e),
                }
                item.touch(Utc::now());
                Ok(item)
            })
            .await;
        match (invalid, written) {
            (Some(p), _) => Err(WriteError::Invalid(p)),
            (None, w) => Ok(w?),
        }
    }

    /// Deletes item `id` and returns it.
    pub async fn delete(&self, environment: &str, id: &str) -> Result<K> {
        let mut removed = None;
        self.store
            .docs()
            .update(K::DOC, |d: Option<ByEnvironment<K>>| {
                let mut d = d.unwrap_or_default();
                removed = d
                    .environments
                    .get_mut(environment)
                    .and_then(|e| e.remove(id));
                if removed.is_none() {
                    return Err(K::not_found(environment, id));
                }
                Ok(d)
            })
            .await?;
        K::deleted(&self.store, environment, id).await;
        removed.ok_or_else(|| K::not_found(environment, id))
    }
}

impl<K: Apply> Registry<K> {
    /// Validates `input` against item `id` and stores the result (a PATCH).
    pub async fn update(
        &self,
        environment: &str,
        id: &str,
        input: &Value,
        ctx: &K::Context,
    ) -> std::result::Result<K, WriteError> {
        self.modify(environment, id, |item| {
            item.apply(input, false, ctx)
                .map(|_| ())
                .map_err(WriteError::Invalid)
        })
        .await
    }
}

impl<K: Pausable> Registry<K> {
    /// Pauses (with `reason`, or "paused by a user") or resumes item `id`.
    pub async fn set_paused(
        &self,
        environment: &str,
        id: &str,
        paused: bool,
        reason: Option<&str>,
    ) -> Result<K> {
        let item = self
            .write(environment, id, |current| {
                let mut item = current
                    .cloned()
                    .ok_or_else(|| K::not_found(environment, id))?;
                item.set_paused(paused, reason);
                item.touch(Utc::now());
                Ok(item)
            })
            .await?;
        if !paused {
            K::resumed(&self.store, environment, id).await?;
        }
        Ok(item)
    }
}
