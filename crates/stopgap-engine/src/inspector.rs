//! [`FlowInspector`]: one HTTP/1.1 connection, both directions, sans-IO.

use std::collections::VecDeque;
use std::net::SocketAddr;

use std::sync::Arc;
use stopgap_assets::BannerKind;

use bytes::{Bytes, BytesMut};
use stopgap_patch::expr::{Derived, Evidence, HttpView};
use stopgap_patch::{Action, Applied, Mode, PatchSet, Target};
use stopgap_proto::http1::{
    parse_response_head, take_request_head, take_response_head, BodyDecoder, Framing, Limits,
    RequestHead, ResponseHead,
};

use crate::audit::{event, excerpt, AuditEvent, Change};
use crate::edit;

/// Which peer bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (downstream).
    Client,
    /// The server (upstream).
    Server,
}

/// What the proxy must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Write these bytes to the upstream.
    ToServer(Bytes),
    /// Write these bytes to the client.
    ToClient(Bytes),
    /// Record this event.
    Audit(Box<AuditEvent>),
    /// Flush everything emitted before, then close both connections.
    Close,
    /// The server described itself (a `Server` header, a greeting): for asset awareness.
    Banner(BannerKind, String),
    /// FTP: the server opened a passive data port at `server`. Listen for the client, relay
    /// its data connection to `server`, and send the client a `227` (or `229` when
    /// `extended`) reply naming the gateway's listener.
    FtpPassive {
        /// Where the server waits for the data connection.
        server: SocketAddr,
        /// `EPSV` (229) rather than `PASV` (227).
        extended: bool,
    },
    /// FTP: the client waits for a data connection at `client` (validated: the client's own
    /// host). Listen for the server, relay its data connection to `client`, and send the
    /// server a `PORT` (or `EPRT` when `extended`) command naming the gateway's listener.
    FtpActive {
        /// Where the client waits.
        client: SocketAddr,
        /// `EPRT` rather than `PORT`.
        extended: bool,
    },
}

/// Which timer of the proxy fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The client stayed silent part-way through a message.
    Client,
    /// The upstream stayed silent while a response was owed.
    Upstream,
    /// The connection stayed idle between messages.
    Idle,
}

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectorConfig {
    /// Head and chunk limits.
    pub limits: Limits,
    /// Bytes of a request body collected for body-reading patches; the rest streams through.
    pub inspection_window: usize,
    /// What happens to a body that a body-reading patch wanted but that is longer than the
    /// window: the patches judge the window and the rest passes ([`BeyondWindow::Pass`]), or
    /// the request is refused with `413` ([`BeyondWindow::Refuse`]). An audit event either way.
    pub beyond_window: BeyondWindow,
}

/// The policy for request bodies longer than the inspection window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BeyondWindow {
    /// Judge the window; the rest passes uninspected (an `inspection_window` audit event).
    #[default]
    Pass,
    /// Refuse the request with `413` and close (an `inspection_window` audit event).
    Refuse,
}

impl InspectorConfig {
    /// Default inspection window (64 KiB).
    pub const DEFAULT_INSPECTION_WINDOW: usize = 64 * 1024;
    /// Smallest inspection window accepted by the configuration.
    pub const MIN_INSPECTION_WINDOW: usize = 1024;
    /// Largest inspection window accepted by the configuration (16 MiB).
    pub const MAX_INSPECTION_WINDOW: usize = 16 * 1024 * 1024;
}

impl Default for InspectorConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            inspection_window: Self::DEFAULT_INSPECTION_WINDOW,
            beyond_window: BeyondWindow::Pass,
        }
    }
}

/// Who the flow is between, for audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowMeta {
    /// Connection id.
    pub id: u64,
    /// Client address.
    pub client: String,
    /// Upstream address.
    pub upstream: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    /// Forward raw bytes.
    Forward,
    /// Drop (the request was refused).
    Discard,
    /// Forward payload re-encoded as fresh chunks (after a body edit).
    Rechunk,
}

struct Buffering {
    head: RequestHead,
    framing: Framing,
    decoder: BodyDecoder,
    /// The body as received (taken from the client buffer without a copy when contiguous).
    raw: BytesMut,
    /// The decoded body of a chunked message (a Content-Length body is `raw` itself).
    payload: Vec<u8>,
    snapshot: Arc<PatchSet>,
    /// The prefilter's candidates in the head as it is forwarded (none when the head phase
    /// edited it): the body phase does not scan the head again.
    head_hits: Option<Vec<bool>>,
}

impl Buffering {
    /// Whether the body decodes to itself (Content-Length framing): it is then kept once.
    fn identity(&self) -> bool {
        decodes_to_itself(self.framing)
    }

    /// The decoded body so far.
    fn payload(&self) -> &[u8] {
        decoded_body(self.framing, &self.raw, &self.payload)
    }
}

fn decodes_to_itself(framing: Framing) -> bool {
    matches!(framing, Framing::Length(_))
}

/// A buffered body as decoded: the bytes as received when they decode to themselves.
fn decoded_body<'b>(framing: Framing, raw: &'b [u8], decoded: &'b [u8]) -> &'b [u8] {
    if decodes_to_itself(framing) {
        raw
    } else {
        decoded
    }
}

enum ReqState {
    Head,
    Body {
        decoder: BodyDecoder,
        mode: BodyMode,
    },
    Buffer(Box<Buffering>),
    Tunnel,
    Closed,
}

enum RespState {
    Head,
    Body { decoder: BodyDecoder, forward: bool },
    Tunnel,
}

enum Pending {
    Upstream {
        is_head: bool,
        /// The gateway already sent `100 Continue`; the server's own is not repeated.
        swallow_continue: bool,
        /// The request asked to switch protocols (`Connection: upgrade` with `Upgrade`); a
        /// `101` to any other request is refused, not tunnelled.
        upgrade_asked: bool,
        /// The client asked to keep the connection open after this exchange.
        keep_alive: bool,
        request_no: u64,
        request: Option<Box<(RequestHead, Arc<PatchSet>)>>,
    },
    Local {
        bytes: Bytes,
        close: bool,
    },
}

/// Which request patches an evaluation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    HeadOnly,
    BodyOnly,
    All,
}

/// What the patches decided about one message.
#[derive(Default)]
struct Verdict {
    reject: Option<u16>,
    reset: bool,
    edits: Vec<(Arc<stopgap_patch::Patch>, Evidence)>,
}

/// One HTTP/1.1 connection through the gateway.
///
/// Call [`FlowInspector::handle_data`] with the bytes read from either side, then drain
/// [`FlowInspector::poll_output`] until it returns `None`, performing each [`Output`] in order.
/// Call [`FlowInspector::handle_eof`] when a side closes and [`FlowInspector::upstream_failed`]
/// when the upstream cannot be reached. The patch snapshot is passed with each call; a request
/// uses the snapshot current when its head completed.
pub struct FlowInspector {
    config: InspectorConfig,
    meta: FlowMeta,
    client_buf: BytesMut,
    server_buf: BytesMut,
    req: ReqState,
    resp: RespState,
    pending: VecDeque<Pending>,
    out: VecDeque<Output>,
    requests: u64,
    upstream_down: Option<String>,
    /// The server connection may be replaced if the server closes it between messages (see
    /// [`FlowInspector::server_closed_between_messages`]): the first one from the start, a
    /// replacement once an exchange over it left it open (so a server that closes every new
    /// connection costs one reconnect per exchange, not one per read).
    reusable: bool,
    hits: Vec<bool>,
    sent_continue: bool,
    banners: Vec<(BannerKind, String)>,
}

impl FlowInspector {
    /// A new flow.
    #[must_use]
    pub fn new(config: InspectorConfig, meta: FlowMeta) -> Self {
        Self {
            config,
            meta,
            client_buf: BytesMut::new(),
            server_buf: BytesMut::new(),
            req: ReqState::Head,
            resp: RespState::Head,
            pending: VecDeque::new(),
            out: VecDeque::new(),
            requests: 0,
            upstream_down: None,
            reusable: true,
            hits: Vec::new(),
            sent_continue: false,
            banners: Vec::new(),
        }
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether the flow has been closed by the engine.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.req, ReqState::Closed)
    }

    /// Requests seen on this connection so far (heads parsed, including refused ones).
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Whether the connection is between messages: no partial request, nothing owed to the
    /// client. A draining gateway closes idle connections.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self.req, ReqState::Head)
            && matches!(self.resp, RespState::Head)
            && self.client_buf.is_empty()
            && self.server_buf.is_empty()
            && self.pending.is_empty()
            && self.out.is_empty()
    }

    /// Whether the client is part-way through a message (a head or a body not yet complete).
    #[must_use]
    pub fn client_in_message(&self) -> bool {
        !self.client_buf.is_empty()
            || matches!(self.req, ReqState::Body { .. } | ReqState::Buffer(_))
    }

    /// Whether a forwarded request still waits for (the rest of) its response.
    #[must_use]
    pub fn awaiting_upstream(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p, Pending::Upstream { .. }))
    }

    /// A timer of the proxy fired: the client was too slow with a message (`408`, close), or
    /// the upstream too slow with a response (`504`, close). Either is an audit event.
    pub fn timed_out(&mut self, what: Timeout) {
        let (status, anomaly, detail) = match what {
            Timeout::Client => (
                408,
                "client_timeout",
                "the client did not complete its request in time",
            ),
            Timeout::Upstream => (
                504,
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            Timeout::Idle => {
                self.close();
                return;
            }
        };
        let mut e = self.base_event(event::PROTOCOL_VIOLATION, None);
        e.anomaly = Some(anomaly);
        e.outcome = "timed_out".into();
        e.status = Some(status);
        e.detail = Some(detail.into());
        self.out.push_back(Output::Audit(Box::new(e)));
        if what == Timeout::Upstream {
            // The response owed first will not come: answer it and stop.
            if matches!(self.pending.front(), Some(Pending::Upstream { .. })) {
                self.pending.pop_front();
            }
            self.out.push_back(Output::ToClient(reply(status, true)));
            self.close();
        } else {
            self.req = ReqState::Head;
            self.client_buf.clear();
            self.local_reply(reply(status, true), true);
        }
    }

    /// Bytes held in the inspector's buffers (for memory accounting).
    #[must_use]
    pub fn buffered(&self) -> usize {
        let body = match &self.req {
            ReqState::Buffer(b) => b.raw.len() + b.payload.len(),
            _ => 0,
        };
        self.client_buf.len() + self.server_buf.len() + body
    }

    /// The upstream could not be reached: requests that would be forwarded get `502`.
    pub fn upstream_failed(&mut self, reason: &str) {
        self.upstream_down = Some(reason.to_string());
    }

    /// Feeds bytes read from `side`.
    pub fn handle_data(&mut self, side: Side, data: &[u8], snapshot: &Arc<PatchSet>) {
        match side {
            Side::Client => self.client_data(data, snapshot),
            Side::Server => self.server_data(data),
        }
    }

    /// The server closed its connection when it owed nothing: no request forwarded and
    /// unanswered, no response part-way, and the last exchange, if any, meant to keep the
    /// connection (an idle keep-alive connection timed out at the server, or the server
    /// restarted).
    /// Returns `true` when the client's connection can go on with a new server connection
    /// (the caller connects before it forwards anything more); `false` when the close ends
    /// the flow, and the caller reports it with [`FlowInspector::handle_eof`].
    pub fn server_closed_between_messages(&mut self) -> bool {
        let owed = self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Upstream { .. }));
        let open = matches!(
            self.req,
            ReqState::Head | ReqState::Body { .. } | ReqState::Buffer(_)
        );
        if !self.reusable || owed || !open || !matches!(self.resp, RespState::Head) {
            return false;
        }
        if !self.server_buf.is_empty() {
            // Bytes nobody asked for, then the close: as bad as ever.
            return false;
        }
        self.reusable = false;
        true
    }

    /// `side` closed its sending direction.
    pub fn handle_eof(&mut self, side: Side) {
        match side {
            Side::Client => {
                if self.pending.is_empty() {
                    self.close();
                }
            }
            Side::Server => {
                if let RespState::Body { decoder, .. } = &self.resp {
                    if !decoder.is_done() {
                        // A close-delimited body ends here; any other body was cut short.
                        self.pending.pop_front();
                    }
                } else if matches!(self.resp, RespState::Head)
                    && matches!(self.pending.front(), Some(Pending::Upstream { .. }))
                    && self.server_buf.is_empty()
                {
                    self.pending.pop_front();
                    self.audit_upstream("upstream closed before answering");
                    self.out.push_back(Output::ToClient(reply(502, true)));
                }
                self.resp = RespState::Head;
                self.flush_locals();
                self.close();
            }
        }
    }

    fn close(&mut self) {
        if !matches!(self.req, ReqState::Closed) {
            self.req = ReqState::Closed;
            self.out.push_back(Output::Close);
        }
    }

    fn base_event(&self, name: &'static str, head: Option<&RequestHead>) -> AuditEvent {
        AuditEvent {
            event: name,
            flow: self.meta.id,
            request: self.requests.saturating_sub(1),
            client: self.meta.client.clone(),
            upstream: self.meta.upstream.clone(),
            method: head.map(|h| excerpt(h.method())),
            uri: head.map(|h| excerpt(h.target())),
            ..AuditEvent::default()
        }
    }

    /// A `patch_match` event with the patch, mode and evidence filled in.
    fn match_event(
        &self,
        patch: &stopgap_patch::Patch,
        mode: Mode,
        head: &RequestHead,
        evidence: &Evidence,
    ) -> AuditEvent {
        let mut e = self.base_event(event::PATCH_MATCH, Some(head));
        e.patch = Some(patch.id.clone());
        e.cve = patch.cve.clone();
        e.action = Some(patch.action.name());
        e.mode = Some(mode.as_str());
        e.field = Some(evidence.field.clone());
        e.excerpt = Some(excerpt(&evidence.value));
        e
    }

    fn audit_upstream(&mut self, detail: &str) {
        let mut e = self.base_event(event::UPSTREAM_ERROR, None);
        e.outcome = "bad_gateway".into();
        e.status = Some(502);
        e.detail = Some(detail.to_string());
        self.out.push_back(Output::Audit(Box::new(e)));
    }

    /// Queues a local reply behind any responses still owed to the client.
    fn local_reply(&mut self, bytes: Bytes, close: bool) {
        if self.pending.is_empty() {
            self.out.push_back(Output::ToClient(bytes));
            if close {
                self.close();
            }
        } else {
            self.pending.push_back(Pending::Local { bytes, close });
        }
    }

    fn flush_locals(&mut self) {
        while let Some(Pending::Local { .. }) = self.pending.front() {
            if let Some(Pending::Local { bytes, close }) = self.pending.pop_front() {
                self.out.push_back(Output::ToClient(bytes));
                if close {
                    self.pending.clear();
                    self.close();
                }
            }
        }
    }

    /// Refuses a request that breaks the protocol, then closes.
    fn refuse(&mut self, status: u16, anomaly: &'static str, detail: String) {
        let mut e = self.base_event(event::PROTOCOL_VIOLATION, None);
        e.anomaly = Some(anomaly);
        e.detail = Some(detail);
        self.refuse_with(status, e);
    }

    /// Logs `e` as a refusal with `status`, answers it and takes no more requests.
    fn refuse_with(&mut self, status: u16, mut e: AuditEvent) {
        e.outcome = "rejected".into();
        e.status = Some(status);
        self.out.push_back(Output::Audit(Box::new(e)));
        self.local_reply(reply(status, true), true);
        if !matches!(self.req, ReqState::Closed) {
            // The reply waits behind earlier responses; take no more requests meanwhile.
            self.req = ReqState::Closed;
            self.client_buf.clear();
        }
    }

    fn client_data(&mut self, data: &[u8], snapshot: &Arc<PatchSet>) {
        if matches!(self.req, ReqState::Closed) {
            return;
        }
        // After a 101 the buffer is drained by the `Tunnel` arm below.
        self.client_buf.extend_from_slice(data);
        loop {
            match &mut self.req {
                ReqState::Closed => return,
                ReqState::Tunnel => {
                    if !self.client_buf.is_empty() {
                        let all = self.client_buf.split().freeze();
                        self.out.push_back(Output::ToServer(all));
                    }
                    return;
                }
                ReqState::Head => {
                    if self.client_buf.is_empty() {
                        return;
                    }
                    match take_request_head(&mut self.client_buf, &self.config.limits) {
                        Ok(None) => return,
                        Err(e) => {
                            self.requests += 1;
                            self.refuse(e.status(), e.anomaly(), e.to_string());
                            return;
                        }
                        Ok(Some(head)) => {
                            let raw = head.raw_bytes();
                            self.requests += 1;
                            self.on_request_head(head, raw, snapshot);
                        }
                    }
                }
                ReqState::Body { decoder, mode } => {
                    if self.client_buf.is_empty() {
                        return;
                    }
                    let mode = *mode;
                    let mut rechunked = Vec::new();
                    let progress = decoder.decode(&self.client_buf, |d| {
                        if mode == BodyMode::Rechunk {
                            rechunked.extend_from_slice(&edit::chunk(d));
                        }
                    });
                    let progress = match progress {
                        Ok(p) => p,
                        Err(e) => {
                            self.refuse(400, e.anomaly(), e.to_string());
                            return;
                        }
                    };
                    let bytes = self.client_buf.split_to(progress.consumed).freeze();
                    match mode {
                        BodyMode::Forward => self.out.push_back(Output::ToServer(bytes)),
                        BodyMode::Discard => {}
                        BodyMode::Rechunk => {
                            if progress.done {
                                rechunked.extend_from_slice(&edit::chunk(b""));
                            }
                            self.out.push_back(Output::ToServer(rechunked.into()));
                        }
                    }
                    if !progress.done {
                        return;
                    }
                    self.req = ReqState::Head;
                }
                ReqState::Buffer(buf) => {
                    if self.client_buf.is_empty() {
                        return;
                    }
                    let room = self
                        .config
                        .inspection_window
                        .saturating_sub(buf.payload().len());
                    let take = self.client_buf.len().min(room.max(1));
                    let identity = buf.identity();
                    let payload = &mut buf.payload;
                    let progress = buf.decoder.decode(&self.client_buf[..take], |d| {
                        if !identity {
                            payload.extend_from_slice(d);
                        }
                    });
                    let progress = match progress {
                        Ok(p) => p,
                        Err(e) => {
                            self.refuse(400, e.anomaly(), e.to_string());
                            return;
                        }
                    };
                    let part = self.client_buf.split_to(progress.consumed);
                    if buf.raw.is_empty() {
                        buf.raw = part;
                    } else {
                        buf.raw.unsplit(part);
                    }
                    if progress.done || buf.payload().len() >= self.config.inspection_window {
                        let ReqState::Buffer(buf) =
                            std::mem::replace(&mut self.req, ReqState::Head)
                        else {
                            unreachable!("state checked above")
                        };
                        self.on_body_window(*buf, progress.done);
                    } else if progress.consumed == 0 {
                        return;
                    }
                }
            }
        }
    }

    /// Evaluates the patches of one phase against a request.
    fn evaluate_request(
        &mut self,
        head: &RequestHead,
        body: Option<&[u8]>,
        snapshot: &PatchSet,
        which: Which,
    ) -> Verdict {
        self.evaluate_request_with(head, body, snapshot, which, None)
    }

    /// As `evaluate_request`, with the head phase's prefilter candidates when known.
    fn evaluate_request_with(
        &mut self,
        head: &RequestHead,
        body: Option<&[u8]>,
        snapshot: &PatchSet,
        which: Which,
        head_hits: Option<&[bool]>,
    ) -> Verdict {
        let mut hits = std::mem::take(&mut self.hits);
        match (which, body) {
            (Which::BodyOnly, Some(body)) => {
                snapshot.request_body_candidates(head.raw(), head_hits, body, &mut hits);
            }
            (_, Some(body)) => snapshot.request_candidates(&[head.raw(), body], &mut hits),
            (_, None) => snapshot.request_candidates(&[head.raw()], &mut hits),
        }
        let derived = Derived::default();
        let view = HttpView {
            request: Some(head),
            body,
            response: None,
            command: None,
            derived: Some(&derived),
        };
        let mut verdict = Verdict::default();
        for (i, applied) in snapshot.request_patches().iter().enumerate() {
            let wanted = match which {
                Which::HeadOnly => !applied.patch.needs_body,
                Which::BodyOnly => applied.patch.needs_body,
                Which::All => true,
            };
            if !hits[i] || !wanted {
                continue;
            }
            let Some(evidence) = view.eval(&applied.patch.when) else {
                continue;
            };
            // Evaluation goes on after a refusal: every patch the request matches is in the
            // audit trail (monitor-mode patches staged behind an enforcing one included).
            self.record_match(applied, head, &evidence, &mut verdict);
        }
        self.hits = hits;
        verdict
    }

    /// Records one match into the verdict and the audit trail. After a reject or reset, later
    /// enforce-mode matches are recorded as `also_matched` and change nothing.
    fn record_match(
        &mut self,
        applied: &Applied,
        head: &RequestHead,
        evidence: &Evidence,
        verdict: &mut Verdict,
    ) {
        let patch = &applied.patch;
        let mut e = self.match_event(patch, applied.mode, head, evidence);
        if let Some(outcome) = applied.mode.observed_outcome(patch.action.name()) {
            e.outcome = outcome;
            self.out.push_back(Output::Audit(Box::new(e)));
            return;
        }
        if verdict.reject.is_some() || verdict.reset {
            e.outcome = "also_matched".into();
            self.out.push_back(Output::Audit(Box::new(e)));
            return;
        }
        match &patch.action {
            Action::Reject { status, .. } => {
                verdict.reject = Some(*status);
                e.status = Some(*status);
                e.outcome = "rejected".into();
            }
            Action::Reset => {
                verdict.reset = true;
                e.outcome = "reset".into();
            }
            Action::Log => e.outcome = "logged".into(),
            Action::Strip { .. } | Action::Truncate { .. } | Action::Replace { .. } => {
                // Audited when applied, with the change.
                verdict.edits.push((patch.clone(), evidence.clone()));
                return;
            }
        }
        self.out.push_back(Output::Audit(Box::new(e)));
    }

    fn on_request_head(&mut self, head: RequestHead, raw: Bytes, snapshot: &Arc<PatchSet>) {
        let framing = match head.framing() {
            Ok(f) => f,
            Err(e) => {
                self.refuse(e.status(), e.anomaly(), e.to_string());
                return;
            }
        };
        let has_body = !matches!(framing, Framing::None);
        // Without a body, body-reading patches see an empty one now.
        let verdict = if has_body {
            self.evaluate_request(&head, None, snapshot, Which::HeadOnly)
        } else {
            self.evaluate_request(&head, Some(b""), snapshot, Which::All)
        };
        if self.act_terminal(&verdict, &head, framing, None) {
            return;
        }
        let (head, raw) = self.apply_head_edits(head, raw, &verdict);
        if has_body && snapshot.any_needs_body() {
            // The candidates just found hold for the body phase unless an edit changed the head.
            let head_hits = verdict.edits.is_empty().then(|| self.hits.clone());
            // The client waits for 100 before it sends the body the patches need; answer it
            // here, once, unless the body is already on its way or responses are owed first.
            if head.expects_continue() && self.pending.is_empty() && self.client_buf.is_empty() {
                self.out.push_back(Output::ToClient(Bytes::from_static(
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                )));
                self.sent_continue = true;
            }
            self.req = ReqState::Buffer(Box::new(Buffering {
                decoder: BodyDecoder::new(framing, &self.config.limits),
                head,
                framing,
                raw: BytesMut::new(),
                payload: Vec::new(),
                snapshot: snapshot.clone(),
                head_hits,
            }));
            return;
        }
        self.forward_head(head, raw, snapshot);
        self.req = if has_body {
            ReqState::Body {
                decoder: BodyDecoder::new(framing, &self.config.limits),
                mode: BodyMode::Forward,
            }
        } else {
            ReqState::Head
        };
    }

    /// Handles reject/reset; returns `true` when the request will not be forwarded.
    fn act_terminal(
        &mut self,
        verdict: &Verdict,
        head: &RequestHead,
        framing: Framing,
        decoder: Option<BodyDecoder>,
    ) -> bool {
        if verdict.reset {
            self.pending.clear();
            self.close();
            return true;
        }
        let Some(status) = verdict.reject else {
            return false;
        };
        let keep = head.keep_alive();
        self.local_reply(reply(status, !keep), !keep);
        if matches!(self.req, ReqState::Closed) {
            return true;
        }
        self.req = match decoder {
            Some(d) if d.is_done() => ReqState::Head,
            Some(d) => ReqState::Body {
                decoder: d,
                mode: BodyMode::Discard,
            },
            None if matches!(framing, Framing::None) => ReqState::Head,
            None => ReqState::Body {
                decoder: BodyDecoder::new(framing, &self.config.limits),
                mode: BodyMode::Discard,
            },
        };
        true
    }

    fn apply_head_edits(
        &mut self,
        head: RequestHead,
        raw: Bytes,
        verdict: &Verdict,
    ) -> (RequestHead, Bytes) {
        let mut current = head;
        let mut changed = false;
        for (patch, evidence) in &verdict.edits {
            let (target, new_raw, before, after) = match &patch.action {
                Action::Strip {
                    target: Target::RequestHeader(name),
                } => {
                    let lines: Vec<_> = current
                        .headers()
                        .iter()
                        .map(|h| {
                            (
                                h.line.clone(),
                                current.raw()[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()),
                            )
                        })
                        .collect();
                    let before: Vec<u8> = current
                        .header_values(name)
                        .flat_map(|v| v.iter().copied().chain(*b"\n"))
                        .collect();
                    (
                        format!("header:{name}"),
                        edit::strip_header(current.raw(), &lines),
                        before,
                        Vec::new(),
                    )
                }
                Action::Strip {
                    target: Target::RequestArg(name),
                } => {
                    let new_target = edit::strip_arg(current.target(), name);
                    let before = current.target().to_vec();
                    let raw = edit::splice(
                        current.raw(),
                        &[(current.target.clone(), new_target.clone())],
                    );
                    (format!("arg:{name}"), raw, before, new_target)
                }
                Action::Truncate {
                    target: Target::RequestHeader(name),
                    max_len,
                } => {
                    self.edit_header_values(&current, name, |v| v[..v.len().min(*max_len)].to_vec())
                }
                Action::Replace {
                    target: Target::RequestHeader(name),
                    pattern,
                    with,
                } => {
                    self.edit_header_values(&current, name, |v| edit::replace_all(v, pattern, with))
                }
                _ => continue, // body edits happen once the body is in
            };
            let Some(reparsed) = edit::reparse(&new_raw, &self.config.limits) else {
                continue;
            };
            self.audit_edit(patch, &current, evidence, target, &before, &after);
            current = reparsed;
            changed = true;
        }
        if changed {
            let raw = current.raw_bytes();
            (current, raw)
        } else {
            (current, raw)
        }
    }

    fn edit_header_values(
        &self,
        head: &RequestHead,
        name: &str,
        f: impl Fn(&[u8]) -> Vec<u8>,
    ) -> (String, Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut edits = Vec::new();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for h in head.headers() {
            if head.raw()[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()) {
                let old = &head.raw()[h.value.clone()];
                let new = f(old);
                before.extend_from_slice(old);
                after.extend_from_slice(&new);
                edits.push((h.value.clone(), new));
            }
        }
        (
            format!("header:{name}"),
            edit::splice(head.raw(), &edits),
            before,
            after,
        )
    }

    fn audit_edit(
        &mut self,
        patch: &stopgap_patch::Patch,
        head: &RequestHead,
        evidence: &Evidence,
        target: String,
        before: &[u8],
        after: &[u8],
    ) {
        let mut e = self.match_event(patch, Mode::Enforce, head, evidence);
        e.outcome = match patch.action {
            Action::Strip { .. } => "stripped",
            Action::Truncate { .. } => "truncated",
            _ => "replaced",
        }
        .into();
        e.change = Some(Change {
            target,
            before: excerpt(before),
            after: excerpt(after),
        });
        self.out.push_back(Output::Audit(Box::new(e)));
    }

    fn forward_head(&mut self, head: RequestHead, raw: Bytes, snapshot: &Arc<PatchSet>) {
        if let Some(reason) = self.upstream_down.clone() {
            self.audit_upstream(&reason);
            self.local_reply(reply(502, true), true);
            return;
        }
        let keep_request = !snapshot.response_patches().is_empty();
        self.pending.push_back(Pending::Upstream {
            is_head: head.is_head(),
            swallow_continue: std::mem::take(&mut self.sent_continue),
            upgrade_asked: head.has_token("connection", "upgrade")
                && head.header_values("upgrade").next().is_some(),
            keep_alive: head.keep_alive(),
            request_no: self.requests - 1,
            request: keep_request.then(|| Box::new((head, snapshot.clone()))),
        });
        self.out.push_back(Output::ToServer(raw));
    }

    fn on_body_window(&mut self, buf: Buffering, body_done: bool) {
        let Buffering {
            head,
            framing,
            decoder,
            raw,
            payload: decoded,
            snapshot,
            head_hits,
        } = buf;
        let payload = decoded_body(framing, &raw, &decoded);
        let verdict = self.evaluate_request_with(
            &head,
            Some(payload),
            &snapshot,
            Which::BodyOnly,
            head_hits.as_deref(),
        );
        if self.act_terminal(&verdict, &head, framing, Some(decoder.clone())) {
            return;
        }
        if !body_done {
            let mut e = self.base_event(event::INSPECTION_WINDOW, Some(&head));
            e.detail = Some(format!(
                "body longer than the {}-byte inspection window",
                self.config.inspection_window
            ));
            if self.config.beyond_window == BeyondWindow::Refuse {
                self.refuse_with(413, e);
                return;
            }
            e.outcome = "passed_uninspected".into();
            self.out.push_back(Output::Audit(Box::new(e)));
        }
        // Head edits from body-phase patches, then body edits.
        let head_raw = head.raw_bytes();
        let (head, head_raw) = self.apply_head_edits(head, head_raw, &verdict);
        let mut new_payload: Option<Vec<u8>> = None;
        for (patch, evidence) in &verdict.edits {
            let current = new_payload.as_deref().unwrap_or(payload);
            let edited = match &patch.action {
                Action::Truncate {
                    target: Target::RequestBody,
                    max_len,
                } => current[..current.len().min(*max_len)].to_vec(),
                Action::Replace {
                    target: Target::RequestBody,
                    pattern,
                    with,
                } => edit::replace_all(current, pattern, with),
                _ => continue,
            };
            if edited != current {
                let before = current.to_vec();
                self.audit_edit(patch, &head, evidence, "body".into(), &before, &edited);
                new_payload = Some(edited);
            }
        }
        let truncating = verdict.edits.iter().any(|(p, _)| {
            matches!(
                p.action,
                Action::Truncate {
                    target: Target::RequestBody,
                    ..
                }
            )
        });
        let Some(new_payload) = new_payload else {
            // Body untouched: forward the head and the raw bytes as they came.
            self.forward_head(head, head_raw, &snapshot);
            if matches!(self.req, ReqState::Closed) {
                return;
            }
            self.out.push_back(Output::ToServer(raw.freeze()));
            if !body_done {
                self.req = ReqState::Body {
                    decoder,
                    mode: BodyMode::Forward,
                };
            }
            return;
        };
        // Body edited: re-frame.
        let (new_head, body_bytes, rest_mode) = match framing {
            Framing::Length(total) => {
                let consumed = payload.len() as u64;
                let new_len = if truncating || body_done {
                    new_payload.len() as u64
                } else {
                    total - consumed + new_payload.len() as u64
                };
                let head = set_content_length(&head, new_len, &self.config.limits);
                (
                    head,
                    new_payload,
                    if truncating {
                        BodyMode::Discard
                    } else {
                        BodyMode::Forward
                    },
                )
            }
            _ => {
                let mut chunked = edit::chunk(&new_payload);
                if body_done || truncating {
                    chunked.extend_from_slice(&edit::chunk(b""));
                }
                (
                    Some(head),
                    chunked,
                    if truncating {
                        BodyMode::Discard
                    } else {
                        BodyMode::Rechunk
                    },
                )
            }
        };
        let Some(new_head) = new_head else {
            self.refuse(500, "edit_failed", "edited head did not re-parse".into());
            return;
        };
        let raw_head = new_head.raw_bytes();
        self.forward_head(new_head, raw_head, &snapshot);
        if matches!(self.req, ReqState::Closed) {
            return;
        }
        self.out.push_back(Output::ToServer(body_bytes.into()));
        if !body_done {
            self.req = ReqState::Body {
                decoder,
                mode: rest_mode,
            };
        }
    }

    fn server_data(&mut self, data: &[u8]) {
        self.server_buf.extend_from_slice(data);
        loop {
            match &mut self.resp {
                RespState::Tunnel => {
                    if !self.server_buf.is_empty() {
                        let all = self.server_buf.split().freeze();
                        self.out.push_back(Output::ToClient(all));
                    }
                    return;
                }
                RespState::Head => {
                    if self.server_buf.is_empty() {
                        return;
                    }
                    let Some(Pending::Upstream {
                        is_head,
                        swallow_continue,
                        upgrade_asked,
                        keep_alive,
                        ..
                    }) = self.pending.front()
                    else {
                        self.audit_upstream("response without a request");
                        self.server_buf.clear();
                        self.pending.clear();
                        self.close();
                        return;
                    };
                    let (is_head, swallow_continue, upgrade_asked, request_keep_alive) =
                        (*is_head, *swallow_continue, *upgrade_asked, *keep_alive);
                    let head = match take_response_head(&mut self.server_buf, &self.config.limits) {
                        Ok(None) => return,
                        Ok(Some(h)) => h,
                        Err(e) => {
                            self.bad_upstream(&format!("invalid response head: {e}"));
                            return;
                        }
                    };
                    let raw = head.raw_bytes();
                    if head.status == 101 && !upgrade_asked {
                        // Tunnelling here would let the rest of the connection pass uninspected.
                        self.bad_upstream(
                            "101 Switching Protocols to a request that asked for no upgrade",
                        );
                        return;
                    }
                    if head.status == 101 {
                        self.out.push_back(Output::ToClient(raw));
                        self.pending.pop_front();
                        self.resp = RespState::Tunnel;
                        self.req = ReqState::Tunnel;
                        if !self.client_buf.is_empty() {
                            let rest = self.client_buf.split().freeze();
                            self.out.push_back(Output::ToServer(rest));
                        }
                        continue;
                    }
                    if (100..200).contains(&head.status) {
                        if !(head.status == 100 && swallow_continue) {
                            self.out.push_back(Output::ToClient(raw));
                        }
                        continue;
                    }
                    let framing = match head.framing(is_head) {
                        Ok(f) => f,
                        Err(e) => {
                            self.bad_upstream(&format!("ambiguous response framing: {e}"));
                            return;
                        }
                    };
                    // Both sides meant to keep the connection, and the body has an end of its
                    // own: if the server closes after this exchange, it closed an idle
                    // connection, not this response.
                    self.reusable = request_keep_alive
                        && head.keep_alive()
                        && !matches!(framing, Framing::UntilClose);
                    let forward = self.on_response_head(&head, raw);
                    let decoder = BodyDecoder::new(framing, &self.config.limits);
                    if decoder.is_done() {
                        self.finish_response();
                    } else {
                        self.resp = RespState::Body { decoder, forward };
                    }
                }
                RespState::Body { decoder, forward } => {
                    if self.server_buf.is_empty() {
                        return;
                    }
                    let forward = *forward;
                    let progress = match decoder.decode(&self.server_buf, |_| {}) {
                        Ok(p) => p,
                        Err(e) => {
                            self.audit_upstream(&format!("invalid response body: {e}"));
                            self.pending.clear();
                            self.close();
                            return;
                        }
                    };
                    let bytes = self.server_buf.split_to(progress.consumed).freeze();
                    if forward {
                        self.out.push_back(Output::ToClient(bytes));
                    }
                    if !progress.done {
                        return;
                    }
                    self.finish_response();
                }
            }
        }
    }

    fn bad_upstream(&mut self, detail: &str) {
        self.audit_upstream(detail);
        self.pending.pop_front();
        self.out.push_back(Output::ToClient(reply(502, true)));
        self.pending.clear();
        self.close();
    }

    fn finish_response(&mut self) {
        self.resp = RespState::Head;
        self.pending.pop_front();
        self.flush_locals();
    }

    /// Reports the server's self-description headers, once per value per connection.
    fn note_banners(&mut self, head: &ResponseHead) {
        for (kind, name) in [
            (BannerKind::HttpServer, "server"),
            (BannerKind::HttpPoweredBy, "x-powered-by"),
            (BannerKind::HttpAspNet, "x-aspnet-version"),
        ] {
            let Some(value) = head.header_values(name).next() else {
                continue;
            };
            let text = String::from_utf8_lossy(value);
            let seen = self.banners.iter_mut().find(|(k, _)| *k == kind);
            if seen.as_ref().is_some_and(|(_, s)| *s == text) {
                // The same value as before: nothing to copy, nothing to report.
                continue;
            }
            let text = text.into_owned();
            match seen {
                Some(seen) => seen.1.clone_from(&text),
                None => self.banners.push((kind, text.clone())),
            }
            self.out.push_back(Output::Banner(kind, text));
        }
    }

    /// Applies response-phase patches; returns whether the body is forwarded.
    fn on_response_head(&mut self, head: &ResponseHead, raw: Bytes) -> bool {
        self.note_banners(head);
        let request = match self.pending.front_mut() {
            Some(Pending::Upstream {
                request,
                request_no,
                ..
            }) => (request.take(), *request_no),
            _ => (None, 0),
        };
        let (Some(pair), request_no) = request else {
            self.out.push_back(Output::ToClient(raw));
            return true;
        };
        // The snapshot current when the request was forwarded decides its response.
        let (req, snapshot) = *pair;
        let view = HttpView {
            request: Some(&req),
            body: None,
            response: Some(head),
            command: None,
            derived: None,
        };
        let mut hits = std::mem::take(&mut self.hits);
        snapshot.response_candidates(&[head.raw()], &mut hits);
        let mut rejected = None;
        let mut strip: Vec<(String, Arc<stopgap_patch::Patch>, Evidence)> = Vec::new();
        for (i, applied) in snapshot.response_patches().iter().enumerate() {
            if !hits[i] {
                continue;
            }
            let Some(evidence) = view.eval(&applied.patch.when) else {
                continue;
            };
            let mut e = self.match_event(&applied.patch, applied.mode, &req, &evidence);
            e.request = request_no;
            if let Some(outcome) = applied.mode.observed_outcome(applied.patch.action.name()) {
                e.outcome = outcome;
            } else if rejected.is_some() {
                e.outcome = "also_matched".into();
            } else {
                match &applied.patch.action {
                    Action::Reject { status, .. } => {
                        e.outcome = "rejected".into();
                        e.status = Some(*status);
                        rejected = Some(*status);
                    }
                    Action::Strip {
                        target: Target::ResponseHeader(n),
                    } => {
                        e.outcome = "stripped".into();
                        strip.push((n.clone(), applied.patch.clone(), evidence));
                    }
                    _ => e.outcome = "logged".into(),
                }
            }
            self.out.push_back(Output::Audit(Box::new(e)));
        }
        self.hits = hits;
        if let Some(status) = rejected {
            self.out.push_back(Output::ToClient(reply(status, false)));
            return false;
        }
        if strip.is_empty() {
            self.out.push_back(Output::ToClient(raw));
            return true;
        }
        let mut bytes = head.raw().to_vec();
        for (name, _, _) in &strip {
            if let Ok(Some(h)) = parse_response_head(&bytes, &self.config.limits) {
                let lines: Vec<_> = h
                    .headers()
                    .iter()
                    .map(|f| {
                        (
                            f.line.clone(),
                            h.raw()[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()),
                        )
                    })
                    .collect();
                bytes = edit::strip_header(h.raw(), &lines);
            }
        }
        self.out.push_back(Output::ToClient(bytes.into()));
        true
    }
}

fn set_content_length(head: &RequestHead, len: u64, limits: &Limits) -> Option<RequestHead> {
    let edits: Vec<_> = head
        .headers()
        .iter()
        .filter(|h| head.raw()[h.name.clone()].eq_ignore_ascii_case(b"content-length"))
        .map(|h| (h.value.clone(), len.to_string().into_bytes()))
        .collect();
    edit::reparse(&edit::splice(head.raw(), &edits), limits)
}

/// The reason phrase for statuses the gateway sends.
#[must_use]
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A complete local reply.
#[must_use]
pub fn reply(status: u16, close: bool) -> Bytes {
    let body = format!("{status} {}\n", reason(status));
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        reason(status),
        body.len()
    )
    .into()
}
