//! HTTP/1.1 codec (RFC 9112), sans-IO.
//!
//! The caller owns the receive buffer. It calls [`parse_request_head`] (or
//! [`parse_response_head`]) on the bytes received so far: `Ok(None)` means "need more bytes",
//! `Ok(Some(head))` gives a head whose [`RequestHead::raw`] holds the exact bytes received, and
//! an `Err` is fatal for the connection and names the status a safe front end answers. The
//! framing of the body follows from the head ([`RequestHead::framing`],
//! [`ResponseHead::framing`]); a [`BodyDecoder`] then consumes body bytes, reporting how many it
//! consumed (always forwardable as-is) and handing out the payload bytes for inspection.
//!
//! Strictness (RFC 9112 and its security considerations): bare LF or bare CR, obs-fold,
//! whitespace before a colon, control bytes in a field, a missing or repeated `Host`, both
//! `Content-Length` and `Transfer-Encoding`, a list-valued, repeated or non-numeric
//! `Content-Length`, and any transfer coding list whose last element is not `chunked` are errors.
//! There is no lenient mode yet; each leniency, when added, will be a named [`Limits`]-style
//! opt-in.

pub mod anomaly;
mod body;
mod parser;
#[cfg(test)]
mod tests;

pub use body::{BodyDecoder, BodyError, BodyProgress};
pub use parser::{
    parse_request_head, parse_response_head, take_request_head, take_response_head, Framing,
    FramingError, HeadError, HeaderField, Limits, RequestHead, ResponseHead, Version,
};
