//! End-to-end tests of live patch control: the real `stopgap` binary, its admin API and CLI,
//! real keep-alive clients, a real upstream, signals and `kill -9`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stopgap_control::client::AdminClient;
use stopgap_proto::http1::{parse_request_head, parse_response_head, BodyDecoder, Limits};

mod support;
use support::{free_port, repo, wait_for_port, Nginx, Proc, TempDir};

const EXPLOIT: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nRange: bytes=0-18446744073709551615\r\n\r\n";
const BENIGN: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\n\r\n";

/// An upstream that answers every request with which probe headers reached it
/// (`a=1 b=0` …); `/slow` answers after 700 ms.
struct Upstream {
    port: u16,
    requests: Arc<AtomicU64>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let count = count.clone();
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
                            count.fetch_add(1, Ordering::SeqCst);
                            let has = |n: &str| u8::from(head.header_values(n).next().is_some());
                            let body = format!("a={} b={}", has("x-probe-a"), has("x-probe-b"));
                            if head.target() == b"/slow" {
                                std::thread::sleep(Duration::from_millis(700));
                            }
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nServer: Microsoft-IIS/8.5\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                            buf.drain(..head.raw().len() + p.consumed);
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Self { port, requests }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A gateway with its admin API on a free port and its own state directory.
struct Gw {
    port: u16,
    admin: u16,
    dir: PathBuf,
    patches: PathBuf,
    proc: Proc,
}

impl Gw {
    fn start(upstream: u16, patches: &Path, dir: &Path) -> Self {
        let port = free_port();
        let admin = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stopgap"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &format!("127.0.0.1:{upstream}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--patches")
            .arg(patches)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--audit-log")
            .arg(dir.join("audit.jsonl"))
            .env("STOPGAP_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "stopgap");
        wait_for_port(admin, &mut child, "stopgap admin API");
        Self {
            port,
            admin,
            dir: dir.to_path_buf(),
            patches: patches.to_path_buf(),
            proc: Proc(child),
        }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("state/admin.token")
    }

    fn api(&self) -> AdminClient {
        let token = std::fs::read_to_string(self.token_file()).unwrap();
        AdminClient::new(
            &format!("127.0.0.1:{}", self.admin),
            Some(token.trim().into()),
        )
        .unwrap()
    }

    fn set(&self, verb: &str, ids: &[&str]) {
        let r = self
            .api()
            .post(&format!("/v1/patches/{verb}"), &json!({ "ids": ids }))
            .unwrap();
        assert_eq!(r.status, 200, "{verb} {ids:?}: {}", r.body);
    }

    /// Runs the CLI against this gateway.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stopgap"))
            .args(args)
            .args(["--admin", &format!("http://127.0.0.1:{}", self.admin)])
            .arg("--token-file")
            .arg(self.token_file())
            .output()
            .unwrap()
    }

    fn state_of(&self, id: &str) -> String {
        let r = self.api().get("/v1/patches").unwrap();
        r.body["patches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["state"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {id} in {}", r.body))
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

/// Reads one response (status, body) from a keep-alive stream; `buf` keeps leftovers.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    let limits = Limits::default();
    let mut chunk = [0u8; 16384];
    loop {
        if let Ok(Some(head)) = parse_response_head(buf, &limits) {
            let mut d = BodyDecoder::new(head.framing(false).unwrap(), &limits);
            let mut body = Vec::new();
            let p = d
                .decode(&buf[head.raw().len()..], |b| body.extend_from_slice(b))
                .map_err(|e| std::io::Error::other(format!("mis-framed response: {e}")))?;
            if p.done {
                let status = head.status;
                buf.drain(..head.raw().len() + p.consumed);
                return Ok((status, body));
            }
        }
        match s.read(&mut chunk)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn exchange(s: &mut TcpStream, buf: &mut Vec<u8>, req: &[u8]) -> (u16, Vec<u8>) {
    s.write_all(req).unwrap();
    read_response(s, buf).unwrap()
}

fn library_copy(dir: &TempDir) -> PathBuf {
    let p = dir.0.join("patches");
    std::fs::create_dir_all(&p).unwrap();
    for e in std::fs::read_dir(repo().join("patches")).unwrap() {
        let e = e.unwrap().path();
        std::fs::copy(&e, p.join(e.file_name().unwrap())).unwrap();
    }
    p
}

fn strip_patch(id: &str, header: &str) -> String {
    format!(
        r#"id = "{id}"
title = "test: strip {header}"
cve = ["CVE-2099-0001"]
severity = "low"
protocol = "http"
[applies]
product = "microsoft:iis"
versions = "*"
[rule]
when = 'exists(http.request.header("{header}"))'
action = "strip"
target = 'http.request.header("{header}")'
mode = "enforce"
[[vector]]
kind = "exploit"
request = "GET / HTTP/1.1\r\nHost: t\r\n{header}: 1\r\n\r\n"
source = "test"
"#
    )
}

#[test]
fn toggling_under_load_never_breaks_or_mixes_a_request() {
    let dir = TempDir::new("toggle");
    let patches = dir.0.join("patches");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(
        patches.join("a.toml"),
        strip_patch("SG-9000-0001", "x-probe-a"),
    )
    .unwrap();
    std::fs::write(
        patches.join("b.toml"),
        strip_patch("SG-9000-0002", "x-probe-b"),
    )
    .unwrap();
    let up = Upstream::start();
    let gw = Gw::start(up.port, &patches, &dir.0);

    let stop = Arc::new(AtomicBool::new(false));
    let (both_applied, none_applied) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, both, none) = (stop.clone(), both_applied.clone(), none_applied.clone());
            let mut s = gw.connect();
            std::thread::spawn(move || -> Result<u64, String> {
                let mut buf = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    s.write_all(
                        b"GET /probe HTTP/1.1\r\nHost: t\r\nX-Probe-A: 1\r\nX-Probe-B: 1\r\n\r\n",
                    )
                    .map_err(|e| format!("write after {n} requests: {e}"))?;
                    let (status, body) = read_response(&mut s, &mut buf)
                        .map_err(|e| format!("read after {n} requests: {e}"))?;
                    match (status, body.as_slice()) {
                        (200, b"a=0 b=0") => both.fetch_add(1, Ordering::Relaxed),
                        (200, b"a=1 b=1") => none.fetch_add(1, Ordering::Relaxed),
                        _ => {
                            return Err(format!(
                                "request {n}: {status} {:?} mixes two patch sets or failed",
                                String::from_utf8_lossy(&body)
                            ))
                        }
                    };
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let ids = ["SG-9000-0001", "SG-9000-0002"];
    for _ in 0..200 {
        gw.set("unapply", &ids);
        gw.set("apply", &ids);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let (both, none) = (
        both_applied.load(Ordering::Relaxed),
        none_applied.load(Ordering::Relaxed),
    );
    eprintln!("{total} requests during 200 cycles: {both} with both patches, {none} with neither");
    assert!(
        both > 0 && none > 0,
        "the clients saw both sets ({both}, {none})"
    );
    let generation = gw.api().get("/v1/health").unwrap().body["generation"].clone();
    assert_eq!(generation, 401, "one generation per change");
    let changes = gw
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "patch_state" && e["result"] == "ok")
        .count();
    assert_eq!(
        changes, 800,
        "every change of every patch is in the audit log"
    );
}

#[test]
fn apply_takes_effect_on_the_next_request_of_an_open_connection() {
    let dir = TempDir::new("next");
    let patches = library_copy(&dir);
    let up = Upstream::start();
    let gw = Gw::start(up.port, &patches, &dir.0);
    gw.set("unapply", &["SG-2015-1635"]);
    let mut s = gw.connect();
    let mut buf = Vec::new();
    assert_eq!(
        exchange(&mut s, &mut buf, EXPLOIT).0,
        200,
        "unapplied: passes"
    );
    let out = gw.cli(&["patches", "apply", "SG-2015-1635"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unapplied -> applied"));
    assert_eq!(
        exchange(&mut s, &mut buf, EXPLOIT).0,
        400,
        "same connection, now refused"
    );
    assert_eq!(
        exchange(&mut s, &mut buf, BENIGN).0,
        200,
        "and the session goes on"
    );
    gw.set("monitor", &["SG-2015-1635"]);
    assert_eq!(
        exchange(&mut s, &mut buf, EXPLOIT).0,
        200,
        "monitor: passes, logged"
    );

    let list = gw.cli(&["patches", "list", "--json"]);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    let p = v["patches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "SG-2015-1635")
        .unwrap()
        .clone();
    assert_eq!(p["state"], "monitor");
    assert_eq!(p["cve"], json!(["CVE-2015-1635"]));
    assert_eq!(
        (p["hits_enforced"].as_u64(), p["hits_monitored"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(p["last_hit"].is_string());
    let table = String::from_utf8_lossy(&gw.cli(&["patches", "list"]).stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("SG-2015-1635") && l.contains("monitor")),
        "{table}"
    );

    let metrics = gw.api().get("/metrics").unwrap().body;
    let metrics = metrics.as_str().unwrap();
    for needle in [
        "stopgap_requests_total{listener=\"quick\"} 4",
        "stopgap_verdicts_total{patch=\"SG-2015-1635\",action=\"reject\",outcome=\"rejected\"} 1",
        "stopgap_verdicts_total{patch=\"SG-2015-1635\",action=\"reject\",outcome=\"would_reject\"} 1",
        "stopgap_patch_generation 4",
        "stopgap_connections_active{listener=\"quick\"} 1",
        "stopgap_added_latency_seconds_count{listener=\"quick\"} 3",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // What the server is, as learnt from its Server header, and what it means per patch.
    let assets = gw.api().get("/v1/assets").unwrap().body;
    let server = &assets["assets"][0];
    assert_eq!(server["product"], "microsoft:internet_information_services");
    assert_eq!(server["version"], "8.5");
    let decision = |id: &str| {
        server["patches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == id)
            .map(|p| p[1]["decision"].clone())
            .unwrap()
    };
    assert_eq!(decision("SG-2015-1635"), "apply");
    assert_eq!(decision("SG-2021-41773"), "skip");
    let out = gw.cli(&["assets"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("microsoft:internet_information_services 8.5"),
        "{text}"
    );
    assert!(
        text.contains("SG-2021-41773") && text.contains("skip"),
        "{text}"
    );

    let bans = String::from_utf8_lossy(&gw.cli(&["bans"]).stdout).into_owned();
    assert!(
        bans.starts_with("escalation off") && bans.contains("no source banned"),
        "{bans}"
    );

    let events = gw.api().get("/v1/audit?limit=5").unwrap().body;
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "would_reject", "{events}");
}

#[test]
fn calls_without_the_right_token_are_refused_logged_and_change_nothing() {
    let dir = TempDir::new("auth");
    let patches = library_copy(&dir);
    let up = Upstream::start();
    let gw = Gw::start(up.port, &patches, &dir.0);
    let addr = format!("127.0.0.1:{}", gw.admin);
    let body = json!({ "ids": ["SG-2015-1635"] });
    let anonymous = AdminClient::new(&addr, None).unwrap();
    let r = anonymous.post("/v1/patches/unapply", &body).unwrap();
    assert_eq!(r.status, 401);
    assert!(r.error_message().contains("missing token"));
    let wrong = AdminClient::new(&addr, Some("0".repeat(64))).unwrap();
    assert_eq!(
        wrong.post("/v1/patches/unapply", &body).unwrap().status,
        401
    );
    assert_eq!(wrong.post("/v1/reload", &json!({})).unwrap().status, 401);
    assert_eq!(gw.state_of("SG-2015-1635"), "applied", "state unchanged");
    // Reads are open on loopback.
    assert_eq!(anonymous.get("/v1/patches").unwrap().status, 200);
    let refused: Vec<Value> = gw
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "admin_unauthorized")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(
        refused[0]["detail"],
        "POST /v1/patches/unapply: missing token"
    );
    assert_eq!(
        refused[1]["detail"],
        "POST /v1/patches/unapply: wrong token"
    );
    assert!(refused[0]["remote"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));

    let bad = dir.0.join("bad.token");
    std::fs::write(&bad, "nope\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["patches", "unapply", "SG-2015-1635", "--admin", &addr])
        .arg("--token-file")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong token"));
    // Unknown ids: 404, nothing changed.
    let out = gw.cli(&["patches", "unapply", "SG-2015-1635", "SG-0000-0000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown patch id(s): SG-0000-0000"));
    assert_eq!(gw.state_of("SG-2015-1635"), "applied");
}

#[test]
fn states_survive_kill_9_and_a_broken_reload_keeps_the_old_snapshot() {
    let dir = TempDir::new("persist");
    let patches = library_copy(&dir);
    let up = Upstream::start();
    let mut gw = Gw::start(up.port, &patches, &dir.0);
    gw.set("unapply", &["SG-2015-1635"]);
    gw.set("monitor", &["SG-2021-44228"]);
    gw.proc.0.kill().unwrap(); // SIGKILL
    gw.proc.0.wait().unwrap();
    let gw = Gw::start(up.port, &gw.patches, &dir.0);
    assert_eq!(gw.state_of("SG-2015-1635"), "unapplied");
    assert_eq!(gw.state_of("SG-2021-44228"), "monitor");
    assert_eq!(gw.state_of("SG-2014-6271"), "applied");
    let mut s = gw.connect();
    let mut buf = Vec::new();
    assert_eq!(
        exchange(&mut s, &mut buf, EXPLOIT).0,
        200,
        "still unapplied"
    );

    // A broken patch file: reload refused with the located error, old snapshot in force.
    gw.set("apply", &["SG-2015-1635"]);
    std::fs::write(
        patches.join("SG-2099-0001-broken.toml"),
        strip_patch("SG-2099-0001", "x-probe-a").replace("\"low\"", "\"huge\""),
    )
    .unwrap();
    let out = gw.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("SG-2099-0001-broken.toml:4:"), "{err}");
    let status = String::from_utf8_lossy(&gw.cli(&["status"]).stdout).into_owned();
    assert!(status.contains("FAILED"), "{status}");
    assert!(status.contains("SG-2099-0001-broken.toml:4:"), "{status}");
    assert_eq!(
        exchange(&mut s, &mut buf, EXPLOIT).0,
        400,
        "old snapshot still enforced"
    );
    let r = gw.api().get("/v1/status").unwrap().body;
    assert_eq!(r["last_reload"]["ok"], false);
    assert_eq!(
        r["generation"], 2,
        "restart: 1; apply: 2; the failed reload: no new one"
    );

    // Fixed, and reloaded by SIGHUP: the new patch appears, the states stay.
    std::fs::write(
        patches.join("SG-2099-0001-broken.toml"),
        strip_patch("SG-2099-0001", "x-probe-a"),
    )
    .unwrap();
    let pid = gw.proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    while gw.api().get("/v1/health").unwrap().body["generation"] != 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gw.state_of("SG-2099-0001"), "applied");
    assert_eq!(gw.state_of("SG-2021-44228"), "monitor");
    let (_, body) = exchange(
        &mut s,
        &mut buf,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Probe-A: 1\r\n\r\n",
    );
    assert_eq!(
        body, b"a=0 b=0",
        "the reloaded patch is in force on the open connection"
    );

    // A hand-broken state file stops a restart with its location; nothing is un-applied.
    drop(gw);
    let state = dir.0.join("state/state.toml");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("\"monitor\"", "\"monitr\"")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--upstream",
            &format!("127.0.0.1:{}", up.port),
            "--admin",
            "off",
        ])
        .arg("--patches")
        .arg(&patches)
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.toml:") && err.contains("`monitr` is not a patch state"),
        "{err}"
    );
}

#[test]
fn the_cli_finds_a_default_gateway_and_a_second_one_keeps_serving() {
    let dir = TempDir::new("default");
    let patches = library_copy(&dir);
    let up = Upstream::start();
    let port = free_port();
    let state = dir.0.join("default-state");
    let serve = |port: u16, state: &Path, log: &Path| {
        Command::new(env!("CARGO_BIN_EXE_stopgap"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &format!("127.0.0.1:{}", up.port)])
            .arg("--patches")
            .arg(&patches)
            .env("STOPGAP_STATE_DIR", state)
            .env("STOPGAP_LOG", "info")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let mut first = Proc(serve(port, &state, &dir.0.join("first.log")));
    wait_for_port(port, &mut first.0, "stopgap");
    wait_for_port(
        9190,
        &mut first.0,
        "stopgap admin API on its default address",
    );
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stopgap"))
            .args(args)
            .env("STOPGAP_STATE_DIR", &state)
            .env_remove("STOPGAP_ADMIN")
            .output()
            .unwrap()
    };
    let out = cli(&["patches", "unapply", "SG-2015-1635"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unapplied"], 1);

    // A second gateway: its default admin port is taken. It serves, and says so once.
    let port2 = free_port();
    let log2 = dir.0.join("second.log");
    let mut second = Proc(serve(port2, &dir.0.join("second-state"), &log2));
    wait_for_port(port2, &mut second.0, "second stopgap");
    let mut s = TcpStream::connect(("127.0.0.1", port2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    assert_eq!(exchange(&mut s, &mut buf, EXPLOIT).0, 400);
    assert_eq!(exchange(&mut s, &mut buf, BENIGN).0, 200);
    let start = Instant::now();
    let mut text = String::new();
    while !text.contains("admin API off") && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        text = std::fs::read_to_string(&log2).unwrap();
    }
    // More traffic does not repeat the message.
    assert_eq!(exchange(&mut s, &mut buf, BENIGN).0, 200);
    std::thread::sleep(Duration::from_millis(100));
    let text = std::fs::read_to_string(&log2).unwrap();
    assert_eq!(text.matches("admin API off").count(), 1, "{text}");
    assert!(
        text.contains("127.0.0.1:9190") && text.contains("--admin ADDR"),
        "{text}"
    );
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let dir = TempDir::new("term");
    let patches = library_copy(&dir);
    let up = Upstream::start();
    let mut gw = Gw::start(up.port, &patches, &dir.0);
    let mut s = gw.connect();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let pid = gw.proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut buf = Vec::new();
    let (status, body) = read_response(&mut s, &mut buf).unwrap();
    assert_eq!((status, body.as_slice()), (200, b"a=0 b=0".as_slice()));
    let exit = gw.proc.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(
        TcpStream::connect(("127.0.0.1", gw.port)).is_err(),
        "no longer accepting"
    );
    let stopped = gw
        .audit()
        .into_iter()
        .any(|e| e["event"] == "lifecycle" && e["detail"].as_str().unwrap().starts_with("stopped"));
    assert!(stopped);
}

#[test]
fn sighup_rereads_the_config_file_and_a_broken_one_changes_nothing() {
    let dir = TempDir::new("config");
    library_copy(&dir);
    let (a, b) = (Upstream::start(), Upstream::start());
    let (port, admin) = (free_port(), free_port());
    let config = |upstream: u16| {
        format!(
            "[patches]\ndir = \"patches\"\n[audit]\nlog = \"audit.jsonl\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [[admin.token]]\nname = \"alice\"\nfile = \"alice.token\"\n\
             [state]\ndir = \"state\"\n\
             [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{upstream}\"\n"
        )
    };
    let path = dir.0.join("stopgap.toml");
    std::fs::write(&path, config(a.port)).unwrap();
    let mut child = Proc(
        Command::new(env!("CARGO_BIN_EXE_stopgap"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("STOPGAP_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, &mut child.0, "stopgap");
    wait_for_port(admin, &mut child.0, "stopgap admin API");
    let get = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        exchange(&mut s, &mut Vec::new(), BENIGN).0
    };
    assert_eq!(get(), 200);
    assert_eq!((a.requests(), b.requests()), (1, 0));

    // The named token is the actor in the audit trail.
    let token = std::fs::read_to_string(dir.0.join("alice.token")).unwrap();
    let api = AdminClient::new(&format!("127.0.0.1:{admin}"), Some(token.trim().into())).unwrap();
    let r = api
        .post("/v1/patches/monitor", &json!({ "ids": ["SG-2014-6271"] }))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    let hup = || {
        let pid = child.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    let wait_reloads = |n: usize| {
        let start = Instant::now();
        loop {
            let status = api.get("/v1/status").unwrap().body;
            let audit = std::fs::read_to_string(dir.0.join("audit.jsonl")).unwrap();
            if audit.matches("\"event\":\"reload\"").count() >= n {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no reload logged"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A broken config: refused, everything stays.
    std::fs::write(
        &path,
        config(a.port).replace("[[listener]]", "[[listener]]\nbogus = 1"),
    )
    .unwrap();
    hup();
    let status = wait_reloads(1);
    assert_eq!(status["last_reload"]["ok"], false);
    let errors = status["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("stopgap.toml:") && errors.contains("bogus"),
        "{errors}"
    );
    assert_eq!(get(), 200);
    assert_eq!((a.requests(), b.requests()), (2, 0), "old upstream kept");

    // A good config: the new upstream serves new connections; states stay.
    std::fs::write(&path, config(b.port)).unwrap();
    hup();
    let status = wait_reloads(2);
    assert_eq!(status["last_reload"]["ok"], true, "{status}");
    assert_eq!(get(), 200);
    assert_eq!(
        (a.requests(), b.requests()),
        (2, 1),
        "new upstream in force"
    );
    assert_eq!(status["monitor"], 1, "states survive the reload");

    let audit = std::fs::read_to_string(dir.0.join("audit.jsonl")).unwrap();
    let change: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "patch_state")
        .unwrap();
    assert_eq!(change["actor"], "alice");
    let reloads: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "reload")
        .collect();
    assert_eq!(reloads[0]["actor"], "signal:SIGHUP");
    assert_eq!(reloads[0]["result"], "failed");
    assert_eq!(reloads[1]["result"], "ok");
}

#[test]
fn an_nmap_scan_of_the_real_server_adds_its_product_and_version() {
    let nginx = Nginx::start();
    let dir = TempDir::new("nmap");
    let scan = dir.0.join("scan.xml");
    // Loopback only, one port, service detection.
    let out = Command::new("nmap")
        .args([
            "-sV",
            "-Pn",
            "--version-light",
            "-p",
            &nginx.port.to_string(),
            "127.0.0.1",
            "-oX",
        ])
        .arg(&scan)
        .output()
        .expect("nmap is not installed: run scripts/test.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patches = dir.0.join("patches");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(
        patches.join("old-nginx.toml"),
        strip_patch("SG-2099-0005", "x-probe-a")
            .replace("product = \"microsoft:iis\"", "product = \"nginx:nginx\"")
            .replace("versions = \"*\"", "versions = \"< 1.3.0\""),
    )
    .unwrap();
    let gw = Gw::start(nginx.port, &patches, &dir.0);
    let out = gw.cli(&["assets", "import", scan.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("f5:nginx 1."), "{text}");
    assert!(text.contains("retired SG-2099-0005"), "{text}");

    let assets = gw.api().get("/v1/assets").unwrap().body;
    let server = assets["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["server"] == format!("127.0.0.1:{}", nginx.port))
        .unwrap()
        .clone();
    assert_eq!(server["product"], "f5:nginx");
    assert_eq!(server["facts"][0]["source"]["kind"], "import");

    // Imported facts survive a restart.
    drop(gw);
    let gw = Gw::start(nginx.port, &patches, &dir.0);
    let assets = gw.api().get("/v1/assets").unwrap().body;
    assert_eq!(assets["assets"][0]["product"], "f5:nginx", "{assets}");
}
