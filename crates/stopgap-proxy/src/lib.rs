//! The stopgap data plane (tokio): listeners, upstream connections, the audit-log writer and
//! the gateway configuration.
//!
//! What it does:
//! - accepts client connections, opens one upstream connection per client connection, and
//!   pumps bytes through a [`stopgap_engine::FlowInspector`], performing its outputs in order;
//! - reads the current [`stopgap_patch::PatchSet`] from an [`arc_swap::ArcSwap`] at every read,
//!   so a swapped snapshot is used from each connection's next message;
//! - writes audit events as JSON lines from a dedicated task ([`audit::AuditLog`]);
//! - loads and validates `stopgap.toml` ([`config`]), reporting every problem located.
//!
//! - relays FTP data connections through one-shot listeners ([`ftp_data`]);
//! - counts everything into [`metrics::Metrics`].
//!
//! What it does not do: parse protocols (the engine and codecs do), TLS, or the admin API.
//!
//! Back-pressure: a connection reads from one side only after everything the engine produced
//! has been written, so a slow reader slows the writer. Memory per connection is bounded by two
//! read buffers ([`pump::READ_BUFFER`] each), the head limit, and the inspection window while a
//! body-reading patch needs the body.
#![warn(missing_docs)]

pub mod audit;
pub mod config;
pub mod escalation;
pub mod ftp_data;
pub mod metrics;
pub mod pump;

pub use audit::{AuditLog, ControlEvent};
pub use config::{GatewayConfig, ListenerConfig};
pub use metrics::{ListenerMetrics, Metrics};
pub use pump::{serve_listener, Drain, DrainSwitch, ListenerRuntime, ListenerSettings};
