//! The sinks against real local HTTP servers, in one test binary.

#![allow(clippy::unwrap_used)]

mod compliance;
mod delivery;
