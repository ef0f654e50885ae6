//! Body decoders: Content-Length, chunked (RFC 9112 §7.1) and close-delimited.

use super::anomaly;
use super::parser::{is_tchar, Framing, Limits};

/// A body that cannot be delimited safely; the connection must be answered and closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A chunk-size line is not `1*HEXDIG [chunk-ext] CRLF`, is too long, or overflows.
    #[error("invalid chunk: {why}")]
    InvalidChunk {
        /// What is wrong.
        why: &'static str,
    },
    /// The trailer section is malformed or too large.
    #[error("invalid trailer section: {why}")]
    InvalidTrailer {
        /// What is wrong.
        why: &'static str,
    },
}

impl BodyError {
    /// The stable anomaly name.
    #[must_use]
    pub fn anomaly(&self) -> &'static str {
        match self {
            Self::InvalidChunk { .. } => anomaly::INVALID_CHUNK,
            Self::InvalidTrailer { .. } => anomaly::INVALID_TRAILER,
        }
    }
}

/// What one call to [`BodyDecoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct BodyProgress {
    /// Bytes of the input that belong to this body (forward them as they are).
    pub consumed: usize,
    /// The body is complete; bytes after `consumed` belong to the next message.
    pub done: bool,
}

/// Where a chunked decoder is (RFC 9112 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChunkState {
    /// Reading `chunk-size [chunk-ext] CRLF`; holds the line so far (without CRLF).
    SizeLine(Vec<u8>),
    /// Reading chunk data; this many bytes remain.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Reading the trailer section (§7.1.2); holds the current line and the section size.
    Trailer { line: Vec<u8>, total: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
    Done,
}

/// Consumes body bytes of one message and hands out its payload.
///
/// Feed it the bytes after the head with [`BodyDecoder::decode`]; it reports how many belong to
/// this body (the caller forwards exactly those bytes) and calls `on_data` with each payload
/// slice (chunk framing removed). It buffers at most one chunk-size or trailer line, bounded by
/// [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder {
    state: State,
    max_chunk_line: usize,
    max_trailer: usize,
}

impl BodyDecoder {
    /// A decoder for a body with the given framing.
    #[must_use]
    pub fn new(framing: Framing, limits: &Limits) -> Self {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkState::SizeLine(Vec::new())),
            Framing::UntilClose => State::UntilClose,
        };
        Self {
            state,
            max_chunk_line: limits.max_chunk_line,
            max_trailer: limits.max_trailer,
        }
    }

    /// Whether the body is complete.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as belongs to this body.
    ///
    /// # Errors
    /// [`BodyError`] on invalid chunked framing; answer `400` and close.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        mut on_data: impl FnMut(&'a [u8]),
    ) -> Result<BodyProgress, BodyError> {
        let mut pos = 0;
        while pos < input.len() {
            match &mut self.state {
                State::Done => break,
                State::UntilClose => {
                    on_data(&input[pos..]);
                    pos = input.len();
                }
                State::Length(remaining) => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - pos);
                    on_data(&input[pos..pos + take]);
                    pos += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Done;
                    }
                }
                State::Chunked(chunk) => {
                    pos += Self::step_chunked(
                        chunk,
                        &input[pos..],
                        &mut on_data,
                        self.max_chunk_line,
                        self.max_trailer,
                    )?;
                    if matches!(
                        chunk,
                        ChunkState::Trailer {
                            total: usize::MAX,
                            ..
                        }
                    ) {
                        self.state = State::Done;
                    }
                }
            }
        }
        Ok(BodyProgress {
            consumed: pos,
            done: self.state == State::Done,
        })
    }

    /// Advances the chunked state machine; returns the bytes consumed (at least one).
    /// A finished body is signalled by `Trailer { total: usize::MAX }`.
    fn step_chunked<'a>(
        chunk: &mut ChunkState,
        input: &'a [u8],
        on_data: &mut impl FnMut(&'a [u8]),
        max_line: usize,
        max_trailer: usize,
    ) -> Result<usize, BodyError> {
        match chunk {
            ChunkState::SizeLine(line) => {
                let (used, complete) = take_line(line, input, max_line)
                    .map_err(|why| BodyError::InvalidChunk { why })?;
                if complete {
                    let size = parse_chunk_size_line(line)?;
                    *chunk = if size == 0 {
                        ChunkState::Trailer {
                            line: Vec::new(),
                            total: 0,
                        }
                    } else {
                        ChunkState::Data(size)
                    };
                }
                Ok(used)
            }
            ChunkState::Data(remaining) => {
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                on_data(&input[..take]);
                *remaining -= take as u64;
                if *remaining == 0 {
                    *chunk = ChunkState::DataCr;
                }
                Ok(take)
            }
            ChunkState::DataCr => {
                if input[0] != b'\r' {
                    return Err(BodyError::InvalidChunk {
                        why: "chunk data not followed by CRLF",
                    });
                }
                *chunk = ChunkState::DataLf;
                Ok(1)
            }
            ChunkState::DataLf => {
                if input[0] != b'\n' {
                    return Err(BodyError::InvalidChunk {
                        why: "chunk data not followed by CRLF",
                    });
                }
                *chunk = ChunkState::SizeLine(Vec::new());
                Ok(1)
            }
            ChunkState::Trailer { line, total } => {
                let room = max_trailer.saturating_sub(*total);
                let (used, complete) =
                    take_line(line, input, room).map_err(|_| BodyError::InvalidTrailer {
                        why: "trailer section too large or bare CR/LF",
                    })?;
                *total += used;
                if complete {
                    if line.is_empty() {
                        *total = usize::MAX; // end of the chunked body
                    } else {
                        validate_trailer_line(line)?;
                        line.clear();
                    }
                }
                Ok(used)
            }
        }
    }
}

/// Appends bytes of one CRLF-terminated line to `line` (without the CRLF).
/// Returns the bytes used and whether the line is complete.
fn take_line(line: &mut Vec<u8>, input: &[u8], max: usize) -> Result<(usize, bool), &'static str> {
    for (i, &b) in input.iter().enumerate() {
        if line.last() == Some(&b'\r') {
            if b != b'\n' {
                return Err("bare CR in line");
            }
            line.pop();
            return Ok((i + 1, true));
        }
        if b == b'\n' {
            return Err("bare LF in line");
        }
        if line.len() >= max {
            return Err("line too long");
        }
        line.push(b);
    }
    Ok((input.len(), false))
}

/// `chunk-size [ chunk-ext ]` where chunk-ext is `*( BWS ";" BWS token [ BWS "=" BWS
/// ( token / quoted-string ) ] )` (RFC 9112 §7.1.1).
fn parse_chunk_size_line(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::InvalidChunk {
            why: "chunk size is not hexadecimal",
        });
    }
    // Leading zeros are legal and carry no value; what is left must fit a signed 64-bit
    // length, as servers keep sizes in `off_t` (a size of 2^63 or more is how CVE-2013-2028
    // turned nginx's chunk parser against itself).
    let significant = &line[..digits];
    let significant = &significant[significant.iter().take_while(|&&b| b == b'0').count()..];
    let overflow = BodyError::InvalidChunk {
        why: "chunk size overflows",
    };
    if significant.len() > 16 {
        return Err(overflow);
    }
    let text = std::str::from_utf8(significant).unwrap_or("x");
    let size = if text.is_empty() {
        0
    } else {
        u64::from_str_radix(text, 16).map_err(|_| overflow.clone())?
    };
    if size > i64::MAX as u64 {
        return Err(overflow);
    }
    validate_chunk_ext(&line[digits..])?;
    Ok(size)
}

fn validate_chunk_ext(mut ext: &[u8]) -> Result<(), BodyError> {
    let bad = BodyError::InvalidChunk {
        why: "malformed chunk extension",
    };
    let skip_bws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', rest @ ..] = *s {
            *s = rest;
        }
    };
    let take_token = |s: &mut &[u8]| {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        *s = &s[n..];
        n
    };
    loop {
        skip_bws(&mut ext);
        if ext.is_empty() {
            return Ok(());
        }
        if ext[0] != b';' {
            return Err(bad);
        }
        ext = &ext[1..];
        skip_bws(&mut ext);
        if take_token(&mut ext) == 0 {
            return Err(bad);
        }
        skip_bws(&mut ext);
        if ext.first() == Some(&b'=') {
            ext = &ext[1..];
            skip_bws(&mut ext);
            if ext.first() == Some(&b'"') {
                let mut i = 1;
                loop {
                    match ext.get(i) {
                        None => return Err(bad),
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(&b) if b == b'\t' || b >= 0x20 && b != 0x7f => i += 1,
                        Some(_) => return Err(bad),
                    }
                }
                ext = &ext[i + 1..];
            } else if take_token(&mut ext) == 0 {
                return Err(bad);
            }
        }
    }
}

fn validate_trailer_line(line: &[u8]) -> Result<(), BodyError> {
    let name_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    let value_ok = line[name_len..]
        .iter()
        .skip(1)
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if name_len == 0 || line.get(name_len) != Some(&b':') || !value_ok {
        return Err(BodyError::InvalidTrailer {
            why: "trailer field is not `name: value`",
        });
    }
    Ok(())
}
