//! The stopgap engine: one [`FlowInspector`] per connection turns bytes into forwarding
//! decisions, replies and audit events, applying the current [`PatchSet`].
//!
//! What it does:
//! - drives the HTTP/1.1 codec in both directions, keeps request/response pairing through
//!   pipelining, `100-continue`, `HEAD`, `1xx` and `101` upgrades (after which it is a pipe);
//! - evaluates request-phase patches when a head is complete, and body-reading patches once the
//!   body (or the first inspection-window bytes of it) has arrived; response-phase patches on
//!   each response head;
//! - performs the actions: `reject` (a local reply, queued behind earlier responses so
//!   pipelining stays in order; the connection is kept when the rejected body can be skipped),
//!   `strip`/`truncate`/`replace` (the head is rebuilt around the changed bytes only; bodies are
//!   re-framed: Content-Length recomputed or chunks re-encoded), `reset`, `log`; `monitor` mode
//!   records what would have happened and changes nothing;
//! - refuses every framing ambiguity with the status a safe front end answers, then closes.
//!
//! What it does not do: I/O, timers, clocks (the proxy stamps events), or asset targeting.
//! Untouched messages leave as the exact bytes that arrived: heads and bodies are forwarded as
//! zero-copy slices of the receive buffer.
//!
//! Memory per flow is bounded by the head limit plus the inspection window (only while a body
//! patch needs the body), plus what the proxy has read but not yet written.
#![warn(missing_docs)]

pub mod audit;
mod edit;
mod inspector;
pub mod replay;

pub use audit::{AuditEvent, Change};
pub use inspector::{FlowInspector, FlowMeta, InspectorConfig, Output, Side};
pub use stopgap_patch::PatchSet;

#[cfg(test)]
mod tests;
