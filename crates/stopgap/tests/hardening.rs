//! End-to-end hardening: head limits and request ambiguities, timeouts (slowloris, idle, silent
//! upstream, an upstream that never completes the connect), a server closing idle connections,
//! connection limits, the inspection memory budget, attacker escalation, and a panic
//! in one connection's inspection contained to it under either failure policy.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stopgap_proto::http1::{parse_request_head, BodyDecoder, Limits};

mod support;
use support::{free_port, repo, wait_for_port, Proc, TempDir};

/// An upstream answering every request with 200 `ok` (or never answering when `mute`), and
/// counting the requests it received.
fn upstream(mute: bool) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let limits = Limits::default();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    while let Ok(Some(head)) = parse_request_head(&buf, &limits) {
                        let Ok(framing) = head.framing() else { return };
                        let mut d = BodyDecoder::new(framing, &limits);
                        let Ok(p) = d.decode(&buf[head.raw().len()..], |_| {}) else {
                            return;
                        };
                        if !p.done {
                            break;
                        }
                        c.fetch_add(1, Ordering::SeqCst);
                        buf.drain(..head.raw().len() + p.consumed);
                        if !mute
                            && s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .is_err()
                        {
                            return;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, count)
}

struct Gw {
    port: u16,
    dir: TempDir,
    _proc: Proc,
}

impl Gw {
    /// A gateway from a config file with `limits` (TOML lines) and `listener_extra`.
    fn start(up: u16, limits: &str, listener_extra: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(up, limits, listener_extra, "", env)
    }

    fn start_with(
        up: u16,
        limits: &str,
        listener_extra: &str,
        sections: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = TempDir::new("hardening");
        let port = free_port();
        let conf = dir.0.join("stopgap.toml");
        std::fs::write(
            &conf,
            format!(
                "[patches]\ndir = \"{}\"\n[audit]\nlog = \"audit.jsonl\"\n[admin]\nlisten = \"off\"\n\
                 [state]\ndir = \"state\"\n{sections}\n[limits]\n{limits}\n[[listener]]\nname = \"web\"\n\
                 listen = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{up}\"\n{listener_extra}\n",
                repo().join("patches").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stopgap"));
        // Quiet: the injected panics would otherwise print their message here.
        cmd.args(["serve", "--config"])
            .arg(&conf)
            .env("STOPGAP_LOG", "error")
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        wait_for_port(port, &mut child, "stopgap");
        Self {
            port,
            dir,
            _proc: Proc(child),
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(self.dir.0.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn anomalies(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|v| {
                Some(format!(
                    "{} {}",
                    v["anomaly"].as_str()?,
                    v["outcome"].as_str()?
                ))
            })
            .collect()
    }
}

fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a request and reads one response: the head, and the `ok` body of a 200.
fn exchange(s: &mut TcpStream, req: &[u8]) -> String {
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            if !text.starts_with("HTTP/1.1 200") || text[end + 4..].len() >= 2 {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn slowloris_gets_408_idle_connections_close_and_a_silent_upstream_gets_504() {
    let (up, _) = upstream(false);
    let gw = Gw::start(
        up,
        "client_timeout_ms = 400\nidle_timeout_ms = 600",
        "",
        &[],
    );
    // Slowloris: a head that never ends.
    let mut s = gw.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-a: 1\r\n")
        .unwrap();
    let t = Instant::now();
    let reply = read_all(&mut s);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Idle between requests: closed without a word.
    let mut s = gw.connect();
    assert!(exchange(&mut s, GET).ends_with("ok"));
    assert_eq!(read_all(&mut s), "", "closed after the idle timeout");

    let (mute, received) = upstream(true);
    let gw2 = Gw::start(mute, "upstream_timeout_ms = 400", "", &[]);
    let mut s = gw2.connect();
    s.write_all(GET).unwrap();
    let reply = read_all(&mut s);
    assert!(reply.starts_with("HTTP/1.1 504 "), "{reply}");
    assert_eq!(received.load(Ordering::SeqCst), 1);

    let a = gw.anomalies();
    assert!(a.contains(&"client_timeout timed_out".to_string()), "{a:?}");
    assert!(gw2
        .anomalies()
        .contains(&"upstream_timeout timed_out".to_string()));
}

/// Clients that are never silent long enough for the per-read timeout, but too slow overall:
/// a head trickled a byte at a time, and a body trickled after a quick head.
#[test]
fn trickling_heads_and_bodies_get_408_from_the_message_deadline() {
    let (up, count) = upstream(false);
    let gw = Gw::start(
        up,
        "client_timeout_ms = 5000\nmessage_timeout_ms = 800\nmessage_min_rate = 1000",
        "",
        &[],
    );
    let trickle = |head: &[u8], body: &[u8]| {
        let mut s = gw.connect();
        s.write_all(head).unwrap();
        for b in body {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            s.set_nonblocking(true).unwrap();
            let mut peek = [0u8; 1];
            let answered = matches!(s.peek(&mut peek), Ok(n) if n > 0);
            s.set_nonblocking(false).unwrap();
            if answered {
                break;
            }
        }
        read_all(&mut s)
    };
    let reply = trickle(b"", b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 408 "), "slow head: {reply}");
    let reply = trickle(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\n",
        &[b'a'; 60],
    );
    assert!(reply.starts_with("HTTP/1.1 408 "), "slow body: {reply}");
    assert_eq!(count.load(Ordering::SeqCst), 0, "neither request completed");
    // A quick client on the same gateway is served.
    assert!(exchange(&mut gw.connect(), GET).ends_with("ok"));
}

#[test]
fn connections_over_the_per_source_limit_get_503_and_slots_are_given_back() {
    let (up, _) = upstream(false);
    let gw = Gw::start(up, "max_connections_per_source = 2", "", &[]);
    // The readiness probe of the start was a connection too; let the gateway see it end.
    std::thread::sleep(Duration::from_millis(300));
    let mut a = gw.connect();
    let mut b = gw.connect();
    assert!(exchange(&mut a, GET).ends_with("ok"));
    assert!(exchange(&mut b, GET).ends_with("ok"));
    let mut c = gw.connect();
    let reply = read_all(&mut c);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    drop(a);
    std::thread::sleep(Duration::from_millis(300));
    let mut d = gw.connect();
    assert!(
        exchange(&mut d, GET).ends_with("ok"),
        "a slot was given back"
    );
    assert!(
        exchange(&mut b, GET).ends_with("ok"),
        "the others are untouched"
    );
    let a = gw.anomalies();
    assert!(
        a.contains(&"max_connections_per_source refused".to_string()),
        "{a:?}"
    );
}

/// Overload (the listener's max_connections reached): fail_closed refuses with 503, fail_open
/// relays the connection uninspected, so that the gateway never becomes the outage.
#[test]
fn overload_follows_the_failure_policy() {
    const EXPLOIT: &[u8] =
        b"GET / HTTP/1.1\r\nHost: t\r\nRange: bytes=0-18446744073709551615\r\n\r\n";
    for (policy, relayed) in [("fail_closed", false), ("fail_open", true)] {
        let (up, count) = upstream(false);
        let gw = Gw::start(
            up,
            "max_connections = 1",
            &format!("failure_policy = \"{policy}\""),
            &[],
        );
        std::thread::sleep(Duration::from_millis(300));
        let mut held = gw.connect();
        assert!(exchange(&mut held, GET).ends_with("ok"));
        let mut over = gw.connect();
        let reply = exchange(&mut over, EXPLOIT);
        let anomalies = gw.anomalies();
        if relayed {
            assert!(reply.starts_with("HTTP/1.1 200 "), "{policy}: {reply}");
            assert_eq!(
                count.load(Ordering::SeqCst),
                2,
                "the exploit reached the server uninspected"
            );
            assert!(
                anomalies.contains(&"max_connections passed_uninspected".to_string()),
                "{anomalies:?}"
            );
        } else {
            assert!(reply.starts_with("HTTP/1.1 503 "), "{policy}: {reply}");
            assert_eq!(count.load(Ordering::SeqCst), 1);
            assert!(
                anomalies.contains(&"max_connections refused".to_string()),
                "{anomalies:?}"
            );
        }
        // The connection within the limit is still inspected: the exploit is refused there.
        assert!(
            exchange(&mut held, EXPLOIT).starts_with("HTTP/1.1 400 "),
            "{policy}"
        );
    }
}

fn panic_isolation(policy: &str) -> (String, u64, Vec<String>) {
    let (up, received) = upstream(false);
    let gw = Gw::start(
        up,
        "",
        &format!("failure_policy = \"{policy}\""),
        &[("STOPGAP_FAULT_PANIC_MARKER", "x-inject-fault")],
    );
    let mut healthy = gw.connect();
    assert!(exchange(&mut healthy, GET).ends_with("ok"));
    let mut faulty = gw.connect();
    let reply = exchange(
        &mut faulty,
        b"GET /x HTTP/1.1\r\nHost: t\r\nX-Inject-Fault: x-inject-fault\r\n\r\n",
    );
    // The other connection never noticed.
    for _ in 0..3 {
        assert!(exchange(&mut healthy, GET).ends_with("ok"));
    }
    (reply, received.load(Ordering::SeqCst), gw.anomalies())
}

#[test]
fn a_panic_in_one_inspection_is_contained_and_the_failure_policy_applies() {
    let (reply, received, anomalies) = panic_isolation("fail_closed");
    assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    assert_eq!(received, 4, "the failed request never reached the server");
    assert!(
        anomalies.contains(&"inspection_failed refused".to_string()),
        "{anomalies:?}"
    );

    let (reply, received, anomalies) = panic_isolation("fail_open");
    assert!(reply.ends_with("ok"), "passed uninspected: {reply}");
    assert_eq!(received, 5);
    assert!(
        anomalies.contains(&"inspection_failed passed_uninspected".to_string()),
        "{anomalies:?}"
    );
}

#[test]
fn repeat_offenders_are_refused_for_the_ban_then_served_again() {
    let (up, received) = upstream(false);
    let gw = Gw::start_with(
        up,
        "",
        "",
        "[escalation]\nmode = \"enforce\"\nstrikes = 3\nwindow_s = 60\nban_s = 2\n",
        &[],
    );
    let exploit = b"GET / HTTP/1.1\r\nHost: t\r\nRange: bytes=0-18446744073709551615\r\n\r\n";
    let mut s = gw.connect();
    for _ in 0..3 {
        assert!(exchange(&mut s, exploit).starts_with("HTTP/1.1 400 "));
    }
    // The source is now refused, on any new connection, even for a benign request.
    let mut t = gw.connect();
    assert!(read_all(&mut t).starts_with("HTTP/1.1 403 "));
    let served = received.load(Ordering::SeqCst);
    // The ban ends; the source is served again.
    std::thread::sleep(Duration::from_millis(2300));
    let mut u = gw.connect();
    assert!(exchange(&mut u, GET).ends_with("ok"));
    assert_eq!(received.load(Ordering::SeqCst), served + 1);
    let events: Vec<serde_json::Value> = std::fs::read_to_string(gw.dir.0.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "escalation")
        .collect();
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["new_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["banned", "expired"], "{events:?}");
    assert!(gw
        .anomalies()
        .contains(&"source_banned refused".to_string()));
}

#[test]
fn the_inspection_memory_budget_refuses_the_connection_that_would_exceed_it() {
    let (up, _) = upstream(false);
    let gw = Gw::start(up, "inspection_budget_kib = 100", "", &[]);
    // Body patches of the library make the gateway hold each body's first 64 KiB (a
    // Content-Length body once, as sent: 60,000 bytes here); the second such body takes the
    // total past 100 KiB.
    let post = |s: &mut TcpStream| {
        s.write_all(b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n")
            .unwrap();
        s.write_all(&vec![b'a'; 60_000]).unwrap();
    };
    let mut a = gw.connect();
    post(&mut a);
    std::thread::sleep(Duration::from_millis(300));
    let mut b = gw.connect();
    post(&mut b);
    let reply = read_all(&mut b);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    // The first connection is unaffected and completes.
    a.write_all(&vec![b'a'; 10_000]).unwrap();
    let mut buf = [0u8; 4096];
    let n = a.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 "));
    let anomalies = gw.anomalies();
    assert!(
        anomalies.contains(&"inspection_budget refused".to_string()),
        "{anomalies:?}"
    );
}

/// Every head limit and every request-side ambiguity through the real gateway: the documented
/// status, the connection closed, nothing forwarded, and an audit event naming the cause.
#[test]
fn each_limit_and_ambiguity_gets_its_status_an_audit_event_and_nothing_forwarded() {
    let (up, count) = upstream(false);
    let gw = Gw::start(
        up,
        "max_request_line = 256\nmax_head = 2048\nmax_headers = 10\ninspection_window = 1024\n\
         body_beyond_window = \"refuse\"",
        "",
        &[],
    );
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(300));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2100)
    );
    let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{}\r\n", "X: 1\r\n".repeat(10));
    let mut long_body = b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 3000\r\n\r\n".to_vec();
    long_body.extend_from_slice(&[b'a'; 3000]);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("request line", long_line.into_bytes(), "414", "request_line_too_long"),
        ("header block", big_head.into_bytes(), "431", "head_too_large"),
        ("header count", many.into_bytes(), "431", "too_many_headers"),
        ("inspection window", long_body, "413", "inspection_window"),
        ("CL+TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "400", "content_length_and_transfer_encoding"),
        ("absolute-form vs Host", b"GET http://admin.internal/ HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), "400", "host_mismatch"),
        ("Expect", b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n".to_vec(), "417", "unsupported_expectation"),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), "400", "malformed_head"),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n".to_vec(), "400", "invalid_chunk"),
    ];
    for (name, req, status, cause) in &cases {
        let mut s = gw.connect();
        s.write_all(req).unwrap();
        let reply = read_all(&mut s);
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {reply}"
        );
        let events = gw.events();
        assert!(
            events
                .iter()
                .any(|e| e["anomaly"] == *cause || e["event"] == *cause),
            "{name}: no audit event naming {cause}: {events:?}"
        );
    }
    // The upstream counts complete requests: none of the refused ones reached it whole.
    assert!(
        count.load(Ordering::SeqCst) == 0,
        "a refused request reached the server"
    );
    // The gateway still serves.
    assert!(exchange(&mut gw.connect(), GET).starts_with("HTTP/1.1 200 "));
}

/// An upstream that never completes a connection: a listener with a backlog of one whose
/// queue is filled by two connections it never accepts, so the kernel drops further SYNs and a
/// connect hangs, as to a black-holed address (on loopback, where nothing else can be).
fn black_hole() -> (
    u16,
    tokio::runtime::Runtime,
    tokio::net::TcpListener,
    Vec<TcpStream>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(1).unwrap()
    });
    let port = listener.local_addr().unwrap().port();
    let queued: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    (port, rt, listener, queued)
}

#[test]
fn an_upstream_that_never_answers_the_connect_gets_502_after_the_connect_timeout() {
    let (hole, _rt, _listener, _queued) = black_hole();
    // The hole really is one: a third connect does not complete within a second.
    let probe = std::net::SocketAddr::from(([127, 0, 0, 1], hole));
    assert!(
        TcpStream::connect_timeout(&probe, Duration::from_secs(1)).is_err(),
        "the listener's queue should be full"
    );
    let gw = Gw::start(hole, "connect_timeout_ms = 300", "", &[]);
    let mut s = gw.connect();
    let t = Instant::now();
    let reply = exchange(&mut s, GET);
    assert!(reply.starts_with("HTTP/1.1 502 "), "{reply}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "answered after the 300 ms connect timeout, not the kernel's own (over a minute)"
    );
    let events = gw.events();
    let error = events
        .iter()
        .find(|e| e["event"] == "upstream_error")
        .unwrap_or_else(|| panic!("no upstream_error event: {events:?}"));
    let detail = error["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("timed out"), "{detail}");
}

/// An upstream that answers one request per connection with 200 `ok` and then closes it,
/// saying so with `Connection: close` or not (as a server whose keep-alive timeout ran out
/// right after the exchange would); counts the connections it accepted.
fn one_shot_upstream(say_close: bool) -> (u16, Arc<AtomicU64>) {
    one_shot_upstream_with(say_close, None)
}

/// As [`one_shot_upstream`]; with `idle_close`, a connection that brings no request within
/// that time is closed unanswered (a server's own idle timeout).
fn one_shot_upstream_with(say_close: bool, idle_close: Option<Duration>) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_read_timeout(idle_close);
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            if got.is_empty() {
                continue; // idle: closed unanswered
            }
            let close = if say_close {
                "Connection: close\r\n"
            } else {
                ""
            };
            let _ = write!(s, "HTTP/1.1 200 OK\r\n{close}Content-Length: 2\r\n\r\nok");
        }
    });
    (port, accepted)
}

#[test]
fn a_server_closing_an_idle_keep_alive_connection_does_not_end_the_clients() {
    let (up, accepted) = one_shot_upstream(false);
    let gw = Gw::start(up, "", "", &[]);
    // (The start-up probe's connection had its own server connection.)
    std::thread::sleep(Duration::from_millis(200));
    let before = accepted.load(Ordering::SeqCst);
    let mut s = gw.connect();
    for round in 1..=3 {
        assert!(exchange(&mut s, GET).ends_with("ok"), "request {round}");
        // Let the server's close reach the gateway before the next request.
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst) - before,
        3,
        "one server connection per request"
    );

    // A server that closes a connection no request came over (the gateway opens it when the
    // client connects): the client's first request goes over a new one.
    let (up, accepted) = one_shot_upstream_with(false, Some(Duration::from_millis(150)));
    let gw = Gw::start(up, "", "", &[]);
    let mut s = gw.connect();
    std::thread::sleep(Duration::from_millis(500));
    let before = accepted.load(Ordering::SeqCst);
    assert!(exchange(&mut s, GET).ends_with("ok"));
    assert_eq!(accepted.load(Ordering::SeqCst) - before, 1);

    // A server that said it closes: the client's connection closes after that response.
    let (up, _) = one_shot_upstream(true);
    let gw = Gw::start(up, "", "", &[]);
    let mut s = gw.connect();
    s.write_all(GET).unwrap();
    let all = read_until_closed(&mut s);
    assert!(all.ends_with("ok"), "{all}");
    // A client that asked to close: likewise, whatever the server does.
    let (up, _) = one_shot_upstream(false);
    let gw = Gw::start(up, "", "", &[]);
    let mut s = gw.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let all = read_until_closed(&mut s);
    assert!(all.ends_with("ok"), "{all}");
}

/// Everything until the gateway closes the connection, which it must do within 3 s.
fn read_until_closed(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    let closed = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(closed.is_ok(), "still open after: {text}");
    text
}
