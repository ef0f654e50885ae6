//! FTP control-connection codec (RFC 959, with RFC 2389 FEAT/OPTS, RFC 2428 EPRT/EPSV and
//! RFC 3659 SIZE/MDTM/MLSD/REST as ordinary commands), sans-IO.
//!
//! [`CommandReader`] splits the client's byte stream into commands; a line longer than the
//! limit is reported once as [`CommandEvent::TooLong`] and discarded as it streams, never
//! buffered. [`ReplyReader`] assembles the server's replies, multi-line ones included.
//! Helpers parse and format the address arguments of `PORT`/`EPRT` and the `227`/`229`
//! passive replies, which a proxy rewrites.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// Default longest command line, CRLF included (servers use 512 to 4096; RFC 959 sets none).
pub const DEFAULT_MAX_COMMAND_LINE: usize = 512;
/// Longest reply line accepted from a server.
pub const MAX_REPLY_LINE: usize = 8192;
/// Longest multi-line reply accepted from a server.
pub const MAX_REPLY: usize = 256 * 1024;
/// Bytes of a discarded over-long line kept for the audit log.
const KEPT_PREFIX: usize = 128;

/// One command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The verb, upper-cased (`RETR`, `SITE`).
    pub verb: String,
    /// The argument after the first space, without the line ending (may be empty).
    pub arg: Vec<u8>,
    /// The line as sent, line ending included.
    pub raw: Vec<u8>,
}

impl Command {
    /// Parses one line (with or without its line ending).
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let line = raw
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(raw);
        let (verb, arg) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        Self {
            verb: String::from_utf8_lossy(verb).to_ascii_uppercase(),
            arg: arg.to_vec(),
            raw: raw.to_vec(),
        }
    }
}

/// What the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    /// A complete command.
    Command(Command),
    /// A line longer than the limit ended; it was discarded.
    TooLong {
        /// Its length, line ending included.
        length: usize,
        /// Its first bytes.
        prefix: Vec<u8>,
    },
}

/// Splits a client stream into command lines (CRLF, or a bare LF as many servers accept).
#[derive(Debug, Clone)]
pub struct CommandReader {
    max_line: usize,
    line: Vec<u8>,
    discarding: Option<usize>,
}

impl CommandReader {
    /// A reader with a line limit (line ending included).
    #[must_use]
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            line: Vec::new(),
            discarding: None,
        }
    }

    /// Bytes of an incomplete line held.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.line.len()
    }

    /// Feeds bytes; complete events are appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<CommandEvent>) {
        for &b in data {
            if let Some(n) = self.discarding.as_mut() {
                *n += 1;
                if b == b'\n' {
                    out.push(CommandEvent::TooLong {
                        length: *n,
                        prefix: std::mem::take(&mut self.line),
                    });
                    self.discarding = None;
                }
                continue;
            }
            self.line.push(b);
            if b == b'\n' {
                out.push(CommandEvent::Command(Command::parse(&std::mem::take(
                    &mut self.line,
                ))));
            } else if self.line.len() >= self.max_line {
                self.discarding = Some(self.line.len());
                self.line.truncate(KEPT_PREFIX);
            }
        }
    }
}

/// One reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// Every line as sent.
    pub raw: Vec<u8>,
    /// The text of the last line (after `ddd `), without the line ending.
    pub text: Vec<u8>,
}

impl Reply {
    /// Whether it is a preliminary reply (1yz): the command is not finished.
    #[must_use]
    pub fn is_preliminary(&self) -> bool {
        (100..200).contains(&self.code)
    }
}

/// Why a server's reply stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line that does not start with a three-digit code where one must.
    #[error("malformed reply line")]
    Malformed,
    /// A line or a multi-line reply over the limits.
    #[error("reply too long")]
    TooLong,
}

/// Assembles replies from a server stream.
#[derive(Debug, Clone, Default)]
pub struct ReplyReader {
    line: Vec<u8>,
    multi: Option<(u16, Vec<u8>)>,
}

fn code_of(line: &[u8]) -> Option<u16> {
    let d = line.get(..3)?;
    if !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0')))
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

impl ReplyReader {
    /// Feeds bytes; complete replies are appended to `out`.
    ///
    /// # Errors
    /// The stream is not FTP replies.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Reply>) -> Result<(), ReplyError> {
        for &b in data {
            self.line.push(b);
            if b != b'\n' {
                if self.line.len() > MAX_REPLY_LINE {
                    return Err(ReplyError::TooLong);
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            match self.multi.take() {
                Some((code, mut raw)) => {
                    raw.extend_from_slice(&line);
                    if raw.len() > MAX_REPLY {
                        return Err(ReplyError::TooLong);
                    }
                    if code_of(&line) == Some(code) && line.get(3) == Some(&b' ') {
                        out.push(Reply {
                            code,
                            raw,
                            text: trim_eol(&line[4..]).to_vec(),
                        });
                    } else {
                        self.multi = Some((code, raw));
                    }
                }
                None => {
                    let code = code_of(&line).ok_or(ReplyError::Malformed)?;
                    match line.get(3) {
                        Some(b'-') => self.multi = Some((code, line)),
                        Some(b' ') => out.push(Reply {
                            code,
                            text: trim_eol(&line[4..]).to_vec(),
                            raw: line,
                        }),
                        Some(b'\r' | b'\n') => out.push(Reply {
                            code,
                            text: Vec::new(),
                            raw: line,
                        }),
                        _ => return Err(ReplyError::Malformed),
                    }
                }
            }
        }
        Ok(())
    }
}

fn numbers(text: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur: Option<u32> = None;
    for &b in text {
        if b.is_ascii_digit() {
            cur = Some(
                cur.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u32::from(b - b'0')),
            );
        } else if let Some(n) = cur.take() {
            out.push(n);
        }
    }
    out.extend(cur);
    out
}

fn six_to_addr(n: &[u32]) -> Option<SocketAddrV4> {
    if n.len() != 6 || n.iter().any(|&x| x > 255) {
        return None;
    }
    let ip = Ipv4Addr::new(n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8);
    Some(SocketAddrV4::new(ip, (n[4] * 256 + n[5]) as u16))
}

/// The address of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply text.
#[must_use]
pub fn parse_227(text: &[u8]) -> Option<SocketAddrV4> {
    let start = text.iter().position(u8::is_ascii_digit)?;
    let ns = numbers(&text[start..]);
    six_to_addr(ns.get(..6)?)
}

/// The port of a `229 Entering Extended Passive Mode (|||port|)` reply text.
#[must_use]
pub fn parse_229(text: &[u8]) -> Option<u16> {
    let open = text.iter().position(|&b| b == b'(')?;
    let inner = &text[open + 1..];
    let close = inner.iter().position(|&b| b == b')')?;
    let inner = &inner[..close];
    let d = *inner.first()?;
    let parts: Vec<&[u8]> = inner.split(|&b| b == d).collect();
    // (|||port|) splits into ["", "", "", "port", ""].
    let port = parts.get(3)?;
    std::str::from_utf8(port).ok()?.parse().ok()
}

/// The address of a `PORT h1,h2,h3,h4,p1,p2` argument.
#[must_use]
pub fn parse_port(arg: &[u8]) -> Option<SocketAddrV4> {
    if !arg
        .iter()
        .all(|&b| b.is_ascii_digit() || b == b',' || b == b' ')
    {
        return None;
    }
    six_to_addr(&numbers(arg))
}

/// The address of an `EPRT |1|132.235.1.2|6275|` argument (RFC 2428).
#[must_use]
pub fn parse_eprt(arg: &[u8]) -> Option<SocketAddr> {
    let d = *arg.first()?;
    let parts: Vec<&[u8]> = arg.split(|&b| b == d).collect();
    if parts.len() != 5 {
        return None;
    }
    let ip: IpAddr = std::str::from_utf8(parts[2]).ok()?.parse().ok()?;
    let port: u16 = std::str::from_utf8(parts[3]).ok()?.parse().ok()?;
    match (parts[1], ip) {
        (b"1", IpAddr::V4(_)) | (b"2", IpAddr::V6(_)) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// A `227` reply for `addr`.
#[must_use]
pub fn format_227(addr: SocketAddrV4) -> String {
    let [a, b, c, d] = addr.ip().octets();
    format!(
        "227 Entering Passive Mode ({a},{b},{c},{d},{},{}).\r\n",
        addr.port() >> 8,
        addr.port() & 0xff
    )
}

/// A `229` reply for `port`.
#[must_use]
pub fn format_229(port: u16) -> String {
    format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
}

/// A `PORT` command for `addr`.
#[must_use]
pub fn format_port(addr: SocketAddrV4) -> String {
    let [a, b, c, d] = addr.ip().octets();
    format!(
        "PORT {a},{b},{c},{d},{},{}\r\n",
        addr.port() >> 8,
        addr.port() & 0xff
    )
}

/// An `EPRT` command for `addr`.
#[must_use]
pub fn format_eprt(addr: SocketAddr) -> String {
    let family = if addr.is_ipv4() { 1 } else { 2 };
    format!("EPRT |{family}|{}|{}|\r\n", addr.ip(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` whole, at every split point and byte by byte; all must agree.
    fn commands_everywhere(input: &[u8], max: usize) -> Vec<CommandEvent> {
        let run = |pieces: &[&[u8]]| {
            let mut r = CommandReader::new(max);
            let mut out = Vec::new();
            for p in pieces {
                r.push(p, &mut out);
            }
            out
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
    fn commands_and_over_long_lines() {
        let long = format!("SITE CPFR {}\r\nNOOP\r\n", "A".repeat(600));
        let input = format!("user anonymous\r\nPASS x\nRETR a b.txt\r\n{long}");
        let ev = commands_everywhere(input.as_bytes(), 512);
        let CommandEvent::Command(c) = &ev[0] else {
            panic!()
        };
        assert_eq!(
            (c.verb.as_str(), c.arg.as_slice()),
            ("USER", b"anonymous".as_slice())
        );
        let CommandEvent::Command(c) = &ev[2] else {
            panic!()
        };
        assert_eq!(c.arg, b"a b.txt", "the argument keeps its spaces");
        let CommandEvent::TooLong { length, prefix } = &ev[3] else {
            panic!("{ev:?}")
        };
        assert_eq!(*length, 612);
        assert!(prefix.starts_with(b"SITE CPFR AAA") && prefix.len() <= KEPT_PREFIX);
        assert!(matches!(&ev[4], CommandEvent::Command(c) if c.verb == "NOOP"));
    }

    #[test]
    fn replies_single_and_multi_line() {
        let input: &[u8] =
            b"220 (vsFTPd 3.0.3)\r\n211-Features:\r\n EPRT\r\n 211 inner\r\n211-x\r\n211 End\r\n";
        let run = |pieces: &[&[u8]]| {
            let mut r = ReplyReader::default();
            let mut out = Vec::new();
            for p in pieces {
                r.push(p, &mut out).unwrap();
            }
            out
        };
        let whole = run(&[input]);
        for i in 1..input.len() {
            assert_eq!(run(&[&input[..i], &input[i..]]), whole, "split at {i}");
        }
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].text, b"(vsFTPd 3.0.3)");
        assert_eq!(whole[1].code, 211);
        assert_eq!(
            whole[1].text, b"End",
            "only 'ddd ' at the start of a line ends it"
        );
        let mut r = ReplyReader::default();
        assert_eq!(
            r.push(b"hello\r\n", &mut Vec::new()),
            Err(ReplyError::Malformed)
        );
    }

    #[test]
    fn addresses() {
        let a = parse_227(b"Entering Passive Mode (127,0,0,1,195,80).").unwrap();
        assert_eq!(a, "127.0.0.1:50000".parse().unwrap());
        assert_eq!(
            format_227(a),
            "227 Entering Passive Mode (127,0,0,1,195,80).\r\n"
        );
        assert_eq!(parse_227(b"=127,0,0,1,195,80"), Some(a), "no parentheses");
        assert_eq!(parse_227(b"(300,0,0,1,1,1)"), None);
        assert_eq!(
            parse_229(b"Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(
            parse_port(b"10,0,0,7,4,1"),
            Some("10.0.0.7:1025".parse().unwrap())
        );
        assert_eq!(parse_port(b"10,0,0,7,4"), None);
        assert_eq!(
            parse_eprt(b"|1|132.235.1.2|6275|"),
            Some("132.235.1.2:6275".parse().unwrap())
        );
        assert_eq!(
            parse_eprt(b"|2|::1|6275|"),
            Some("[::1]:6275".parse().unwrap())
        );
        assert_eq!(parse_eprt(b"|1|::1|6275|"), None, "family must match");
        assert_eq!(
            format_port("10.0.0.7:1025".parse().unwrap()),
            "PORT 10,0,0,7,4,1\r\n"
        );
        assert_eq!(
            format_eprt("[::1]:21".parse().unwrap()),
            "EPRT |2|::1|21|\r\n"
        );
    }
}
