//! Deterministic in-memory client ↔ inspector ↔ upstream harness.

use std::path::Path;
use std::sync::Arc;

use stopgap_patch::{parse_patch, Applied, Mode, PatchSet};

use crate::audit::event;
use crate::{AuditEvent, BeyondWindow, FlowInspector, FlowMeta, InspectorConfig, Output, Side};

pub(crate) struct Harness {
    pub insp: FlowInspector,
    pub snapshot: Arc<PatchSet>,
    pub to_server: Vec<u8>,
    pub to_client: Vec<u8>,
    pub events: Vec<AuditEvent>,
    pub closed: bool,
}

impl Harness {
    pub fn new(snapshot: PatchSet) -> Self {
        Self::with_config(snapshot, InspectorConfig::default())
    }
    pub fn with_config(snapshot: PatchSet, config: InspectorConfig) -> Self {
        Self {
            insp: FlowInspector::new(config, FlowMeta::default()),
            snapshot: Arc::new(snapshot),
            to_server: Vec::new(),
            to_client: Vec::new(),
            events: Vec::new(),
            closed: false,
        }
    }
    fn drain(&mut self) {
        while let Some(o) = self.insp.poll_output() {
            match o {
                Output::ToServer(b) => {
                    assert!(!self.closed, "data after close");
                    self.to_server.extend_from_slice(&b);
                }
                Output::ToClient(b) => {
                    assert!(!self.closed, "data after close");
                    self.to_client.extend_from_slice(&b);
                }
                Output::Audit(e) => self.events.push(*e),
                Output::Close => self.closed = true,
                Output::FtpPassive { .. } | Output::FtpActive { .. } => {
                    panic!("an HTTP flow has no FTP data connections")
                }
                Output::Banner(..) => {}
            }
        }
    }
    pub fn client(&mut self, data: &[u8]) -> &mut Self {
        let snap = self.snapshot.clone();
        self.insp.handle_data(Side::Client, data, &snap);
        self.drain();
        self
    }
    pub fn client_bytewise(&mut self, data: &[u8]) -> &mut Self {
        for b in data.chunks(1) {
            self.client(b);
        }
        self
    }
    pub fn server(&mut self, data: &[u8]) -> &mut Self {
        let snap = self.snapshot.clone();
        self.insp.handle_data(Side::Server, data, &snap);
        self.drain();
        self
    }
    pub fn server_eof(&mut self) -> &mut Self {
        self.insp.handle_eof(Side::Server);
        self.drain();
        self
    }
}

fn patch(when: &str, rule_extra: &str) -> stopgap_patch::Patch {
    let src = format!(
        "id = \"SG-2099-0001\"\ntitle = \"t\"\ncve = [\"CVE-2099-0001\"]\nseverity = \"high\"\nprotocol = \"http\"\n[applies]\nproduct = \"a:b\"\nversions = \"*\"\n[rule]\nwhen = '''{when}'''\n{rule_extra}\n"
    );
    parse_patch(Path::new("inline.toml"), &src).unwrap_or_else(|e| panic!("{}", e[0]))
}

fn set(p: stopgap_patch::Patch) -> PatchSet {
    PatchSet::from_patches(1, vec![p])
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn benign_request_is_forwarded_byte_for_byte() {
    let req = b"GET /x?a=1 HTTP/1.1\r\nhost: h\r\nX-Weird-Case:  v  \r\n\r\n";
    let mut h = Harness::new(set(patch(
        r#"http.request.uri contains "evil""#,
        "action = \"reject\"",
    )));
    h.client_bytewise(req);
    assert_eq!(h.to_server, req);
    h.server(OK);
    assert_eq!(h.to_client, OK);
    assert!(h.events.is_empty());
}

#[test]
fn reject_answers_and_keeps_the_connection_in_order() {
    let mut h = Harness::new(set(patch(
        r#"http.request.uri contains "evil""#,
        "action = \"reject\"\nstatus = 400",
    )));
    let good1 = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    let bad = b"POST /evil HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    let good2 = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    let all = [&good1[..], bad, good2].concat();
    h.client(&all);
    assert_eq!(
        h.to_server,
        [&good1[..], good2].concat(),
        "body of the refused request skipped"
    );
    assert!(
        h.to_client.is_empty(),
        "refusal waits for the earlier response"
    );
    h.server(OK);
    let text = String::from_utf8_lossy(&h.to_client).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("ok HTTP/1.1 400 Bad Request") || text.contains("okHTTP/1.1 400 Bad Request"),
        "{text}"
    );
    h.server(OK);
    assert!(h.to_client.ends_with(OK));
    assert!(!h.closed);
    let e = &h.events[0];
    assert_eq!(e.patch.as_deref(), Some("SG-2099-0001"));
    assert_eq!(e.outcome, "rejected");
    assert_eq!(e.uri.as_deref(), Some("/evil"));
    assert_eq!(e.field.as_deref(), Some("http.request.uri"));
}

#[test]
fn monitor_mode_changes_nothing_and_logs() {
    let p = patch(
        r#"http.request.uri contains "evil""#,
        "action = \"reject\"\nmode = \"monitor\"",
    );
    assert_eq!(p.mode, Mode::Monitor);
    let mut h = Harness::new(set(p));
    let req = b"GET /evil HTTP/1.1\r\nHost: h\r\n\r\n";
    h.client(req);
    assert_eq!(h.to_server, req);
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.events[0].outcome, "would_reject");
    assert_eq!(h.events[0].mode, Some("monitor"));
}

#[test]
fn snapshot_mode_override_applies() {
    let p = Arc::new(patch(
        r#"http.request.uri contains "evil""#,
        "action = \"reject\"",
    ));
    let snap = PatchSet::new(
        2,
        vec![Applied {
            patch: p,
            mode: Mode::Monitor,
        }],
    );
    let mut h = Harness::new(snap);
    h.client(b"GET /evil HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(h.to_client.is_empty());
    assert_eq!(h.events[0].outcome, "would_reject");
}

#[test]
fn every_matching_patch_is_recorded_after_a_refusal() {
    let named = |id: &str, when: &str, extra: &str| {
        let mut p = patch(when, extra);
        p.id = id.into();
        Arc::new(p)
    };
    let snap = PatchSet::new(
        3,
        vec![
            Applied {
                patch: named(
                    "SG-A",
                    r#"http.request.uri contains "evil""#,
                    "action = \"reject\"\nstatus = 403",
                ),
                mode: Mode::Enforce,
            },
            Applied {
                patch: named(
                    "SG-B",
                    r#"http.request.uri contains "evil""#,
                    "action = \"reject\"\nstatus = 400",
                ),
                mode: Mode::Enforce,
            },
            Applied {
                patch: named(
                    "SG-C",
                    r#"http.request.uri contains "ev""#,
                    "action = \"reject\"",
                ),
                mode: Mode::Monitor,
            },
        ],
    );
    let mut h = Harness::new(snap);
    h.client(b"GET /evil HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(
        h.to_client.starts_with(b"HTTP/1.1 403 "),
        "the first refusal answers"
    );
    assert!(h.to_server.is_empty());
    let seen: Vec<(&str, &str)> = h
        .events
        .iter()
        .map(|e| (e.patch.as_deref().unwrap(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("SG-A", "rejected"),
            ("SG-B", "also_matched"),
            ("SG-C", "would_reject")
        ]
    );
}

#[test]
fn strip_header_rebuilds_only_that_line() {
    let mut h = Harness::new(set(patch(
        r#"http.request.header("x-debug")"#,
        "action = \"strip\"\ntarget = 'http.request.header(\"x-debug\")'",
    )));
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\nX-Debug: 1\r\nAccept:  */*\r\nx-debug: 2\r\n\r\n");
    assert_eq!(
        h.to_server,
        b"GET / HTTP/1.1\r\nHost: h\r\nAccept:  */*\r\n\r\n"
    );
    let change = h.events[0].change.as_ref().unwrap();
    assert_eq!(change.target, "header:x-debug");
    assert_eq!(h.events[0].outcome, "stripped");
}

#[test]
fn strip_query_arg() {
    let mut h = Harness::new(set(patch(
        r#"http.request.arg("debug")"#,
        "action = \"strip\"\ntarget = 'http.request.arg(\"debug\")'",
    )));
    h.client(b"GET /p?a=1&debug=true&b=2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(h.to_server, b"GET /p?a=1&b=2 HTTP/1.1\r\nHost: h\r\n\r\n");
}

#[test]
fn truncate_header_value() {
    let mut h = Harness::new(set(patch(
        r#"len(http.request.header("x-long")) > 4"#,
        "action = \"truncate\"\ntarget = 'http.request.header(\"x-long\")'\nmax_len = 4",
    )));
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: abcdefgh\r\n\r\n");
    assert_eq!(
        h.to_server,
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: abcd\r\n\r\n"
    );
}

#[test]
fn replace_in_body_recomputes_content_length() {
    let mut h = Harness::new(set(patch(
        r#"http.request.body contains "secret""#,
        "action = \"replace\"\ntarget = 'http.request.body'\npattern = 'secret'\nwith = 'XX'",
    )));
    h.client_bytewise(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 13\r\n\r\na secret here");
    assert_eq!(
        h.to_server,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\na XX here"
    );
    let change = h.events[0].change.as_ref().unwrap();
    assert_eq!(change.before, "a secret here");
    assert_eq!(change.after, "a XX here");
}

#[test]
fn replace_in_chunked_body_reencodes_chunks() {
    let mut h = Harness::new(set(patch(
        r#"http.request.body contains "secret""#,
        "action = \"replace\"\ntarget = 'http.request.body'\npattern = 'secret'\nwith = ''",
    )));
    h.client(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab \r\n6\r\nsecret\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        h.to_server,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab \r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"
    );
}

#[test]
fn body_beyond_window_streams_through() {
    let config = InspectorConfig {
        inspection_window: 1024,
        ..InspectorConfig::default()
    };
    let mut h = Harness::with_config(
        set(patch(
            r#"http.request.body contains "evil""#,
            "action = \"reject\"",
        )),
        config,
    );
    let body = vec![b'a'; 5000];
    let mut req = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n".to_vec();
    req.extend_from_slice(&body);
    for c in req.chunks(700) {
        h.client(c);
        assert!(h.insp.buffered() <= 1024 + 700, "window bound");
    }
    assert_eq!(h.to_server, req);
}

/// A body longer than the window under each policy: the event is there either way.
#[test]
fn body_beyond_window_is_logged_and_refused_when_configured() {
    for (policy, expect_refused) in [(BeyondWindow::Pass, false), (BeyondWindow::Refuse, true)] {
        let config = InspectorConfig {
            inspection_window: 1024,
            beyond_window: policy,
            ..InspectorConfig::default()
        };
        let mut h = Harness::with_config(
            set(patch(
                r#"http.request.body contains "evil""#,
                "action = \"reject\"",
            )),
            config,
        );
        let mut req = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3000\r\n\r\n".to_vec();
        req.extend_from_slice(&[b'a'; 3000]);
        h.client(&req);
        let e = h
            .events
            .iter()
            .find(|e| e.event == event::INSPECTION_WINDOW)
            .unwrap_or_else(|| panic!("{policy:?}: no inspection_window event"));
        if expect_refused {
            assert_eq!((e.outcome.as_str(), e.status), ("rejected", Some(413)));
            assert!(h.to_server.is_empty(), "nothing forwarded");
            assert!(h.to_client.starts_with(b"HTTP/1.1 413 "));
            assert!(h.closed);
        } else {
            assert_eq!(e.outcome, "passed_uninspected");
            assert_eq!(h.to_server, req);
        }
    }
    // A body within the window gives no such event.
    let mut h = Harness::new(set(patch(
        r#"http.request.body contains "evil""#,
        "action = \"reject\"",
    )));
    h.client(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    assert!(h.events.iter().all(|e| e.event != event::INSPECTION_WINDOW));
}

#[test]
fn body_patch_rejects_within_window() {
    let mut h = Harness::new(set(patch(
        r#"http.request.body contains "evil""#,
        "action = \"reject\"",
    )));
    h.client(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(h.to_client, b"HTTP/1.1 100 Continue\r\n\r\n");
    h.client(b"evil");
    assert!(h.to_server.is_empty());
    assert!(String::from_utf8_lossy(&h.to_client).contains("403 Forbidden"));
}

#[test]
fn gateway_continue_replaces_the_servers_own() {
    let mut h = Harness::new(set(patch(
        r#"http.request.body contains "evil""#,
        "action = \"reject\"",
    )));
    let head = b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    h.client(head);
    assert_eq!(h.to_client, b"HTTP/1.1 100 Continue\r\n\r\n");
    h.client(b"ok");
    assert_eq!(
        h.to_server,
        [&head[..], b"ok"].concat(),
        "forwarded as sent"
    );
    h.server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        h.to_client,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        "one 100 Continue reaches the client"
    );
}

#[test]
fn reset_closes() {
    let mut h = Harness::new(set(patch(
        r#"http.request.uri contains "evil""#,
        "action = \"reset\"",
    )));
    h.client(b"GET /evil HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(h.closed);
    assert!(h.to_server.is_empty() && h.to_client.is_empty());
}

#[test]
fn upstream_down_gives_502() {
    let mut h = Harness::new(PatchSet::empty());
    h.insp.upstream_failed("connection refused");
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(h.to_client.starts_with(b"HTTP/1.1 502 Bad Gateway\r\n"));
    assert!(h.closed);
    assert_eq!(h.events[0].event, "upstream_error");
}

#[test]
fn upstream_closing_without_answer_gives_502() {
    let mut h = Harness::new(PatchSet::empty());
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    h.server_eof();
    assert!(h.to_client.starts_with(b"HTTP/1.1 502"));
    assert!(h.closed);
}

#[test]
fn head_and_interim_responses_pair_correctly() {
    let mut h = Harness::new(PatchSet::empty());
    h.client(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    h.server(resp);
    assert_eq!(h.to_client, resp);
}

#[test]
fn upgrade_becomes_a_pipe() {
    let mut h = Harness::new(set(patch(
        r#"http.request.uri contains "evil""#,
        "action = \"reject\"",
    )));
    h.client(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    h.server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello");
    h.client(b"GET /evil HTTP/1.1\r\n\r\n");
    assert!(
        h.to_server.ends_with(b"GET /evil HTTP/1.1\r\n\r\n"),
        "opaque after 101"
    );
    assert!(h.to_client.ends_with(b"\x81\x05hello"));
}

/// A `101` the client did not ask for would turn the rest of the connection into an
/// uninspected pipe; the gateway answers 502 and closes instead.
#[test]
fn unrequested_101_is_refused_not_tunnelled() {
    let mut h = Harness::new(set(patch(
        r#"http.request.uri contains "evil""#,
        "action = \"reject\"",
    )));
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    h.server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n");
    h.client(b"GET /evil HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(
        h.to_client.starts_with(b"HTTP/1.1 502"),
        "{:?}",
        String::from_utf8_lossy(&h.to_client)
    );
    assert!(h.closed);
    assert!(!h.to_server.windows(9).any(|w| w == b"GET /evil"));
}

/// Response splitting from the upstream: every ambiguous or malformed response head is a 502
/// and the connection closes, so no injected second response reaches the client.
#[test]
fn malformed_and_split_responses_give_502() {
    let cases: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
    ];
    for resp in cases {
        let mut h = Harness::new(PatchSet::empty());
        h.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        h.server(resp);
        let name = String::from_utf8_lossy(resp);
        assert!(
            h.to_client.starts_with(b"HTTP/1.1 502"),
            "{name}: {:?}",
            String::from_utf8_lossy(&h.to_client)
        );
        assert!(h.closed, "{name}");
    }
    // Broken chunking after the head went out: too late for a 502, so the connection closes
    // and the bytes after the break are not forwarded.
    let mut h = Harness::new(PatchSet::empty());
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    h.server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nHTTP/1.1 200 OK\r\n\r\n");
    assert!(h.closed);
    assert_eq!(
        h.to_client,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
}

#[test]
fn malformed_response_gives_502() {
    let mut h = Harness::new(PatchSet::empty());
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    h.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(h.to_client.starts_with(b"HTTP/1.1 502"));
    assert!(h.closed);
}

#[test]
fn response_patch_strips_header() {
    let mut h = Harness::new(set(patch(
        r#"http.response.header("x-powered-by")"#,
        "action = \"strip\"\ntarget = 'http.response.header(\"x-powered-by\")'",
    )));
    h.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    h.server(b"HTTP/1.1 200 OK\r\nX-Powered-By: PHP/5.4\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        h.to_client,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    );
}

#[test]
fn framing_violation_is_refused_and_closed() {
    let mut h = Harness::new(PatchSet::empty());
    h.client(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(h.to_server.is_empty());
    assert!(h.to_client.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    assert!(h.closed);
    assert_eq!(
        h.events[0].anomaly,
        Some("content_length_and_transfer_encoding")
    );
}

#[test]
fn idle_only_between_messages_and_requests_are_counted() {
    let mut h = Harness::new(PatchSet::empty());
    assert!(h.insp.is_idle(), "a fresh connection is idle");
    h.client(b"GET / HTTP/1.1\r\nHo");
    assert!(!h.insp.is_idle(), "half a head is not idle");
    h.client(b"st: a\r\n\r\n");
    assert!(!h.insp.is_idle(), "a forwarded request owes a response");
    assert_eq!(h.insp.requests(), 1);
    h.server(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
    assert!(!h.insp.is_idle(), "half a response body is not idle");
    h.server(b"cd");
    assert!(h.insp.is_idle(), "a completed exchange is idle");
    h.client(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nx");
    assert!(!h.insp.is_idle(), "half a request body is not idle");
    assert_eq!(h.insp.requests(), 2);
}

/// The body phase scans for the literals of body-reading patches only; head patches are judged
/// in the head phase, and a body patch's literal is found in the head as in the body.
#[test]
fn head_and_body_patches_each_match_in_their_phase() {
    let mut head_patch = patch(
        r#"http.request.header("x-h") contains "bad""#,
        "action = \"log\"",
    );
    head_patch.id = "SG-2099-0002".into();
    let body_patch = patch(
        r#"http.request.body contains "evil" or http.request.header("x-b") contains "evil""#,
        "action = \"log\"",
    );
    let set = PatchSet::from_patches(1, vec![head_patch, body_patch]);
    for (req, want) in [
        (
            &b"POST / HTTP/1.1\r\nHost: h\r\nX-H: bad\r\nContent-Length: 4\r\n\r\nevil"[..],
            &["SG-2099-0002", "SG-2099-0001"][..],
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nX-B: evil\r\nContent-Length: 4\r\n\r\ngood",
            &["SG-2099-0001"],
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nX-H: bad\r\nContent-Length: 4\r\n\r\ngood",
            &["SG-2099-0002"],
        ),
    ] {
        let mut h = Harness::new(set.clone());
        h.client(req);
        let matched: Vec<&str> = h
            .events
            .iter()
            .filter(|e| e.event == event::PATCH_MATCH)
            .filter_map(|e| e.patch.as_deref())
            .collect();
        assert_eq!(matched, want, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(h.to_server, req, "log patches change nothing");
    }
}
