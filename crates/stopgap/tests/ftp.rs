//! End-to-end FTP: the real `stopgap` binary between a real client (lftp, and a raw control
//! connection) and a real vsftpd, in passive and active mode.
//!
//! vsftpd, lftp, the test account `sgftp` and its PAM service `stopgap-ftp-test` are set up by
//! `scripts/test.sh`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::{free_port, repo, wait_for_port, Proc, TempDir};

const USER: &str = "sgftp";
const PASS: &str = "sgftp-test-pass";

struct Vsftpd {
    port: u16,
    root: PathBuf,
    _proc: Proc,
}

impl Vsftpd {
    fn start(dir: &Path) -> Self {
        let uid = Command::new("id").args(["-u", USER]).output().expect("id");
        assert!(
            uid.status.success(),
            "the test account `{USER}` is missing: run scripts/test.sh (it creates it)"
        );
        let uid: u32 = String::from_utf8_lossy(&uid.stdout).trim().parse().unwrap();
        let root = dir.join("home");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::chown(&root, Some(uid), None).unwrap();
        let port = free_port();
        let conf = dir.join("vsftpd.conf");
        std::fs::write(
            &conf,
            format!(
                "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
                 anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n\
                 local_root={}\npasv_enable=YES\npasv_address=127.0.0.1\nport_enable=YES\n\
                 connect_from_port_20=NO\nseccomp_sandbox=NO\n\
                 secure_chroot_dir=/var/run/vsftpd/empty\npam_service_name=stopgap-ftp-test\n\
                 xferlog_enable=NO\ncheck_shell=NO\n",
                root.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/var/run/vsftpd/empty").unwrap();
        let mut child = Command::new("/usr/sbin/vsftpd")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vsftpd is not installed: run scripts/test.sh");
        wait_for_port(port, &mut child, "vsftpd");
        Self {
            port,
            root,
            _proc: Proc(child),
        }
    }
}

fn gateway(upstream: u16, dir: &Path) -> (u16, Proc) {
    gateway_with(upstream, dir, true)
}

fn gateway_with(upstream: u16, dir: &Path, pin_all: bool) -> (u16, Proc) {
    let port = free_port();
    // The test server is not the product most patches are for (it is a fixed, current
    // release): pin every patch on it, as an operator testing the library would.
    let inventory = dir.join("assets.toml");
    let pin = if pin_all { "pin = [\"*\"]\n" } else { "" };
    std::fs::write(
        &inventory,
        if pin_all {
            format!("[[asset]]\naddress = \"127.0.0.1:{upstream}\"\nproduct = \"vsftpd_project:vsftpd\"\n{pin}")
        } else {
            String::new()
        },
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stopgap"))
        .args(["serve", "--protocol", "ftp"])
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

fn lftp(port: u16, dir: &Path, script: &str) {
    let out = Command::new("lftp")
        .current_dir(dir)
        .args(["-u", &format!("{USER},{PASS}"), "-e"])
        .arg(format!(
            "set net:max-retries 1; set net:timeout 20; {script}; bye"
        ))
        .arg(format!("ftp://127.0.0.1:{port}"))
        .output()
        .expect("lftp is not installed: run scripts/test.sh");
    assert!(
        out.status.success(),
        "lftp failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lftp_transfers_10_mib_both_ways_in_passive_and_active_mode_byte_for_byte() {
    let dir = TempDir::new("ftp-lftp");
    let server = Vsftpd::start(&dir.0);
    let (port, _gw) = gateway_with(server.port, &dir.0, false);
    let mut data = vec![0u8; 10 * 1024 * 1024];
    let mut seed = 0x2545_f491_u32;
    for b in &mut data {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        *b = seed as u8;
    }
    std::fs::write(dir.0.join("big.bin"), &data).unwrap();
    for (mode, passive) in [("passive", "on"), ("active", "off")] {
        lftp(
            port,
            &dir.0,
            &format!(
                "set ftp:passive-mode {passive}; put big.bin -o {mode}.bin; ls; get {mode}.bin -o back-{mode}.bin"
            ),
        );
        let stored = std::fs::read(server.root.join(format!("{mode}.bin"))).unwrap();
        assert!(stored == data, "{mode} upload altered");
        let back = std::fs::read(dir.0.join(format!("back-{mode}.bin"))).unwrap();
        assert!(back == data, "{mode} download altered");
    }
    // The greeting told the gateway this is a current vsftpd: the 2.3.4 backdoor patch is
    // retired for it, with the evidence.
    std::thread::sleep(Duration::from_millis(200));
    let audit = std::fs::read_to_string(dir.0.join("audit.jsonl")).unwrap();
    let retired = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "asset" && e["patch"] == "SG-2011-2523")
        .expect("SG-2011-2523 retired for vsftpd 3");
    assert!(retired["detail"]
        .as_str()
        .unwrap()
        .contains("vendor fix observed: vsftpd_project:vsftpd 3."));
}

/// A raw control connection: send a line, read one (possibly multi-line) reply.
struct Control {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Control {
    fn connect(port: u16) -> (Self, String) {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
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
    fn cmd(&mut self, line: &[u8]) -> String {
        self.w.write_all(line).unwrap();
        self.w.write_all(b"\r\n").unwrap();
        self.reply()
    }
    fn pasv_data(&mut self) -> TcpStream {
        let r = self.cmd(b"PASV");
        assert!(r.starts_with("227 "), "{r}");
        let addr = stopgap_proto::ftp::parse_227(r[4..].trim().as_bytes()).unwrap();
        TcpStream::connect(SocketAddr::V4(addr)).unwrap()
    }
}

#[test]
fn each_exploit_is_refused_as_the_patched_server_would_and_the_session_goes_on() {
    let dir = TempDir::new("ftp-exploits");
    let server = Vsftpd::start(&dir.0);
    let payload = b"file served by vsftpd\n".repeat(1000);
    std::fs::write(server.root.join("report.txt"), &payload).unwrap();
    let (port, _gw) = gateway(server.port, &dir.0);
    let (mut c, greeting) = Control::connect(port);
    assert!(greeting.starts_with("220 "), "{greeting}");

    // Before login: the vsftpd 2.3.4 backdoor trigger, mod_copy, the ProFTPD backdoor, an
    // over-long USER (War-FTPD), and a bounce PORT.
    assert!(c.cmd(b"USER x4Bq:)").starts_with("530 "));
    assert!(c
        .cmd(b"SITE CPFR /etc/passwd")
        .starts_with("530 Please login"));
    assert!(c.cmd(b"HELP ACIDBITCHEZ").starts_with("502 "));
    let mut long = b"USER ".to_vec();
    long.extend(std::iter::repeat_n(b'A', 600));
    assert!(c.cmd(&long).starts_with("500 Command line too long"));
    assert!(c
        .cmd(&[b"USER ".as_slice(), &[b'B'; 300]].concat())
        .starts_with("501 "));

    // The same session logs in, lists and downloads.
    assert!(c.cmd(format!("USER {USER}").as_bytes()).starts_with("331 "));
    assert!(c.cmd(format!("PASS {PASS}").as_bytes()).starts_with("230 "));
    assert!(c.cmd(b"PORT 192,0,2,1,4,1").starts_with("500 Illegal PORT"));
    assert!(c.cmd(b"TYPE I").starts_with("200 "));
    let mut data = c.pasv_data();
    assert!(c.cmd(b"LIST").starts_with("150 "));
    let mut listing = String::new();
    data.read_to_string(&mut listing).unwrap();
    assert!(c.reply().starts_with("226 "));
    assert!(listing.contains("report.txt"), "{listing}");
    let mut data = c.pasv_data();
    assert!(c.cmd(b"RETR report.txt").starts_with("150 "));
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert!(c.reply().starts_with("226 "));
    assert!(got == payload, "download altered");
    assert!(c.cmd(b"QUIT").starts_with("221 "));

    // Every refusal is in the audit log, by patch or anomaly.
    std::thread::sleep(Duration::from_millis(200));
    let audit = std::fs::read_to_string(dir.0.join("audit.jsonl")).unwrap();
    for needle in [
        "SG-2011-2523",
        "SG-2015-3306",
        "SG-2010-69562",
        "SG-1999-0256",
        "ftp_line_too_long",
        "ftp_bounce",
    ] {
        assert!(audit.contains(needle), "no audit event for {needle}");
    }
}
