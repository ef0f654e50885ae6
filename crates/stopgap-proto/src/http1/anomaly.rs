//! Stable snake_case names for HTTP/1.1 anomalies.
//!
//! These names are shared by audit events, metrics and patch expressions; never rename one.

/// A bare LF ends a line where CRLF is required (RFC 9112 §2.2).
pub const BARE_LF: &str = "bare_lf";
/// A CR not followed by LF (RFC 9112 §2.2).
pub const BARE_CR: &str = "bare_cr";
/// The request line is longer than the configured limit.
pub const REQUEST_LINE_TOO_LONG: &str = "request_line_too_long";
/// The header block is larger than the configured limit.
pub const HEAD_TOO_LARGE: &str = "head_too_large";
/// More header fields than the configured limit.
pub const TOO_MANY_HEADERS: &str = "too_many_headers";
/// The head does not follow the RFC 9112 grammar (obs-fold, space before colon, CTL, ...).
pub const MALFORMED_HEAD: &str = "malformed_head";
/// The request target contains bytes that are not allowed (RFC 9112 §3.2).
pub const INVALID_TARGET: &str = "invalid_target";
/// HTTP/1.1 request without exactly one Host header (RFC 9112 §3.2).
pub const HOST_HEADER: &str = "host_header";
/// An absolute-form target whose authority is not the Host header, or has userinfo.
pub const HOST_MISMATCH: &str = "host_mismatch";
/// An `Expect` member other than `100-continue` (answered with 417).
pub const UNSUPPORTED_EXPECTATION: &str = "unsupported_expectation";
/// Both Content-Length and Transfer-Encoding (RFC 9112 §6.3).
pub const CL_AND_TE: &str = "content_length_and_transfer_encoding";
/// Invalid, list-valued or repeated Content-Length (RFC 9112 §6.3).
pub const INVALID_CONTENT_LENGTH: &str = "invalid_content_length";
/// Transfer-Encoding in which chunked is missing from the end, repeated or malformed.
pub const INVALID_TRANSFER_ENCODING: &str = "invalid_transfer_encoding";
/// A transfer coding the gateway does not know (answered with 501).
pub const UNKNOWN_TRANSFER_CODING: &str = "unknown_transfer_coding";
/// Transfer-Encoding on an HTTP/1.0 message (RFC 9112 §6.1).
pub const TRANSFER_ENCODING_HTTP10: &str = "transfer_encoding_in_http10";
/// A chunk-size line that is not `1*HEXDIG [chunk-ext] CRLF` or overflows.
pub const INVALID_CHUNK: &str = "invalid_chunk";
/// A malformed trailer section.
pub const INVALID_TRAILER: &str = "invalid_trailer";
/// An unsupported HTTP version.
pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
