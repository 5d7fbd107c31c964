//! Flows: trigger events, segments and API calls start durable, personalised runs that
//! fan out to signed webhooks.
//!
//! - [`model`]: what a flow is (variables, starts, entry rule, steps);
//! - [`parse`]: validating a flow document, every problem at once with its path;
//! - [`template`]: the sandboxed templates (minijinja with fuel), JSON rendered leaf by leaf;
//! - [`vars`]: resolving variables once at start (trigger, default, refused override);
//! - [`decide`]: the pure decisions: a webhook answer's effect, delay ends, entry rules;
//! - [`run`]: a run's state, ids and redaction;
//! - [`def`]: a flow as a registry kind (draft, published versions, signing secret);
//! - [`store`]: the flow state in the store (versions, runs, inbox, keys, due and wait
//!   indexes, entry state);
//! - [`start`]: starts over the API (users, a segment, idempotency keys) and previews;
//! - [`exec`]: running a run's steps (rendering, sending, branching) against the store;
//! - [`journal`]: how a pass reaches the store (journal first, then applied);
//! - [`worker`]: the leased worker: takes in starts, follows `events` for triggers and
//!   waits, runs what is due, and commits each pass through a journal so that a crash
//!   loses no run and emits no `flow-*` event twice.

pub mod decide;
pub mod def;
pub mod exec;
pub mod journal;
pub mod model;
pub mod parse;
pub mod run;
pub mod start;
pub mod store;
pub mod template;
pub mod vars;
pub mod worker;

pub use def::{Flow, Flows, Validation};
