//! Parsers for the parts of a request that products split into named values: cookies,
//! `application/x-www-form-urlencoded` and `multipart/form-data` bodies, and the strings of a
//! JSON body. Each is total and works on a body cut at the inspection window (the last value
//! is then partial).

use super::transform;

/// `name=value` pairs of every `Cookie` header value, names as sent, values as sent.
pub fn cookie_pairs<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<(&'a [u8], &'a [u8])> {
    let mut out = Vec::new();
    for v in values {
        for pair in v.split(|&b| b == b';') {
            let pair = transform::trim(pair);
            let pair: &[u8] = match pair {
                std::borrow::Cow::Borrowed(p) => p,
                std::borrow::Cow::Owned(_) => continue,
            };
            if pair.is_empty() {
                continue;
            }
            match pair.iter().position(|&b| b == b'=') {
                Some(i) => out.push((&pair[..i], &pair[i + 1..])),
                None => out.push((pair, &pair[pair.len()..])),
            }
        }
    }
    out
}

/// Decoded `name=value` pairs of a query string or urlencoded body (`&` and `;` separate,
/// `+` is a space, percent-decoded once).
pub fn urlencoded_pairs(input: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = 0;
    // Separators found with memchr: a 16 KiB value is skipped at memory speed.
    let ends = memchr::memchr2_iter(b'&', b';', input).chain(std::iter::once(input.len()));
    for end in ends {
        let pair = &input[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        out.push(match memchr::memchr(b'=', pair) {
            Some(i) => (
                transform::form_decode(&pair[..i]),
                transform::form_decode(&pair[i + 1..]),
            ),
            None => (transform::form_decode(pair), Vec::new()),
        });
    }
    out
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
fn media_type(content_type: &[u8]) -> Vec<u8> {
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    transform::trim(&content_type[..end]).to_ascii_lowercase()
}

/// The value of parameter `name` in a header value (`; boundary="x"`), unquoted.
fn header_param<'a>(value: &'a [u8], name: &str) -> Option<&'a [u8]> {
    for part in value.split(|&b| b == b';').skip(1) {
        let eq = part.iter().position(|&b| b == b'=')?;
        let key = transform::trim(&part[..eq]);
        if key.eq_ignore_ascii_case(name.as_bytes()) {
            let mut v = &part[eq + 1..];
            while v.first().is_some_and(u8::is_ascii_whitespace) {
                v = &v[1..];
            }
            while v.last().is_some_and(u8::is_ascii_whitespace) {
                v = &v[..v.len() - 1];
            }
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            return Some(v);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Field name and value of every part of a multipart body (files included: their content is
/// the value).
pub fn multipart_pairs(body: &[u8], boundary: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut out = Vec::new();
    let Some(mut at) = find(body, &delimiter, 0) else {
        return out;
    };
    loop {
        let start = at + delimiter.len();
        if body[start..].starts_with(b"--") {
            break;
        }
        let next = find(body, &delimiter, start);
        let part = &body[start..next.unwrap_or(body.len())];
        let (head, value) = match find(part, b"\r\n\r\n", 0) {
            Some(i) => (&part[..i], &part[i + 4..]),
            None => match find(part, b"\n\n", 0) {
                Some(i) => (&part[..i], &part[i + 2..]),
                None => (part, &part[part.len()..]),
            },
        };
        let value = value
            .strip_suffix(b"\r\n")
            .or_else(|| value.strip_suffix(b"\n"))
            .unwrap_or(value);
        let name = head
            .split(|&b| b == b'\n')
            .find(|l| l.len() > 20 && l[..20].eq_ignore_ascii_case(b"content-disposition:"))
            .and_then(|l| header_param(l.strip_suffix(b"\r").unwrap_or(l), "name"))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        out.push((name, value.to_vec()));
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    out
}

/// Named fields of a request body, by its `Content-Type`: urlencoded or multipart; nothing
/// for other types (a product does not bind them as form fields either).
pub fn form_pairs(content_type: Option<&[u8]>, body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(ct) = content_type else {
        return Vec::new();
    };
    match media_type(ct).as_slice() {
        b"application/x-www-form-urlencoded" => urlencoded_pairs(body),
        b"multipart/form-data" => match header_param(ct, "boundary") {
            Some(b) if !b.is_empty() => multipart_pairs(body, b),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Every string (keys and values) of a JSON text, escapes decoded. A lexer, not a parser:
/// it works on a cut body and does not care about the structure around the strings.
pub fn json_strings(body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < body.len() && body[j] != b'"' {
            j += if body[j] == b'\\' { 2 } else { 1 };
        }
        let end = j.min(body.len());
        out.push(transform::json_unescape(&body[start..end]).into_owned());
        i = end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let h: [&[u8]; 2] = [b"a=1; SESSID=/../x;", b"b"];
        let pairs = cookie_pairs(h.into_iter());
        assert_eq!(
            pairs,
            [(&b"a"[..], &b"1"[..]), (b"SESSID", b"/../x"), (b"b", b"")]
        );
    }

    #[test]
    fn urlencoded_and_multipart_bodies() {
        let ct: &[u8] = b"Application/X-WWW-Form-Urlencoded; charset=utf-8";
        let f = form_pairs(Some(ct), b"mail%5B%23type%5D=markup&x=a+b");
        assert_eq!(f[0], (b"mail[#type]".to_vec(), b"markup".to_vec()));
        assert_eq!(f[1].1, b"a b");
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"mail[#post_render][]\"\r\n\r\nexec\r\n--XyZ\r\ncontent-disposition: form-data; name=f; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nline1\r\nline2\r\n--XyZ--\r\n";
        let f = form_pairs(Some(b"multipart/form-data; boundary=\"XyZ\""), body);
        assert_eq!(
            f,
            [
                (b"mail[#post_render][]".to_vec(), b"exec".to_vec()),
                (b"f".to_vec(), b"line1\r\nline2".to_vec())
            ]
        );
        let cut = &body[..60];
        assert_eq!(
            form_pairs(Some(b"multipart/form-data; boundary=XyZ"), cut).len(),
            1
        );
        assert!(form_pairs(Some(b"text/plain"), b"a=b").is_empty());
        assert!(form_pairs(None, b"a=b").is_empty());
    }

    #[test]
    fn json_keys_and_values() {
        let s = json_strings(br#"{"a": ["x\u0023{1}", 2, {"b\"c": "d"}], "cut": "ab"#);
        assert_eq!(s, [&b"a"[..], b"x#{1}", b"b\"c", b"d", b"cut", b"ab"]);
    }
}
