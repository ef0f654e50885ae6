//! End-to-end SMTP: the real `stopgap` binary between a real client (swaks, and a raw
//! session) and a real Postfix delivering to a maildir.
//!
//! Postfix and swaks are installed by `scripts/test.sh`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{free_port, repo, wait_for_port, Proc, TempDir};

/// A private Postfix instance: its own configuration, queue and maildir under a temp dir.
struct Postfix {
    port: u16,
    conf: PathBuf,
    maildir: PathBuf,
    _proc: Proc,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn chown(path: &Path, user: &str) {
    let ok = Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {user} {}", path.display());
}

impl Postfix {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let conf = dir.join("conf");
        for d in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        chown(&dir.join("data"), "postfix");
        chown(&dir.join("mail"), "65534:65534");
        let d = dir.display();
        std::fs::write(
            conf.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\nmyhostname = mx.stopgap.test\nmydestination =\n\
                 mynetworks = 127.0.0.0/8\nvirtual_mailbox_domains = target.example\n\
                 virtual_mailbox_base = {d}/mail\nvirtual_mailbox_maps = static:inbox/\n\
                 virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n\
                 smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n\
                 maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\nsmtputf8_enable = no\nbiff = no\n"
            ),
        )
        .unwrap();
        let mut master = format!("127.0.0.1:{port} inet n - n - - smtpd\n");
        for (name, kind, private, unpriv, wakeup, limit, command) in [
            ("pickup", "unix", "n", "-", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "300", "1", "qmgr"),
            ("rewrite", "unix", "-", "-", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "-", "-", "proxymap"),
            ("smtp", "unix", "-", "-", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "-", "-", "smtp"),
            ("error", "unix", "-", "-", "-", "-", "error"),
            ("retry", "unix", "-", "-", "-", "-", "error"),
            ("discard", "unix", "-", "-", "-", "-", "discard"),
            ("local", "unix", "-", "n", "-", "-", "local"),
            ("virtual", "unix", "-", "n", "-", "-", "virtual"),
            ("anvil", "unix", "-", "-", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "-", "1", "postlogd"),
        ] {
            master.push_str(&format!(
                "{name} {kind} {private} {unpriv} n {wakeup} {limit} {command}\n"
            ));
        }
        std::fs::write(conf.join("master.cf"), master).unwrap();
        let mut child = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("start-fg")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postfix is not installed: run scripts/test.sh");
        wait_for_port(port, &mut child, "postfix");
        Self {
            port,
            conf,
            maildir: dir.join("mail/inbox/new"),
            _proc: Proc(child),
        }
    }

    /// Waits for `n` delivered messages and returns them, oldest first.
    fn delivered(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let mut files: Vec<_> = std::fs::read_dir(&self.maildir)
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            if files.len() >= n || start.elapsed() > Duration::from_secs(20) {
                files.sort();
                return files
                    .iter()
                    .map(|f| std::fs::read_to_string(f).unwrap())
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn gateway(upstream: u16, dir: &Path) -> (u16, Proc) {
    let port = free_port();
    // The test server is not the product most patches are for (it is a fixed, current
    // release): pin every patch on it, as an operator testing the library would.
    let inventory = dir.join("assets.toml");
    std::fs::write(
        &inventory,
        format!("[[asset]]\naddress = \"127.0.0.1:{upstream}\"\nproduct = \"postfix:postfix\"\npin = [\"*\"]\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["serve", "--protocol", "smtp"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("127.0.0.1:{upstream}")])
        .arg("--patches")
        .arg(repo().join("patches"))
        .args(["--admin", "off", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .arg("--assets")
        .arg(&inventory)
        .env("STOPGAP_LOG", "warn")
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, "stopgap");
    (port, Proc(child))
}

/// The message as Postfix stores it: its lines end in LF, after the trace headers it adds.
fn stored_form(message: &str) -> String {
    message.replace("\r\n", "\n")
}

#[test]
fn swaks_delivers_through_the_gateway_byte_for_byte_with_and_without_pipelining() {
    let dir = TempDir::new("smtp-swaks");
    let server = Postfix::start(&dir.0);
    let (port, _gw) = gateway(server.port, &dir.0);
    let message = "From: bob@sender.example\r\nTo: ana@target.example\r\nSubject: quarterly numbers\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <q3@sender.example>\r\n\r\nRevenue: $15,000,000.\r\n.leading dot line\r\nMAIL FROM:<quoted@example> stays text\r\n";
    let data = dir.0.join("message.eml");
    std::fs::write(&data, message).unwrap();
    for pipelining in [false, true] {
        let mut cmd = Command::new("swaks");
        cmd.args(["--server", &format!("127.0.0.1:{port}")])
            .args(["--from", "bob@sender.example", "--to", "ana@target.example"])
            .arg("--data")
            .arg(&data);
        if pipelining {
            cmd.arg("--pipeline");
        }
        let out = cmd
            .output()
            .expect("swaks is not installed: run scripts/test.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("250 2.0.0 Ok: queued"), "{text}");
    }
    let delivered = server.delivered(2);
    assert_eq!(delivered.len(), 2);
    // Postfix prepends its trace headers and stores lines with LF; everything the client
    // sent must follow them unchanged.
    for m in delivered {
        let trace_end = m
            .find("From: bob@sender.example")
            .expect("the message's first header");
        assert!(
            m[trace_end..].starts_with(&stored_form(message)),
            "the delivered message differs from the one sent:\n{m}"
        );
    }
}

/// A raw SMTP session.
struct Session {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Session {
    fn connect(port: u16) -> (Self, String) {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Self {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = c.reply();
        (c, greeting)
    }
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.r.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            all.push_str(&line);
            if line.len() >= 4 && line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

#[test]
fn each_smtp_exploit_is_refused_and_the_same_session_then_delivers() {
    let dir = TempDir::new("smtp-exploits");
    let server = Postfix::start(&dir.0);
    let (port, _gw) = gateway(server.port, &dir.0);
    let (mut s, greeting) = Session::connect(port);
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(s.cmd("EHLO client.example").starts_with("250"));

    // Exim ${run} in a recipient; OpenSMTPD shell in a domain-less sender.
    assert!(s.cmd("MAIL FROM:<>").starts_with("250"));
    let r = s.cmd("RCPT TO:<${run{\\x2Fbin\\x2Fsh\\t-c\\t\\x22id\\x22}}@target.example>");
    assert!(r.starts_with("553 5.1.3"), "{r}");
    assert!(s.cmd("RSET").starts_with("250"));
    let r = s.cmd("MAIL FROM:<;sleep 1;>");
    assert!(r.starts_with("553 5.1.0"), "{r}");

    // SMTP smuggling: the whole message is refused after its real end.
    assert!(s
        .cmd("MAIL FROM:<attacker@sender.example>")
        .starts_with("250"));
    assert!(s.cmd("RCPT TO:<ana@target.example>").starts_with("250"));
    assert!(s.cmd("DATA").starts_with("354"));
    s.send(b"Subject: hello\r\n\r\nfirst\n.\r\nMAIL FROM:<ceo@sender.example>\r\nRCPT TO:<ana@target.example>\r\nDATA\r\nSubject: wire transfer\r\n\r\nsmuggled\r\n.\r\n");
    let r = s.reply();
    assert!(r.starts_with("550 5.5.2"), "{r}");

    // The same session delivers a legitimate message.
    assert!(s.cmd("MAIL FROM:<bob@sender.example>").starts_with("250"));
    assert!(s.cmd("RCPT TO:<ana@target.example>").starts_with("250"));
    assert!(s.cmd("DATA").starts_with("354"));
    s.send(b"Subject: legitimate\r\n\r\nafter the refusals\r\n.\r\n");
    let r = s.reply();
    assert!(r.starts_with("250 2.0.0 Ok: queued"), "{r}");
    assert!(s.cmd("QUIT").starts_with("221"));

    let delivered = server.delivered(1);
    std::thread::sleep(Duration::from_millis(500));
    let delivered_again = server.delivered(1);
    assert_eq!(
        delivered.len(),
        1,
        "exactly one message: the legitimate one"
    );
    assert_eq!(
        delivered_again.len(),
        1,
        "and nothing smuggled arrives later"
    );
    assert!(
        delivered[0].contains("Subject: legitimate\n")
            && delivered[0].contains("\nafter the refusals\n"),
        "{}",
        delivered[0]
    );
    assert!(!delivered[0].contains("smuggled"));

    std::thread::sleep(Duration::from_millis(200));
    let audit = std::fs::read_to_string(dir.0.join("audit.jsonl")).unwrap();
    for id in ["SG-2019-10149", "SG-2020-7247", "SG-2023-51764"] {
        assert!(audit.contains(id), "no audit event for {id}");
    }
}
