//! Transforms: byte-string functions applied to field values before comparison.
//!
//! Each is total (never fails): input it cannot decode is kept as it is, the way the products
//! that are protected keep it.

use std::borrow::Cow;

use base64::Engine as _;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes once; `+` is kept; invalid escapes are kept as they are.
#[must_use]
pub fn url_decode(input: &[u8]) -> Cow<'_, [u8]> {
    url_decode_impl(input, false)
}

/// Percent-decodes once, with IIS `%uXXXX` (encoded as UTF-8) as well.
#[must_use]
pub fn url_decode_uni(input: &[u8]) -> Cow<'_, [u8]> {
    url_decode_impl(input, true)
}

fn url_decode_impl(input: &[u8], uni: bool) -> Cow<'_, [u8]> {
    if memchr::memchr(b'%', input).is_none() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if uni && matches!(input.get(i + 1), Some(b'u' | b'U')) {
                let digits: Option<Vec<u8>> = (2..6)
                    .map(|k| input.get(i + k).copied().and_then(hex))
                    .collect();
                if let Some(d) = digits {
                    let code = d.iter().fold(0u32, |acc, &x| acc << 4 | u32::from(x));
                    let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    i += 6;
                    continue;
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Form decoding for query arguments: `+` is a space, then percent-decoding.
#[must_use]
pub fn form_decode(input: &[u8]) -> Vec<u8> {
    let mut plus = input.to_vec();
    if memchr::memchr(b'+', input).is_none() {
        return match url_decode(input) {
            Cow::Borrowed(_) => plus,
            Cow::Owned(decoded) => decoded,
        };
    }
    for b in &mut plus {
        if *b == b'+' {
            *b = b' ';
        }
    }
    url_decode(&plus).into_owned()
}

/// Removes dot segments and merges repeated slashes (RFC 3986 §5.2.4). With `backslash`, `\` is
/// a separator too (as IIS parses paths). The result always starts with `/` when the input did.
#[must_use]
pub fn normalize_path(input: &[u8], backslash: bool) -> Cow<'_, [u8]> {
    if is_normal_path(input, backslash) {
        return Cow::Borrowed(input);
    }
    resolve_segments(input, backslash)
}

/// The general case of [`normalize_path`]: split, resolve, join.
fn resolve_segments(input: &[u8], backslash: bool) -> Cow<'_, [u8]> {
    let is_sep = |b: u8| b == b'/' || (backslash && b == b'\\');
    let mut segments: Vec<&[u8]> = Vec::new();
    let absolute = input.first().is_some_and(|&b| is_sep(b));
    let trailing = input.last().is_some_and(|&b| is_sep(b))
        || input.ends_with(b"/.")
        || input.ends_with(b"/..");
    for seg in input.split(|&b| is_sep(b)) {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    if absolute {
        out.push(b'/');
    }
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(s);
    }
    if trailing && !segments.is_empty() {
        out.push(b'/');
    }
    if out == input {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(out)
    }
}

/// Whether [`normalize_path`] would return `input` unchanged: no `.` or `..` segment, no empty
/// segment but a leading or trailing one, and (in Windows mode) no `\`. Most paths are; this
/// answers without allocating.
fn is_normal_path(input: &[u8], backslash: bool) -> bool {
    if backslash && memchr::memchr(b'\\', input).is_some() {
        return false;
    }
    let last = input.split(|&b| b == b'/').count() - 1;
    input
        .split(|&b| b == b'/')
        .enumerate()
        .all(|(i, seg)| match seg {
            b"." | b".." => false,
            b"" => i == 0 || i == last,
            _ => true,
        })
}

/// Removes path parameters the way Tomcat and Jetty do before mapping a request: in every
/// segment, everything from `;` up to the next `/` (`/a;x=1/..;y/b` → `/a/../b`).
#[must_use]
pub fn strip_path_params(input: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b';', input).is_none() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut skipping = false;
    for &b in input {
        match b {
            b'/' => {
                skipping = false;
                out.push(b);
            }
            b';' => skipping = true,
            _ if skipping => {}
            _ => out.push(b),
        }
    }
    Cow::Owned(out)
}

/// Decodes non-shortest ("overlong") UTF-8 forms of ASCII the way IIS 4/5 did: a lead byte
/// `C0`/`C1` followed by any byte gives `((lead & 1) << 6) | (next & 0x3F)` (IIS ignored the
/// continuation byte's top bits, so `%c1%1c` is `\` as well as `%c1%9c`), and `E0 80..9F xx`
/// the three-byte form. Well-formed UTF-8 never contains these, so nothing else changes.
#[must_use]
pub fn overlong_utf8(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| b == 0xC0 || b == 0xC1 || b == 0xE0) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match (b, input.get(i + 1), input.get(i + 2)) {
            (0xC0 | 0xC1, Some(&n), _) => {
                out.push(((b & 1) << 6) | (n & 0x3F));
                i += 2;
            }
            (0xE0, Some(&n), Some(&m)) if (0x80..=0x9F).contains(&n) => {
                out.push((((n & 0x3F) << 6) | (m & 0x3F)) & 0x7F);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Decodes JSON string escapes (`\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t` `\uXXXX`, with
/// surrogate pairs) wherever they occur; invalid escapes are kept.
#[must_use]
pub fn json_unescape(input: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'\\', input).is_none() {
        return Cow::Borrowed(input);
    }
    let hex4 = |s: &[u8]| -> Option<u32> {
        let s = s.get(..4)?;
        s.iter()
            .try_fold(0u32, |acc, &c| Some(acc * 16 + u32::from(hex(c)?)))
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let simple = match input[i + 1] {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        if input[i + 1] == b'u' {
            if let Some(hi) = hex4(&input[i + 2..]) {
                let mut used = 6;
                let mut code = hi;
                if (0xD800..0xDC00).contains(&hi) && input.get(i + 6..i + 8) == Some(b"\\u") {
                    if let Some(lo) =
                        hex4(&input[i + 8..]).filter(|lo| (0xDC00..0xE000).contains(lo))
                    {
                        code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        used = 12;
                    }
                }
                let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += used;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Parsing profile: a request path as Tomcat and Jetty map it to a servlet (path parameters
/// removed from every segment, then percent-decoded once, then dot segments resolved).
#[must_use]
pub fn tomcat_path(raw_path: &[u8]) -> Cow<'_, [u8]> {
    then(strip_path_params(raw_path), |p| {
        then(url_decode(p), |d| normalize_path(d, false))
    })
}

/// Applies `step` to the result of a previous step, borrowing from the original input for as
/// long as no step had to copy.
fn then<'a>(
    prev: Cow<'a, [u8]>,
    step: impl for<'b> Fn(&'b [u8]) -> Cow<'b, [u8]>,
) -> Cow<'a, [u8]> {
    match prev {
        Cow::Borrowed(b) => step(b),
        Cow::Owned(o) => Cow::Owned(step(&o).into_owned()),
    }
}

/// Parsing profile: a request path as IIS maps it to a file (`%uXXXX` and percent escapes
/// decoded once, overlong UTF-8 decoded, `\` a separator, dot segments resolved).
#[must_use]
pub fn iis_path(raw_path: &[u8]) -> Cow<'_, [u8]> {
    then(url_decode_uni(raw_path), |d| {
        then(overlong_utf8(d), |d| normalize_path(d, true))
    })
}

/// Parsing profile: a request path as Apache httpd maps it (decoded once, dot segments
/// resolved).
#[must_use]
pub fn httpd_path(raw_path: &[u8]) -> Cow<'_, [u8]> {
    then(url_decode(raw_path), |d| normalize_path(d, false))
}

/// Decodes HTML character references: named (`&lt; &gt; &amp; &quot; &apos; &nbsp;`),
/// decimal `&#65;` and hex `&#x41;`, with or without the closing `;`.
#[must_use]
pub fn html_entity_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'&', input).is_none() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    'outer: while i < input.len() {
        if input[i] == b'&' {
            let rest = &input[i + 1..];
            for (name, ch) in [
                (&b"lt"[..], '<'),
                (b"gt", '>'),
                (b"amp", '&'),
                (b"quot", '"'),
                (b"apos", '\''),
                (b"nbsp", '\u{a0}'),
            ] {
                if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    i += 1 + name.len() + usize::from(rest.get(name.len()) == Some(&b';'));
                    continue 'outer;
                }
            }
            if rest.first() == Some(&b'#') {
                let (radix, start) = if matches!(rest.get(1), Some(b'x' | b'X')) {
                    (16, 2)
                } else {
                    (10, 1)
                };
                let digits = rest[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_hexdigit() && (radix == 16 || b.is_ascii_digit()))
                    .count()
                    .min(8);
                if digits > 0 {
                    let text = std::str::from_utf8(&rest[start..start + digits]).unwrap_or("0");
                    let code = u32::from_str_radix(text, radix).unwrap_or(0xfffd);
                    let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    let end = start + digits;
                    i += 1 + end + usize::from(rest.get(end) == Some(&b';'));
                    continue;
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Base64-decodes (standard or URL-safe alphabet, padding optional, whitespace ignored);
/// input that is not base64 is kept as it is.
#[must_use]
pub fn base64_decode(input: &[u8]) -> Cow<'_, [u8]> {
    let cleaned: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(decoded) = engine.decode(&cleaned) {
            return Cow::Owned(decoded);
        }
    }
    Cow::Borrowed(input)
}

/// Collapses each run of whitespace into one space.
#[must_use]
pub fn compress_ws(input: &[u8]) -> Cow<'_, [u8]> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_ws = false;
    for &b in input {
        if b.is_ascii_whitespace() || b == 0x0b {
            if !in_ws {
                out.push(b' ');
            }
            in_ws = true;
        } else {
            out.push(b);
            in_ws = false;
        }
    }
    Cow::Owned(out)
}

/// Removes all whitespace.
#[must_use]
pub fn remove_ws(input: &[u8]) -> Cow<'_, [u8]> {
    Cow::Owned(
        input
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace() && *b != 0x0b)
            .collect(),
    )
}

/// Strips leading and trailing whitespace.
#[must_use]
pub fn trim(input: &[u8]) -> Cow<'_, [u8]> {
    Cow::Borrowed(input.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decode_once_only() {
        assert_eq!(&*url_decode(b"/icons/.%2e/%2E%2e"), b"/icons/../..");
        assert_eq!(
            &*url_decode(b"%%32%65"),
            b"%2e",
            "one pass leaves the inner escape"
        );
        assert_eq!(&*url_decode(&url_decode(b"%%32%65")), b".");
        assert_eq!(&*url_decode(b"100%"), b"100%", "invalid escape kept");
        assert_eq!(&*url_decode(b"a+b"), b"a+b");
    }

    #[test]
    fn url_decode_uni_handles_iis_escapes() {
        assert_eq!(&*url_decode_uni(b"%u002e%u002E/x"), b"../x");
        assert_eq!(&*url_decode_uni(b"%u00e9"), "é".as_bytes());
        assert_eq!(&*url_decode_uni(b"%uZZ"), b"%uZZ");
    }

    #[test]
    fn form_decode_plus_is_space() {
        assert_eq!(form_decode(b"a+b%21"), b"a b!");
    }

    #[test]
    fn the_no_copy_fast_path_agrees_with_the_general_case() {
        // Every string of up to 7 bytes over the bytes that matter.
        let alphabet = [b'/', b'.', b'a', b'\\'];
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..7 {
            let next: Vec<Vec<u8>> = inputs
                .iter()
                .filter(|v| v.len() == inputs.last().map_or(0, Vec::len))
                .flat_map(|v| alphabet.iter().map(move |&b| [v.as_slice(), &[b]].concat()))
                .collect();
            inputs.extend(next);
        }
        assert!(inputs.len() > 20_000);
        for input in &inputs {
            for backslash in [false, true] {
                assert_eq!(
                    normalize_path(input, backslash),
                    resolve_segments(input, backslash),
                    "{:?} backslash={backslash}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn normalize_path_resolves_dots_and_slashes() {
        assert_eq!(&*normalize_path(b"/a/b/../c/./d", false), b"/a/c/d");
        assert_eq!(
            &*normalize_path(b"/icons/../../../etc/passwd", false),
            b"/etc/passwd"
        );
        assert_eq!(&*normalize_path(b"//a///b/", false), b"/a/b/");
        assert_eq!(&*normalize_path(b"/a\\..\\b", false), b"/a\\..\\b");
        assert_eq!(&*normalize_path(b"/a\\..\\b", true), b"/b");
        assert_eq!(&*normalize_path(b"/", false), b"/");
    }

    #[test]
    fn html_entities() {
        assert_eq!(&*html_entity_decode(b"&lt;script&gt;"), b"<script>");
        assert_eq!(&*html_entity_decode(b"&#x41;&#66;&#67"), b"ABC");
        assert_eq!(&*html_entity_decode(b"a & b"), b"a & b");
    }

    #[test]
    fn base64_both_alphabets_and_garbage() {
        assert_eq!(&*base64_decode(b"aGVsbG8="), b"hello");
        assert_eq!(&*base64_decode(b"aGVsbG8"), b"hello");
        assert_eq!(&*base64_decode(b"-_8"), &[0xfb, 0xff][..]);
        assert_eq!(&*base64_decode(b"not base64!"), b"not base64!");
    }

    #[test]
    fn path_parameters_are_removed_per_segment() {
        assert_eq!(&*strip_path_params(b"/a;x=1/b"), b"/a/b");
        assert_eq!(
            &*strip_path_params(b"/tmui/login.jsp/..;jsessionid=x1/tmui/x.jsp"),
            b"/tmui/login.jsp/../tmui/x.jsp"
        );
        assert_eq!(&*strip_path_params(b"/hsqldb;"), b"/hsqldb");
        assert_eq!(
            &*strip_path_params(b"/setup;x=1/a.action"),
            b"/setup/a.action"
        );
        assert!(matches!(
            strip_path_params(b"/plain/path"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn overlong_utf8_as_iis_decoded_it() {
        assert_eq!(&*overlong_utf8(b"..\xc0\xaf.."), b"../..");
        assert_eq!(&*overlong_utf8(b"..\xc1\x9c.."), b"..\\..");
        assert_eq!(
            &*overlong_utf8(b"..\xc1\x1c.."),
            b"..\\..",
            "top bits ignored"
        );
        assert_eq!(&*overlong_utf8(b"\xe0\x80\xaf"), b"/");
        let accents = "/caf\u{e9}/men\u{fc}".as_bytes();
        assert_eq!(
            &*overlong_utf8(accents),
            accents,
            "well-formed UTF-8 is kept"
        );
    }

    #[test]
    fn parsing_profiles() {
        assert_eq!(
            &*tomcat_path(b"/tmui/login.jsp/..;/tmui/%66ile.jsp;jsessionid=1"),
            b"/tmui/tmui/file.jsp"
        );
        assert_eq!(
            &*tomcat_path(b"/a/%3b/b"),
            b"/a/;/b",
            "an encoded ';' is data"
        );
        assert_eq!(
            &*iis_path(b"/scripts/..%c1%1c..%u005cwinnt/cmd.exe"),
            b"/winnt/cmd.exe"
        );
        assert_eq!(
            &*httpd_path(b"/icons/.%2e/%2e%2e/etc/passwd"),
            b"/etc/passwd"
        );
        assert_eq!(
            &*httpd_path(b"/a/%252e%252e/b"),
            b"/a/%2e%2e/b",
            "decoded once only"
        );
    }

    #[test]
    fn json_escapes() {
        assert_eq!(&*json_unescape(br#"\u0023{x}"#), b"#{x}");
        assert_eq!(&*json_unescape(br#"a\"b\\c\/d\n"#), b"a\"b\\c/d\n");
        assert_eq!(&*json_unescape(br#"\ud83d\ude00"#), "\u{1F600}".as_bytes());
        assert_eq!(&*json_unescape(br#"\uzzzz \q"#), br#"\uzzzz \q"#);
    }

    #[test]
    fn whitespace_transforms() {
        assert_eq!(&*compress_ws(b"() {   :;   }"), b"() { :; }");
        assert_eq!(&*remove_ws(b"() {   :; }"), b"(){:;}");
        assert_eq!(&*trim(b"  x y \t"), b"x y");
    }
}
