//! The patch-file parser and the expression language on arbitrary text: errors, never panics;
//! an expression that parses evaluates against a fixed request without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stopgap_patch::expr::{parse, HttpView};
use stopgap_proto::http1::{parse_request_head, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = stopgap_patch::parse_patch(std::path::Path::new("fuzz.toml"), text);
    if let Ok(expr) = parse(text) {
        let req = b"POST /a/../b%2e?x=1&y=%24%7Bz%7D HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\nm%5B%23=1";
        let head = parse_request_head(req, &Limits::default())
            .unwrap()
            .unwrap();
        let view = HttpView {
            request: Some(&head),
            body: Some(&req[head.raw().len()..]),
            response: None,
            command: None,
            derived: None,
        };
        let _ = view.eval(&expr);
    }
});
