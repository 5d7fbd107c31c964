//! Segment definitions in the config document `segments` (environment -> id -> stored
//! definition), validated against the field registry on every write.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::def::{self, Segment};
use crate::problem::{Problem, WriteError};
use crate::storage::paths::Doc;
use crate::storage::registry::{Kind, Registry};
use crate::users::fields::Registry as FieldRegistry;
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

impl Kind for Stored {
    const DOC: Doc = Doc::Segments;
    const NOUN: &'static str = "segment";

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
        self.version += 1;
    }
}

/// The segment definitions of a store.
pub type Segments = Registry<Stored>;

impl Registry<Stored> {
    /// Parses `doc` for `environment` (against its current fields).
    pub async fn validate(
        &self,
        environment: &str,
        doc: &Value,
    ) -> Result<Result<Segment, Vec<Problem>>> {
        let fields = FieldRegistry::new(self.store().clone())
            .list(environment)
            .await?;
        Ok(def::parse(doc, &fields).map(|(_, s)| s))
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
        let stored = self
            .write(environment, &id, |old| match (old, replace) {
                (Some(_), false) => Err(Error::Conflict(format!(
                    "id: segment '{id}' already exists; update it with PUT"
                ))),
                (None, true) => Err(Stored::not_found(environment, &id)),
                (Some(old), true) => {
                    let mut stored = Stored {
                        definition: doc.clone(),
                        ..old.clone()
                    };
                    stored.touch(now);
                    Ok(stored)
                }
                (None, false) => Ok(Stored {
                    definition: doc.clone(),
                    created_at: now,
                    updated_at: now,
                    version: 1,
                }),
            })
            .await?;
        Ok(stored)
    }
}
