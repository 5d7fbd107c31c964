//! A flow as a config document of the registry: its draft (the document as last saved,
//! valid), the number of its newest published version, its signing secret (encrypted),
//! and whether it is paused. Each published version is a create-only state document
//! (`Paths::flow_versions`), so a run reads the version it started on for as long as it
//! lives.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::sign::Secret;

use super::model::Spec;
use super::parse::{Checks, parse};
use super::store::FlowStore;
use crate::problem::{Problem, WriteError};
use crate::storage::Store;
use crate::storage::paths::Doc;
use crate::storage::registry::{Apply, Kind, Pausable, Registry};
use crate::users::fields::FieldDef;
use crate::webhooks::subscription::StoredSecret;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Flow {
    pub id: String,
    /// The flow document as last saved (valid when saved).
    pub draft: Value,
    /// The newest published version (runs start on it).
    #[serde(default)]
    pub published: Option<u32>,
    #[serde(default)]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub paused_reason: Option<String>,
    pub secret: StoredSecret,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What saving a flow checks it against.
pub struct Validation {
    pub fields: BTreeMap<String, FieldDef>,
    pub segments: BTreeSet<String>,
    pub hooks: crate::webhooks::Context,
    /// The deepest a body or a default may nest (`limits.max_properties_depth`).
    pub max_depth: usize,
}

impl Validation {
    pub async fn load(
        store: &Store,
        environment: &str,
        hooks: crate::webhooks::Context,
        max_depth: usize,
    ) -> Result<Validation> {
        let fields = crate::users::fields::Registry::new(store.clone())
            .list(environment)
            .await?;
        let segments = crate::segments::store::Segments::new(store.clone())
            .list(environment)
            .await?
            .into_keys()
            .collect();
        Ok(Validation {
            fields,
            segments,
            hooks,
            max_depth,
        })
    }

    pub fn check(&self, doc: &Value) -> std::result::Result<Spec, Vec<Problem>> {
        let guard = |u: &url::Url| self.hooks.check_url(u);
        parse(
            doc,
            &Checks {
                fields: &self.fields,
                segments: &self.segments,
                check_url: &guard,
                max_depth: self.max_depth,
            },
        )
    }
}

impl Flow {
    /// The flow as the API shows it (never its secret).
    pub fn public(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.draft.get("name"),
            "draft": self.draft,
            "published_version": self.published,
            "published_at": self.published_at,
            "enabled": !self.paused,
            "paused_reason": self.paused_reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// The secret that signs this flow's webhook steps.
    pub fn signing_secret(&self, key: &MasterKey) -> Result<Secret> {
        key.decrypt(&self.secret.encrypted)
            .map(Secret::from_bytes)
            .map_err(|e| Error::Invalid(format!("flow {}: secret: {e}", self.id)))
    }
}

impl Kind for Flow {
    const DOC: Doc = Doc::Flows;
    const NOUN: &'static str = "flow";

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
    }

    /// Its published versions and runs go with it (runs still due are dropped by the
    /// worker when their state is gone).
    async fn deleted(store: &Store, environment: &str, id: &str) {
        if let Err(e) = FlowStore::new(store, environment).delete_flow(id).await {
            tracing::warn!(flow = id, error = %e, "flows: cannot delete a deleted flow's state");
        }
    }
}

impl Pausable for Flow {
    fn set_paused(&mut self, paused: bool, reason: Option<&str>) {
        self.paused = paused;
        self.paused_reason = paused.then(|| reason.unwrap_or("paused by a user").to_string());
    }
}

impl Apply for Flow {
    type Context = Validation;
    type Extra = Spec;

    /// A flow document replaces the draft as a whole (PUT); `id` may repeat the path's.
    fn apply(
        &mut self,
        input: &Value,
        _creating: bool,
        ctx: &Validation,
    ) -> std::result::Result<Spec, Vec<Problem>> {
        if let Some(id) = input.get("id")
            && id.as_str() != Some(self.id.as_str())
        {
            return Err(vec![Problem::field(
                "id",
                format!("{id} is not this flow's id '{}'", self.id),
            )]);
        }
        let spec = ctx.check(input)?;
        let mut draft = input.clone();
        if let Some(o) = draft.as_object_mut() {
            o.remove("id");
        }
        self.draft = draft;
        Ok(spec)
    }
}

/// A flow id: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn valid_flow_id(id: &str) -> bool {
    crate::segments::def::valid_id(id)
}

/// The flows of a store.
pub type Flows = Registry<Flow>;

impl Registry<Flow> {
    /// Creates a flow from `input` (its `id`, or a new one); returns it and its signing
    /// secret (shown once).
    pub async fn create(
        &self,
        environment: &str,
        input: &Value,
        ctx: &Validation,
        key: &MasterKey,
    ) -> std::result::Result<(Flow, Secret), WriteError> {
        let id = match input.get("id") {
            None => format!("fl_{}", &uuid::Uuid::now_v7().simple().to_string()[..16]),
            Some(Value::String(s)) if valid_flow_id(s) => s.clone(),
            Some(other) => {
                return Err(WriteError::Invalid(vec![Problem::field(
                    "id",
                    format!("{other} is not a flow id: [a-z0-9][a-z0-9_-]{{0,63}}"),
                )]));
            }
        };
        let now = Utc::now();
        let secret = Secret::generate();
        let mut flow = Flow {
            id: id.clone(),
            draft: Value::Null,
            published: None,
            published_at: None,
            paused: false,
            paused_reason: None,
            secret: StoredSecret {
                encrypted: key.encrypt(secret.as_bytes()),
                created_at: now,
                expires_at: None,
            },
            created_at: now,
            updated_at: now,
        };
        flow.apply(input, true, ctx).map_err(WriteError::Invalid)?;
        let mut exists = false;
        self.write(environment, &id, |current| {
            exists = current.is_some();
            match current {
                Some(c) => Ok(c.clone()),
                None => Ok(flow.clone()),
            }
        })
        .await?;
        if exists {
            return Err(WriteError::Other(Error::Conflict(format!(
                "flow '{id}' exists in environment '{environment}'; PUT /v1/{environment}/flows/{id} replaces its draft"
            ))));
        }
        Ok((flow, secret))
    }

    /// Publishes the draft as the next version; runs started from now on use it.
    pub async fn publish(
        &self,
        environment: &str,
        id: &str,
        ctx: &Validation,
    ) -> std::result::Result<(Flow, u32), WriteError> {
        let flow = self.get(environment, id).await?;
        // The draft was valid when saved; fields or segments may have gone since.
        let spec = ctx.check(&flow.draft).map_err(WriteError::Invalid)?;
        let fs = FlowStore::new(self.store(), environment);
        let version = fs.publish_version(id, &flow.draft, &spec).await?;
        let now = Utc::now();
        let flow = self
            .modify(environment, id, |f| {
                if f.published.is_none_or(|p| p < version) {
                    f.published = Some(version);
                    f.published_at = Some(now);
                }
                Ok(())
            })
            .await?;
        Ok((flow, version))
    }
}
