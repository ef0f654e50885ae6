//! Sans-IO protocol codecs for stopgap.
//!
//! This crate turns bytes into protocol units and framing decisions. It does **no I/O**, reads no
//! clock and spawns nothing: callers hand it `&[u8]` (or, to take a head off a buffer without
//! copying it, a `BytesMut`) and act on the values it returns. The live
//! proxy and any offline replay run the very same code.
//!
//! What it does:
//! - [`http1`]: HTTP/1.1 (RFC 9112) request and response heads, message framing (RFC 9112 §6.3)
//!   and body decoders (`Content-Length`, `chunked` with extensions and trailers, close-delimited).
//!   Strict by default: every ambiguity that a front end and a back end could read differently is
//!   an error with the status a safe front end answers.
//! - [`ftp`]: FTP control connections: command lines (over-long ones reported and discarded as
//!   they stream), multi-line replies, the address forms of `PORT`/`EPRT`/`227`/`229`.
//! - [`smtp`]: SMTP commands and replies (the same line grammar), and the `DATA` reader that
//!   ends a message exactly at `CRLF . CRLF` and reports bare LF / bare CR.
//!
//! What it deliberately does not do:
//! - re-serialise messages: heads carry byte ranges into the bytes received, so callers forward
//!   untouched messages byte-for-byte;
//! - decode content codings (gzip, deflate): bodies are inspected as transferred;
//! - HTTP/2 or HTTP/3.
//!
//! Key types: [`http1::RequestHead`], [`http1::ResponseHead`], [`http1::BodyDecoder`],
//! [`http1::HeadError`], [`http1::Limits`].
#![warn(missing_docs)]

pub mod ftp;
pub mod http1;
pub mod smtp;
