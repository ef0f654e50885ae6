//! Edits of heads and bodies; every edit yields a re-parsed, valid head.

use regex::bytes::Regex;
use stopgap_proto::http1::{parse_request_head, Limits, RequestHead};

/// Removes every line of header `name`.
pub(crate) fn strip_header(raw: &[u8], head_lines: &[(std::ops::Range<usize>, bool)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    for (line, remove) in head_lines {
        if *remove {
            out.extend_from_slice(&raw[pos..line.start]);
            pos = line.end;
        }
    }
    out.extend_from_slice(&raw[pos..]);
    out
}

/// Replaces byte ranges (sorted, disjoint) of `raw` with new contents.
pub(crate) fn splice(raw: &[u8], edits: &[(std::ops::Range<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    for (range, with) in edits {
        out.extend_from_slice(&raw[pos..range.start]);
        out.extend_from_slice(with);
        pos = range.end;
    }
    out.extend_from_slice(&raw[pos..]);
    out
}

/// Re-parses an edited head; edits never produce an invalid head, but if one did, the
/// caller refuses the request rather than forward it.
pub(crate) fn reparse(raw: &[u8], limits: &Limits) -> Option<RequestHead> {
    // Edited heads may legitimately grow past the client-facing limit by a little.
    let relaxed = Limits {
        max_head: limits.max_head.max(raw.len() + 1),
        max_request_line: limits.max_request_line.max(raw.len()),
        ..*limits
    };
    parse_request_head(raw, &relaxed).ok().flatten()
}

/// Removes query arguments named `name` (compared after form decoding, ASCII case-insensitive).
pub(crate) fn strip_arg(target: &[u8], name: &str) -> Vec<u8> {
    let Some(q) = target.iter().position(|&b| b == b'?') else {
        return target.to_vec();
    };
    let (path, query) = (&target[..q], &target[q + 1..]);
    let kept: Vec<&[u8]> = query
        .split(|&b| b == b'&')
        .filter(|pair| {
            let key = pair.split(|&b| b == b'=').next().unwrap_or_default();
            !stopgap_patch::expr::transform::form_decode(key).eq_ignore_ascii_case(name.as_bytes())
        })
        .collect();
    let mut out = path.to_vec();
    if !kept.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&kept.join(&b'&'));
    }
    out
}

/// Applies a regex replacement.
pub(crate) fn replace_all(input: &[u8], pattern: &Regex, with: &[u8]) -> Vec<u8> {
    pattern
        .replace_all(input, regex::bytes::NoExpand(with))
        .into_owned()
}

/// A chunk carrying `data` (empty data gives the last-chunk and an empty trailer section).
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return b"0\r\n\r\n".to_vec();
    }
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_arg_keeps_others_in_order() {
        assert_eq!(strip_arg(b"/p?a=1&debug=1&b=2", "debug"), b"/p?a=1&b=2");
        assert_eq!(strip_arg(b"/p?debug=1", "DEBUG"), b"/p");
        assert_eq!(strip_arg(b"/p?d%65bug=1&x", "debug"), b"/p?x");
        assert_eq!(strip_arg(b"/p", "debug"), b"/p");
    }

    #[test]
    fn chunk_encoding() {
        assert_eq!(chunk(b"hello, world!!!!!"), b"11\r\nhello, world!!!!!\r\n");
        assert_eq!(chunk(b""), b"0\r\n\r\n");
    }
}
