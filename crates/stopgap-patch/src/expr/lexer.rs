//! Tokens of the expression language.

use super::ast::Span;
use super::parser::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(Vec<u8>),
    Num(i64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    EqEq,
    Ne,
    Tilde,
    NotTilde,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Eof => "the end of the expression".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Dot => "`.`".into(),
            Tok::EqEq => "`==`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::Tilde => "`~`".into(),
            Tok::NotTilde => "`!~`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
        }
    }
}

pub(super) fn lex(src: &str) -> Result<Vec<(Tok, Span)>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            // comment to end of line
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let two = bytes.get(i..i + 2).unwrap_or_default();
        let (tok, len) = match (c, two) {
            (_, b"==") => (Tok::EqEq, 2),
            (_, b"!=") => (Tok::Ne, 2),
            (_, b"!~") => (Tok::NotTilde, 2),
            (_, b"<=") => (Tok::Le, 2),
            (_, b">=") => (Tok::Ge, 2),
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'[', _) => (Tok::LBracket, 1),
            (b']', _) => (Tok::RBracket, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'.', _) => (Tok::Dot, 1),
            (b'~', _) => (Tok::Tilde, 1),
            (b'<', _) => (Tok::Lt, 1),
            (b'>', _) => (Tok::Gt, 1),
            (b'r', _) if matches!(bytes.get(i + 1), Some(b'"' | b'#')) => {
                let (s, len) = lex_raw_string(src, i)?;
                (Tok::Str(s), len)
            }
            (b'"', _) => {
                let (s, len) = lex_string(src, i)?;
                (Tok::Str(s), len)
            }
            (b'0'..=b'9', _) | (b'-', _)
                if c != b'-' || bytes.get(i + 1).is_some_and(u8::is_ascii_digit) =>
            {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                let n = src[i..j].parse::<i64>().map_err(|_| {
                    ParseError::new(i..j, "number out of range", "numbers are 64-bit integers")
                })?;
                (Tok::Num(n), j - i)
            }
            (c, _) if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i + 1;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                (Tok::Ident(src[i..j].to_string()), j - i)
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(ParseError::new(
                    i..i + ch.len_utf8(),
                    format!("unexpected character `{ch}`"),
                    "strings go in double quotes: \"...\" or r\"...\"",
                ));
            }
        };
        i += len;
        out.push((tok, start..i));
    }
    out.push((Tok::Eof, bytes.len()..bytes.len()));
    Ok(out)
}

/// `r"..."`, `r#"..."#`: no escapes.
fn lex_raw_string(src: &str, start: usize) -> Result<(Vec<u8>, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut i = start + 1;
    let mut hashes = 0;
    while bytes.get(i) == Some(&b'#') {
        hashes += 1;
        i += 1;
    }
    if bytes.get(i) != Some(&b'"') {
        return Err(ParseError::new(
            start..i,
            "expected `\"` to open a raw string",
            "raw strings look like r\"...\" or r#\"...\"#",
        ));
    }
    let body_start = i + 1;
    let closing: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let end = bytes[body_start..]
        .windows(closing.len())
        .position(|w| w == closing.as_slice())
        .ok_or_else(|| {
            ParseError::new(
                start..src.len(),
                "unterminated raw string",
                "close it with the same number of `#` after the `\"`",
            )
        })?;
    let body = bytes[body_start..body_start + end].to_vec();
    Ok((body, body_start + end + closing.len() - start))
}

/// `"..."` with escapes `\\ \" \n \r \t \0 \xHH`.
fn lex_string(src: &str, start: usize) -> Result<(Vec<u8>, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = start + 1;
    loop {
        match bytes.get(i) {
            None => {
                return Err(ParseError::new(
                    start..src.len(),
                    "unterminated string",
                    "close the string with `\"`",
                ))
            }
            Some(b'"') => return Ok((out, i + 1 - start)),
            Some(b'\\') => {
                let esc = bytes.get(i + 1).copied();
                let (b, len) = match esc {
                    Some(b'\\') => (b'\\', 2),
                    Some(b'"') => (b'"', 2),
                    Some(b'n') => (b'\n', 2),
                    Some(b'r') => (b'\r', 2),
                    Some(b't') => (b'\t', 2),
                    Some(b'0') => (0, 2),
                    Some(b'x') => {
                        let hex = src.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok());
                        match hex {
                            Some(b) => (b, 4),
                            None => {
                                return Err(ParseError::new(
                                    i..i + 2,
                                    "invalid `\\x` escape",
                                    "write two hex digits: \\x41",
                                ))
                            }
                        }
                    }
                    _ => {
                        return Err(ParseError::new(
                            i..i + 2,
                            "unknown escape in string",
                            "escapes are \\\\ \\\" \\n \\r \\t \\0 \\xHH; for regexes use a raw string r\"...\"",
                        ))
                    }
                };
                out.push(b);
                i += len;
            }
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}
