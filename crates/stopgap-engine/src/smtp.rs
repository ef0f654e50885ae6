//! [`SmtpInspector`]: one SMTP connection, both directions, sans-IO.
//!
//! Commands are evaluated against the snapshot's SMTP patches when they arrive; a refused
//! command gets the gateway's reply, in order with the server's (PIPELINING), and the session
//! goes on. `DATA` is answered by the gateway itself: the message is read up to its end
//! (`CRLF . CRLF`, strictly) within a window, checked (message patches, bare LF / bare CR),
//! and only then sent to the server behind its own `DATA` — or refused with a 5xx while the
//! session continues (the server's open transaction is reset with `RSET`). A message larger
//! than the window is checked on its first window, then streamed. After `STARTTLS` is
//! accepted the session is opaque and passes through. `BDAT` chunks pass through uninspected.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use stopgap_patch::expr::CommandView;
use stopgap_patch::{Applied, PatchSet};
use stopgap_proto::smtp::{
    parse_bdat, Command, CommandEvent, CommandReader, DataReader, Reply, ReplyReader,
    MAX_COMMAND_LINE,
};

use crate::audit::{event, excerpt, AuditEvent};
use crate::command::evaluate;
use crate::{FlowMeta, Output, Side};

/// Anomaly: a command line over the limit.
pub const ANOMALY_LINE_TOO_LONG: &str = "smtp_line_too_long";
/// Anomaly: a LF without CR in a message (SMTP smuggling).
pub const ANOMALY_BARE_LF: &str = "smtp_bare_lf";
/// Anomaly: a CR without LF in a message (SMTP smuggling).
pub const ANOMALY_BARE_CR: &str = "smtp_bare_cr";

/// Default window of a message kept for inspection before it is sent on (1 MiB).
pub const DEFAULT_DATA_WINDOW: usize = 1024 * 1024;

#[derive(Debug)]
enum Pending {
    Greeting,
    Forwarded {
        verb: String,
        arg: Vec<u8>,
    },
    Local(Bytes),
    /// The gateway's answer to `DATA`: 354 if a recipient was accepted, else 554.
    DataGo,
    /// A reply to a command the gateway sent on its own (`RSET`): not for the client.
    Swallow,
    /// The gateway's own `DATA` to the server: on 354 send `message`, then relay the final
    /// reply; any other reply is the message's final reply.
    ServerData {
        message: Vec<u8>,
        streaming: bool,
    },
    /// The final reply to a message sent to the server.
    MessageEnd,
}

#[derive(Debug)]
enum Mode {
    Commands,
    /// `DATA` is waiting for its turn; bytes the client sends meanwhile are held.
    AwaitData(Vec<u8>),
    /// Reading a message; `raw` holds it as sent until it is sent on.
    Message {
        reader: DataReader,
        raw: Vec<u8>,
        decided: Decision,
    },
    /// Passing `n` bytes of a BDAT chunk.
    Bdat(u64),
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Still reading within the window.
    Open,
    /// Refused: discard the rest, answer this at the end.
    Refuse(String),
    /// Sent on: the rest streams to the server.
    Streaming,
}

/// One SMTP connection through the gateway.
pub struct SmtpInspector {
    meta: FlowMeta,
    window: usize,
    commands: CommandReader,
    replies: ReplyReader,
    pending: VecDeque<Pending>,
    out: VecDeque<Output>,
    mode: Mode,
    helo: Option<Vec<u8>>,
    mail_from: Option<Vec<u8>>,
    rcpt_to: Vec<Vec<u8>>,
    /// Bytes to read again as commands (held while `DATA` waited, then refused).
    reread: Vec<u8>,
    closed: bool,
    commands_seen: u64,
    /// Held for the server until its 354 arrives (streaming a large message).
    stream_hold: Option<Vec<u8>>,
    /// While the server has not yet answered the gateway's own `DATA`, later client bytes for
    /// the server wait here (they would otherwise become part of the message).
    after_data: Option<Vec<Bytes>>,
    /// The client's `DATA` line as sent, sent on to the server when the message is.
    data_line: Bytes,
}

impl SmtpInspector {
    /// A new connection; `window` bounds the message bytes held for inspection.
    #[must_use]
    pub fn new(meta: FlowMeta, window: usize) -> Self {
        Self {
            meta,
            window: window.max(1024),
            commands: CommandReader::new(MAX_COMMAND_LINE),
            replies: ReplyReader::default(),
            pending: VecDeque::from([Pending::Greeting]),
            out: VecDeque::new(),
            mode: Mode::Commands,
            helo: None,
            mail_from: None,
            rcpt_to: Vec::new(),
            reread: Vec::new(),
            closed: false,
            commands_seen: 0,
            stream_hold: None,
            after_data: None,
            data_line: Bytes::from_static(b"DATA\r\n"),
        }
    }

    /// Sends `bytes` to the server, or holds them while the server's 354 is awaited.
    fn send_to_server(&mut self, bytes: Bytes) {
        match self.after_data.as_mut() {
            Some(held) => held.push(bytes),
            None => self.out.push_back(Output::ToServer(bytes)),
        }
    }

    /// Sends the gateway's own `DATA`; everything for the server waits for its answer.
    fn send_data_command(&mut self) {
        self.out.push_back(Output::ToServer(self.data_line.clone()));
        self.after_data = Some(Vec::new());
    }

    fn release_after_data(&mut self) {
        for b in self.after_data.take().unwrap_or_default() {
            self.out.push_back(Output::ToServer(b));
        }
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

    /// Whether no command or message is in flight.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && matches!(self.mode, Mode::Commands)
            && self.commands.pending() == 0
            && self.out.is_empty()
    }

    /// Bytes held: a partial command line, a message being read, a held stream start.
    #[must_use]
    pub fn buffered(&self) -> usize {
        let message = match &self.mode {
            Mode::Message { raw, .. } => raw.len(),
            Mode::AwaitData(held) => held.len(),
            _ => 0,
        };
        self.commands.pending() + message + self.stream_hold.as_ref().map_or(0, Vec::len)
    }

    /// Whether the client is part-way through a command line or a message.
    #[must_use]
    pub fn client_in_message(&self) -> bool {
        self.commands.pending() > 0 || matches!(self.mode, Mode::Message { .. } | Mode::Bdat(_))
    }

    /// Whether a command or message still waits for the server's reply.
    #[must_use]
    pub fn awaiting_upstream(&self) -> bool {
        self.pending.iter().any(|p| {
            matches!(
                p,
                Pending::Greeting
                    | Pending::Forwarded { .. }
                    | Pending::ServerData { .. }
                    | Pending::MessageEnd
                    | Pending::Swallow
            )
        })
    }

    /// A timer of the proxy fired: `421` and close.
    pub fn timed_out(&mut self, what: crate::Timeout) {
        let anomaly = match what {
            crate::Timeout::Upstream => "upstream_timeout",
            _ => "client_timeout",
        };
        let mut e = self.base_event(event::PROTOCOL_VIOLATION, None);
        e.anomaly = Some(anomaly);
        e.outcome = "timed_out".into();
        e.status = Some(421);
        self.out.push_back(Output::Audit(Box::new(e)));
        self.out.push_back(Output::ToClient(Bytes::from_static(
            b"421 4.4.2 Timeout, closing transmission channel\r\n",
        )));
        self.close();
    }

    /// The upstream cannot be reached: the client gets `421` and the connection closes.
    pub fn upstream_failed(&mut self, reason: &str) {
        let mut e = self.base_event(event::UPSTREAM_ERROR, None);
        e.outcome = "unavailable".into();
        e.status = Some(421);
        e.detail = Some(reason.to_string());
        self.out.push_back(Output::Audit(Box::new(e)));
        self.pending.clear();
        self.out.push_back(Output::ToClient(Bytes::from_static(
            b"421 4.3.0 Service not available, closing transmission channel\r\n",
        )));
        self.close();
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
            protocol: Some("smtp"),
            flow: self.meta.id,
            request: self.commands_seen.saturating_sub(1),
            client: self.meta.client.clone(),
            upstream: self.meta.upstream.clone(),
            method: cmd.map(|c| c.verb.clone()),
            uri: cmd.map(|c| excerpt(&c.arg)),
            ..AuditEvent::default()
        }
    }

    /// `side` closed its sending direction.
    pub fn handle_eof(&mut self, side: Side) {
        match side {
            Side::Client => {
                if self.pending.is_empty() || matches!(self.mode, Mode::Opaque) {
                    self.close();
                }
            }
            Side::Server => {
                self.flush();
                self.close();
            }
        }
    }

    /// Feeds bytes read from `side`.
    pub fn handle_data(&mut self, side: Side, data: &[u8], snapshot: &Arc<PatchSet>) {
        if self.closed {
            return;
        }
        if matches!(self.mode, Mode::Opaque) {
            self.out.push_back(match side {
                Side::Client => Output::ToServer(Bytes::copy_from_slice(data)),
                Side::Server => Output::ToClient(Bytes::copy_from_slice(data)),
            });
            return;
        }
        match side {
            Side::Client => {
                self.client_bytes(data, snapshot);
                while !self.reread.is_empty() && !self.closed {
                    let again = std::mem::take(&mut self.reread);
                    self.client_bytes(&again, snapshot);
                }
            }
            Side::Server => {
                let mut replies = Vec::new();
                let result = self.replies.push(data, &mut replies);
                for r in replies {
                    self.on_reply(r, snapshot);
                }
                if let Err(e) = result {
                    let mut ev = self.base_event(event::UPSTREAM_ERROR, None);
                    ev.outcome = "bad_gateway".into();
                    ev.detail = Some(format!("upstream sent a {e}"));
                    self.out.push_back(Output::Audit(Box::new(ev)));
                    self.out.push_back(Output::ToClient(Bytes::from_static(
                        b"421 4.3.0 Service not available, closing transmission channel\r\n",
                    )));
                    self.close();
                }
                while !self.reread.is_empty() && !self.closed {
                    let again = std::mem::take(&mut self.reread);
                    self.client_bytes(&again, snapshot);
                }
            }
        }
    }

    fn client_bytes(&mut self, mut data: &[u8], snapshot: &Arc<PatchSet>) {
        while !data.is_empty() && !self.closed {
            match &mut self.mode {
                Mode::Opaque => {
                    self.send_to_server(Bytes::copy_from_slice(data));
                    return;
                }
                Mode::AwaitData(held) => {
                    held.extend_from_slice(data);
                    return;
                }
                Mode::Bdat(n) => {
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(data.len());
                    *n -= take as u64;
                    if *n == 0 {
                        self.mode = Mode::Commands;
                    }
                    self.send_to_server(Bytes::copy_from_slice(&data[..take]));
                    data = &data[take..];
                }
                Mode::Message { .. } => {
                    let used = self.message_bytes(data, snapshot);
                    data = &data[used..];
                }
                Mode::Commands => {
                    // Commands are read one line at a time: DATA and BDAT change the mode.
                    let end = data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1);
                    let mut events = Vec::new();
                    self.commands.push(&data[..end], &mut events);
                    data = &data[end..];
                    for ev in events {
                        self.on_command(ev, snapshot);
                    }
                }
            }
        }
    }

    fn local(&mut self, line: &str) {
        self.pending
            .push_back(Pending::Local(Bytes::from(format!("{line}\r\n"))));
        self.flush();
    }

    /// Sends the gateway's replies whose turn has come, and resolves `DATA`.
    fn flush(&mut self) {
        loop {
            match self.pending.front() {
                Some(Pending::Local(_)) => {
                    if let Some(Pending::Local(b)) = self.pending.pop_front() {
                        self.out.push_back(Output::ToClient(b));
                    }
                }
                Some(Pending::DataGo) => {
                    self.pending.pop_front();
                    let held = match std::mem::replace(&mut self.mode, Mode::Commands) {
                        Mode::AwaitData(h) => h,
                        other => {
                            self.mode = other;
                            Vec::new()
                        }
                    };
                    if self.rcpt_to.is_empty() {
                        self.out.push_back(Output::ToClient(Bytes::from_static(
                            b"554 5.5.1 Error: no valid recipients\r\n",
                        )));
                    } else {
                        self.out.push_back(Output::ToClient(Bytes::from_static(
                            b"354 End data with <CR><LF>.<CR><LF>\r\n",
                        )));
                        self.mode = Mode::Message {
                            reader: DataReader::new(self.window),
                            raw: Vec::new(),
                            decided: Decision::Open,
                        };
                    }
                    self.reread.extend_from_slice(&held);
                }
                _ => return,
            }
        }
    }

    fn violation(
        &mut self,
        anomaly: &'static str,
        cmd: Option<&Command>,
        status: u16,
        detail: String,
    ) {
        let mut e = self.base_event(event::PROTOCOL_VIOLATION, cmd);
        e.anomaly = Some(anomaly);
        e.outcome = "rejected".into();
        e.status = Some(status);
        e.detail = Some(detail);
        self.out.push_back(Output::Audit(Box::new(e)));
    }

    fn view<'a>(&'a self, cmd: &'a Command, data: Option<&'a [u8]>) -> CommandView<'a> {
        CommandView {
            command: cmd.verb.as_bytes(),
            arg: &cmd.arg,
            helo: self.helo.as_deref(),
            mail_from: self.mail_from.as_deref(),
            rcpt_to: &self.rcpt_to,
            data,
            ..CommandView::default()
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
                    500,
                    format!("command line of {length} bytes"),
                );
                self.local("500 5.5.2 Line too long");
                return;
            }
            CommandEvent::Command(c) => c,
        };
        let command_patches: Vec<Applied> = snapshot
            .smtp_patches()
            .iter()
            .filter(|a| !a.patch.needs_body)
            .cloned()
            .collect();
        let base = self.base_event(event::PATCH_MATCH, Some(&cmd));
        let verdict = evaluate(&command_patches, &self.view(&cmd, None), &base);
        for e in verdict.events {
            self.out.push_back(Output::Audit(Box::new(e)));
        }
        if verdict.reset {
            self.close();
            return;
        }
        if let Some(line) = verdict.reject {
            self.local(&line);
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
            "DATA" => {
                self.data_line = Bytes::from(raw);
                self.mode = Mode::AwaitData(Vec::new());
                self.pending.push_back(Pending::DataGo);
                self.flush();
            }
            "BDAT" => match parse_bdat(&arg) {
                Some((size, _last)) => {
                    self.pending.push_back(Pending::Forwarded {
                        verb: cmd.verb.clone(),
                        arg,
                    });
                    self.send_to_server(Bytes::from(raw));
                    if size > 0 {
                        self.mode = Mode::Bdat(size);
                    }
                }
                None => self.local("501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
            },
            _ => {
                self.pending.push_back(Pending::Forwarded {
                    verb: cmd.verb.clone(),
                    arg,
                });
                self.send_to_server(Bytes::from(raw));
            }
        }
    }

    /// Reads message bytes; returns how many belong to the message.
    fn message_bytes(&mut self, data: &[u8], snapshot: &Arc<PatchSet>) -> usize {
        let Mode::Message {
            reader,
            raw,
            decided,
        } = &mut self.mode
        else {
            return 0;
        };
        let used = reader.push(data);
        let chunk = &data[..used];
        match decided {
            Decision::Open => raw.extend_from_slice(chunk),
            Decision::Streaming => match self.stream_hold.as_mut() {
                Some(hold) => hold.extend_from_slice(chunk),
                None => self
                    .out
                    .push_back(Output::ToServer(Bytes::copy_from_slice(chunk))),
            },

            Decision::Refuse(_) => {}
        }
        let done = reader.is_done();
        let over = raw.len() > self.window;
        if done || (over && *decided == Decision::Open) {
            self.decide(done, snapshot);
        }
        used
    }

    /// Checks the message (at its end, or when the window is full).
    fn decide(&mut self, done: bool, snapshot: &Arc<PatchSet>) {
        let Mode::Message {
            reader,
            raw,
            decided,
        } = std::mem::replace(&mut self.mode, Mode::Commands)
        else {
            return;
        };
        let mut decided = decided;
        if decided == Decision::Open {
            let data_cmd = Command::parse(b"DATA\r\n");
            let message_patches: Vec<Applied> = snapshot
                .smtp_patches()
                .iter()
                .filter(|a| a.patch.needs_body)
                .cloned()
                .collect();
            let mut base = self.base_event(event::PATCH_MATCH, Some(&data_cmd));
            base.uri = Some(format!("message of {} bytes", reader.size()));
            let verdict = evaluate(
                &message_patches,
                &self.view(&data_cmd, Some(reader.content())),
                &base,
            );
            for e in verdict.events {
                self.out.push_back(Output::Audit(Box::new(e)));
            }
            let anomaly = if reader.bare_lf() {
                Some((ANOMALY_BARE_LF, "550 5.5.2 Error: bare <LF> received"))
            } else if reader.bare_cr() {
                Some((ANOMALY_BARE_CR, "550 5.5.2 Error: bare <CR> received"))
            } else {
                None
            };
            decided = if verdict.reset {
                self.close();
                return;
            } else if let Some(line) = verdict.reject {
                Decision::Refuse(line)
            } else if let Some((name, line)) = anomaly {
                self.violation(
                    name,
                    Some(&data_cmd),
                    550,
                    "a line ending other than CRLF in the message: servers disagree on where it ends"
                        .into(),
                );
                Decision::Refuse(line.to_string())
            } else if done {
                // Clean and complete: send it behind the gateway's own DATA.
                self.send_data_command();
                self.pending.push_back(Pending::ServerData {
                    message: raw,
                    streaming: false,
                });
                self.end_transaction();
                return;
            } else {
                self.send_data_command();
                self.pending.push_back(Pending::ServerData {
                    message: Vec::new(),
                    streaming: true,
                });
                self.stream_hold = Some(raw);
                Decision::Streaming
            };
            if !done {
                self.mode = Mode::Message {
                    reader,
                    raw: Vec::new(),
                    decided,
                };
                return;
            }
        } else if decided == Decision::Streaming && (reader.bare_lf() || reader.bare_cr()) {
            // Too late to refuse politely: the start is at the server. Cut the connection so
            // the server never sees an end of data, and the message is not delivered.
            let data_cmd = Command::parse(b"DATA\r\n");
            self.violation(
                if reader.bare_lf() {
                    ANOMALY_BARE_LF
                } else {
                    ANOMALY_BARE_CR
                },
                Some(&data_cmd),
                421,
                "a line ending other than CRLF after the inspection window: connection closed"
                    .into(),
            );
            self.out.push_back(Output::ToClient(Bytes::from_static(
                b"421 4.7.0 Message refused, closing connection\r\n",
            )));
            self.close();
            return;
        }
        if !done {
            self.mode = Mode::Message {
                reader,
                raw: Vec::new(),
                decided,
            };
            return;
        }
        match decided {
            Decision::Refuse(line) => {
                // The server has an open transaction (MAIL, RCPT): reset it quietly.
                self.send_to_server(Bytes::from_static(b"RSET\r\n"));
                self.pending.push_back(Pending::Swallow);
                self.local(&line);
            }
            Decision::Streaming => {
                // When the server's 354 has come, the end reply is next; otherwise the 354
                // handler queues it when it sends the held message.
                if self.stream_hold.is_none() {
                    self.pending.push_back(Pending::MessageEnd);
                }
            }
            Decision::Open => {}
        }
        self.end_transaction();
    }

    fn end_transaction(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    fn on_reply(&mut self, reply: Reply, _snapshot: &Arc<PatchSet>) {
        let raw = Bytes::from(reply.raw.clone());
        if reply.is_preliminary()
            && !matches!(self.pending.front(), Some(Pending::ServerData { .. }))
        {
            self.out.push_back(Output::ToClient(raw));
            return;
        }
        let Some(front) = self.pending.pop_front() else {
            // Unsolicited (a 421 before closing): pass it on.
            self.out.push_back(Output::ToClient(raw));
            return;
        };
        match front {
            Pending::Greeting => {
                let first = reply.raw.split(|&b| b == b'\n').next().unwrap_or_default();
                self.out.push_back(Output::Banner(
                    stopgap_assets::BannerKind::SmtpGreeting,
                    String::from_utf8_lossy(first).trim_end().to_string(),
                ));
                self.out.push_back(Output::ToClient(raw));
            }
            Pending::MessageEnd => self.out.push_back(Output::ToClient(raw)),
            Pending::Swallow => {}
            Pending::Local(b) => {
                // A server reply cannot be owed behind a local one; keep order anyway.
                self.out.push_back(Output::ToClient(b));
                self.out.push_back(Output::ToClient(raw));
            }
            Pending::DataGo => self.out.push_back(Output::ToClient(raw)),
            Pending::ServerData { message, streaming } => {
                if reply.code == 354 {
                    if streaming {
                        if let Some(hold) = self.stream_hold.take() {
                            self.out.push_back(Output::ToServer(Bytes::from(hold)));
                        }
                        // If the message already ended while held, its end reply is next.
                        if !matches!(self.mode, Mode::Message { .. }) {
                            self.pending.push_front(Pending::MessageEnd);
                        }
                    } else {
                        self.out.push_back(Output::ToServer(Bytes::from(message)));
                        self.pending.push_front(Pending::MessageEnd);
                    }
                    self.release_after_data();
                } else {
                    // The server refused DATA: that is the message's final reply.
                    self.stream_hold = None;
                    self.out.push_back(Output::ToClient(raw));
                    if streaming && matches!(self.mode, Mode::Message { .. }) {
                        // The client is still sending a message the server will not take.
                        self.close();
                    }
                    self.release_after_data();
                }
            }
            Pending::Forwarded { verb, arg } => {
                let ok = (200..300).contains(&reply.code);
                match verb.as_str() {
                    "HELO" | "EHLO" if ok => self.helo = Some(arg),
                    "MAIL" if ok => {
                        self.mail_from = Some(arg);
                        self.rcpt_to.clear();
                    }
                    "RCPT" if ok => self.rcpt_to.push(arg),
                    "RSET" if ok => self.end_transaction(),
                    "BDAT" if ok && parse_bdat(&arg).is_some_and(|(_, last)| last) => {
                        self.end_transaction();
                    }
                    _ => {}
                }
                self.out.push_back(Output::ToClient(raw));
                if verb == "STARTTLS" && reply.code == 220 {
                    let mut e = self.base_event(event::OPAQUE, None);
                    e.outcome = "passed".into();
                    e.detail = Some("STARTTLS accepted: the session is encrypted from here".into());
                    self.out.push_back(Output::Audit(Box::new(e)));
                    self.mode = Mode::Opaque;
                }
            }
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H {
        insp: SmtpInspector,
        snap: Arc<PatchSet>,
        to_server: Vec<u8>,
        to_client: Vec<u8>,
        events: Vec<AuditEvent>,
        closed: bool,
    }

    impl H {
        fn new(window: usize) -> Self {
            let patches = stopgap_patch::load_dir(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../patches"),
            )
            .unwrap();
            Self {
                insp: SmtpInspector::new(FlowMeta::default(), window),
                snap: Arc::new(PatchSet::from_patches(1, patches)),
                to_server: Vec::new(),
                to_client: Vec::new(),
                events: Vec::new(),
                closed: false,
            }
        }
        fn drain(&mut self) {
            while let Some(o) = self.insp.poll_output() {
                match o {
                    Output::ToServer(b) => self.to_server.extend_from_slice(&b),
                    Output::ToClient(b) => self.to_client.extend_from_slice(&b),
                    Output::Audit(e) => self.events.push(*e),
                    Output::Close => self.closed = true,
                    Output::Banner(..) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        fn client(&mut self, b: &[u8]) -> &mut Self {
            let s = self.snap.clone();
            self.insp.handle_data(Side::Client, b, &s);
            self.drain();
            self
        }
        fn server(&mut self, b: &[u8]) -> &mut Self {
            let s = self.snap.clone();
            self.insp.handle_data(Side::Server, b, &s);
            self.drain();
            self
        }
        fn take_client(&mut self) -> String {
            String::from_utf8(std::mem::take(&mut self.to_client)).unwrap()
        }
        fn take_server(&mut self) -> String {
            String::from_utf8(std::mem::take(&mut self.to_server)).unwrap()
        }
    }

    #[test]
    fn pipelined_transaction_clean_message_forwarded_as_sent() {
        let mut h = H::new(DEFAULT_DATA_WINDOW);
        h.server(b"220 mx ESMTP\r\n");
        h.client(b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
        assert_eq!(
            h.take_server(),
            "EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n",
            "DATA waits: the gateway answers it"
        );
        h.server(b"250-mx\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n");
        assert!(h
            .take_client()
            .ends_with("250 ok\r\n250 ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"));
        let message = b"Subject: t\r\n\r\n..dot\r\n.\r\n";
        h.client(message).client(b"QUIT\r\n");
        assert_eq!(h.take_server(), "DATA\r\n", "QUIT waits behind the message");
        h.server(b"354 go\r\n");
        assert_eq!(
            h.take_server().as_bytes(),
            [message.as_slice(), b"QUIT\r\n"].concat(),
            "the message as sent, then QUIT"
        );
        h.server(b"250 queued as X\r\n221 bye\r\n");
        assert_eq!(
            h.take_client(),
            "250 queued as X\r\n221 bye\r\n",
            "354 swallowed"
        );
    }

    #[test]
    fn refused_recipient_then_data_gets_554_and_the_body_is_read_as_commands() {
        let mut h = H::new(DEFAULT_DATA_WINDOW);
        h.server(b"220 mx\r\n")
            .client(b"HELO c\r\n")
            .server(b"250 hi\r\n");
        h.client(b"MAIL FROM:<>\r\n").server(b"250 ok\r\n");
        h.client(b"RCPT TO:<${run{id}}@localhost>\r\nDATA\r\n");
        let c = h.take_client();
        assert!(
            c.ends_with(
                "553 5.1.3 Invalid recipient address\r\n554 5.5.1 Error: no valid recipients\r\n"
            ),
            "{c}"
        );
        assert_eq!(
            h.events
                .iter()
                .filter(|e| e.patch.as_deref() == Some("SG-2019-10149"))
                .count(),
            1
        );
        h.take_server();
        h.client(b"NOOP\r\n");
        assert_eq!(h.take_server(), "NOOP\r\n", "the session goes on");
    }

    #[test]
    fn smuggling_is_refused_after_the_real_end_and_the_server_transaction_is_reset() {
        let mut h = H::new(DEFAULT_DATA_WINDOW);
        h.server(b"220 mx\r\n")
            .client(b"EHLO c\r\n")
            .server(b"250 hi\r\n");
        h.client(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n")
            .server(b"250 ok\r\n250 ok\r\n");
        h.client(b"DATA\r\n");
        h.take_client();
        h.take_server();
        h.client(b"Subject: a\r\n\r\nfirst\n.\r\nMAIL FROM:<ceo@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nsmuggled\r\n.\r\n");
        assert_eq!(
            h.take_server(),
            "RSET\r\n",
            "nothing of the message reaches the server"
        );
        h.server(b"250 reset\r\n");
        let c = h.take_client();
        assert!(c.starts_with("550 5.5.2"), "{c}");
        assert!(h
            .events
            .iter()
            .any(|e| e.patch.as_deref() == Some("SG-2023-51764")));
        h.client(b"MAIL FROM:<a@x.example>\r\n");
        assert_eq!(
            h.take_server(),
            "MAIL FROM:<a@x.example>\r\n",
            "the session goes on"
        );
    }

    #[test]
    fn a_message_over_the_window_streams_after_its_first_window_is_checked() {
        let mut h = H::new(1024);
        h.server(b"220 mx\r\n")
            .client(b"EHLO c\r\n")
            .server(b"250 hi\r\n");
        h.client(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n")
            .server(b"250 ok\r\n250 ok\r\n");
        h.client(b"DATA\r\n");
        h.take_client();
        h.take_server();
        let line = b"0123456789012345678901234567890123456789\r\n";
        let mut message = Vec::new();
        for _ in 0..100 {
            message.extend_from_slice(line);
        }
        message.extend_from_slice(b".\r\n");
        h.client(&message[..2000]);
        assert_eq!(
            h.take_server(),
            "DATA\r\n",
            "over the window: DATA sent, bytes held"
        );
        h.server(b"354 go\r\n");
        h.client(&message[2000..]);
        assert_eq!(h.take_server().as_bytes(), message.as_slice());
        h.server(b"250 queued\r\n");
        assert_eq!(h.take_client(), "250 queued\r\n");
    }

    #[test]
    fn starttls_turns_the_session_opaque() {
        let mut h = H::new(DEFAULT_DATA_WINDOW);
        h.server(b"220 mx\r\n")
            .client(b"STARTTLS\r\n")
            .server(b"220 go ahead\r\n");
        h.take_server();
        h.client(b"\x16\x03\x01\x00\x05hello");
        assert_eq!(h.to_server, b"\x16\x03\x01\x00\x05hello");
        assert!(h.events.iter().any(|e| e.event == event::OPAQUE));
    }
}
