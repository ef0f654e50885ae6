//! Parser, evaluator and diagnostics tests.

use std::path::Path;

use stopgap_proto::http1::{parse_request_head, Limits};

use crate::expr::{parse, HttpView};
use crate::parse_patch;

fn eval(src: &str, request: &[u8]) -> bool {
    let head = parse_request_head(request, &Limits::default())
        .unwrap()
        .unwrap();
    let body = &request[head.raw().len()..];
    let view = HttpView {
        request: Some(&head),
        body: Some(body),
        response: None,
        command: None,
        derived: None,
    };
    view.eval(&parse(src).unwrap()).is_some()
}

const REQ: &[u8] = b"GET /a/../b%2e?x=1&y=%24%7Bz%7D&x=two HTTP/1.1\r\nHost: h\r\nRange: bytes=0-18446744073709551615\r\nX-A: one\r\nX-A: two\r\n\r\n";

fn evidence(src: &str, request: &[u8]) -> Option<(String, String)> {
    let head = parse_request_head(request, &Limits::default())
        .unwrap()
        .unwrap();
    let view = HttpView {
        request: Some(&head),
        body: Some(b""),
        response: None,
        command: None,
        derived: None,
    };
    view.eval(&parse(src).unwrap())
        .map(|e| (e.field, String::from_utf8_lossy(&e.value).into_owned()))
}

#[test]
fn evidence_names_the_last_comparison_that_held() {
    let ev = |src| evidence(src, REQ).unwrap();
    assert_eq!(
        ev(r#"http.request.method == "GET" and lower(http.request.header("x-a")) == "two""#),
        (
            "http.request.header(\"x-a\")".to_string(),
            "two".to_string()
        )
    );
    // A negation names what it negates; the value is the last one recorded before it.
    assert_eq!(
        ev(r#"http.request.method == "GET" and not http.request.header("x-a") == "three""#),
        (
            "not http.request.header(\"x-a\")".to_string(),
            "GET".to_string()
        )
    );
    assert_eq!(
        ev(r#"not not http.request.method == "GET""#).0,
        "not http.request.method"
    );
    assert_eq!(
        evidence(
            r#"not http.request.method == "GET" and http.request.method == "GET""#,
            REQ
        ),
        None
    );
}

#[test]
fn precedence_and_parentheses() {
    assert!(eval(
        r#"http.request.method == "GET" or http.request.method == "PUT" and false"#,
        REQ
    ));
    assert!(!eval(
        r#"(http.request.method == "GET" or http.request.method == "PUT") and false"#,
        REQ
    ));
    assert!(eval(r#"not http.request.method == "POST""#, REQ));
    assert!(!eval(r#"not not http.request.method == "POST""#, REQ));
}

#[test]
fn fields() {
    assert!(eval(r#"http.request.uri starts_with "/a/../""#, REQ));
    assert!(eval(r#"http.request.raw_path == "/a/../b%2e""#, REQ));
    assert!(eval(r#"http.request.path == "/b.""#, REQ));
    assert!(eval(r#"http.request.query contains "y=""#, REQ));
    assert!(eval(r#"http.request.arg("y") == "${z}""#, REQ));
    assert!(
        eval(r#"http.request.arg("x") == "two""#, REQ),
        "any value of a repeated arg"
    );
    assert!(eval(r#"count(http.request.arg("x")) == 2"#, REQ));
    assert!(eval(r#"http.request.header("x-a") == "two""#, REQ));
    assert!(eval(r#"count(http.request.header("X-A")) > 1"#, REQ));
    assert!(eval(
        r#"http.request.header_names in ["Range", "Nope"]"#,
        REQ
    ));
    assert!(eval(
        r#"http.request.header("range") ~ r"[1-9][0-9]{18,}""#,
        REQ
    ));
    assert!(!eval(r#"exists(http.request.header("cookie"))"#, REQ));
    assert!(eval(r#"http.request.header("host")"#, REQ));
    assert!(eval(r#"len(http.request.header("host")) == 1"#, REQ));
    assert!(eval(r#"http.request.version == "HTTP/1.1""#, REQ));
}

#[test]
fn transforms_chain() {
    assert!(eval(
        r#"url_decode(url_decode(http.request.raw_path)) contains "b.""#,
        REQ
    ));
    assert!(eval(r#"lower(http.request.header("x-a")) in ["one"]"#, REQ));
    assert!(eval(
        r#"normalize_path(http.request.raw_path) == "/b%2e""#,
        REQ
    ));
}

#[test]
fn body_field() {
    let req = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n{\"a\":\"b\"}";
    assert!(eval(r#"http.request.body contains "\"a\"""#, req));
}

#[test]
fn cookie_form_param_and_json_fields() {
    let req = b"POST /r?element_parents=a%2F%23value&q=1 HTTP/1.1\r\nHost: h\r\nCookie: a=1; SESSID=/../x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nmail%5B%23type%5D=markup&b=2";
    assert!(eval(
        r#"http.request.cookie("sessid") starts_with "/..""#,
        req
    ));
    assert!(eval(r#"http.request.cookie_names == "a""#, req));
    assert!(!eval(r#"exists(http.request.cookie("b"))"#, req));
    assert!(eval(r#"http.request.form_names contains "[#""#, req));
    assert!(eval(r#"http.request.form("B") == "2""#, req));
    assert!(
        !eval(r#"http.request.form_names == "q""#, req),
        "query is not form"
    );
    assert!(
        eval(r#"http.request.param_names == "q""#, req),
        "params are both"
    );
    assert!(eval(
        r##"http.request.param("element_parents") contains "#""##,
        req
    ));
    assert!(eval(r#"http.request.params == "markup""#, req));
    let json = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n{\"k\": \"\\u0023{T(x)}\", \"n\": 1}";
    assert!(eval(r##"http.request.json starts_with "#{""##, json));
    assert!(
        !eval(r#"http.request.forms contains "T(""#, json),
        "JSON is not a form"
    );
    let path = b"GET /tmui/login.jsp/..;jsessionid=1/x.jsp HTTP/1.1\r\nHost: h\r\n\r\n";
    assert!(eval(
        r#"strip_path_params(http.request.raw_path) ~ r"/\.\./""#,
        path
    ));
    let iis = b"GET /scripts/..%c1%1c../winnt HTTP/1.0\r\n\r\n";
    assert!(eval(
        r#"normalize_path_win(overlong_utf8(url_decode(http.request.raw_path))) == "/winnt""#,
        iis
    ));
}

#[test]
fn body_fields_make_a_patch_wait_for_the_body() {
    let src = "id = \"SG-2099-0001\"\ntitle = \"t\"\ncve = [\"CVE-2099-0001\"]\nseverity = \"high\"\nprotocol = \"http\"\n[applies]\nproduct = \"a:b\"\nversions = \"*\"\n[rule]\nwhen = 'http.request.param_names contains \"[#\"'\naction = \"reject\"\n";
    let p = parse_patch(Path::new("x.toml"), src).unwrap_or_else(|e| panic!("{}", e[0]));
    assert!(p.needs_body);
}

#[test]
fn syntax_errors_are_located() {
    let cases = [
        (
            r#"http.request.header("range") rnage "x""#,
            29,
            "expected an operator, found `rnage`",
        ),
        (
            r#"http.request.pth == "x""#,
            0,
            "unknown field `http.request.pth`",
        ),
        (r#"http.request.uri ~ r"(""#, 19, "invalid regex"),
        (
            r#"http.request.uri == "x" and"#,
            27,
            "expected a field, function or literal",
        ),
        (r#"lowr(http.request.uri) == "x""#, 0, "unknown name `lowr`"),
        (
            r#"http.request.uri == http.request.path"#,
            20,
            "expected a string or number on the right",
        ),
        (r#"(http.request.uri == "x""#, 24, "expected `)`"),
        (r#"http.request.header == "x""#, 0, "needs a name"),
        (
            r#""x" == http.request.uri"#,
            4,
            "the left side of a comparison must read a field",
        ),
    ];
    for (src, at, msg) in cases {
        let err = parse(src).unwrap_err();
        assert_eq!(err.span.start, at, "{src}: {err:?}");
        assert!(err.message.contains(msg), "{src}: {}", err.message);
        assert!(!err.hint.is_empty());
    }
}

#[test]
fn patch_file_errors_name_line_and_column() {
    let src = "id = \"SG-2015-1635\"\ntitle = \"t\"\nseverity = \"critical\"\nprotocol = \"http\"\n[applies]\nproduct = \"microsoft:iis\"\nversions = \"*\"\n[rule]\nwhen = 'http.request.header(\"range\") rnage \"x\"'\naction = \"reject\"\n";
    let errs = parse_patch(Path::new("p.toml"), src).unwrap_err();
    assert_eq!(errs.len(), 1);
    let text = errs[0].to_string();
    assert!(
        text.starts_with("p.toml:9:38: error: expected an operator, found `rnage`"),
        "{text}"
    );
    assert!(text.contains("hint:"), "{text}");
}

#[test]
fn patch_file_reports_every_problem() {
    let src = "id = \"CVE-1\"\ntitle = \"t\"\nseverity = \"urgent\"\nprotocol = \"gopher\"\n[applies]\nproduct = \"iis\"\nversions = \"*\"\n[rule]\nwhen = 'http.request.uri == \"x\"'\naction = \"explode\"\nstatus = 200\n";
    let errs = parse_patch(Path::new("p.toml"), src).unwrap_err();
    let all: Vec<String> = errs
        .iter()
        .map(|e| format!("{}:{} {}", e.line, e.col, e.message))
        .collect();
    assert_eq!(all.len(), 5, "{all:#?}");
    assert!(all[0].starts_with("1:6 invalid patch id"));
    assert!(all.iter().any(|e| e.starts_with("3:12 unknown severity")));
    assert!(all.iter().any(|e| e.contains("unknown protocol `gopher`")));
    assert!(all.iter().any(|e| e.contains("not `vendor:product`")));
    assert!(all.iter().any(|e| e.starts_with("10:10 unknown action")));
}

#[test]
fn unknown_keys_are_rejected_with_location() {
    let src = "id = \"SG-2015-1635\"\ntitle = \"t\"\nseverity = \"low\"\nprotocol = \"http\"\nbogus = 1\n[applies]\nproduct = \"a:b\"\nversions = \"*\"\n[rule]\nwhen = 'http.request.uri == \"x\"'\naction = \"log\"\n";
    let errs = parse_patch(Path::new("p.toml"), src).unwrap_err();
    assert_eq!(errs[0].line, 5, "{}", errs[0]);
    assert!(errs[0].message.contains("bogus"), "{}", errs[0]);
}

#[test]
fn ftp_and_smtp_fields() {
    use crate::expr::CommandView;
    let e = parse(
        r#"ftp.command == "SITE" and lower(ftp.arg) starts_with "cpfr" and ftp.authenticated == 0"#,
    )
    .unwrap();
    let mut v = CommandView {
        command: b"SITE",
        arg: b"CPFR /etc/passwd",
        ..CommandView::default()
    };
    assert!(v.eval(&e).is_some());
    v.authenticated = true;
    assert!(v.eval(&e).is_none());
    let e = parse(r#"smtp.rcpt_to contains "${run""#).unwrap();
    let rcpts = vec![b"<ok@x>".to_vec(), b"<${run{x}}@localhost>".to_vec()];
    let v = CommandView {
        command: b"RCPT",
        rcpt_to: &rcpts,
        ..CommandView::default()
    };
    assert!(v.eval(&e).is_some());
    let http = parse(r#"ftp.user == "x""#).unwrap();
    assert!(
        HttpView::default().eval(&http).is_none(),
        "no command, no FTP field"
    );
}

#[test]
fn a_patch_reads_only_its_own_protocol() {
    let src = "id = \"SG-2099-0001\"\ntitle = \"t\"\ncve = [\"CVE-2099-0001\"]\nseverity = \"high\"\nprotocol = \"ftp\"\n[applies]\nproduct = \"a:b\"\nversions = \"*\"\n[rule]\nwhen = 'http.request.uri == \"x\"'\naction = \"reject\"\nstatus = 550\nmessage = \"No.\"\n";
    let e = parse_patch(Path::new("p.toml"), src).unwrap_err();
    assert!(
        e[0].message.contains("is not a field of a `ftp` patch"),
        "{}",
        e[0]
    );
    let ok = src.replace("http.request.uri", "ftp.command");
    let p = parse_patch(Path::new("p.toml"), &ok).unwrap();
    assert_eq!(p.protocol, crate::Protocol::Ftp);
    assert!(
        matches!(p.action, crate::Action::Reject { status: 550, message: Some(ref m) } if m == "No.")
    );
}

#[test]
fn shipped_patches_have_machine_readable_ranges_where_the_vendor_gives_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../patches");
    let patches = crate::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let without: Vec<&str> = patches
        .iter()
        .filter(|p| p.range.is_none())
        .map(|p| p.id.as_str())
        .collect();
    // Vendors that number fixes by build or cumulative update rather than by version.
    assert_eq!(
        without,
        [
            "SG-2021-21972",
            "SG-2021-26855",
            "SG-2021-34473",
            "SG-2023-46805",
            "SG-2024-21887"
        ],
        "patches without a parsed range apply to every version of their product"
    );
}
