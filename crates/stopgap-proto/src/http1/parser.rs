//! Request and response heads, and message framing (RFC 9112 §2–§7).

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::anomaly;

/// Size limits applied while parsing heads and chunked framing.
///
/// Each has a `DEFAULT_` constant; the gateway's configuration may change them within the
/// `MIN_`/`MAX_` bounds that the configuration layer enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, CRLF excluded; longer → `414`.
    pub max_request_line: usize,
    /// Largest head (start line, fields and the blank line); larger → `431`.
    pub max_head: usize,
    /// Most header fields in one head; more → `431`.
    pub max_headers: usize,
    /// Longest chunk-size line including extensions; longer → `400`.
    pub max_chunk_line: usize,
    /// Largest trailer section; larger → `400`.
    pub max_trailer: usize,
}

impl Limits {
    /// Default longest request line (8 KiB, as nginx and Apache).
    pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
    /// Default largest head (32 KiB).
    pub const DEFAULT_MAX_HEAD: usize = 32 * 1024;
    /// Default most header fields (100, as Apache's LimitRequestFields).
    pub const DEFAULT_MAX_HEADERS: usize = 100;
    /// Default longest chunk-size line (1 KiB).
    pub const DEFAULT_MAX_CHUNK_LINE: usize = 1024;
    /// Default largest trailer section (8 KiB).
    pub const DEFAULT_MAX_TRAILER: usize = 8 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_line: Self::DEFAULT_MAX_REQUEST_LINE,
            max_head: Self::DEFAULT_MAX_HEAD,
            max_headers: Self::DEFAULT_MAX_HEADERS,
            max_chunk_line: Self::DEFAULT_MAX_CHUNK_LINE,
            max_trailer: Self::DEFAULT_MAX_TRAILER,
        }
    }
}

/// A head that cannot be forwarded; the connection must be answered and closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The request line exceeds [`Limits::max_request_line`].
    #[error("request line longer than {limit} bytes")]
    RequestLineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// The head exceeds [`Limits::max_head`].
    #[error("header block larger than {limit} bytes")]
    HeadTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// More than [`Limits::max_headers`] fields.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// A line ends with LF alone.
    #[error("bare LF at byte {offset}: lines must end with CRLF")]
    BareLf {
        /// Offset of the LF in the head.
        offset: usize,
    },
    /// A CR not followed by LF.
    #[error("bare CR at byte {offset}")]
    BareCr {
        /// Offset of the CR in the head.
        offset: usize,
    },
    /// The head does not follow the grammar.
    #[error("malformed head: {what}")]
    Malformed {
        /// What the parser expected.
        what: &'static str,
    },
    /// The request target has a byte outside the allowed set.
    #[error("invalid byte 0x{byte:02x} in request target")]
    InvalidTarget {
        /// The offending byte.
        byte: u8,
    },
    /// HTTP/1.1 request without Host, or with several.
    #[error("HTTP/1.1 request needs exactly one Host header, found {found}")]
    HostHeader {
        /// How many Host fields were present.
        found: usize,
    },
    /// The request target is in none of the four forms of RFC 9112 §3.2, or in a form its
    /// method may not use.
    #[error("request target is not in {expected}")]
    TargetForm {
        /// The form the method needs.
        expected: &'static str,
    },
    /// An absolute-form target whose authority is not the Host header, or that carries
    /// userinfo: the gateway and the server could route or inspect different resources.
    #[error("absolute-form target disagrees with Host: {why}")]
    HostMismatch {
        /// What disagrees.
        why: &'static str,
    },
    /// An `Expect` member other than `100-continue` (RFC 9110 §10.1.1): answered `417`.
    #[error("unsupported expectation in Expect (only 100-continue is)")]
    UnsupportedExpectation,
}

impl HeadError {
    /// The status a safe front end answers with before closing.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::RequestLineTooLong { .. } => 414,
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::UnsupportedExpectation => 417,
            _ => 400,
        }
    }

    /// The stable anomaly name of this error.
    #[must_use]
    pub fn anomaly(&self) -> &'static str {
        match self {
            Self::RequestLineTooLong { .. } => anomaly::REQUEST_LINE_TOO_LONG,
            Self::HeadTooLarge { .. } => anomaly::HEAD_TOO_LARGE,
            Self::TooManyHeaders { .. } => anomaly::TOO_MANY_HEADERS,
            Self::BareLf { .. } => anomaly::BARE_LF,
            Self::BareCr { .. } => anomaly::BARE_CR,
            Self::Malformed { .. } => anomaly::MALFORMED_HEAD,
            Self::InvalidTarget { .. } => anomaly::INVALID_TARGET,
            Self::HostHeader { .. } => anomaly::HOST_HEADER,
            Self::TargetForm { .. } => anomaly::INVALID_TARGET,
            Self::HostMismatch { .. } => anomaly::HOST_MISMATCH,
            Self::UnsupportedExpectation => anomaly::UNSUPPORTED_EXPECTATION,
        }
    }
}

/// The framing of a message cannot be determined safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// Both Content-Length and Transfer-Encoding are present.
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthAndTransferEncoding,
    /// Content-Length is not a single run of digits, is repeated, or overflows.
    #[error("invalid Content-Length: {why}")]
    InvalidContentLength {
        /// What is wrong with it.
        why: &'static str,
    },
    /// Transfer-Encoding is malformed or `chunked` is not its last element exactly once.
    #[error("invalid Transfer-Encoding: {why}")]
    InvalidTransferEncoding {
        /// What is wrong with it.
        why: &'static str,
    },
    /// A transfer coding the gateway does not implement.
    #[error("unknown transfer coding")]
    UnknownTransferCoding,
    /// Transfer-Encoding on an HTTP/1.0 message.
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
}

impl FramingError {
    /// The status a safe front end answers with before closing.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownTransferCoding => 501,
            _ => 400,
        }
    }

    /// The stable anomaly name of this error.
    #[must_use]
    pub fn anomaly(&self) -> &'static str {
        match self {
            Self::ContentLengthAndTransferEncoding => anomaly::CL_AND_TE,
            Self::InvalidContentLength { .. } => anomaly::INVALID_CONTENT_LENGTH,
            Self::InvalidTransferEncoding { .. } => anomaly::INVALID_TRANSFER_ENCODING,
            Self::UnknownTransferCoding => anomaly::UNKNOWN_TRANSFER_CODING,
            Self::TransferEncodingInHttp10 => anomaly::TRANSFER_ENCODING_HTTP10,
        }
    }
}

/// HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection (responses only).
    UntilClose,
}

/// One header field: byte ranges into the head's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    /// The field name.
    pub name: Range<usize>,
    /// The field value, without leading and trailing whitespace.
    pub value: Range<usize>,
    /// The whole field line including its CRLF.
    pub line: Range<usize>,
}

/// Fields shared by request and response heads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    raw: Bytes,
    headers: Vec<HeaderField>,
}

impl Fields {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| {
                // Lengths first: most fields are told apart without reading their names.
                h.name.len() == name.len()
                    && self.raw[h.name.clone()].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(move |h| &self.raw[h.value.clone()])
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    fn content_length(&self) -> Result<Option<u64>, FramingError> {
        let mut found = None;
        for value in self.values("content-length") {
            if found.is_some() {
                return Err(FramingError::InvalidContentLength {
                    why: "repeated header",
                });
            }
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::InvalidContentLength {
                    why: "not a single run of digits",
                });
            }
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(FramingError::InvalidContentLength { why: "overflow" })?;
            found = Some(n);
        }
        Ok(found)
    }

    /// `Ok(None)` without Transfer-Encoding, `Ok(Some(true))` when chunked is last.
    fn transfer_encoding(&self) -> Result<Option<bool>, FramingError> {
        let mut codings: Vec<&[u8]> = Vec::new();
        let mut present = false;
        for value in self.values("transfer-encoding") {
            present = true;
            for element in value.split(|&b| b == b',') {
                let element = trim_ows(element);
                if element.is_empty() {
                    continue; // RFC 9110 §5.6.1: empty list elements are ignored
                }
                if !element.iter().all(|&b| is_tchar(b)) {
                    return Err(FramingError::InvalidTransferEncoding {
                        why: "coding is not a token (parameters or obfuscation)",
                    });
                }
                codings.push(element);
            }
        }
        if !present {
            return Ok(None);
        }
        if codings.is_empty() {
            return Err(FramingError::InvalidTransferEncoding {
                why: "empty coding list",
            });
        }
        let is_chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        let chunked_count = codings.iter().filter(|c| is_chunked(c)).count();
        let last_is_chunked = codings.last().is_some_and(|c| is_chunked(c));
        if chunked_count > 1 || (chunked_count == 1 && !last_is_chunked) {
            return Err(FramingError::InvalidTransferEncoding {
                why: "chunked must be the final coding, once",
            });
        }
        const KNOWN: [&[u8]; 6] = [
            b"chunked",
            b"gzip",
            b"x-gzip",
            b"deflate",
            b"compress",
            b"x-compress",
        ];
        if codings
            .iter()
            .any(|c| !KNOWN.iter().any(|k| c.eq_ignore_ascii_case(k)))
        {
            return Err(FramingError::UnknownTransferCoding);
        }
        Ok(Some(last_is_chunked))
    }
}

/// A parsed request head; all ranges index into [`RequestHead::raw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    fields: Fields,
    /// The method token.
    pub method: Range<usize>,
    /// The request target as sent.
    pub target: Range<usize>,
    /// The HTTP version.
    pub version: Version,
}

impl RequestHead {
    /// The exact bytes of the head, from the request line to the blank line inclusive.
    #[must_use]
    pub fn raw(&self) -> &[u8] {
        &self.fields.raw
    }
    /// The same bytes, shared (no copy).
    #[must_use]
    pub fn raw_bytes(&self) -> Bytes {
        self.fields.raw.clone()
    }
    /// The header fields in order.
    #[must_use]
    pub fn headers(&self) -> &[HeaderField] {
        &self.fields.headers
    }
    /// The method token.
    #[must_use]
    pub fn method(&self) -> &[u8] {
        &self.fields.raw[self.method.clone()]
    }
    /// The request target as sent.
    #[must_use]
    pub fn target(&self) -> &[u8] {
        &self.fields.raw[self.target.clone()]
    }
    /// Every value of the header `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields.values(name)
    }
    /// Whether a comma-separated header `name` lists `token` (case-insensitive).
    #[must_use]
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.fields.has_token(name, token)
    }
    /// Whether the connection stays open after this request (RFC 9112 §9.3).
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.has_token("connection", "close"),
            Version::Http10 => self.has_token("connection", "keep-alive"),
        }
    }
    /// Whether the client waits for `100 Continue` before sending the body.
    #[must_use]
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11 && self.has_token("expect", "100-continue")
    }
    /// Whether this is a HEAD request (its response has no body).
    #[must_use]
    pub fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }

    /// The framing of the request body (RFC 9112 §6.3, strict).
    ///
    /// # Errors
    /// Any ambiguity: CL with TE, invalid or repeated CL, malformed or unknown TE.
    pub fn framing(&self) -> Result<Framing, FramingError> {
        let te = self.fields.transfer_encoding()?;
        let cl = self.fields.content_length()?;
        match (te, cl) {
            (Some(_), Some(_)) => Err(FramingError::ContentLengthAndTransferEncoding),
            (Some(_), None) if self.version == Version::Http10 => {
                Err(FramingError::TransferEncodingInHttp10)
            }
            (Some(true), None) => Ok(Framing::Chunked),
            // A request whose final coding is not chunked cannot be delimited (§6.3 item 4).
            (Some(false), None) => Err(FramingError::InvalidTransferEncoding {
                why: "chunked must be the final coding of a request",
            }),
            (None, Some(0) | None) => Ok(Framing::None),
            (None, Some(n)) => Ok(Framing::Length(n)),
        }
    }
}

/// A parsed response head; all ranges index into [`ResponseHead::raw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    fields: Fields,
    /// The status code.
    pub status: u16,
    /// The HTTP version.
    pub version: Version,
}

impl ResponseHead {
    /// The exact bytes of the head.
    #[must_use]
    pub fn raw(&self) -> &[u8] {
        &self.fields.raw
    }
    /// The same bytes, shared (no copy).
    #[must_use]
    pub fn raw_bytes(&self) -> Bytes {
        self.fields.raw.clone()
    }
    /// The header fields in order.
    #[must_use]
    pub fn headers(&self) -> &[HeaderField] {
        &self.fields.headers
    }
    /// Every value of the header `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields.values(name)
    }
    /// Whether the server keeps the connection open after this response.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.fields.has_token("connection", "close"),
            Version::Http10 => self.fields.has_token("connection", "keep-alive"),
        }
    }

    /// The framing of the response body, given the request it answers (RFC 9112 §6.3).
    ///
    /// # Errors
    /// CL with TE (a response-splitting sign), invalid CL, malformed or unknown TE.
    pub fn framing(&self, request_was_head: bool) -> Result<Framing, FramingError> {
        if request_was_head || (100..200).contains(&self.status) || matches!(self.status, 204 | 304)
        {
            return Ok(Framing::None);
        }
        let te = self.fields.transfer_encoding()?;
        let cl = self.fields.content_length()?;
        match (te, cl) {
            (Some(_), Some(_)) => Err(FramingError::ContentLengthAndTransferEncoding),
            (Some(_), None) if self.version == Version::Http10 => {
                Err(FramingError::TransferEncodingInHttp10)
            }
            (Some(true), None) => Ok(Framing::Chunked),
            (Some(false), None) | (None, None) => Ok(Framing::UntilClose),
            (None, Some(0)) => Ok(Framing::None),
            (None, Some(n)) => Ok(Framing::Length(n)),
        }
    }
}

/// RFC 9110 §5.6.2 token character.
#[must_use]
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Finds the end of the head (after its blank line) and checks its line endings on the way,
/// visiting only CR and LF bytes: the first LF not preceded by CR or CR not followed by LF is
/// an error (a CR that ends `buf` waits for more bytes). `Ok(None)`: no blank line yet.
fn scan_head(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut last_lf: Option<usize> = None;
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        if buf[i] == b'\r' {
            if buf.get(i + 1).is_some_and(|&b| b != b'\n') {
                return Err(HeadError::BareCr { offset: i });
            }
            continue;
        }
        if i == 0 || buf[i - 1] != b'\r' {
            return Err(HeadError::BareLf { offset: i });
        }
        // "\r\n\r\n": this line was empty.
        if i >= 2 && last_lf == Some(i - 2) {
            return Ok(Some(i + 1));
        }
        last_lf = Some(i);
    }
    Ok(None)
}

/// Checks size limits and line endings; returns the head length when complete.
fn delimit_head(buf: &[u8], limits: &Limits, is_request: bool) -> Result<Option<usize>, HeadError> {
    let first_line_end = memchr::memchr(b'\n', buf);
    if is_request {
        let line_len = first_line_end.unwrap_or(buf.len());
        if line_len > limits.max_request_line + 1 {
            return Err(HeadError::RequestLineTooLong {
                limit: limits.max_request_line,
            });
        }
    }
    // A bare CR/LF in what has arrived is reported without waiting for the rest of the head.
    let Some(end) = scan_head(&buf[..buf.len().min(limits.max_head)])? else {
        if buf.len() >= limits.max_head {
            return Err(HeadError::HeadTooLarge {
                limit: limits.max_head,
            });
        }
        return Ok(None);
    };
    Ok(Some(end))
}

fn map_httparse(e: httparse::Error) -> HeadError {
    let what = match e {
        httparse::Error::HeaderName => "a header field name (token) followed by ':'",
        httparse::Error::HeaderValue => "a header field value without control bytes",
        httparse::Error::NewLine => "CRLF",
        httparse::Error::Status => "a three-digit status code",
        httparse::Error::Token => "a method token",
        httparse::Error::TooManyHeaders => "fewer header fields",
        httparse::Error::Version => "HTTP/1.0 or HTTP/1.1",
    };
    HeadError::Malformed { what }
}

/// Header slots kept on the stack; a configured `max_headers` beyond this uses the heap.
const STACK_HEADERS: usize = 128;

/// `max_headers + 1` slots (one more than allowed, to tell "too many" from "exactly the limit").
/// Left uninitialised: httparse writes a slot before it reads it, and the parse would
/// otherwise start by clearing 4 KiB.
fn header_storage<'s, 'b>(
    stack: &'s mut [MaybeUninit<httparse::Header<'b>>; STACK_HEADERS],
    heap: &'s mut Vec<MaybeUninit<httparse::Header<'b>>>,
    limits: &Limits,
) -> &'s mut [MaybeUninit<httparse::Header<'b>>] {
    let slots = limits.max_headers + 1;
    if slots <= STACK_HEADERS {
        &mut stack[..slots]
    } else {
        heap.resize_with(slots, MaybeUninit::uninit);
        heap
    }
}

/// The length of a complete head, `None` while incomplete, or httparse's error as ours.
fn complete(result: httparse::Result<usize>, limits: &Limits) -> Result<Option<usize>, HeadError> {
    match result {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders {
            limit: limits.max_headers,
        }),
        Err(e) => Err(map_httparse(e)),
    }
}

fn collect_fields(
    raw: &[u8],
    parsed: &[httparse::Header<'_>],
    limits: &Limits,
) -> Result<Vec<HeaderField>, HeadError> {
    if parsed.len() > limits.max_headers {
        return Err(HeadError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    let base = raw.as_ptr() as usize;
    let name_start = |h: &httparse::Header<'_>| h.name.as_ptr() as usize - base;
    let mut out = Vec::with_capacity(parsed.len());
    for (i, h) in parsed.iter().enumerate() {
        let name = name_start(h)..name_start(h) + h.name.len();
        let value_start = h.value.as_ptr() as usize - base;
        let value = value_start..value_start + h.value.len();
        // Field lines follow each other (no folding, no blank line between them: httparse
        // refuses both), so a line ends where the next one starts, and the last one before
        // the blank line's CRLF.
        let line_end = parsed.get(i + 1).map_or(raw.len() - 2, name_start);
        let trimmed = trim_ows(&raw[value.clone()]);
        let lead = trimmed.as_ptr() as usize - base;
        out.push(HeaderField {
            name: name.clone(),
            value: lead..lead + trimmed.len(),
            line: name.start..line_end,
        });
    }
    Ok(out)
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete (need more bytes).
///
/// # Errors
/// [`HeadError`] when the head can never become valid; answer [`HeadError::status`] and close.
pub fn parse_request_head(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    if let Some(parts) = quick_request(buf, limits) {
        return build_request(Bytes::copy_from_slice(&buf[..parts.len]), parts).map(Some);
    }
    parse_request_head_carefully(buf, limits)
}

/// [`parse_request_head`] without the quick way: the head delimited (line endings and limits
/// checked byte by byte) before httparse reads it.
pub(super) fn parse_request_head_carefully(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<RequestHead>, HeadError> {
    let Some(end) = delimit_head(buf, limits, true)? else {
        return Ok(None);
    };
    request_from(Bytes::copy_from_slice(&buf[..end]), limits).map(Some)
}

/// As [`parse_request_head`], taking a complete head off the front of `buf` without copying
/// it (the head keeps the bytes; on an error they are gone from `buf` too, as the connection
/// is refused and closed).
///
/// # Errors
/// [`HeadError`] as for [`parse_request_head`].
pub fn take_request_head(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<RequestHead>, HeadError> {
    if let Some(parts) = quick_request(buf, limits) {
        return build_request(buf.split_to(parts.len).freeze(), parts).map(Some);
    }
    let Some(end) = delimit_head(buf, limits, true)? else {
        return Ok(None);
    };
    request_from(buf.split_to(end).freeze(), limits).map(Some)
}

/// A request head as httparse read it: its length and offsets into it.
struct RequestParts {
    len: usize,
    method: Range<usize>,
    target: Range<usize>,
    version: Version,
    headers: Vec<HeaderField>,
}

/// The quick way to a well-formed request head at the start of `buf`: httparse over what has
/// arrived (up to the head size limit), then the checks it does not make (httparse also takes
/// a bare LF as a line end, and skips empty lines before the request line). `None` for
/// anything else — incomplete, malformed, over a limit — which then goes the careful way
/// (`delimit_head`, then httparse on the delimited head), the one that says what is wrong. A
/// head both ways accept is parsed the same by both.
fn quick_request(buf: &[u8], limits: &Limits) -> Option<RequestParts> {
    let window = &buf[..buf.len().min(limits.max_head)];
    let parts = request_parts(window, limits).ok()??;
    // Where the request line ends (after its LF): where the first field starts, or before the
    // blank line.
    let line_end = parts
        .headers
        .first()
        .map_or(parts.len - 2, |h| h.name.start);
    let fits = line_end - 1 <= limits.max_request_line + 1;
    (parts.method.start == 0 && fits && lines_end_in_crlf(&window[..parts.len], &parts.headers))
        .then_some(parts)
}

/// Whether every line of a head httparse read completely ends in CRLF: a field line ends where
/// the next starts, the last before the blank line. (Only a line end can hold an LF in such a
/// head, and a CR only before an LF.)
fn lines_end_in_crlf(head: &[u8], headers: &[HeaderField]) -> bool {
    head.ends_with(b"\r\n\r\n")
        && headers
            .iter()
            .all(|h| head[..h.name.start].ends_with(b"\r\n"))
}

/// Runs httparse over `raw`: `Ok(None)` while the head is incomplete.
fn request_parts(raw: &[u8], limits: &Limits) -> Result<Option<RequestParts>, HeadError> {
    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(raw, header_storage(&mut stack, &mut heap, limits));
    let Some(len) = complete(parsed, limits)? else {
        return Ok(None);
    };
    let base = raw.as_ptr() as usize;
    let method_str = req.method.unwrap_or_default();
    let method_start = method_str.as_ptr() as usize - base;
    let path = req.path.unwrap_or_default();
    let target_start = path.as_ptr() as usize - base;
    if let Some(&bad) = path
        .as_bytes()
        .iter()
        .find(|&&b| !(0x21..0x7f).contains(&b))
    {
        return Err(HeadError::InvalidTarget { byte: bad });
    }
    let version = if req.version == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    };
    Ok(Some(RequestParts {
        len,
        method: method_start..method_start + method_str.len(),
        target: target_start..target_start + path.len(),
        version,
        headers: collect_fields(&raw[..len], req.headers, limits)?,
    }))
}

/// Parses a complete, delimited request head.
fn request_from(head: Bytes, limits: &Limits) -> Result<RequestHead, HeadError> {
    match request_parts(&head, limits)? {
        Some(parts) if parts.len == head.len() => build_request(head, parts),
        _ => Err(HeadError::Malformed { what: "CRLF" }),
    }
}

/// The checks on a parsed request head beyond its syntax; the head's bytes move into it.
fn build_request(head: Bytes, parts: RequestParts) -> Result<RequestHead, HeadError> {
    let RequestParts {
        method,
        target,
        version,
        headers,
        ..
    } = parts;
    let fields = Fields { raw: head, headers };
    let hosts = fields.values("host").count();
    if (version == Version::Http11 && hosts != 1) || hosts > 1 {
        return Err(HeadError::HostHeader { found: hosts });
    }
    check_target_form(
        &fields.raw[method.clone()],
        &fields.raw[target.clone()],
        fields.values("host").next(),
    )?;
    if version == Version::Http11 {
        check_expectations(&fields)?;
    }
    Ok(RequestHead {
        method,
        target,
        version,
        fields,
    })
}

/// RFC 9112 §3.2: origin-form (`/path`), absolute-form (`http://authority/path`), authority-form
/// (CONNECT only) or asterisk-form (OPTIONS only). An absolute-form authority must name the same
/// host as the Host header (§3.2.2 makes the server ignore Host; a gateway that inspected Host
/// would then look at another resource than the server serves) and carry no userinfo (RFC 9110
/// §4.2.4).
fn check_target_form(method: &[u8], target: &[u8], host: Option<&[u8]>) -> Result<(), HeadError> {
    if method == b"CONNECT" {
        return if target.contains(&b':') && !target.contains(&b'/') {
            Ok(())
        } else {
            Err(HeadError::TargetForm {
                expected: "authority-form (host:port), as CONNECT needs",
            })
        };
    }
    if target == b"*" {
        return if method == b"OPTIONS" {
            Ok(())
        } else {
            Err(HeadError::TargetForm {
                expected: "origin-form: only OPTIONS may use *",
            })
        };
    }
    if target.first() == Some(&b'/') {
        return Ok(());
    }
    let rest = strip_prefix_ignore_case(target, b"http://")
        .map(|r| (r, b":80".as_slice()))
        .or_else(|| strip_prefix_ignore_case(target, b"https://").map(|r| (r, b":443".as_slice())));
    let Some((rest, default_port)) = rest else {
        return Err(HeadError::TargetForm {
            expected: "origin-form (/path) or absolute-form (http://host/path)",
        });
    };
    let authority_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.is_empty() {
        return Err(HeadError::HostMismatch {
            why: "empty authority",
        });
    }
    if authority.contains(&b'@') {
        return Err(HeadError::HostMismatch {
            why: "userinfo in the authority",
        });
    }
    let without_default = |a: &'_ [u8]| -> Vec<u8> {
        let lower = a.to_ascii_lowercase();
        match lower.strip_suffix(default_port) {
            Some(h) => h.to_vec(),
            None => lower,
        }
    };
    match host {
        Some(h) if without_default(h) == without_default(authority) => Ok(()),
        Some(_) => Err(HeadError::HostMismatch {
            why: "the authority is not the Host header",
        }),
        // HTTP/1.0 without Host: the authority alone names the resource.
        None => Ok(()),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// RFC 9110 §10.1.1: `100-continue` is the only expectation; anything else gets `417`.
fn check_expectations(fields: &Fields) -> Result<(), HeadError> {
    for value in fields.values("expect") {
        for member in value.split(|&b| b == b',') {
            let member = trim_ows(member);
            if !member.is_empty() && !member.eq_ignore_ascii_case(b"100-continue") {
                return Err(HeadError::UnsupportedExpectation);
            }
        }
    }
    Ok(())
}

/// Parses a response head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete.
///
/// # Errors
/// [`HeadError`] when the head can never become valid (the gateway answers `502`).
pub fn parse_response_head(buf: &[u8], limits: &Limits) -> Result<Option<ResponseHead>, HeadError> {
    if let Some(parts) = quick_response(buf, limits) {
        return Ok(Some(build_response(
            Bytes::copy_from_slice(&buf[..parts.len]),
            parts,
        )));
    }
    parse_response_head_carefully(buf, limits)
}

/// [`parse_response_head`] without the quick way (see [`parse_request_head_carefully`]).
pub(super) fn parse_response_head_carefully(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<ResponseHead>, HeadError> {
    let Some(end) = delimit_head(buf, limits, false)? else {
        return Ok(None);
    };
    response_from(Bytes::copy_from_slice(&buf[..end]), limits).map(Some)
}

/// As [`parse_response_head`], taking a complete head off the front of `buf` without copying
/// it (on an error the bytes are gone from `buf` too, as the connection is closed).
///
/// # Errors
/// [`HeadError`] as for [`parse_response_head`].
pub fn take_response_head(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ResponseHead>, HeadError> {
    if let Some(parts) = quick_response(buf, limits) {
        return Ok(Some(build_response(
            buf.split_to(parts.len).freeze(),
            parts,
        )));
    }
    let Some(end) = delimit_head(buf, limits, false)? else {
        return Ok(None);
    };
    response_from(buf.split_to(end).freeze(), limits).map(Some)
}

/// A response head as httparse read it.
struct ResponseParts {
    len: usize,
    status: u16,
    version: Version,
    headers: Vec<HeaderField>,
}

/// As [`quick_request`], for a response head.
fn quick_response(buf: &[u8], limits: &Limits) -> Option<ResponseParts> {
    let window = &buf[..buf.len().min(limits.max_head)];
    let parts = response_parts(window, limits).ok()??;
    (window.starts_with(b"HTTP/") && lines_end_in_crlf(&window[..parts.len], &parts.headers))
        .then_some(parts)
}

/// Runs httparse over `raw`: `Ok(None)` while the head is incomplete.
fn response_parts(raw: &[u8], limits: &Limits) -> Result<Option<ResponseParts>, HeadError> {
    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        raw,
        header_storage(&mut stack, &mut heap, limits),
    );
    let Some(len) = complete(parsed, limits)? else {
        return Ok(None);
    };
    let version = if resp.version == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    };
    Ok(Some(ResponseParts {
        len,
        status: resp.code.unwrap_or_default(),
        version,
        headers: collect_fields(&raw[..len], resp.headers, limits)?,
    }))
}

/// Parses a complete, delimited response head.
fn response_from(head: Bytes, limits: &Limits) -> Result<ResponseHead, HeadError> {
    match response_parts(&head, limits)? {
        Some(parts) if parts.len == head.len() => Ok(build_response(head, parts)),
        _ => Err(HeadError::Malformed { what: "CRLF" }),
    }
}

fn build_response(head: Bytes, parts: ResponseParts) -> ResponseHead {
    ResponseHead {
        fields: Fields {
            raw: head,
            headers: parts.headers,
        },
        status: parts.status,
        version: parts.version,
    }
}
