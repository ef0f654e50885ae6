//! Replaying client bytes through a [`FlowInspector`] without any network: what `stopgap patch
//! test` and the library tests use to judge a patch's vectors.

use std::sync::Arc;

use stopgap_patch::{Action, Patch, PatchSet, Vector};

use crate::{AuditEvent, FlowInspector, FlowMeta, InspectorConfig, Output, Side};

/// What one replay produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Bytes forwarded to the upstream.
    pub to_server: Vec<u8>,
    /// Bytes answered to the client by the gateway itself.
    pub to_client: Vec<u8>,
    /// Whether the gateway closed the connection.
    pub closed: bool,
    /// Audit events, in order.
    pub events: Vec<AuditEvent>,
}

/// Feeds `client` to a fresh flow, `piece` bytes at a time (all at once when `None`).
#[must_use]
pub fn replay(snapshot: &Arc<PatchSet>, client: &[u8], piece: Option<usize>) -> Replay {
    let mut insp = FlowInspector::new(InspectorConfig::default(), FlowMeta::default());
    let mut r = Replay::default();
    for chunk in client.chunks(piece.unwrap_or(client.len()).max(1)) {
        insp.handle_data(Side::Client, chunk, snapshot);
        while let Some(o) = insp.poll_output() {
            match o {
                Output::ToServer(b) => r.to_server.extend_from_slice(&b),
                Output::ToClient(b) => r.to_client.extend_from_slice(&b),
                Output::Close => r.closed = true,
                Output::Audit(e) => r.events.push(*e),
                Output::FtpPassive { .. } | Output::FtpActive { .. } | Output::Banner(..) => {}
            }
        }
    }
    r
}

/// A stand-in FTP server's answer to one command: enough for a session to go on.
#[must_use]
pub fn ftp_answer(command: &[u8]) -> &'static [u8] {
    let verb = stopgap_proto::ftp::Command::parse(command).verb;
    match verb.as_str() {
        "USER" => b"331 Please specify the password.\r\n",
        "PASS" => b"230 Login successful.\r\n",
        "PASV" => b"227 Entering Passive Mode (127,0,0,1,200,10).\r\n",
        "EPSV" => b"229 Entering Extended Passive Mode (|||51210|)\r\n",
        "QUIT" => b"221 Goodbye.\r\n",
        "LIST" | "RETR" | "STOR" | "NLST" | "MLSD" => {
            b"150 Here comes the data.\r\n226 Transfer complete.\r\n"
        }
        _ => b"200 OK.\r\n",
    }
}

/// Replays an FTP client dialogue against a stand-in server that answers every command it
/// receives, one command at a time (as an FTP client waits for each reply). `max_line` is the
/// command-line limit (vectors are judged with a large one, so that a patch is tested on its
/// own and not through the line limit).
#[must_use]
pub fn replay_ftp(snapshot: &Arc<PatchSet>, client: &[u8], max_line: usize) -> Replay {
    let meta = FlowMeta {
        id: 1,
        client: "127.0.0.1:50000".into(),
        upstream: "127.0.0.1:21".into(),
    };
    let mut insp = crate::FtpInspector::new(meta, max_line);
    let mut r = Replay::default();
    let mut server_in: Vec<u8> = b"220 stand-in FTP server ready.\r\n".to_vec();
    let lines: Vec<&[u8]> = client.split_inclusive(|&b| b == b'\n').collect();
    let mut next = 0;
    loop {
        if !server_in.is_empty() {
            let data = std::mem::take(&mut server_in);
            insp.handle_data(Side::Server, &data, snapshot);
        } else if next < lines.len() {
            insp.handle_data(Side::Client, lines[next], snapshot);
            next += 1;
        } else {
            break;
        }
        while let Some(o) = insp.poll_output() {
            match o {
                Output::ToServer(b) => {
                    r.to_server.extend_from_slice(&b);
                    server_in.extend_from_slice(ftp_answer(&b));
                }
                Output::ToClient(b) => r.to_client.extend_from_slice(&b),
                Output::Close => r.closed = true,
                Output::Audit(e) => r.events.push(*e),
                Output::Banner(..) => {}
                Output::FtpPassive { server, .. } => {
                    r.to_client.extend_from_slice(
                        format!("227 (gateway listener for {server})\r\n").as_bytes(),
                    );
                }
                Output::FtpActive { client, .. } => {
                    let line = format!("PORT (gateway listener for {client})\r\n");
                    r.to_server.extend_from_slice(line.as_bytes());
                    server_in.extend_from_slice(b"200 PORT command successful.\r\n");
                }
            }
        }
    }
    r
}

/// A stand-in SMTP server: answers commands, reads messages after its 354 up to CRLF.CRLF.
#[derive(Debug, Default)]
pub struct SmtpStandIn {
    line: Vec<u8>,
    message: Option<stopgap_proto::smtp::DataReader>,
    bdat: u64,
}

impl SmtpStandIn {
    /// Its greeting.
    pub const GREETING: &'static [u8] = b"220 stand-in ESMTP\r\n";

    /// Feeds what the server receives; its replies are appended to `replies`.
    pub fn feed(&mut self, mut data: &[u8], replies: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.bdat > 0 {
                let take = usize::try_from(self.bdat)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.bdat -= take as u64;
                data = &data[take..];
                if self.bdat == 0 {
                    replies.extend_from_slice(b"250 2.0.0 chunk ok\r\n");
                }
                continue;
            }
            if let Some(m) = self.message.as_mut() {
                let used = m.push(data);
                data = &data[used..];
                if m.is_done() {
                    self.message = None;
                    replies.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
                }
                continue;
            }
            let b = data[0];
            data = &data[1..];
            self.line.push(b);
            if b != b'\n' {
                continue;
            }
            let cmd = stopgap_proto::smtp::Command::parse(&std::mem::take(&mut self.line));
            replies.extend_from_slice(match cmd.verb.as_str() {
                "EHLO" => b"250-stand-in\r\n250-PIPELINING\r\n250 CHUNKING\r\n".as_slice(),
                "DATA" => {
                    self.message = Some(stopgap_proto::smtp::DataReader::new(0));
                    b"354 End data with <CR><LF>.<CR><LF>\r\n"
                }
                "BDAT" => match stopgap_proto::smtp::parse_bdat(&cmd.arg) {
                    Some((n, _)) if n > 0 => {
                        self.bdat = n;
                        b""
                    }
                    _ => b"250 2.0.0 chunk ok\r\n",
                },
                "QUIT" => b"221 2.0.0 Bye\r\n",
                "STARTTLS" => b"454 4.7.0 TLS not available\r\n",
                "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
                _ => b"500 5.5.2 Error: command not recognized\r\n",
            });
        }
    }
}

/// Replays an SMTP client dialogue against a stand-in server; the client sends its next
/// bytes only when the gateway has nothing more to say (as a client waiting for replies does).
#[must_use]
pub fn replay_smtp(snapshot: &Arc<PatchSet>, client: &[u8]) -> Replay {
    let meta = FlowMeta {
        id: 1,
        client: "127.0.0.1:50000".into(),
        upstream: "127.0.0.1:25".into(),
    };
    let mut insp = crate::SmtpInspector::new(meta, crate::smtp::DEFAULT_DATA_WINDOW);
    let mut server = SmtpStandIn::default();
    let mut r = Replay::default();
    let mut server_in: Vec<u8> = SmtpStandIn::GREETING.to_vec();
    let lines: Vec<&[u8]> = client.split_inclusive(|&b| b == b'\n').collect();
    let mut next = 0;
    loop {
        if !server_in.is_empty() {
            let data = std::mem::take(&mut server_in);
            insp.handle_data(Side::Server, &data, snapshot);
        } else if next < lines.len() && !r.closed {
            insp.handle_data(Side::Client, lines[next], snapshot);
            next += 1;
        } else {
            break;
        }
        while let Some(o) = insp.poll_output() {
            match o {
                Output::ToServer(b) => {
                    r.to_server.extend_from_slice(&b);
                    server.feed(&b, &mut server_in);
                }
                Output::ToClient(b) => r.to_client.extend_from_slice(&b),
                Output::Close => r.closed = true,
                Output::Audit(e) => r.events.push(*e),
                Output::FtpPassive { .. } | Output::FtpActive { .. } | Output::Banner(..) => {}
            }
        }
    }
    r
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first request of a byte stream (head and framed body); the whole stream when it cannot
/// be framed.
#[must_use]
pub fn first_request(bytes: &[u8]) -> &[u8] {
    use stopgap_proto::http1::{parse_request_head, BodyDecoder, Limits};
    let limits = Limits::default();
    let Ok(Some(head)) = parse_request_head(bytes, &limits) else {
        return bytes;
    };
    let Ok(framing) = head.framing() else {
        return bytes;
    };
    let at = head.raw().len();
    match BodyDecoder::new(framing, &limits).decode(&bytes[at..], |_| {}) {
        Ok(p) if p.done => &bytes[..at + p.consumed],
        _ => bytes,
    }
}

/// Replays one vector of `patch` through `snapshot` and judges it: an exploit or evasion must
/// be acted on (its first request refused with the patch's own status when the patch is alone,
/// any 4xx otherwise, or edited), a benign vector must reach the upstream byte for byte with no
/// local answer. `Ok` describes what happened, `Err` what went wrong.
///
/// # Errors
/// The vector did not meet its expectation.
pub fn judge_vector(
    patch: &Patch,
    vector: &Vector,
    snapshot: &Arc<PatchSet>,
    alone: bool,
) -> Result<String, String> {
    if patch.protocol != stopgap_patch::Protocol::Http {
        return judge_command_vector(patch, vector, snapshot, alone);
    }
    let r = replay(snapshot, &vector.request, None);
    let status =
        |bytes: &[u8]| String::from_utf8_lossy(bytes.get(9..12).unwrap_or_default()).into_owned();
    if !vector.expect_match {
        if !r.to_client.is_empty() {
            return Err(format!("answered {} by the gateway", status(&r.to_client)));
        }
        if r.to_server != vector.request {
            return Err("altered on its way to the upstream".into());
        }
        return Ok("passed byte for byte".into());
    }
    let matched = r
        .events
        .iter()
        .any(|e| e.patch.as_deref() == Some(patch.id.as_str()));
    match &patch.action {
        Action::Reject { status: want, .. } => {
            if contains(&r.to_server, first_request(&vector.request)) {
                return Err("reached the upstream as sent".into());
            }
            let got = status(&r.to_client);
            if alone && got != want.to_string() {
                return Err(format!("answered {got}, the patch says {want}"));
            }
            if !got.starts_with('4') {
                return Err(format!("answered {got:?}"));
            }
            if alone && !matched {
                return Err("refused, but not by this patch".into());
            }
            Ok(format!("refused {got}"))
        }
        _ if matched => Ok(r
            .events
            .iter()
            .find(|e| e.patch.as_deref() == Some(patch.id.as_str()))
            .map_or_else(|| "matched".to_string(), |e| e.outcome.clone())),
        _ => Err("not matched".into()),
    }
}

/// Judges an FTP (or SMTP) vector: an exploit must make this patch (or, with the library, any
/// patch) refuse or edit a command, which then does not reach the server as sent; a benign
/// dialogue must reach the server byte for byte with no refusal.
fn judge_command_vector(
    patch: &Patch,
    vector: &Vector,
    snapshot: &Arc<PatchSet>,
    alone: bool,
) -> Result<String, String> {
    let r = match patch.protocol {
        stopgap_patch::Protocol::Ftp => replay_ftp(snapshot, &vector.request, 1 << 16),
        stopgap_patch::Protocol::Smtp => replay_smtp(snapshot, &vector.request),
        _ => return Err(format!("no replay for {} vectors", patch.protocol.as_str())),
    };
    let acted: Vec<&AuditEvent> = r
        .events
        .iter()
        .filter(|e| {
            e.event == crate::audit::event::PATCH_MATCH
                && matches!(e.outcome.as_str(), "rejected" | "truncated" | "reset")
        })
        .collect();
    let refused_by_protocol = r
        .events
        .iter()
        .any(|e| e.event == crate::audit::event::PROTOCOL_VIOLATION);
    if !vector.expect_match {
        if let Some(e) = acted.first() {
            return Err(format!(
                "{} by {} ({})",
                e.outcome,
                e.patch.as_deref().unwrap_or("?"),
                e.method.as_deref().unwrap_or("?")
            ));
        }
        if r.to_server != vector.request {
            return Err("altered on its way to the server".into());
        }
        return Ok("passed byte for byte".into());
    }
    let mine = acted
        .iter()
        .find(|e| e.patch.as_deref() == Some(patch.id.as_str()));
    match (mine, acted.first()) {
        (Some(e), _) => Ok(format!(
            "{} {} {}",
            e.method.as_deref().unwrap_or("?"),
            e.outcome,
            e.status.map(|s| s.to_string()).unwrap_or_default()
        )),
        (None, Some(e)) if !alone => Ok(format!(
            "{} by {}",
            e.outcome,
            e.patch.as_deref().unwrap_or("?")
        )),
        (None, None) if !alone && refused_by_protocol => Ok("refused by the codec".into()),
        _ => Err("not refused".into()),
    }
}
