//! The stopgap control plane: the patch lifecycle and the admin API.
//!
//! What it does:
//! - keeps every patch of the patch directory in a state — `applied`, `monitor` or
//!   `unapplied` — and builds the applied ones into one immutable snapshot, swapped in
//!   atomically for the data plane ([`controller::Controller`]);
//! - persists the states durably (temp file, fsync, rename) and refuses a broken state file
//!   with a located error ([`state`]);
//! - writes every change, failed change and refused admin call to the audit log before it
//!   takes effect;
//! - serves the admin API with bearer tokens ([`api`], [`token`]) and the Prometheus metrics;
//! - offers a small blocking client for the command line ([`client`]).
//!
//! What it does not do: inspect traffic (the engine does), or own the listeners and their
//! sockets (the proxy does). Per-asset targeting and retirement are not here yet.
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod controller;
pub mod state;
pub mod token;

pub use controller::{Actor, ChangeError, Controller, ReloadError};
pub use state::PatchState;

#[cfg(test)]
mod tests;
