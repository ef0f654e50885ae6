//! Conversation tests: each case is replayed as written, split at every point, and byte by byte.

use super::*;

/// Parses a stream of requests the way the engine does and describes what it saw.
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
    body: Option<(BodyDecoder, Vec<u8>)>,
    log: Vec<String>,
    failed: bool,
}

impl Reader {
    fn feed(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        self.buf.extend_from_slice(data);
        let limits = Limits::default();
        loop {
            if let Some((decoder, payload)) = &mut self.body {
                let mut chunk = Vec::new();
                let progress = match decoder.decode(&self.buf, |d| chunk.extend_from_slice(d)) {
                    Ok(p) => p,
                    Err(e) => {
                        self.log.push(format!("error 400 {}", e.anomaly()));
                        self.failed = true;
                        return;
                    }
                };
                payload.extend_from_slice(&chunk);
                self.buf.drain(..progress.consumed);
                if !progress.done {
                    return;
                }
                let payload = String::from_utf8_lossy(payload).into_owned();
                self.log.push(format!("body {payload:?}"));
                self.body = None;
            }
            match parse_request_head(&self.buf, &limits) {
                Ok(None) => return,
                Ok(Some(head)) => {
                    let framing = match head.framing() {
                        Ok(f) => f,
                        Err(e) => {
                            self.log
                                .push(format!("error {} {}", e.status(), e.anomaly()));
                            self.failed = true;
                            return;
                        }
                    };
                    self.log.push(format!(
                        "request {} {} {:?}",
                        String::from_utf8_lossy(head.method()),
                        String::from_utf8_lossy(head.target()),
                        framing
                    ));
                    self.buf.drain(..head.raw().len());
                    self.body = Some((BodyDecoder::new(framing, &limits), Vec::new()));
                }
                Err(e) => {
                    self.log
                        .push(format!("error {} {}", e.status(), e.anomaly()));
                    self.failed = true;
                    return;
                }
            }
        }
    }
}

fn replay(input: &[u8], chunks: &[&[u8]]) -> Vec<String> {
    let mut reader = Reader::default();
    for c in chunks {
        reader.feed(c);
    }
    let _ = input;
    reader.log
}

/// Replays `input` whole, at every split point and byte by byte; all must agree with `expected`.
fn check(name: &str, input: &[u8], expected: &[&str]) {
    let whole = replay(input, &[input]);
    assert_eq!(whole, expected, "{name}: as written");
    for split in 1..input.len() {
        let (a, b) = input.split_at(split);
        assert_eq!(replay(input, &[a, b]), expected, "{name}: split at {split}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(replay(input, &bytes), expected, "{name}: byte by byte");
}

#[test]
fn simple_get() {
    check(
        "simple_get",
        b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
        &["request GET /a?b=c None", "body \"\""],
    );
}

#[test]
fn pipelined_content_length_and_chunked() {
    check(
        "pipelined",
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /q HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=\"a b\"\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[
            "request POST /p Length(5)",
            "body \"hello\"",
            "request POST /q Chunked",
            "body \"abcde\"",
            "request GET / None",
            "body \"\"",
        ],
    );
}

#[test]
fn http10_without_host() {
    check(
        "http10",
        b"GET / HTTP/1.0\r\n\r\n",
        &["request GET / None", "body \"\""],
    );
}

#[test]
fn gzip_then_chunked_is_framed_by_chunked() {
    check(
        "gzip_chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
        &["request POST / Chunked", "body \"z\""],
    );
}

#[test]
fn strict_framing_errors() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("cl_and_te", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "error 400 content_length_and_transfer_encoding"),
        ("cl_list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", "error 400 invalid_content_length"),
        ("cl_repeated", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "error 400 invalid_content_length"),
        ("cl_negative", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -48\r\n\r\n", "error 400 invalid_content_length"),
        ("cl_plus", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", "error 400 invalid_content_length"),
        ("cl_overflow", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", "error 400 invalid_content_length"),
        ("te_not_final", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, cow\r\n\r\n", "error 400 invalid_transfer_encoding"),
        ("te_twice", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "error 400 invalid_transfer_encoding"),
        ("te_unknown", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: cow\r\n\r\n", "error 501 unknown_transfer_coding"),
        ("te_unknown_then_chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: cow, chunked\r\n\r\n", "error 501 unknown_transfer_coding"),
        ("te_obfuscated", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", "error 400 invalid_transfer_encoding"),
        ("te_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "error 400 transfer_encoding_in_http10"),
        ("te_leading_comma_and_cl", b"GET / HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: ,chunked\r\nContent-Length: 5\r\n\r\n", "error 400 content_length_and_transfer_encoding"),
    ];
    for (name, input, expected) in cases {
        check(name, input, &[expected]);
    }
}

#[test]
fn strict_head_errors() {
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(600)
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X: 1\r\n".repeat(101)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bare_lf",
            b"GET / HTTP/1.1\nHost: x\n\n".to_vec(),
            "error 400 bare_lf",
        ),
        (
            "bare_lf_inside",
            b"POST / HTTP/1.1\r\nX:X\nTransfer-Encoding: chunked\r\nHost: x\r\n\r\n".to_vec(),
            "error 400 bare_lf",
        ),
        (
            "bare_cr",
            b"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n".to_vec(),
            "error 400 bare_cr",
        ),
        (
            "obs_fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n b\r\n\r\n".to_vec(),
            "error 400 malformed_head",
        ),
        (
            "space_before_colon",
            b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\nHost: x\r\n\r\n".to_vec(),
            "error 400 malformed_head",
        ),
        (
            "leading_space_first_field",
            b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n".to_vec(),
            "error 400 malformed_head",
        ),
        (
            "nul_in_value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n".to_vec(),
            "error 400 malformed_head",
        ),
        (
            "no_colon",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-\r\nEncoding: chunked\r\n\r\n".to_vec(),
            "error 400 malformed_head",
        ),
        (
            "no_host",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "error 400 host_header",
        ),
        (
            "two_hosts",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            "error 400 host_header",
        ),
        (
            "http2_version",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(),
            "error 400 malformed_head",
        ),
        (
            "long_request_line",
            long_line.into_bytes(),
            "error 414 request_line_too_long",
        ),
        (
            "head_too_large",
            big_head.into_bytes(),
            "error 431 head_too_large",
        ),
        (
            "too_many_headers",
            many.into_bytes(),
            "error 431 too_many_headers",
        ),
    ];
    for (name, input, expected) in &cases {
        check(name, input, &[expected]);
    }
}

#[test]
fn chunk_errors() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("underscore", b"0_2e\r\n\r\n", "error 400 invalid_chunk"),
        (
            "cr_in_size",
            b"5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n",
            "error 400 invalid_chunk",
        ),
        (
            "overflow",
            b"fffffffffffffffff\r\n",
            "error 400 invalid_chunk",
        ),
        ("bare_lf", b"1\nZ\r\n0\r\n\r\n", "error 400 invalid_chunk"),
        (
            "missing_crlf_after_data",
            b"1\r\nZZ\r\n0\r\n\r\n",
            "error 400 invalid_chunk",
        ),
        (
            "bad_ext",
            b"1;=x\r\nZ\r\n0\r\n\r\n",
            "error 400 invalid_chunk",
        ),
        (
            "bad_trailer",
            b"0\r\nnot a field\r\n\r\n",
            "error 400 invalid_trailer",
        ),
        (
            "negative",
            b"-1\r\nZ\r\n0\r\n\r\n",
            "error 400 invalid_chunk",
        ),
        (
            "signed_overflow_2_pow_63",
            b"8000000000000000\r\nZ\r\n0\r\n\r\n",
            "error 400 invalid_chunk",
        ),
    ];
    for (name, body, expected) in cases {
        let mut input =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(body);
        check(name, &input, &["request POST / Chunked", expected]);
    }
}

#[test]
fn leading_zeros_in_chunk_sizes_carry_no_value() {
    let mut input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    input.extend_from_slice(b"000000000000000000000000002\r\nhi\r\n00000000000000000000\r\n\r\n");
    check("zeros", &input, &["request POST / Chunked", "body \"hi\""]);
    // The largest signed 64-bit size is accepted (and streams); one more is refused above.
    let limits = Limits::default();
    let mut d = BodyDecoder::new(Framing::Chunked, &limits);
    let p = d.decode(b"7fffffffffffffff\r\nab", |_| {}).unwrap();
    assert!(!p.done);
}

#[test]
fn response_framing() {
    let limits = Limits::default();
    let parse = |s: &[u8]| parse_response_head(s, &limits).unwrap().unwrap();
    let ok = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
    assert_eq!(ok.framing(false), Ok(Framing::Length(12)));
    assert_eq!(ok.framing(true), Ok(Framing::None), "HEAD has no body");
    let close = parse(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
    assert_eq!(close.framing(false), Ok(Framing::UntilClose));
    let not_modified = parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n");
    assert_eq!(not_modified.framing(false), Ok(Framing::None));
    let cont = parse(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(cont.framing(false), Ok(Framing::None));
    let chunked = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(chunked.framing(false), Ok(Framing::Chunked));
    let split =
        parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
    assert!(split.framing(false).is_err(), "CL with TE from upstream");
    assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n", &limits).is_err());
}

#[test]
fn head_ranges_point_at_raw_bytes() {
    let head = parse_request_head(
        b"GET /x HTTP/1.1\r\nHost: h\r\nRange:  bytes=0-1 \r\n\r\n",
        &Limits::default(),
    )
    .unwrap()
    .unwrap();
    let range = &head.headers()[1];
    assert_eq!(&head.raw()[range.name.clone()], b"Range");
    assert_eq!(&head.raw()[range.value.clone()], b"bytes=0-1");
    assert_eq!(&head.raw()[range.line.clone()], b"Range:  bytes=0-1 \r\n");
    assert!(head.keep_alive());
}

proptest::proptest! {
    /// The quick way to a head (httparse over what arrived, then its line ends checked)
    /// agrees with the careful way (line ends checked byte by byte, then httparse) on the head
    /// or the error, for heads assembled from pieces with bare CRs and LFs, leading empty
    /// lines, folding, spaces and cut-off ends among them.
    #[test]
    fn quick_and_careful_heads_agree(
        lead in proptest::sample::select(vec!["", "", "", "\r\n", "\n", " "]),
        first in proptest::sample::select(vec![
            "GET /a HTTP/1.1", "POST /b?c=d HTTP/1.0", "HTTP/1.1 200 OK", "HTTP/1.0 404 Not Found",
            "GET /a b HTTP/1.1", "HTTP/1.1 20 OK", "GET /a\rb HTTP/1.1",
        ]),
        first_end in proptest::sample::select(vec!["\r\n", "\r\n", "\n"]),
        lines in proptest::collection::vec((
            proptest::sample::select(vec![
                "Host: x", "Host: y", "Content-Length: 3", " folded", "X: a\rb", "X: a\nb", "",
                "Transfer-Encoding: chunked", "bad header", ":", "Expect: 100-continue", "Y:  z ",
            ]),
            proptest::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n", "\r", ""]),
        ), 0..6),
        end in proptest::sample::select(vec!["\r\n", "\r\n", "\n", "\r", "", "\r\nbody"]),
        max_request_line in 8usize..40,
        max_head in 16usize..120,
    ) {
        let mut text = format!("{lead}{first}{first_end}");
        for (line, term) in lines {
            text.push_str(line);
            text.push_str(term);
        }
        text.push_str(end);
        let bytes = text.into_bytes();
        let limits = Limits { max_request_line, max_head, ..Limits::default() };
        for limits in [Limits::default(), limits] {
            proptest::prop_assert_eq!(
                super::parser::parse_request_head(&bytes, &limits),
                super::parser::parse_request_head_carefully(&bytes, &limits)
            );
            proptest::prop_assert_eq!(
                super::parser::parse_response_head(&bytes, &limits),
                super::parser::parse_response_head_carefully(&bytes, &limits)
            );
        }
    }

    /// A benign request split at any two points yields the same events as the whole.
    #[test]
    fn any_split_gives_same_events(a in 0usize..200, b in 0usize..200, body in "[a-z]{0,40}") {
        let input = format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            body.len(), body
        ).into_bytes();
        let a = a.min(input.len());
        let b = b.min(input.len()).max(a);
        let whole = replay(&input, &[&input]);
        let parts = replay(&input, &[&input[..a], &input[a..b], &input[b..]]);
        proptest::prop_assert_eq!(whole, parts);
    }
}

/// RFC 9112 §3.2 target forms and §3.2.2 absolute-form vs Host; RFC 9110 §10.1.1 Expect.
#[test]
fn target_forms_host_agreement_and_expectations() {
    let refused: &[(&str, &[u8], &str)] = &[
        ("http09", b"GET /\r\n\r\n", "error 400 malformed_head"),
        ("relative_target", b"GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", "error 400 invalid_target"),
        ("asterisk_not_options", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", "error 400 invalid_target"),
        ("connect_origin_form", b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", "error 400 invalid_target"),
        ("other_scheme", b"GET file:///etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "error 400 invalid_target"),
        ("absolute_other_host", b"GET http://internal/admin HTTP/1.1\r\nHost: public\r\n\r\n", "error 400 host_mismatch"),
        ("absolute_userinfo", b"GET http://public@internal/ HTTP/1.1\r\nHost: public@internal\r\n\r\n", "error 400 host_mismatch"),
        ("absolute_empty_authority", b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n", "error 400 host_mismatch"),
        ("absolute_other_port", b"GET http://h:8080/ HTTP/1.1\r\nHost: h\r\n\r\n", "error 400 host_mismatch"),
        ("expect_other", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, x-y\r\nContent-Length: 1\r\n\r\nz", "error 417 unsupported_expectation"),
    ];
    for (name, input, expected) in refused {
        check(name, input, &[expected]);
    }
    let accepted: &[(&str, &[u8], &str)] = &[
        (
            "absolute_same_host",
            b"GET HTTP://Example.COM/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "request GET HTTP://Example.COM/a?b None",
        ),
        (
            "absolute_default_port",
            b"GET http://h:80/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "request GET http://h:80/ None",
        ),
        (
            "absolute_https_port",
            b"GET https://h/ HTTP/1.1\r\nHost: h:443\r\n\r\n",
            "request GET https://h/ None",
        ),
        (
            "absolute_http10_no_host",
            b"GET http://h/ HTTP/1.0\r\n\r\n",
            "request GET http://h/ None",
        ),
        (
            "options_asterisk",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "request OPTIONS * None",
        ),
        (
            "connect_authority",
            b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
            "request CONNECT h:443 None",
        ),
        // HTTP/1.0 clients may send Expect; RFC 9110 §10.1.1 says to ignore it.
        (
            "expect_http10_ignored",
            b"GET / HTTP/1.0\r\nExpect: x-y\r\n\r\n",
            "request GET / None",
        ),
        (
            "expect_continue_case",
            b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n",
            "request GET / None",
        ),
    ];
    for (name, input, expected) in accepted {
        check(name, input, &[expected, "body \"\""]);
    }
}

#[test]
fn taking_a_head_leaves_the_rest_and_parses_as_a_copy_does() {
    let limits = Limits::default();
    let wire: &[u8] = b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HT";
    let mut buf = bytes::BytesMut::from(wire);
    let copied = parse_request_head(wire, &limits).unwrap().unwrap();
    let taken = take_request_head(&mut buf, &limits).unwrap().unwrap();
    assert_eq!(taken, copied);
    assert_eq!(taken.raw_bytes(), copied.raw());
    assert_eq!(&buf[..], b"abcGET / HT");
    // Incomplete: nothing is taken.
    let mut partial = bytes::BytesMut::from(&b"GET / HTTP/1.1\r\nHost: h\r\n"[..]);
    assert!(take_request_head(&mut partial, &limits).unwrap().is_none());
    assert_eq!(partial.len(), 25);

    let mut resp = bytes::BytesMut::from(&b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1"[..]);
    let head = take_response_head(&mut resp, &limits).unwrap().unwrap();
    assert_eq!(head.status, 204);
    assert_eq!(&resp[..], b"HTTP/1.1");
}

/// Header lookups find every value of a name, in order and in any case, among fields of
/// other names (of the same length too), and an absent name is absent.
#[test]
fn known_header_lookups_find_every_value() {
    let raw = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nconnection: keep-alive\r\nSERVER: one\r\n\
                X-B: 2\r\nConnection: Upgrade, close\r\nContent-Length: 0\r\nServer: two\r\n\r\n";
    let head = parse_response_head(raw, &Limits::default())
        .unwrap()
        .unwrap();
    let values = |name| {
        head.header_values(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("connection"), ["keep-alive", "Upgrade, close"]);
    assert_eq!(values("Server"), ["one", "two"]);
    assert_eq!(values("content-length"), ["0"]);
    assert_eq!(values("x-b"), ["2"]);
    assert!(values("x-powered-by").is_empty());
    assert!(values("transfer-encoding").is_empty());
    assert!(!head.keep_alive(), "close among the Connection tokens");
    let request = parse_request_head(
        b"GET / HTTP/1.1\r\nAccept: */*\r\nhOsT: a\r\n\r\n",
        &Limits::default(),
    );
    assert!(request.unwrap().is_some(), "Host found after another field");
    let two_hosts = parse_request_head(
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nHOST: b\r\n\r\n",
        &Limits::default(),
    );
    assert!(two_hosts.is_err(), "the second Host is found too");
}
