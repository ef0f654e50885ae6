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
//! - FTP ([`FtpInspector`]) and SMTP ([`SmtpInspector`]): commands evaluated against the
//!   protocol's patches, refusals answered as the patched server would, in order, with the
//!   session kept; FTP data connections handed to the proxy; SMTP messages read strictly and
//!   checked before the server sees them. [`Session`] drives any of the three.
//!
//! What it does not do: I/O, timers, clocks (the proxy stamps events), or asset targeting.
//! Untouched messages leave as the exact bytes that arrived: heads and bodies are forwarded as
//! zero-copy slices of the receive buffer.
//!
//! Memory per flow is bounded by the head limit plus the inspection window (only while a body
//! patch needs the body), plus what the proxy has read but not yet written.
#![warn(missing_docs)]

pub mod audit;
mod command;
mod edit;
pub mod ftp;
mod inspector;
pub mod replay;
pub mod smtp;

pub use audit::{AuditEvent, Change};
pub use command::default_reply_text;
pub use ftp::FtpInspector;
pub use inspector::{
    BeyondWindow, FlowInspector, FlowMeta, InspectorConfig, Output, Side, Timeout,
};
pub use smtp::SmtpInspector;
pub use stopgap_patch::PatchSet;

use std::sync::Arc;

/// One client connection of any protocol: what the proxy drives.
pub enum Session {
    /// HTTP/1.1.
    Http(Box<FlowInspector>),
    /// FTP control connection.
    Ftp(Box<FtpInspector>),
    /// SMTP connection.
    Smtp(Box<SmtpInspector>),
}

impl Session {
    /// Feeds bytes read from `side`.
    pub fn handle_data(&mut self, side: Side, data: &[u8], snapshot: &Arc<PatchSet>) {
        match self {
            Self::Http(i) => i.handle_data(side, data, snapshot),
            Self::Ftp(i) => i.handle_data(side, data, snapshot),
            Self::Smtp(i) => i.handle_data(side, data, snapshot),
        }
    }

    /// The server closed its connection while it owed nothing, after an exchange that meant to
    /// keep it: `true` when the flow can go on over a new server connection (HTTP only; an FTP
    /// or SMTP session lives and dies with its server connection). See
    /// [`FlowInspector::server_closed_between_messages`].
    pub fn server_closed_between_messages(&mut self) -> bool {
        match self {
            Self::Http(i) => i.server_closed_between_messages(),
            Self::Ftp(_) | Self::Smtp(_) => false,
        }
    }

    /// `side` closed its sending direction.
    pub fn handle_eof(&mut self, side: Side) {
        match self {
            Self::Http(i) => i.handle_eof(side),
            Self::Ftp(i) => i.handle_eof(side),
            Self::Smtp(i) => i.handle_eof(side),
        }
    }

    /// The upstream cannot be reached.
    pub fn upstream_failed(&mut self, reason: &str) {
        match self {
            Self::Http(i) => i.upstream_failed(reason),
            Self::Ftp(i) => i.upstream_failed(reason),
            Self::Smtp(i) => i.upstream_failed(reason),
        }
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        match self {
            Self::Http(i) => i.poll_output(),
            Self::Ftp(i) => i.poll_output(),
            Self::Smtp(i) => i.poll_output(),
        }
    }

    /// Requests (HTTP) or commands (FTP, SMTP) seen so far.
    #[must_use]
    pub fn requests(&self) -> u64 {
        match self {
            Self::Http(i) => i.requests(),
            Self::Ftp(i) => i.requests(),
            Self::Smtp(i) => i.requests(),
        }
    }

    /// Whether the client is part-way through a message.
    #[must_use]
    pub fn client_in_message(&self) -> bool {
        match self {
            Self::Http(i) => i.client_in_message(),
            Self::Ftp(i) => i.client_in_message(),
            Self::Smtp(i) => i.client_in_message(),
        }
    }

    /// Whether the upstream owes an answer.
    #[must_use]
    pub fn awaiting_upstream(&self) -> bool {
        match self {
            Self::Http(i) => i.awaiting_upstream(),
            Self::Ftp(i) => i.awaiting_upstream(),
            Self::Smtp(i) => i.awaiting_upstream(),
        }
    }

    /// Bytes the inspector holds (heads, body windows, messages), for the memory budget.
    #[must_use]
    pub fn buffered(&self) -> usize {
        match self {
            Self::Http(i) => i.buffered(),
            Self::Ftp(i) => i.buffered(),
            Self::Smtp(i) => i.buffered(),
        }
    }

    /// A timer of the proxy fired.
    pub fn timed_out(&mut self, what: Timeout) {
        match self {
            Self::Http(i) => i.timed_out(what),
            Self::Ftp(i) => i.timed_out(what),
            Self::Smtp(i) => i.timed_out(what),
        }
    }

    /// Whether the connection is between messages.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        match self {
            Self::Http(i) => i.is_idle(),
            Self::Ftp(i) => i.is_idle(),
            Self::Smtp(i) => i.is_idle(),
        }
    }
}

#[cfg(test)]
mod tests;
