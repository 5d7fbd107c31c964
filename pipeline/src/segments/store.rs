//! Segment definitions in the config document `segments` (environment -> id -> stored
//! definition), validated against the field registry on every write.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::def::{self, Segment};
use crate::problem::Problem;
use crate::storage::Store;
use crate::storage::paths::Doc;
use crate::users::fields::Registry;
use crate::{Error, Result};

/// One stored definition: the document as sent, and when it was written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stored {
    pub definition: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Increases with every update (a changed definition is re-evaluated).
    pub version: u64,
}

/// The `segments` config document: environment -> id -> stored definition.
pub type SegmentsDoc = crate::storage::docs::ByEnvironment<Stored>;

use crate::problem::WriteError;

#[derive(Clone, Debug)]
pub struct Segments {
    store: Store,
}

impl Segments {
    pub fn new(store: Store) -> Segments {
        Segments { store }
    }

    /// Parses `doc` for `environment` (against its current fields).
    pub async fn validate(
        &self,
        environment: &str,
        doc: &Value,
    ) -> Result<Result<Segment, Vec<Problem>>> {
        let fields = Registry::new(self.store.clone()).list(environment).await?;
        Ok(def::parse(doc, &fields).map(|(_, s)| s))
    }

    pub async fn list(&self, environment: &str) -> Result<BTreeMap<String, Stored>> {
        Ok(self.all().await?.take(environment))
    }

    /// Every environment's segments.
    pub async fn all(&self) -> Result<SegmentsDoc> {
        self.store.docs().by_environment(Doc::Segments).await
    }

    pub async fn get(&self, environment: &str, id: &str) -> Result<Stored> {
        self.list(environment).await?.remove(id).ok_or_else(|| {
            Error::NotFound(format!("no segment '{id}' in environment '{environment}'"))
        })
    }

    /// Creates (`replace = false`: 409 when the id exists) or replaces (`true`: 404 when
    /// it does not) a definition.
    pub async fn put(
        &self,
        environment: &str,
        doc: Value,
        replace: bool,
    ) -> Result<Stored, WriteError> {
        let segment = match self.validate(environment, &doc).await? {
            Ok(s) => s,
            Err(p) => return Err(WriteError::Invalid(p)),
        };
        let id = segment.id.clone();
        let now = Utc::now();
        let mut written = None;
        self.store
            .docs()
            .update(Doc::Segments, |d: Option<SegmentsDoc>| {
                let mut d = d.unwrap_or_default();
                let env = d.environments.entry(environment.to_string()).or_default();
                let stored = match (env.get(&id), replace) {
                    (Some(_), false) => {
                        return Err(Error::Conflict(format!(
                            "id: segment '{id}' already exists; update it with PUT"
                        )));
                    }
                    (None, true) => {
                        return Err(Error::NotFound(format!(
                            "no segment '{id}' in environment '{environment}'"
                        )));
                    }
                    (Some(old), true) => Stored {
                        definition: doc.clone(),
                        created_at: old.created_at,
                        updated_at: now,
                        version: old.version + 1,
                    },
                    (None, false) => Stored {
                        definition: doc.clone(),
                        created_at: now,
                        updated_at: now,
                        version: 1,
                    },
                };
                env.insert(id.clone(), stored.clone());
                written = Some(stored);
                Ok(d)
            })
            .await?;
        written.ok_or_else(|| WriteError::Other(Error::Unavailable("segment write lost".into())))
    }

    pub async fn delete(&self, environment: &str, id: &str) -> Result<Stored> {
        let mut removed = None;
        self.store
            .docs()
            .update(Doc::Segments, |d: Option<SegmentsDoc>| {
                let mut d = d.unwrap_or_default();
                removed = d
                    .environments
                    .get_mut(environment)
                    .and_then(|e| e.remove(id));
                if removed.is_none() {
                    return Err(Error::NotFound(format!(
                        "no segment '{id}' in environment '{environment}'"
                    )));
                }
                Ok(d)
            })
            .await?;
        removed.ok_or_else(|| Error::NotFound(format!("no segment '{id}'")))
    }
}
