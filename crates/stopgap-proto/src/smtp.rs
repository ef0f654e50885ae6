//! SMTP codec (RFC 5321, with RFC 2920 PIPELINING and RFC 3030 CHUNKING/BDAT), sans-IO.
//!
//! Commands and replies share FTP's line grammar (a verb, an argument; three-digit replies,
//! `ddd-` continuation lines), so [`CommandReader`] and [`ReplyReader`] are the same readers.
//! [`DataReader`] reads a message after `354`: it finds the end of data exactly as RFC 5321
//! §4.1.1.4 defines it (`CRLF . CRLF`, nothing else), removes dot-stuffing for inspection,
//! keeps the bytes as sent for forwarding, and reports bare LF and bare CR — the line endings
//! on which SMTP smuggling (CVE-2023-51764/51765/51766) makes two servers disagree about where
//! a message ends.

pub use crate::ftp::{Command, CommandEvent, CommandReader, Reply, ReplyError, ReplyReader};

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Mid,
    Cr,
    Dot,
    DotCr,
}

/// Reads one message of a `DATA` transaction.
#[derive(Debug, Clone)]
pub struct DataReader {
    state: State,
    window: usize,
    content: Vec<u8>,
    cut: bool,
    bare_lf: bool,
    bare_cr: bool,
    done: bool,
    size: u64,
}

impl DataReader {
    /// A reader keeping at most `window` bytes of unstuffed content for inspection.
    #[must_use]
    pub fn new(window: usize) -> Self {
        Self {
            state: State::LineStart,
            window,
            content: Vec::new(),
            cut: false,
            bare_lf: false,
            bare_cr: false,
            done: false,
            size: 0,
        }
    }

    fn keep(&mut self, b: u8) {
        if self.content.len() < self.window {
            self.content.push(b);
        } else {
            self.cut = true;
        }
    }

    /// Feeds bytes; returns how many belong to the message (its terminator included). When it
    /// is less than `data.len()` the message ended and the rest are commands.
    pub fn push(&mut self, data: &[u8]) -> usize {
        for (i, &b) in data.iter().enumerate() {
            if self.done {
                return i;
            }
            self.size += 1;
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::LineStart | State::Mid, b'\r') => State::Cr,
                (State::LineStart | State::Mid, b'\n') => {
                    self.bare_lf = true;
                    self.keep(b);
                    State::Mid
                }
                (State::LineStart | State::Mid, _) => {
                    self.keep(b);
                    State::Mid
                }
                (State::Cr, b'\n') => {
                    self.keep(b'\r');
                    self.keep(b'\n');
                    State::LineStart
                }
                (State::Cr, b'\r') => {
                    self.bare_cr = true;
                    self.keep(b'\r');
                    State::Cr
                }
                (State::Cr, _) => {
                    self.bare_cr = true;
                    self.keep(b'\r');
                    self.keep(b);
                    State::Mid
                }
                (State::Dot, b'\r') => State::DotCr,
                (State::Dot, b'\n') => {
                    // '.<LF>': a bare LF right where a lax server ends the message.
                    self.bare_lf = true;
                    self.keep(b'.');
                    self.keep(b);
                    State::Mid
                }
                (State::Dot, _) => {
                    // The leading dot of a stuffed line is removed.
                    self.keep(b);
                    State::Mid
                }
                (State::DotCr, b'\n') => {
                    self.done = true;
                    return i + 1;
                }
                (State::DotCr, _) => {
                    self.bare_cr = true;
                    self.keep(b'.');
                    self.keep(b'\r');
                    self.keep(b);
                    State::Mid
                }
            };
        }
        data.len()
    }

    /// Whether the terminating `CRLF . CRLF` has been read.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The unstuffed content read so far (up to the window).
    #[must_use]
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// Whether content beyond the window was not kept.
    #[must_use]
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Whether a LF without CR was seen.
    #[must_use]
    pub fn bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// Whether a CR without LF was seen.
    #[must_use]
    pub fn bare_cr(&self) -> bool {
        self.bare_cr
    }

    /// Bytes read, as sent.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The chunk size and `LAST` flag of a `BDAT` argument (RFC 3030).
#[must_use]
pub fn parse_bdat(arg: &[u8]) -> Option<(u64, bool)> {
    let text = std::str::from_utf8(arg).ok()?;
    let mut parts = text.split_ascii_whitespace();
    let size = parts.next()?.parse().ok()?;
    let last = match parts.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((size, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `input` through a reader whole, at every split point and byte by byte; all must
    /// agree on where the message ends and what it says.
    fn read(input: &[u8]) -> (usize, Vec<u8>, bool, bool) {
        let run = |pieces: &[&[u8]]| {
            let mut r = DataReader::new(1 << 20);
            let mut used = 0;
            for p in pieces {
                let n = r.push(p);
                used += n;
                if r.is_done() {
                    break;
                }
            }
            (used, r.content().to_vec(), r.bare_lf(), r.bare_cr())
        };
        let whole = run(&[input]);
        for i in 1..input.len() {
            assert_eq!(run(&[&input[..i], &input[i..]]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn end_of_data_and_dot_stuffing() {
        let (used, content, lf, cr) = read(b"Subject: x\r\n\r\n..hidden\r\n.\r\nQUIT\r\n");
        assert_eq!(
            used, 27,
            "the terminator belongs to the message, QUIT does not"
        );
        assert_eq!(content, b"Subject: x\r\n\r\n.hidden\r\n");
        assert!(!lf && !cr);
        let (used, content, ..) = read(b".\r\nNOOP\r\n");
        assert_eq!(
            (used, content.as_slice()),
            (3, b"".as_slice()),
            "an empty message"
        );
    }

    #[test]
    fn smuggling_line_endings_are_reported_and_do_not_end_the_message() {
        for (input, lf, cr) in [
            (&b"first\n.\r\nMAIL FROM:<x>\r\n.\r\n"[..], true, false),
            (b"first\n.\nMAIL FROM:<x>\r\n.\r\n", true, false),
            (b"first\r.\r\nMAIL FROM:<x>\r\n.\r\n", false, true),
            (b"first\r\n.\rMAIL FROM:<x>\r\n.\r\n", false, true),
        ] {
            let (used, content, bare_lf, bare_cr) = read(input);
            assert_eq!(used, input.len(), "{input:?}: only CRLF.CRLF ends it");
            assert_eq!((bare_lf, bare_cr), (lf, cr), "{input:?}");
            assert!(
                content.windows(4).any(|w| w == b"MAIL"),
                "smuggled part is content"
            );
        }
    }

    #[test]
    fn window_bounds_the_content_not_the_framing() {
        let mut r = DataReader::new(4);
        assert_eq!(r.push(b"abcdefgh\r\n.\r\n"), 13);
        assert!(r.is_done() && r.is_cut());
        assert_eq!(r.content(), b"abcd");
        assert_eq!(r.size(), 13);
    }

    #[test]
    fn bdat_arguments() {
        assert_eq!(parse_bdat(b"1000"), Some((1000, false)));
        assert_eq!(parse_bdat(b"0 LAST"), Some((0, true)));
        assert_eq!(parse_bdat(b"12 last"), Some((12, true)));
        assert_eq!(parse_bdat(b"x"), None);
        assert_eq!(parse_bdat(b"1 LAST more"), None);
    }
}
