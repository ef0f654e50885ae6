//! Audit events: one JSON object per line, stable field names (documented in docs/audit.md).

use serde::Serialize;

/// Longest excerpt of a matched value kept in an event.
pub const MAX_EXCERPT: usize = 120;

/// Event names.
pub mod event {
    /// A patch's condition held on a message.
    pub const PATCH_MATCH: &str = "patch_match";
    /// A message broke the protocol and was refused.
    pub const PROTOCOL_VIOLATION: &str = "protocol_violation";
    /// A request body a body-reading patch wanted was longer than the inspection window: the
    /// rest passed uninspected, or the request was refused (`413`), as configured.
    pub const INSPECTION_WINDOW: &str = "inspection_window";
    /// The upstream could not be reached or misbehaved.
    pub const UPSTREAM_ERROR: &str = "upstream_error";
    /// The session became encrypted (`STARTTLS`, `AUTH TLS`) and passes through uninspected.
    pub const OPAQUE: &str = "opaque";
}

/// One audit event. The engine fills what it knows; the proxy adds the timestamp when writing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// What happened: one of [`event`].
    pub event: &'static str,
    /// `ftp` or `smtp`; absent for HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// Connection id (unique per gateway process).
    pub flow: u64,
    /// Index of the request on the connection (0-based).
    pub request: u64,
    /// Client address.
    pub client: String,
    /// Upstream address.
    pub upstream: String,
    /// Request method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request target as sent (escaped, excerpted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Patch id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// CVE ids of the patch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cve: Vec<String>,
    /// The patch's action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// `enforce` or `monitor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// What was done: `rejected`, `reset`, `stripped`, `truncated`, `replaced`, `logged`, or
    /// `would_<action>` in monitor mode.
    pub outcome: String,
    /// The field that matched, as written in the patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The matched value, escaped and cut to [`MAX_EXCERPT`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// For edits: what changed (escaped, excerpted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Status sent to the client, when the gateway answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Stable anomaly name, for protocol violations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<&'static str>,
    /// Human-readable detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Evidence of an edit: the bytes before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What was edited (`header:x-foo`, `arg:debug`, `body`).
    pub target: String,
    /// Before (escaped, excerpted).
    pub before: String,
    /// After (escaped, excerpted).
    pub after: String,
}

/// Escapes non-printable bytes as `\xHH` and cuts to [`MAX_EXCERPT`] bytes (marking the cut).
#[must_use]
pub fn excerpt(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(MAX_EXCERPT) {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > MAX_EXCERPT {
        out.push_str(&format!("…(+{} bytes)", bytes.len() - MAX_EXCERPT));
    }
    out
}
