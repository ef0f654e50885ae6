//! [`FtpInspector`]: one FTP control connection, both directions, sans-IO.
//!
//! Commands are evaluated against the snapshot's FTP patches; a refused command is answered
//! by the gateway, in order with the server's replies, and the session goes on. The inspector
//! tracks the session (user, login) from the server's replies, refuses `PORT`/`EPRT` to any
//! host but the client's own (FTP bounce), and hands data-connection set-up to the proxy:
//! [`Output::FtpPassive`] for a `227`/`229` reply, [`Output::FtpActive`] for `PORT`/`EPRT`.
//! After `AUTH TLS` is accepted the connection is opaque and passes through.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use stopgap_patch::expr::CommandView;
use stopgap_patch::PatchSet;
use stopgap_proto::ftp::{
    parse_227, parse_229, parse_eprt, parse_port, Command, CommandEvent, CommandReader,
    ReplyReader, DEFAULT_MAX_COMMAND_LINE,
};

use crate::audit::{event, excerpt, AuditEvent};
use crate::command::evaluate;
use crate::{FlowMeta, Output, Side};

/// Anomaly: a command line over the limit.
pub const ANOMALY_LINE_TOO_LONG: &str = "ftp_line_too_long";
/// Anomaly: `PORT`/`EPRT` naming a host other than the client (FTP bounce).
pub const ANOMALY_BOUNCE: &str = "ftp_bounce";

#[derive(Debug)]
enum Pending {
    /// The server's greeting.
    Greeting,
    /// A forwarded command awaiting its final reply.
    Forwarded { verb: String, arg: Vec<u8> },
    /// A reply of the gateway's, sent when its turn comes.
    Local(Bytes),
}

/// One FTP control connection through the gateway.
pub struct FtpInspector {
    meta: FlowMeta,
    client_ip: Option<IpAddr>,
    server_ip: Option<IpAddr>,
    commands: CommandReader,
    replies: ReplyReader,
    pending: VecDeque<Pending>,
    out: VecDeque<Output>,
    user: Option<Vec<u8>>,
    authenticated: bool,
    opaque: bool,
    closed: bool,
    commands_seen: u64,
    upstream_down: bool,
    /// Commands read while an earlier one awaits its reply: a command is judged with the
    /// session state the server will have when it runs it (after the earlier replies).
    waiting: VecDeque<CommandEvent>,
}

fn ip_of(addr: &str) -> Option<IpAddr> {
    addr.parse::<SocketAddr>().ok().map(|a| a.ip())
}

impl FtpInspector {
    /// A new control connection; `max_line` bounds a command line.
    #[must_use]
    pub fn new(meta: FlowMeta, max_line: usize) -> Self {
        Self {
            client_ip: ip_of(&meta.client),
            server_ip: ip_of(&meta.upstream),
            meta,
            commands: CommandReader::new(max_line.max(16)),
            replies: ReplyReader::default(),
            pending: VecDeque::from([Pending::Greeting]),
            out: VecDeque::new(),
            user: None,
            authenticated: false,
            opaque: false,
            closed: false,
            commands_seen: 0,
            upstream_down: false,
            waiting: VecDeque::new(),
        }
    }

    /// A new control connection with the default line limit.
    #[must_use]
    pub fn with_defaults(meta: FlowMeta) -> Self {
        Self::new(meta, DEFAULT_MAX_COMMAND_LINE)
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Commands seen so far.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.commands_seen
    }

    /// Whether no command is in flight.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.waiting.is_empty()
            && self.commands.pending() == 0
            && self.out.is_empty()
    }

    /// Bytes held: a partial command line (bounded by the line limit).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.commands.pending()
    }

    /// Whether the client is part-way through a command line.
    #[must_use]
    pub fn client_in_message(&self) -> bool {
        self.commands.pending() > 0
    }

    /// Whether a forwarded command still waits for its reply.
    #[must_use]
    pub fn awaiting_upstream(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p, Pending::Forwarded { .. } | Pending::Greeting))
    }

    /// A timer of the proxy fired: `421` and close.
    pub fn timed_out(&mut self, what: crate::Timeout) {
        let (anomaly, text): (&'static str, &'static [u8]) = match what {
            crate::Timeout::Upstream => (
                "upstream_timeout",
                b"421 Service not available, the server did not answer in time.\r\n",
            ),
            _ => ("client_timeout", b"421 Timeout.\r\n"),
        };
        let mut e = self.base_event(event::PROTOCOL_VIOLATION, None);
        e.anomaly = Some(anomaly);
        e.outcome = "timed_out".into();
        e.status = Some(421);
        self.out.push_back(Output::Audit(Box::new(e)));
        self.out
            .push_back(Output::ToClient(Bytes::from_static(text)));
        self.close();
    }

    /// The upstream cannot be reached: the client gets `421` and the connection closes.
    pub fn upstream_failed(&mut self, reason: &str) {
        self.upstream_down = true;
        let mut e = self.base_event(event::UPSTREAM_ERROR, None);
        e.outcome = "unavailable".into();
        e.status = Some(421);
        e.detail = Some(reason.to_string());
        self.out.push_back(Output::Audit(Box::new(e)));
        self.pending.clear();
        self.out.push_back(Output::ToClient(Bytes::from_static(
            b"421 Service not available, closing control connection.\r\n",
        )));
        self.close();
    }

    /// Feeds bytes read from `side`.
    pub fn handle_data(&mut self, side: Side, data: &[u8], snapshot: &Arc<PatchSet>) {
        if self.closed {
            return;
        }
        if self.opaque {
            self.out.push_back(match side {
                Side::Client => Output::ToServer(Bytes::copy_from_slice(data)),
                Side::Server => Output::ToClient(Bytes::copy_from_slice(data)),
            });
            return;
        }
        match side {
            Side::Client => {
                let mut events = Vec::new();
                self.commands.push(data, &mut events);
                self.waiting.extend(events);
                self.run_waiting(snapshot);
            }
            Side::Server => {
                let mut replies = Vec::new();
                let result = self.replies.push(data, &mut replies);
                for r in replies {
                    self.on_reply(r);
                    self.run_waiting(snapshot);
                }
                if let Err(e) = result {
                    let mut ev = self.base_event(event::UPSTREAM_ERROR, None);
                    ev.outcome = "bad_gateway".into();
                    ev.detail = Some(format!("upstream sent a {e}"));
                    self.out.push_back(Output::Audit(Box::new(ev)));
                    self.out.push_back(Output::ToClient(Bytes::from_static(
                        b"421 Service not available, closing control connection.\r\n",
                    )));
                    self.close();
                }
            }
        }
    }

    /// `side` closed its sending direction.
    pub fn handle_eof(&mut self, side: Side) {
        match side {
            Side::Client => {
                if self.pending.is_empty() || self.opaque {
                    self.close();
                }
            }
            Side::Server => {
                self.flush_locals();
                self.close();
            }
        }
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.out.push_back(Output::Close);
        }
    }

    fn base_event(&self, name: &'static str, cmd: Option<&Command>) -> AuditEvent {
        AuditEvent {
            event: name,
            protocol: Some("ftp"),
            flow: self.meta.id,
            request: self.commands_seen.saturating_sub(1),
            client: self.meta.client.clone(),
            upstream: self.meta.upstream.clone(),
            method: cmd.map(|c| c.verb.clone()),
            uri: cmd.map(|c| excerpt(&c.arg)),
            ..AuditEvent::default()
        }
    }

    /// Queues a reply of the gateway's behind the replies still owed.
    fn local(&mut self, line: String) {
        self.pending
            .push_back(Pending::Local(Bytes::from(format!("{line}\r\n"))));
        self.flush_locals();
    }

    fn flush_locals(&mut self) {
        while let Some(Pending::Local(_)) = self.pending.front() {
            if let Some(Pending::Local(b)) = self.pending.pop_front() {
                self.out.push_back(Output::ToClient(b));
            }
        }
    }

    fn violation(&mut self, anomaly: &'static str, cmd: Option<&Command>, detail: String) {
        let mut e = self.base_event(event::PROTOCOL_VIOLATION, cmd);
        e.anomaly = Some(anomaly);
        e.outcome = "rejected".into();
        e.status = Some(500);
        e.detail = Some(detail);
        self.out.push_back(Output::Audit(Box::new(e)));
    }

    /// Runs the commands read so far, one at a time: a command waits while an earlier one
    /// awaits its final reply.
    fn run_waiting(&mut self, snapshot: &Arc<PatchSet>) {
        while !self.closed && !self.opaque {
            let busy = self
                .pending
                .iter()
                .any(|p| matches!(p, Pending::Forwarded { .. } | Pending::Greeting));
            if busy {
                return;
            }
            let Some(ev) = self.waiting.pop_front() else {
                return;
            };
            self.on_command(ev, snapshot);
        }
    }

    fn on_command(&mut self, ev: CommandEvent, snapshot: &Arc<PatchSet>) {
        self.commands_seen += 1;
        let cmd = match ev {
            CommandEvent::TooLong { length, prefix } => {
                let c = Command::parse(&prefix);
                self.violation(
                    ANOMALY_LINE_TOO_LONG,
                    Some(&c),
                    format!("command line of {length} bytes"),
                );
                self.local("500 Command line too long.".into());
                return;
            }
            CommandEvent::Command(c) => c,
        };
        let view = CommandView {
            command: cmd.verb.as_bytes(),
            arg: &cmd.arg,
            user: self.user.as_deref(),
            authenticated: self.authenticated,
            ..CommandView::default()
        };
        let base = self.base_event(event::PATCH_MATCH, Some(&cmd));
        let verdict = evaluate(snapshot.ftp_patches(), &view, &base);
        for e in verdict.events {
            self.out.push_back(Output::Audit(Box::new(e)));
        }
        if verdict.reset {
            self.close();
            return;
        }
        if let Some(line) = verdict.reject {
            self.local(line);
            return;
        }
        let (raw, arg) = match verdict.truncate {
            Some(n) => {
                let arg = cmd.arg[..n].to_vec();
                let mut raw = cmd.verb.as_bytes().to_vec();
                raw.push(b' ');
                raw.extend_from_slice(&arg);
                raw.extend_from_slice(b"\r\n");
                (raw, arg)
            }
            None => (cmd.raw.clone(), cmd.arg.clone()),
        };
        match cmd.verb.as_str() {
            "PORT" | "EPRT" => {
                let addr = if cmd.verb == "PORT" {
                    parse_port(&arg).map(SocketAddr::V4)
                } else {
                    parse_eprt(&arg)
                };
                let Some(addr) = addr else {
                    self.local("501 Syntax error in parameters or arguments.".into());
                    return;
                };
                if Some(addr.ip()) != self.client_ip {
                    self.violation(
                        ANOMALY_BOUNCE,
                        Some(&cmd),
                        format!("data connection to {addr}, not to the client"),
                    );
                    self.local("500 Illegal PORT command.".into());
                    return;
                }
                self.pending.push_back(Pending::Forwarded {
                    verb: cmd.verb.clone(),
                    arg,
                });
                self.out.push_back(Output::FtpActive {
                    client: addr,
                    extended: cmd.verb == "EPRT",
                });
            }
            _ => {
                self.pending.push_back(Pending::Forwarded {
                    verb: cmd.verb.clone(),
                    arg,
                });
                self.out.push_back(Output::ToServer(Bytes::from(raw)));
            }
        }
    }

    fn on_reply(&mut self, reply: stopgap_proto::ftp::Reply) {
        let raw = Bytes::from(reply.raw.clone());
        match self.pending.front() {
            None | Some(Pending::Local(_)) => {
                // Unsolicited (a 421 before closing, say): pass it on.
                self.out.push_back(Output::ToClient(raw));
                return;
            }
            Some(Pending::Greeting) => {
                if !reply.is_preliminary() {
                    self.pending.pop_front();
                }
                let first = reply.raw.split(|&b| b == b'\n').next().unwrap_or_default();
                self.out.push_back(Output::Banner(
                    stopgap_assets::BannerKind::FtpGreeting,
                    String::from_utf8_lossy(first).trim_end().to_string(),
                ));
                self.out.push_back(Output::ToClient(raw));
                self.flush_locals();
                return;
            }
            Some(Pending::Forwarded { .. }) => {}
        }
        if reply.is_preliminary() {
            self.out.push_back(Output::ToClient(raw));
            return;
        }
        let Some(Pending::Forwarded { verb, arg }) = self.pending.pop_front() else {
            return;
        };
        let mut passive = None;
        match (verb.as_str(), reply.code) {
            ("USER", 331 | 230) => {
                self.user = Some(arg);
                self.authenticated = reply.code == 230;
            }
            ("USER", _) => self.user = None,
            ("PASS", 230) => self.authenticated = true,
            ("REIN", 220) => {
                self.user = None;
                self.authenticated = false;
            }
            ("PASV", 227) => {
                passive = parse_227(&reply.text).map(|a| (SocketAddr::V4(a), false));
            }
            ("EPSV", 229) => {
                passive = parse_229(&reply.text)
                    .zip(self.server_ip)
                    .map(|(port, ip)| (SocketAddr::new(ip, port), true));
            }
            _ => {}
        }
        match passive {
            Some((mut server, extended)) => {
                // Servers behind NAT announce an address of their own network; the data
                // connection goes to the host the control connection reached.
                if let Some(ip) = self.server_ip {
                    server.set_ip(ip);
                }
                self.out.push_back(Output::FtpPassive { server, extended });
            }
            None => self.out.push_back(Output::ToClient(raw)),
        }
        if verb == "AUTH" && reply.code == 234 {
            // TLS from here on: the control connection can no longer be read.
            let mut e = self.base_event(event::OPAQUE, None);
            e.outcome = "passed".into();
            e.detail = Some("AUTH TLS accepted: the session is encrypted from here".into());
            self.out.push_back(Output::Audit(Box::new(e)));
            self.opaque = true;
        }
        self.flush_locals();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stopgap_patch::parse_patch;

    struct H {
        insp: FtpInspector,
        snap: Arc<PatchSet>,
        to_server: Vec<u8>,
        to_client: Vec<u8>,
        outputs: Vec<Output>,
        events: Vec<AuditEvent>,
    }

    impl H {
        fn new(patches: Vec<stopgap_patch::Patch>) -> Self {
            let meta = FlowMeta {
                id: 1,
                client: "10.0.0.9:40000".into(),
                upstream: "10.0.0.5:21".into(),
            };
            Self {
                insp: FtpInspector::with_defaults(meta),
                snap: Arc::new(PatchSet::from_patches(1, patches)),
                to_server: Vec::new(),
                to_client: Vec::new(),
                outputs: Vec::new(),
                events: Vec::new(),
            }
        }
        fn drain(&mut self) {
            while let Some(o) = self.insp.poll_output() {
                match o {
                    Output::ToServer(b) => self.to_server.extend_from_slice(&b),
                    Output::ToClient(b) => self.to_client.extend_from_slice(&b),
                    Output::Audit(e) => self.events.push(*e),
                    Output::Banner(..) => {}
                    other => self.outputs.push(other),
                }
            }
        }
        fn client(&mut self, b: &[u8]) -> &mut Self {
            let s = self.snap.clone();
            for piece in b.chunks(1) {
                self.insp.handle_data(Side::Client, piece, &s);
            }
            self.drain();
            self
        }
        fn server(&mut self, b: &[u8]) -> &mut Self {
            let s = self.snap.clone();
            self.insp.handle_data(Side::Server, b, &s);
            self.drain();
            self
        }
    }

    fn mod_copy() -> stopgap_patch::Patch {
        let src = "id = \"SG-2015-3306\"\ntitle = \"t\"\ncve = [\"CVE-2015-3306\"]\nseverity = \"high\"\nprotocol = \"ftp\"\n[applies]\nproduct = \"proftpd:proftpd\"\nversions = \"1.3.5\"\n[rule]\nwhen = 'ftp.command == \"SITE\" and lower(ftp.arg) starts_with \"cpfr\" and ftp.authenticated == 0'\naction = \"reject\"\nstatus = 530\nmessage = \"Please login with USER and PASS\"\n";
        parse_patch(std::path::Path::new("p.toml"), src).unwrap_or_else(|e| panic!("{}", e[0]))
    }

    #[test]
    fn refusal_in_order_and_login_tracked_from_replies() {
        let mut h = H::new(vec![mod_copy()]);
        h.server(b"220 ProFTPD\r\n");
        // Pipelined: the refusal waits for the NOOP's reply.
        h.client(b"NOOP\r\nSITE CPFR /etc/passwd\r\n");
        assert_eq!(h.to_server, b"NOOP\r\n");
        assert_eq!(
            h.to_client, b"220 ProFTPD\r\n",
            "the refusal waits its turn"
        );
        h.server(b"200 NOOP ok\r\n");
        assert_eq!(
            h.to_client,
            b"220 ProFTPD\r\n200 NOOP ok\r\n530 Please login with USER and PASS\r\n"
        );
        assert_eq!(h.events[0].patch.as_deref(), Some("SG-2015-3306"));
        assert_eq!(h.events[0].method.as_deref(), Some("SITE"));
        // After a login the same command is the module's intended use.
        h.client(b"USER alice\r\n")
            .server(b"331 Password required\r\n");
        h.client(b"PASS pw\r\n").server(b"230 logged in\r\n");
        h.client(b"SITE CPFR /home/alice/a\r\n");
        assert!(h.to_server.ends_with(b"SITE CPFR /home/alice/a\r\n"));
        assert_eq!(h.events.len(), 1, "no new event");
    }

    #[test]
    fn pipelined_commands_are_judged_with_the_state_the_server_will_have() {
        let mut h = H::new(vec![mod_copy()]);
        h.server(b"220 ProFTPD\r\n");
        h.client(b"USER alice\r\nPASS pw\r\nSITE CPFR /home/alice/a\r\n");
        assert_eq!(h.to_server, b"USER alice\r\n", "one command at a time");
        h.server(b"331 Password required\r\n");
        assert_eq!(h.to_server, b"USER alice\r\nPASS pw\r\n");
        h.server(b"230 logged in\r\n");
        assert!(
            h.to_server.ends_with(b"SITE CPFR /home/alice/a\r\n"),
            "after the 230 the copy is the module's intended use"
        );
        assert!(h.events.is_empty());
    }

    #[test]
    fn truncate_cuts_the_argument_and_records_the_change() {
        let src = "id = \"SG-2099-0002\"\ntitle = \"t\"\ncve = [\"CVE-2099-0002\"]\nseverity = \"low\"\nprotocol = \"ftp\"\n[applies]\nproduct = \"a:b\"\nversions = \"*\"\n[rule]\nwhen = 'ftp.command == \"MKD\" and len(ftp.arg) > 8'\naction = \"truncate\"\ntarget = 'ftp.arg'\nmax_len = 8\n";
        let p =
            parse_patch(std::path::Path::new("p.toml"), src).unwrap_or_else(|e| panic!("{}", e[0]));
        let mut h = H::new(vec![p]);
        h.server(b"220 ready\r\n").client(b"MKD abcdefghijkl\r\n");
        assert_eq!(h.to_server, b"MKD abcdefgh\r\n");
        let change = h.events[0].change.as_ref().unwrap();
        assert_eq!(
            (change.before.as_str(), change.after.as_str()),
            ("abcdefghijkl", "abcdefgh")
        );
        assert_eq!(h.events[0].outcome, "truncated");
    }

    #[test]
    fn over_long_lines_and_bounce_are_refused_and_the_session_goes_on() {
        let mut h = H::new(Vec::new());
        h.server(b"220 ready\r\n");
        let mut long = b"USER ".to_vec();
        long.extend(std::iter::repeat_n(b'A', 700));
        long.extend_from_slice(b"\r\nPORT 192,0,2,1,4,1\r\nPORT 10,0,0,9,4,1\r\n");
        h.client(&long);
        assert_eq!(
            h.to_client,
            b"220 ready\r\n500 Command line too long.\r\n500 Illegal PORT command.\r\n"
        );
        assert!(h.to_server.is_empty(), "nothing refused reaches the server");
        assert!(matches!(
            h.outputs[..],
            [Output::FtpActive { client, extended: false }] if client == "10.0.0.9:1025".parse().unwrap()
        ));
        let anomalies: Vec<_> = h.events.iter().filter_map(|e| e.anomaly).collect();
        assert_eq!(anomalies, [ANOMALY_LINE_TOO_LONG, ANOMALY_BOUNCE]);
        h.server(b"200 PORT command successful\r\n");
        assert!(h.to_client.ends_with(b"200 PORT command successful\r\n"));
        assert!(h.insp.is_idle());
    }

    #[test]
    fn passive_replies_are_handed_to_the_proxy_with_the_control_host() {
        let mut h = H::new(Vec::new());
        h.server(b"220 ready\r\n").client(b"PASV\r\nEPSV\r\n");
        h.server(b"227 Entering Passive Mode (192,168,1,2,195,80).\r\n229 Extended (|||6446|)\r\n");
        assert_eq!(
            h.outputs,
            [
                Output::FtpPassive {
                    server: "10.0.0.5:50000".parse().unwrap(),
                    extended: false
                },
                Output::FtpPassive {
                    server: "10.0.0.5:6446".parse().unwrap(),
                    extended: true
                }
            ]
        );
        assert_eq!(
            h.to_client, b"220 ready\r\n",
            "the proxy writes the rewritten replies"
        );
    }

    #[test]
    fn multi_line_and_preliminary_replies_pass_and_tls_turns_opaque() {
        let mut h = H::new(Vec::new());
        h.server(b"220-Welcome\r\n220 ready\r\n")
            .client(b"RETR f\r\n");
        h.server(b"150 Opening\r\n").server(b"226 Done\r\n");
        assert_eq!(
            h.to_client,
            b"220-Welcome\r\n220 ready\r\n150 Opening\r\n226 Done\r\n"
        );
        h.client(b"AUTH TLS\r\n").server(b"234 Proceed\r\n");
        h.client(b"\x16\x03\x01 binary");
        assert!(h.to_server.ends_with(b"\x16\x03\x01 binary"));
        assert!(h.events.iter().any(|e| e.event == event::OPAQUE));
    }
}
