//! End-to-end tests: the real `stopgap` binary between real clients (curl, raw TCP) and real
//! servers (nginx, and a recording upstream that proves byte-exactness).
//!
//! nginx and curl must be installed (`scripts/test.sh` installs them from Debian packages).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stopgap_proto::http1::{parse_request_head, BodyDecoder, Limits};

mod support;
use support::{free_port, repo, wait_for_port, Nginx, Proc, TempDir};

struct Gateway {
    port: u16,
    audit: PathBuf,
    proc: Proc,
    _dir: TempDir,
}

impl Gateway {
    fn start(upstream: u16, patches: &Path) -> Self {
        Self::start_with(upstream, patches, &[])
    }

    fn start_with(upstream: u16, patches: &Path, extra: &[&str]) -> Self {
        let dir = TempDir::new("gw");
        let port = free_port();
        let audit = dir.0.join("audit.jsonl");
        let mut child = Command::new(env!("CARGO_BIN_EXE_stopgap"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                &format!("127.0.0.1:{upstream}"),
            ])
            .arg("--patches")
            .arg(patches)
            .arg("--audit-log")
            .arg(&audit)
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .args(["--admin", "off"])
            .args(extra)
            .env("STOPGAP_LOG", "warn")
            .spawn()
            .expect("start stopgap");
        wait_for_port(port, &mut child, "stopgap");
        Self {
            port,
            audit,
            proc: Proc(child),
            _dir: dir,
        }
    }

    fn audit_events(&self) -> Vec<serde_json::Value> {
        // The writer flushes when idle; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

fn library() -> PathBuf {
    repo().join("patches")
}

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is not installed: run scripts/test.sh");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[nl + 1..]).into_owned();
    body.truncate(nl);
    (code, body)
}

/// Reads HTTP responses from a stream until `count` complete ones have arrived or it closes.
fn read_responses(
    s: &mut TcpStream,
    count: usize,
    head_request: bool,
) -> (Vec<(u16, Vec<u8>)>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut closed = false;
    let limits = Limits::default();
    let mut chunk = [0u8; 65536];
    while out.len() < count {
        // Parse as many responses as the buffer holds.
        while let Ok(Some(head)) = stopgap_proto::http1::parse_response_head(&buf, &limits) {
            let framing = head.framing(head_request).unwrap();
            let mut body = Vec::new();
            let mut d = BodyDecoder::new(framing, &limits);
            let p = d
                .decode(&buf[head.raw().len()..], |b| body.extend_from_slice(b))
                .unwrap();
            if !p.done {
                break;
            }
            buf.drain(..head.raw().len() + p.consumed);
            if head.status >= 200 {
                out.push((head.status, body));
            }
        }
        if out.len() >= count {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    (out, closed)
}

fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// An upstream that records every byte per connection and answers each request with 200.
struct Recorder {
    port: u16,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let c = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let c = c.clone();
                std::thread::spawn(move || {
                    let idx = {
                        let mut all = c.lock().unwrap();
                        all.push(Vec::new());
                        all.len() - 1
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    let limits = Limits::default();
                    let mut n_req = 0;
                    loop {
                        let n = match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        c.lock().unwrap()[idx].extend_from_slice(&chunk[..n]);
                        buf.extend_from_slice(&chunk[..n]);
                        while let Ok(Some(head)) = parse_request_head(&buf, &limits) {
                            let Ok(framing) = head.framing() else { return };
                            let mut d = BodyDecoder::new(framing, &limits);
                            let Ok(p) = d.decode(&buf[head.raw().len()..], |_| {}) else {
                                return;
                            };
                            if !p.done {
                                break;
                            }
                            n_req += 1;
                            let body = format!("recorded request {n_req}\n");
                            let resp = format!("HTTP/1.1 200 OK\r\nX-Recorder: yes\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                            if s.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                            buf.drain(..head.raw().len() + p.consumed);
                        }
                    }
                });
            }
        });
        Self { port, conns }
    }

    fn received(&self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(100));
        self.conns.lock().unwrap().concat()
    }
}

#[path = "../../../tests/support/corpus.rs"]
mod corpus;

#[test]
fn benign_traffic_through_nginx_is_unchanged() {
    let nginx = Nginx::start();
    let gw = Gateway::start(nginx.port, &library());
    let via = |p: &str| format!("http://127.0.0.1:{}{p}", gw.port);
    let direct = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);

    let (code, body) = curl(&[&via("/index.html")]);
    assert_eq!(
        (code.as_str(), body.as_slice()),
        ("200", &b"<html>hello from nginx</html>\n"[..])
    );
    let (code, body) = curl(&["-I", &via("/index.html")]);
    assert_eq!(code, "200");
    assert!(String::from_utf8_lossy(&body).contains("Content-Length: 30"));

    // Keep-alive: two requests, one connection.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{num_connects}\n",
        ])
        .args([via("/index.html"), via("/index.html")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1\n0\n",
        "second request reused the connection"
    );

    // Pipelining: three requests written at once, three answers in order.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\nHEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (resps, _) = read_responses(&mut s, 2, false);
    assert_eq!(resps[0].0, 200);
    assert_eq!(resps[1].0, 404);

    // 10 MiB download, byte-exact.
    let (code, body) = curl(&[&via("/big.bin")]);
    assert_eq!(code, "200");
    assert!(
        body == std::fs::read(nginx.www.join("big.bin")).unwrap(),
        "download altered"
    );
    let (_, direct_body) = curl(&[&direct("/big.bin")]);
    assert_eq!(body.len(), direct_body.len());

    // 10 MiB chunked upload, stored by nginx byte-exact.
    let src = nginx.www.join("big.bin");
    let (code, _) = curl(&[
        "-T",
        src.to_str().unwrap(),
        "-H",
        "Transfer-Encoding: chunked",
        &via("/upload/copy.bin"),
    ]);
    assert_eq!(code, "201");
    assert!(
        std::fs::read(nginx.www.join("upload/copy.bin")).unwrap() == std::fs::read(&src).unwrap(),
        "upload altered"
    );

    // Streaming, not buffering: the gateway's peak RSS stays far below the body sizes.
    let peak = gw.peak_rss_kib();
    println!("gateway peak RSS after 10 MiB download and upload: {peak} KiB");
    assert!(
        peak < 40 * 1024,
        "peak RSS {peak} KiB during 10 MiB transfers (bound: 40 MiB)"
    );
}

#[test]
fn every_shipped_exploit_is_refused_and_the_connection_goes_on() {
    let nginx = Nginx::start();
    // nginx is not the product of most patches: pin them all on it, as an operator would to
    // test the library against one server.
    let dir = TempDir::new("pin-all");
    let inventory = dir.0.join("assets.toml");
    std::fs::write(
        &inventory,
        format!(
            "[[asset]]\naddress = \"127.0.0.1:{}\"\nproduct = \"f5:nginx\"\npin = [\"*\"]\n",
            nginx.port
        ),
    )
    .unwrap();
    let inventory = inventory.display().to_string();
    let gw = Gateway::start_with(nginx.port, &library(), &["--assets", &inventory]);
    let patches: Vec<_> = stopgap_patch::load_dir(&library())
        .unwrap()
        .into_iter()
        .filter(|p| p.protocol == stopgap_patch::Protocol::Http)
        .collect();
    for p in &patches {
        for v in p.vectors.iter().filter(|v| v.expect_match) {
            let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
            s.write_all(&v.request).unwrap();
            let text = String::from_utf8_lossy(&v.request).to_ascii_lowercase();
            let http10 = text.lines().next().is_some_and(|l| l.ends_with("http/1.0"));
            let closes = text.contains("connection: close")
                || (http10 && !text.contains("connection: keep-alive"));
            if !closes {
                s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
            }
            let (resps, _) = read_responses(&mut s, if closes { 1 } else { 2 }, false);
            // The patch's own answer, or another patch's that refused first: a 4xx either way.
            assert!(
                (400..500).contains(&resps[0].0),
                "{} {}: {}",
                p.id,
                v.source,
                resps[0].0
            );
            if closes {
                assert!(is_closed(&mut s));
            } else {
                assert_eq!(
                    resps.get(1).map(|r| r.0),
                    Some(200),
                    "{} {}: next request not served",
                    p.id,
                    v.source
                );
            }
        }
    }
    let events = gw.audit_events();
    for p in &patches {
        assert!(
            events.iter().any(|e| e["patch"] == p.id.as_str()
                && (e["outcome"] == "rejected" || e["outcome"] == "also_matched")),
            "no audit event for {}",
            p.id
        );
    }
    let e = events
        .iter()
        .find(|e| e["patch"] == "SG-2015-1635")
        .unwrap();
    for key in [
        "ts", "event", "flow", "client", "upstream", "method", "uri", "cve", "action", "mode",
        "field", "excerpt", "status",
    ] {
        assert!(!e[key].is_null(), "audit event lacks {key}: {e}");
    }
}

/// An inventory entry by listener name speaks of that listener's upstream: its pins hold after
/// the server's own banner has been seen; a name that is no listener stops the start.
#[test]
fn inventory_entries_by_listener_name_apply_to_its_upstream() {
    let nginx = Nginx::start();
    let dir = TempDir::new("by-listener");
    let inventory = dir.0.join("assets.toml");
    // The quick form's listener is named "quick".
    std::fs::write(
        &inventory,
        "[[asset]]\nlistener = \"quick\"\nproduct = \"f5:nginx\"\npin = [\"SG-2015-1635\"]\n",
    )
    .unwrap();
    let inventory_arg = inventory.display().to_string();
    let gw = Gateway::start_with(nginx.port, &library(), &["--assets", &inventory_arg]);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    // A benign request first: nginx's Server header makes the server's product known.
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-18446744073709551615\r\n\r\n")
        .unwrap();
    let (resps, _) = read_responses(&mut s, 2, false);
    assert_eq!(resps[0].0, 200);
    assert_eq!(
        resps[1].0, 400,
        "the IIS patch pinned on this listener's server"
    );

    std::fs::write(
        &inventory,
        "[[asset]]\nlistener = \"nope\"\nproduct = \"f5:nginx\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--upstream",
            "127.0.0.1:2",
        ])
        .arg("--patches")
        .arg(library())
        .args(["--assets", &inventory_arg, "--admin", "off"])
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no [[listener]] named nope"), "{err}");
}

#[test]
fn public_corpus_through_the_real_gateway() {
    let rec = Recorder::start();
    let gw = Gateway::start(rec.port, &library());
    let mut table = std::collections::BTreeMap::<String, (u32, u32)>::new();
    let mut failures = Vec::new();
    for r in corpus::http_records(&repo()) {
        let bytes = r.client_bytes();
        let before = rec.received().len();
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(&bytes).unwrap();
        let (resps, _) = read_responses(&mut s, 1, false);
        let status = resps.first().map_or(0, |r| r.0);
        let seen = rec.received()[before..].to_vec();
        let ok = match r.expect.as_str() {
            "pass" => seen == bytes && status == 200 && resps[0].1.starts_with(b"recorded request"),
            "neutralize" => {
                !corpus::contains(&seen, corpus::first_request(&bytes))
                    && (400..500).contains(&status)
            }
            "reject" => {
                let head_end = bytes
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |i| i + 4);
                let status_ok = status == 400 || (status == 501 && r.notes.contains("501"));
                status_ok && seen.len() <= head_end && is_closed(&mut s)
            }
            other => panic!("unknown expect {other}"),
        };
        let entry = table
            .entry(format!("{} / {}", r.kind, r.expect))
            .or_default();
        entry.1 += 1;
        entry.0 += u32::from(ok);
        if !ok {
            failures.push(format!(
                "{} ({}): expect {}, got status {status}, upstream saw {:?}",
                r.id,
                r.kind,
                r.expect,
                String::from_utf8_lossy(&seen)
            ));
        }
    }
    // The score table, then the verdict: every record must meet its expectation.
    println!("{:<24} {:>9}", "kind / expect", "score");
    let (mut ok_all, mut total_all) = (0, 0);
    for (kind, (ok, total)) in &table {
        println!("{kind:<24} {:>9}", format!("{ok}/{total}"));
        ok_all += ok;
        total_all += total;
    }
    println!("{:<24} {:>9}", "all", format!("{ok_all}/{total_all}"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn recording_upstream_sees_exact_bytes_and_client_sees_exact_responses() {
    let rec = Recorder::start();
    let gw = Gateway::start(rec.port, &library());
    let sent = b"GET /a?x=1 HTTP/1.1\r\nhost: X\r\nX-CaSe:   spaced value  \r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;name=\"v a\"\r\nabcd\r\n0\r\nX-Trailer: t\r\n\r\n\
PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz";
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(sent).unwrap();
    let (resps, _) = read_responses(&mut s, 3, false);
    assert_eq!(resps.len(), 3);
    assert_eq!(resps[2].1, b"recorded request 3\n");
    assert_eq!(rec.received(), sent.to_vec());
}

#[test]
fn monitor_mode_changes_nothing_and_logs() {
    let dir = TempDir::new("monitor");
    let src = std::fs::read_to_string(library().join("SG-2015-1635-httpsys-range.toml")).unwrap();
    std::fs::write(
        dir.0.join("p.toml"),
        src.replace("mode = \"enforce\"", "mode = \"monitor\""),
    )
    .unwrap();
    let rec = Recorder::start();
    let gw = Gateway::start(rec.port, &dir.0);
    let exploit = b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-18446744073709551615\r\n\r\n";
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(exploit).unwrap();
    let (resps, _) = read_responses(&mut s, 1, false);
    assert_eq!(resps[0].0, 200);
    assert_eq!(rec.received(), exploit.to_vec());
    let events = gw.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["outcome"] == "would_reject" && e["mode"] == "monitor"),
        "{events:?}"
    );
}

#[test]
fn dead_upstream_gives_502_and_the_gateway_keeps_serving() {
    let dead = free_port();
    let gw = Gateway::start(dead, &library());
    for _ in 0..2 {
        let (code, _) = curl(&[&format!("http://127.0.0.1:{}/", gw.port)]);
        assert_eq!(code, "502");
    }
    assert!(gw
        .audit_events()
        .iter()
        .any(|e| e["event"] == "upstream_error"));
}

#[test]
fn check_prints_located_errors_and_fails() {
    let dir = TempDir::new("check");
    let good = std::fs::read_to_string(library().join("SG-2015-1635-httpsys-range.toml")).unwrap();
    std::fs::write(
        dir.0.join("a.toml"),
        good.replace(
            "http.request.header(\"range\") ~",
            "http.request.header(\"range\") ~~",
        ),
    )
    .unwrap();
    std::fs::write(dir.0.join("b.toml"), "id = \"SG-1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["check", "--patches"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let a = dir.0.join("a.toml");
    assert!(
        err.contains(&format!("{}:", a.display())) && err.contains(": error: "),
        "{err}"
    );
    assert!(err.contains("b.toml:"), "all files reported: {err}");
    let ok = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["check", "--patches"])
        .arg(library())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn busy_port_and_bad_flags_fail_with_one_clear_line() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            "127.0.0.1:9",
            "--patches",
        ])
        .arg(library())
        .env("STOPGAP_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["serve", "--listen", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nonsense'"));

    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--patches",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read patch directory"));
}

#[test]
fn demo_runs_its_tour_and_reports_every_vector() {
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["demo", "--once", "--listen", "127.0.0.1:0"])
        .current_dir(repo())
        .env("STOPGAP_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("refused: HTTP/1.1 400 Bad Request"), "{text}");
    assert!(
        text.contains("passed byte-for-byte: HTTP/1.1 200 OK"),
        "{text}"
    );
    assert!(
        !text.contains("NOT REFUSED") && !text.contains("ALTERED"),
        "{text}"
    );
}

#[test]
fn patch_test_replays_vectors_and_fails_on_a_bad_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["patch", "test", "SG-2021-44228", "--patches"])
        .arg(library())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text
        .lines()
        .filter(|l| l.starts_with("SG-2021-44228"))
        .all(|l| l.contains(" PASS ")));
    assert!(text.contains("0 failed"), "{text}");

    // A patch file whose condition also catches its own benign vector fails, by line.
    let dir = TempDir::new("patchtest");
    let src = std::fs::read_to_string(library().join("SG-2015-1635-httpsys-range.toml")).unwrap();
    let broken = src.replace(r#"r"[1-9][0-9]{18,}""#, r#"r"[0-9]""#);
    assert_ne!(src, broken);
    let file = dir.0.join("too-broad.toml");
    std::fs::write(&file, broken).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["patch", "test"])
        .arg(&file)
        .arg("--patches")
        .arg(library())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = text
        .lines()
        .find(|l| l.contains(" FAIL "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        fail.contains("benign") && fail.contains("answered 400"),
        "{fail}"
    );
}

/// A stand-in FTP or SMTP upstream that records every byte it receives per connection and
/// answers like a server of its protocol (stopgap_engine::replay's stand-ins, over TCP). It
/// closes when the gateway closes its side.
fn line_upstream(smtp: bool) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let conns: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let c = conns.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let idx = {
                    let mut all = c.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let mut smtp_server = stopgap_engine::replay::SmtpStandIn::default();
                let greeting: &[u8] = if smtp {
                    stopgap_engine::replay::SmtpStandIn::GREETING
                } else {
                    b"220 stand-in FTP server ready.\r\n"
                };
                if s.write_all(greeting).is_err() {
                    return;
                }
                let mut line = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    let n = match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    c.lock().unwrap()[idx].extend_from_slice(&chunk[..n]);
                    let mut replies = Vec::new();
                    if smtp {
                        smtp_server.feed(&chunk[..n], &mut replies);
                    } else {
                        for &b in &chunk[..n] {
                            line.push(b);
                            if b == b'\n' {
                                replies
                                    .extend_from_slice(stopgap_engine::replay::ftp_answer(&line));
                                line.clear();
                            }
                        }
                    }
                    if s.write_all(&replies).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, conns)
}

#[test]
fn ftp_and_smtp_corpus_through_the_real_gateway() {
    let mut table = std::collections::BTreeMap::<String, (u32, u32)>::new();
    let mut failures = Vec::new();
    for (protocol, smtp) in [("ftp", false), ("smtp", true)] {
        let (up, conns) = line_upstream(smtp);
        let dir = TempDir::new(protocol);
        let port = free_port();
        let audit = dir.0.join("audit.jsonl");
        let mut child = Command::new(env!("CARGO_BIN_EXE_stopgap"))
            .args(["serve", "--protocol", protocol])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &format!("127.0.0.1:{up}")])
            .arg("--patches")
            .arg(library())
            .args(["--admin", "off", "--state-dir"])
            .arg(dir.0.join("state"))
            .arg("--audit-log")
            .arg(&audit)
            .env("STOPGAP_LOG", "warn")
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "stopgap");
        let _gw = Proc(child);
        for r in corpus::records(&repo(), protocol) {
            let bytes = r.client_bytes();
            let before_conns = conns.lock().unwrap().len();
            let events_before = std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .lines()
                .count();
            // The whole client side at once (pipelined), then end of input: the gateway
            // answers every command in order and closes when the server has.
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(&bytes).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut replies = Vec::new();
            let _ = s.read_to_end(&mut replies);
            std::thread::sleep(Duration::from_millis(200));
            let seen = conns
                .lock()
                .unwrap()
                .get(before_conns)
                .cloned()
                .unwrap_or_default();
            let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .lines()
                .skip(events_before)
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let refused = events.iter().any(|e| {
                (e["event"] == "patch_match" && e["outcome"] == "rejected")
                    || e["event"] == "protocol_violation"
            });
            let ok = match r.expect.as_str() {
                "pass" => seen == bytes && !refused,
                "neutralize" => refused && seen != bytes,
                other => panic!("unknown expect {other}"),
            };
            let entry = table
                .entry(format!("{protocol} {} / {}", r.kind, r.expect))
                .or_default();
            entry.1 += 1;
            entry.0 += u32::from(ok);
            if !ok {
                failures.push(format!(
                    "{}: expect {}, upstream saw {:?}, client got {:?}",
                    r.id,
                    r.expect,
                    String::from_utf8_lossy(&seen),
                    String::from_utf8_lossy(&replies)
                ));
            }
        }
    }
    println!("{:<28} {:>9}", "protocol kind / expect", "score");
    for (kind, (ok, total)) in &table {
        println!("{kind:<28} {:>9}", format!("{ok}/{total}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A patch file for `product` with `range`, refusing requests to `/asset-probe`.
fn targeted_patch(id: &str, product: &str, range: &str) -> String {
    targeted_patch_at(id, product, range, "/asset-probe")
}

/// A patch file for `product` with `range`, refusing requests to `path`.
fn targeted_patch_at(id: &str, product: &str, range: &str, path: &str) -> String {
    format!(
        r#"id = "{id}"
title = "test: targeted at {product} {range}"
cve = ["CVE-2099-0001"]
severity = "low"
protocol = "http"
[applies]
product = "{product}"
versions = "{range}"
[rule]
when = 'http.request.path starts_with "{path}"'
action = "reject"
status = 403
[[vector]]
kind = "exploit"
request = "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"
source = "test"
[[vector]]
kind = "benign"
request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
source = "test"
"#
    )
}

fn get_status(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let (resps, _) = read_responses(&mut s, 1, false);
    resps[0].0
}

#[test]
fn patches_apply_only_to_the_product_and_versions_the_server_runs() {
    let nginx = Nginx::start();
    let dir = TempDir::new("assets-nginx");
    let patches = dir.0.join("patches");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(
        patches.join("a.toml"),
        targeted_patch("SG-2099-0001", "apache:http_server", "*"),
    )
    .unwrap();
    std::fs::write(
        patches.join("b.toml"),
        targeted_patch("SG-2099-0002", "nginx:nginx", ">= 1.0"),
    )
    .unwrap();
    std::fs::write(
        patches.join("c.toml"),
        targeted_patch("SG-2099-0003", "f5:nginx", "< 1.3.0"),
    )
    .unwrap();
    let gw = Gateway::start(nginx.port, &patches);
    // The first answer tells the gateway what the server is (its Server header).
    assert_eq!(get_status(gw.port, "/index.html"), 200);
    // SG-2099-0001 is for Apache: its exploit passes to nginx (which has no such page).
    assert_eq!(get_status(gw.port, "/apache-probe"), 404);
    // nginx runs a version in SG-2099-0002's range: applied. SG-2099-0003 is for nginx
    // before 1.3: retired, only logged.
    assert_eq!(get_status(gw.port, "/asset-probe"), 403);
    let events = gw.audit_events();
    let outcome = |id: &str| {
        events
            .iter()
            .filter(|e| e["patch"] == id && e["event"] == "patch_match")
            .map(|e| e["outcome"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(outcome("SG-2099-0002"), ["rejected"]);
    assert_eq!(outcome("SG-2099-0001"), ["skipped_asset"]);
    assert_eq!(outcome("SG-2099-0003"), ["skipped_retired"]);
    let retired: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "asset" && e["patch"] == "SG-2099-0003")
        .collect();
    assert_eq!(retired.len(), 1, "{events:?}");
    assert_eq!(retired[0]["new_state"], "retired");
    assert!(
        retired[0]["detail"]
            .as_str()
            .unwrap()
            .contains("vendor fix observed: f5:nginx 1."),
        "{}",
        retired[0]
    );
}

/// An upstream whose `Server` header is whatever the shared cell says.
fn banner_upstream(banner: Arc<Mutex<String>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let banner = banner.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Ok(Some(head)) = parse_request_head(&buf, &Limits::default()) {
                        let n = head.raw().len();
                        buf.drain(..n);
                        let server = banner.lock().unwrap().clone();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nServer: {server}\r\nContent-Length: 2\r\n\r\nok"
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                        continue;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_server_upgrade_retires_the_patch_and_a_rollback_reengages_it() {
    let banner = Arc::new(Mutex::new("Apache/2.4.49 (Unix)".to_string()));
    let up = banner_upstream(banner.clone());
    let gw = Gateway::start(up, &library());
    let exploit = "/icons/.%2e/%2e%2e/%2e%2e/etc/passwd";
    assert_eq!(get_status(gw.port, "/"), 200);
    assert_eq!(
        get_status(gw.port, exploit),
        400,
        "2.4.49: SG-2021-41773 in force"
    );
    *banner.lock().unwrap() = "Apache/2.4.51 (Unix)".into();
    assert_eq!(get_status(gw.port, "/"), 200);
    assert_eq!(
        get_status(gw.port, exploit),
        200,
        "2.4.51: the vendor fix is in, patch retired"
    );
    *banner.lock().unwrap() = "Apache/2.4.49 (Unix)".into();
    assert_eq!(get_status(gw.port, "/"), 200);
    assert_eq!(get_status(gw.port, exploit), 400, "rolled back: re-engaged");
    let events = gw.audit_events();
    let changes: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "asset" && e["patch"] == "SG-2021-41773")
        .map(|e| {
            (
                e["new_state"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].0, "retired");
    assert!(
        changes[0]
            .1
            .contains("vendor fix observed: apache:http_server 2.4.51"),
        "{}",
        changes[0].1
    );
    assert_eq!(changes[1].0, "applied");
}
