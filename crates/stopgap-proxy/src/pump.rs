//! Listener and per-connection pump.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use stopgap_engine::{
    FlowInspector, FlowMeta, FtpInspector, InspectorConfig, Output, Session, Side, SmtpInspector,
    Timeout,
};
use stopgap_patch::PatchSet;
use stopgap_patch::Protocol;
use stopgap_proto::ftp;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::metrics::ListenerMetrics;
use crate::ControlEvent;

/// Size of each per-connection read buffer.
pub const READ_BUFFER: usize = 64 * 1024;

/// How long a closing connection keeps reading (and discarding) what the client still sends.
pub const LINGER: Duration = Duration::from_secs(2);

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

/// A listener's settings that a reload may change; each new connection reads the current ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSettings {
    /// Where to connect for each client.
    pub upstream: SocketAddr,
    /// Engine settings.
    pub inspector: InspectorConfig,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// FTP: longest command line.
    pub ftp_max_line: usize,
    /// Timers of a connection.
    pub timeouts: Timeouts,
}

/// How long a connection may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The client, part-way through a message (slowloris, slow bodies): `408` / `421`.
    pub client: Duration,
    /// The client, between messages: the connection is closed.
    pub idle: Duration,
    /// The upstream, while it owes an answer: `504` / `421`.
    pub upstream: Duration,
    /// A whole message from its first byte (slowloris that trickles a byte at a time): the
    /// head must arrive within this, and every [`Timeouts::min_rate`] bytes after buy one more
    /// second (slow bodies). `408` / `421`.
    pub message: Duration,
    /// Bytes per second a message must keep up once past [`Timeouts::message`].
    pub min_rate: u64,
}

impl Timeouts {
    /// When the message that started at `start` with `bytes` read so far must be complete.
    #[must_use]
    pub fn message_deadline(&self, start: Instant, bytes: u64) -> Instant {
        start + self.message + Duration::from_secs(bytes / self.min_rate.max(1))
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            client: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            upstream: Duration::from_secs(60),
            message: Duration::from_secs(20),
            min_rate: 500,
        }
    }
}

/// What to do with a connection whose inspection fails (a panic, isolated to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Refuse: `500` (HTTP) or `421` (FTP, SMTP) and close.
    #[default]
    FailClosed,
    /// Pass the rest of the connection through uninspected, logged.
    FailOpen,
}

/// A gateway-wide budget for the bytes inspectors hold (heads, body windows, messages).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Bytes held now.
    #[must_use]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Moves a connection's share from `before` to `after`; `false` when the budget is
    /// exceeded.
    fn update(&self, before: usize, after: usize) -> bool {
        if after == before {
            // Nothing held or given back (most reads): no shared counter to touch, and not
            // this connection that exceeds the budget.
            true
        } else if after > before {
            let total = self.used.fetch_add(after - before, Ordering::AcqRel) + (after - before);
            total <= self.limit
        } else {
            self.used.fetch_sub(before - after, Ordering::AcqRel);
            true
        }
    }
}

/// Gives a connection's share of the budget back when it ends.
struct BudgetShare {
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.budget.update(self.held, 0);
    }
}

/// Connection limits of a listener, shared by its connections.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once on the listener.
    pub max: u64,
    /// Most connections open at once from one source address.
    pub max_per_source: u32,
    open: AtomicU64,
    per_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
}

impl ConnectionLimits {
    /// Limits with nothing open yet.
    #[must_use]
    pub fn new(max: u64, max_per_source: u32) -> Self {
        Self {
            max,
            max_per_source,
            open: AtomicU64::new(0),
            per_source: std::sync::Mutex::default(),
        }
    }

    /// Takes a slot for `source`; `Err` names the limit reached.
    fn admit(self: &Arc<Self>, source: std::net::IpAddr) -> Result<Slot, &'static str> {
        let mut per = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        if self.open.load(Ordering::Acquire) >= self.max {
            return Err("max_connections");
        }
        let n = per.entry(source).or_insert(0);
        if *n >= self.max_per_source {
            return Err("max_connections_per_source");
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            limits: self.clone(),
            source,
        })
    }
}

/// A connection's place within the limits, given back when it ends.
struct Slot {
    limits: Arc<ConnectionLimits>,
    source: std::net::IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self
            .limits
            .per_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.source);
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells connections to finish: set once, on shutdown.
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<bool>);

/// The sending side of [`Drain`], with a count of the connections still open.
#[derive(Debug)]
pub struct DrainSwitch {
    tx: watch::Sender<bool>,
    open: Arc<AtomicU64>,
}

impl DrainSwitch {
    /// A switch, not yet thrown.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tx: watch::channel(false).0,
            open: Arc::default(),
        }
    }

    /// A receiver for a listener.
    #[must_use]
    pub fn drain(&self) -> (Drain, Arc<AtomicU64>) {
        (Drain(self.tx.subscribe()), self.open.clone())
    }

    /// Stops accepting everywhere and asks open connections to close once idle.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    /// Connections still open.
    #[must_use]
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Acquire)
    }
}

impl Default for DrainSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&mut self) {
        // An error means the switch is gone, which only happens at exit: treat as drain.
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// What a running listener needs.
#[derive(Clone)]
pub struct ListenerRuntime {
    /// The protocol spoken on this listener.
    pub protocol: Protocol,
    /// Settings, swappable by a reload.
    pub settings: Arc<ArcSwap<ListenerSettings>>,
    /// The current patch snapshot.
    pub patches: Arc<ArcSwap<PatchSet>>,
    /// What each upstream runs: narrows the snapshot per server.
    pub assets: Arc<stopgap_assets::Assets>,
    /// This listener's policy for servers of unknown product (`None`: the inventory's).
    pub unknown_assets: Option<stopgap_assets::UnknownPolicy>,
    /// The audit log.
    pub audit: AuditLog,
    /// This listener's metrics.
    pub metrics: ListenerMetrics,
    /// Shutdown signal.
    pub drain: Drain,
    /// Open connections of the whole gateway (for a bounded graceful shutdown).
    pub open: Arc<AtomicU64>,
    /// This listener's connection limits.
    pub limits: Arc<ConnectionLimits>,
    /// What to do when a connection's inspection fails.
    pub failure_policy: FailurePolicy,
    /// Strikes and bans per source address.
    pub escalation: Arc<crate::escalation::Escalation>,
    /// The gateway-wide budget for bytes held by inspection.
    pub budget: Arc<MemoryBudget>,
}

/// The audit event of a ban or its end.
fn escalation_event(change: &crate::escalation::Change, generation: u64) -> ControlEvent {
    use crate::escalation::Change;
    let (detail, result, new_state) = match change {
        Change::Banned {
            source,
            strikes,
            enforced,
        } => (
            format!(
                "{source}: {strikes} neutralised attempts within the window: {}",
                if *enforced {
                    "refused until the ban ends"
                } else {
                    "would be refused (monitor)"
                }
            ),
            "ok",
            if *enforced { "banned" } else { "would_ban" },
        ),
        Change::Expired { source } => (format!("{source}: ban ended"), "ok", "expired"),
    };
    ControlEvent {
        event: crate::audit::control_event::ESCALATION,
        actor: "traffic".into(),
        new_state: Some(new_state.into()),
        generation,
        result,
        detail: Some(detail),
        ..ControlEvent::default()
    }
}

/// Decrements the open-connection counts when a connection task ends, however it ends.
struct OpenGuard {
    open: Arc<AtomicU64>,
    metrics: ListenerMetrics,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.active.dec();
    }
}

/// Accepts connections, one task each, until the drain signal.
pub async fn serve_listener(listener: TcpListener, rt: ListenerRuntime) {
    let mut drain = rt.drain.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = drain.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (banned, change) = rt.escalation.check(peer.ip(), Instant::now());
                if let Some(change) = change {
                    let generation = rt.patches.load().generation;
                    let _ = rt
                        .audit
                        .record_control(escalation_event(&change, generation))
                        .await;
                }
                if banned {
                    refuse_banned(stream, peer, &rt);
                    continue;
                }
                let slot = match rt.limits.admit(peer.ip()) {
                    Ok(slot) => slot,
                    // Overload under fail_open: the gateway must not become the outage, so the
                    // connection is relayed uninspected (logged). One source over its own
                    // share is refused whatever the policy: that is abuse, not load.
                    Err("max_connections") if rt.failure_policy == FailurePolicy::FailOpen => {
                        relay_uninspected(stream, peer, &rt);
                        continue;
                    }
                    Err(limit) => {
                        refuse_over_limit(stream, peer, limit, &rt);
                        continue;
                    }
                };
                let rt = rt.clone();
                rt.open.fetch_add(1, Ordering::AcqRel);
                rt.metrics.active.inc();
                rt.metrics.connections.inc();
                let guard = OpenGuard {
                    open: rt.open.clone(),
                    metrics: rt.metrics.clone(),
                };
                tokio::spawn(async move {
                    let _guard = guard;
                    let _slot = slot;
                    let id = NEXT_FLOW.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = handle_connection(stream, peer, id, rt).await {
                        tracing::debug!(flow = id, "connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers a connection over a limit with the protocol's refusal, and records it.
fn refuse_over_limit(
    mut stream: TcpStream,
    peer: SocketAddr,
    limit: &'static str,
    rt: &ListenerRuntime,
) {
    let reply: &'static [u8] = match rt.protocol {
        Protocol::Http => b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n503 Service Unavailable\n",
        Protocol::Ftp => b"421 Too many connections, try again later.\r\n",
        Protocol::Smtp => b"421 4.7.0 Too many connections, try again later\r\n",
    };
    rt.audit.record(stopgap_engine::AuditEvent {
        event: stopgap_engine::audit::event::PROTOCOL_VIOLATION,
        client: peer.to_string(),
        upstream: rt.settings.load().upstream.to_string(),
        anomaly: Some(limit),
        outcome: "refused".into(),
        status: Some(match rt.protocol {
            Protocol::Http => 503,
            _ => 421,
        }),
        detail: Some(format!("connection limit {limit} reached")),
        ..stopgap_engine::AuditEvent::default()
    });
    tokio::spawn(async move {
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    });
}

/// Relays a connection over `max_connections` to the upstream byte for byte, uninspected
/// (fail_open), and records it.
fn relay_uninspected(mut stream: TcpStream, peer: SocketAddr, rt: &ListenerRuntime) {
    let settings = **rt.settings.load();
    rt.audit.record(stopgap_engine::AuditEvent {
        event: stopgap_engine::audit::event::PROTOCOL_VIOLATION,
        client: peer.to_string(),
        upstream: settings.upstream.to_string(),
        anomaly: Some("max_connections"),
        outcome: "passed_uninspected".into(),
        detail: Some(
            "connection limit max_connections reached; fail_open relays it uninspected".into(),
        ),
        ..stopgap_engine::AuditEvent::default()
    });
    tokio::spawn(async move {
        let connect = tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect(settings.upstream),
        );
        if let Ok(Ok(mut server)) = connect.await {
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut server).await;
        }
    });
}

/// What is left of a connection whose inspection panicked.
type Halves = (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
    Option<tokio::net::tcp::OwnedReadHalf>,
    Option<tokio::net::tcp::OwnedWriteHalf>,
);

/// Applies the failure policy to a connection whose inspection of client bytes `data` failed
/// (a panic, contained to this connection, or the memory budget exhausted).
#[allow(clippy::too_many_arguments)]
async fn fail(
    id: u64,
    peer: SocketAddr,
    rt: &ListenerRuntime,
    data: &[u8],
    client_r: tokio::net::tcp::OwnedReadHalf,
    client_w: tokio::net::tcp::OwnedWriteHalf,
    server_r: Option<tokio::net::tcp::OwnedReadHalf>,
    server_w: Option<tokio::net::tcp::OwnedWriteHalf>,
    why: &str,
) -> std::io::Result<()> {
    apply_failure_policy(
        id,
        peer,
        rt,
        Some(data),
        None,
        (client_r, client_w, server_r, server_w),
        why,
    )
    .await
}

/// The same for a panic while inspecting server bytes `data`.
#[allow(clippy::too_many_arguments)]
async fn fail_server_side(
    id: u64,
    peer: SocketAddr,
    rt: &ListenerRuntime,
    data: &[u8],
    client_r: tokio::net::tcp::OwnedReadHalf,
    client_w: tokio::net::tcp::OwnedWriteHalf,
    server_r: Option<tokio::net::tcp::OwnedReadHalf>,
    server_w: Option<tokio::net::tcp::OwnedWriteHalf>,
) -> std::io::Result<()> {
    apply_failure_policy(
        id,
        peer,
        rt,
        None,
        Some(data),
        (client_r, client_w, server_r, server_w),
        "the inspection of this connection failed (a panic, contained to it)",
    )
    .await
}

async fn apply_failure_policy(
    id: u64,
    peer: SocketAddr,
    rt: &ListenerRuntime,
    from_client: Option<&[u8]>,
    from_server: Option<&[u8]>,
    halves: Halves,
    why: &str,
) -> std::io::Result<()> {
    let (mut client_r, mut client_w, server_r, server_w) = halves;
    let open = rt.failure_policy == FailurePolicy::FailOpen && server_w.is_some();
    rt.audit.record(stopgap_engine::AuditEvent {
        event: stopgap_engine::audit::event::PROTOCOL_VIOLATION,
        flow: id,
        client: peer.to_string(),
        upstream: rt.settings.load().upstream.to_string(),
        anomaly: Some(if why.contains("budget") {
            "inspection_budget"
        } else {
            "inspection_failed"
        }),
        outcome: if open {
            "passed_uninspected"
        } else {
            "refused"
        }
        .into(),
        detail: Some(format!("{why}; failure policy applied")),
        ..stopgap_engine::AuditEvent::default()
    });
    tracing::error!(flow = id, "{why}; applying the failure policy");
    if !open {
        let reply: &[u8] = match rt.protocol {
            Protocol::Http if why.contains("budget") => b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n503 Service Unavailable\n",
            Protocol::Http => b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 26\r\nConnection: close\r\n\r\n500 Internal Server Error\n",
            Protocol::Ftp => b"421 Service not available, closing control connection.\r\n",
            Protocol::Smtp => b"421 4.3.0 Service not available, closing transmission channel\r\n",
        };
        let _ = client_w.write_all(reply).await;
        let _ = client_w.shutdown().await;
        return Ok(());
    }
    // Fail open: the rest of the connection passes through untouched.
    let (Some(mut server_r), Some(mut server_w)) = (server_r, server_w) else {
        return Ok(());
    };
    if let Some(d) = from_client {
        server_w.write_all(d).await?;
    }
    if let Some(d) = from_server {
        client_w.write_all(d).await?;
    }
    let up = tokio::io::copy(&mut client_r, &mut server_w);
    let down = tokio::io::copy(&mut server_r, &mut client_w);
    let _ = tokio::join!(up, down);
    Ok(())
}

/// Answers a banned source and records it.
fn refuse_banned(mut stream: TcpStream, peer: SocketAddr, rt: &ListenerRuntime) {
    let (reply, status): (&'static [u8], u16) = match rt.protocol {
        Protocol::Http => (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\n403 Forbidden\n", 403),
        Protocol::Ftp => (b"421 Service not available for your address.\r\n", 421),
        Protocol::Smtp => (b"554 5.7.1 Service not available for your address\r\n", 554),
    };
    rt.audit.record(stopgap_engine::AuditEvent {
        event: stopgap_engine::audit::event::PROTOCOL_VIOLATION,
        client: peer.to_string(),
        upstream: rt.settings.load().upstream.to_string(),
        anomaly: Some("source_banned"),
        outcome: "refused".into(),
        status: Some(status),
        ..stopgap_engine::AuditEvent::default()
    });
    tokio::spawn(async move {
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    });
}

/// The patch snapshot of one connection's server, rebuilt only when the patch generation or
/// the asset table moves (most reads take neither lock nor allocation).
#[derive(Default)]
struct SnapshotCache {
    generation: u64,
    epoch: u64,
    set: Option<Arc<PatchSet>>,
}

impl SnapshotCache {
    /// Lent, not cloned: a read costs a load of the shared pointer and two comparisons.
    fn current(&mut self, rt: &ListenerRuntime, server: SocketAddr) -> &Arc<PatchSet> {
        let base = rt.patches.load();
        let epoch = rt.assets.epoch();
        let fresh = self.generation == base.generation && self.epoch == epoch;
        if !fresh || self.set.is_none() {
            self.generation = base.generation;
            self.epoch = epoch;
            self.set = Some(rt.assets.patches_for(server, &base, rt.unknown_assets));
        }
        self.set.as_ref().expect("filled above")
    }
}

/// A new connection to the listener's upstream, or why there is none (refused, timed out).
async fn connect_upstream(settings: &ListenerSettings) -> Result<TcpStream, String> {
    match tokio::time::timeout(
        settings.connect_timeout,
        TcpStream::connect(settings.upstream),
    )
    .await
    {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("connect to {}: {e}", settings.upstream)),
        Err(_) => Err(format!("connect to {}: timed out", settings.upstream)),
    }
}

/// Byte pieces for one side of a connection, written together with one system call where the
/// kernel takes it all: one piece, or small pieces joined, with `send`; larger rounds with one
/// vectored write (`writev`), without a copy.
#[derive(Default)]
struct Gather {
    parts: Vec<Bytes>,
    /// Where a round of small pieces is joined before it is written.
    joined: Vec<u8>,
}

/// Rounds up to this size are joined into one buffer and written with one `send`, which
/// takes a shorter path through the kernel than `writev` does.
const JOIN_UP_TO: usize = 4096;

impl Gather {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.parts.push(bytes);
        }
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        // One buffer for the whole round when there is one piece, or small ones to join.
        let whole: Option<&[u8]> = match self.parts.as_slice() {
            [one] => Some(one),
            parts if parts.iter().map(Bytes::len).sum::<usize>() <= JOIN_UP_TO => {
                self.joined.clear();
                for part in parts {
                    self.joined.extend_from_slice(part);
                }
                Some(&self.joined)
            }
            _ => None,
        };
        if let Some(bytes) = whole {
            w.write_all(bytes).await?;
            self.parts.clear();
            return Ok(());
        }
        // The first unwritten piece and how much of it is written.
        let (mut first, mut done) = (0, 0);
        while first < self.parts.len() {
            // Up to eight pieces per call, from an array on the stack (a round rarely has
            // more than a head and a body piece per side).
            let mut slices = [std::io::IoSlice::new(&[]); 8];
            let pieces = std::iter::once(&self.parts[first][done..])
                .chain(self.parts[first + 1..].iter().map(|p| &p[..]));
            let mut count = 0;
            for (slot, piece) in slices.iter_mut().zip(pieces) {
                *slot = std::io::IoSlice::new(piece);
                count += 1;
            }
            let mut n = w.write_vectored(&slices[..count]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let left = self.parts[first].len() - done;
                if n >= left {
                    n -= left;
                    first += 1;
                    done = 0;
                } else {
                    done += n;
                    n = 0;
                }
            }
        }
        self.parts.clear();
        Ok(())
    }
}

/// Writes what has been gathered for each side: the server's share first (the added latency
/// of a forwarded head is recorded once it is written), then the client's.
async fn flush_gathered(
    for_server: &mut Gather,
    server_w: Option<&mut tokio::net::tcp::OwnedWriteHalf>,
    for_client: &mut Gather,
    client_w: &mut tokio::net::tcp::OwnedWriteHalf,
    forwarded_head_at: &mut Option<Instant>,
    metrics: &ListenerMetrics,
) -> std::io::Result<()> {
    if let Some(w) = server_w {
        if !for_server.is_empty() {
            for_server.write_to(w).await?;
            if let Some(t) = forwarded_head_at.take() {
                metrics.added_latency.observe(t.elapsed().as_secs_f64());
            }
        }
    }
    for_client.write_to(client_w).await
}

/// The test-only fault hook: when `STOPGAP_FAULT_PANIC_MARKER` is set, client bytes that
/// contain it make the inspection of that connection panic (to test isolation and the
/// failure policy). Without the variable nothing happens.
fn fault_marker() -> Option<&'static [u8]> {
    static MARKER: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    MARKER
        .get_or_init(|| {
            std::env::var("STOPGAP_FAULT_PANIC_MARKER")
                .ok()
                .filter(|m| !m.is_empty())
                .map(String::into_bytes)
        })
        .as_deref()
}

async fn handle_connection(
    client: TcpStream,
    peer: SocketAddr,
    id: u64,
    rt: ListenerRuntime,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let settings = **rt.settings.load();
    let meta = FlowMeta {
        id,
        client: peer.to_string(),
        upstream: settings.upstream.to_string(),
    };
    let mut insp = match rt.protocol {
        Protocol::Ftp => Session::Ftp(Box::new(FtpInspector::new(meta, settings.ftp_max_line))),
        Protocol::Smtp => Session::Smtp(Box::new(SmtpInspector::new(
            meta,
            stopgap_engine::smtp::DEFAULT_DATA_WINDOW,
        ))),
        Protocol::Http => Session::Http(Box::new(FlowInspector::new(settings.inspector, meta))),
    };
    // The drain signal's future lives as long as the connection: one waiter registration, not
    // one per round.
    let mut drain = rt.drain.clone();
    let mut draining = drain.is_set();
    let drained = async move { drain.wait().await };
    tokio::pin!(drained);
    let server = match connect_upstream(&settings).await {
        Ok(s) => Some(s),
        Err(reason) => {
            insp.upstream_failed(&reason);
            None
        }
    };
    let client_local_ip = client.local_addr().map(|a| a.ip()).ok();
    let server_local_ip = server
        .as_ref()
        .and_then(|s| s.local_addr().ok())
        .map(|a| a.ip());
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = match server {
        Some(s) => {
            let (r, w) = s.into_split();
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    // Read buffers: capacity only, so that an idle connection's untouched pages cost no memory.
    let mut cbuf = BytesMut::with_capacity(READ_BUFFER);
    let mut sbuf = BytesMut::with_capacity(READ_BUFFER);
    let mut client_open = true;
    // The server closed an idle keep-alive connection: the client's next bytes bring a new one.
    let mut reconnect = false;
    let mut shutdown_server_when_idle = false;
    let mut last_client = Instant::now();
    let mut last_server = Instant::now();
    let mut snapshots = SnapshotCache::default();
    // Emptied by every round's writes; kept for their capacity.
    let mut for_server = Gather::default();
    let mut for_client = Gather::default();
    let mut armed = Instant::now() + settings.timeouts.idle;
    let timer = tokio::time::sleep_until(armed.into());
    tokio::pin!(timer);
    // The message the client is part-way through: when it started, and bytes read since.
    let mut message: Option<(Instant, u64)> = None;
    let timeouts = settings.timeouts;
    let mut share = BudgetShare {
        budget: rt.budget.clone(),
        held: 0,
    };
    loop {
        let server_open = server_r.is_some();
        if !client_open && !server_open {
            break;
        }
        if draining && insp.is_idle() {
            // Shutting down and between messages: close now; no request is cut.
            break;
        }
        // The timer that applies now: a client part-way through a message, an upstream that
        // owes an answer, or an idle connection.
        let in_message = client_open && insp.client_in_message();
        if !in_message {
            message = None;
        }
        let (deadline, which) = if in_message {
            let (start, bytes) = *message.get_or_insert((last_client, 0));
            let total = timeouts.message_deadline(start, bytes);
            ((last_client + timeouts.client).min(total), Timeout::Client)
        } else if server_open && insp.awaiting_upstream() {
            (
                last_server.max(last_client) + timeouts.upstream,
                Timeout::Upstream,
            )
        } else {
            (last_client.max(last_server) + timeouts.idle, Timeout::Idle)
        };
        // One timer per connection, re-armed only when the deadline comes earlier than armed
        // (or when it fires early): most rounds push the deadline later and touch no timer.
        if deadline < armed {
            timer.as_mut().reset(deadline.into());
            armed = deadline;
        }
        let mut forwarded_head_at = None;
        // What the previous round read has been handed to the inspector.
        cbuf.clear();
        sbuf.clear();
        tokio::select! {
            () = &mut drained, if !draining => {
                draining = true;
                continue;
            }
            () = &mut timer => {
                if Instant::now() >= deadline {
                    insp.timed_out(which);
                } else {
                    // Armed for an earlier deadline that activity has since pushed back.
                    timer.as_mut().reset(deadline.into());
                    armed = deadline;
                }
            }
            r = client_r.read_buf(&mut cbuf), if client_open => {
                match r {
                    Ok(0) | Err(_) => {
                        client_open = false;
                        insp.handle_eof(Side::Client);
                        // HTTP: every complete request has been forwarded; pass the end on.
                        // FTP/SMTP: the gateway may still owe the server a queued command or
                        // a held message; the server learns of the end once it has them.
                        if rt.protocol == Protocol::Http {
                            if let Some(w) = server_w.as_mut() {
                                let _ = w.shutdown().await;
                            }
                        } else {
                            shutdown_server_when_idle = true;
                        }
                    }
                    Ok(n) => {
                        if std::mem::take(&mut reconnect) {
                            match connect_upstream(&settings).await {
                                Ok(s) => {
                                    let (r, w) = s.into_split();
                                    (server_r, server_w) = (Some(r), Some(w));
                                    last_server = Instant::now();
                                }
                                // Whatever the client sends is answered 502 now.
                                Err(reason) => insp.upstream_failed(&reason),
                            }
                        }
                        let read_at = Instant::now();
                        if let Some((_, bytes)) = message.as_mut() {
                            *bytes += n as u64;
                        }
                        last_client = read_at;
                        rt.metrics.bytes_from_client.inc_by(n as u64);
                        let before = insp.requests();
                        let snapshot = snapshots.current(&rt, settings.upstream);
                        let data = &cbuf[..n];
                        let inspected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            if fault_marker().is_some_and(|m| data.windows(m.len()).any(|w| w == m)) {
                                panic!("injected fault (STOPGAP_FAULT_PANIC_MARKER)");
                            }
                            insp.handle_data(Side::Client, data, snapshot);
                        }));
                        if inspected.is_err() {
                            return fail(id, peer, &rt, data, client_r, client_w, server_r, server_w, "the inspection of this connection failed (a panic, contained to it)").await;
                        }
                        let held = insp.buffered();
                        let within = share.budget.update(share.held, held);
                        share.held = held;
                        if !within {
                            return fail(id, peer, &rt, &[], client_r, client_w, server_r, server_w, "the gateway's inspection memory budget is exhausted").await;
                        }
                        let new_requests = insp.requests() - before;
                        if new_requests > 0 {
                            rt.metrics.requests.inc_by(new_requests);
                            forwarded_head_at = Some(read_at);
                        }
                    }
                }
            }
            r = async { server_r.as_mut().expect("guarded").read_buf(&mut sbuf).await }, if server_open => {
                match r {
                    Ok(0) | Err(_) => {
                        server_r = None;
                        if client_open && insp.server_closed_between_messages() {
                            // An idle keep-alive connection closed by the server (its own idle
                            // timeout, a restart): the client's connection goes on, and the
                            // next request goes over a new server connection.
                            server_w = None;
                            reconnect = true;
                        } else {
                            insp.handle_eof(Side::Server);
                        }
                    }
                    Ok(n) => {
                        last_server = Instant::now();
                        rt.metrics.bytes_from_server.inc_by(n as u64);
                        let snapshot = snapshots.current(&rt, settings.upstream);
                        let data = &sbuf[..n];
                        let inspected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            insp.handle_data(Side::Server, data, snapshot);
                        }));
                        if inspected.is_err() {
                            let rest = data.to_vec();
                            return fail_server_side(id, peer, &rt, &rest, client_r, client_w, server_r, server_w).await;
                        }
                        let held = insp.buffered();
                        share.budget.update(share.held, held);
                        share.held = held;
                    }
                }
            }
        }
        // Bytes for each side are gathered and written once per round (one write instead of
        // one per head and body piece), before anything else that must follow them.
        while let Some(out) = insp.poll_output() {
            match out {
                Output::ToServer(bytes) => {
                    if server_w.is_some() {
                        for_server.push(bytes);
                    }
                    continue;
                }
                Output::ToClient(bytes) => {
                    for_client.push(bytes);
                    continue;
                }
                _ => {}
            }
            flush_gathered(
                &mut for_server,
                server_w.as_mut(),
                &mut for_client,
                &mut client_w,
                &mut forwarded_head_at,
                &rt.metrics,
            )
            .await?;
            match out {
                Output::ToServer(_) | Output::ToClient(_) => unreachable!("gathered above"),
                Output::Audit(event) => {
                    let neutralised = event.event == stopgap_engine::audit::event::PATCH_MATCH
                        && matches!(
                            event.outcome.as_str(),
                            "rejected" | "reset" | "stripped" | "truncated" | "replaced"
                        );
                    rt.audit.record(*event);
                    if neutralised {
                        if let Some(change) = rt.escalation.strike(peer.ip(), Instant::now()) {
                            let generation = rt.patches.load().generation;
                            if let Err(e) = rt
                                .audit
                                .record_control(escalation_event(&change, generation))
                                .await
                            {
                                tracing::error!("cannot log a ban: {e}");
                            }
                        }
                    }
                }
                Output::Banner(kind, text) => {
                    let base = rt.patches.load_full();
                    for t in rt.assets.observe(settings.upstream, kind, &text, &base) {
                        let event =
                            ControlEvent::asset_transition(&t, "traffic", None, base.generation);
                        if let Err(e) = rt.audit.record_control(event).await {
                            tracing::error!("cannot log a patch retirement: {e}");
                        }
                    }
                }
                Output::FtpPassive { server, extended } => {
                    let reply = match client_local_ip {
                        Some(ip) => match crate::ftp_data::relay_once(
                            ip,
                            peer.ip(),
                            server,
                            settings.connect_timeout,
                        )
                        .await
                        {
                            Ok(SocketAddr::V4(a)) if !extended => ftp::format_227(a),
                            Ok(a) => ftp::format_229(a.port()),
                            Err(e) => {
                                tracing::warn!(flow = id, "cannot open an FTP data port: {e}");
                                "425 Can't open data connection.\r\n".to_string()
                            }
                        },
                        None => "425 Can't open data connection.\r\n".to_string(),
                    };
                    client_w.write_all(reply.as_bytes()).await?;
                }
                Output::FtpActive { client, extended } => {
                    let (Some(ip), Some(w)) = (server_local_ip, server_w.as_mut()) else {
                        continue;
                    };
                    let upstream_ip = settings.upstream.ip();
                    match crate::ftp_data::relay_once(
                        ip,
                        upstream_ip,
                        client,
                        settings.connect_timeout,
                    )
                    .await
                    {
                        Ok(a) => {
                            let cmd = match a {
                                SocketAddr::V4(v4) if !extended => ftp::format_port(v4),
                                other => ftp::format_eprt(other),
                            };
                            w.write_all(cmd.as_bytes()).await?;
                        }
                        Err(e) => {
                            tracing::warn!(flow = id, "cannot open an FTP data port: {e}");
                            // The server never sees the command; answer for it.
                            client_w
                                .write_all(b"425 Can't open data connection.\r\n")
                                .await?;
                        }
                    }
                }
                Output::Close => {
                    client_w.flush().await?;
                    let _ = client_w.shutdown().await;
                    if let Some(w) = server_w.as_mut() {
                        let _ = w.shutdown().await;
                    }
                    // Lingering close: read what the client still sends for a moment, so the
                    // kernel does not answer it with a reset that destroys our reply.
                    if client_open {
                        let _ = tokio::time::timeout(LINGER, async {
                            while matches!(client_r.read_buf(&mut cbuf).await, Ok(n) if n > 0) {
                                cbuf.clear();
                            }
                        })
                        .await;
                    }
                    return Ok(());
                }
            }
        }
        flush_gathered(
            &mut for_server,
            server_w.as_mut(),
            &mut for_client,
            &mut client_w,
            &mut forwarded_head_at,
            &rt.metrics,
        )
        .await?;
        if shutdown_server_when_idle && insp.is_idle() {
            shutdown_server_when_idle = false;
            if let Some(w) = server_w.as_mut() {
                let _ = w.shutdown().await;
            }
        }
    }
    let _ = client_w.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that takes at most `step` bytes per call, to exercise the partial-write loops,
    /// and counts its calls.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.step - n);
                self.got.extend_from_slice(&buf[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write_round(pieces: &[&[u8]], step: usize) -> (Vec<u8>, usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut gather = Gather::default();
        for p in pieces {
            gather.push(Bytes::copy_from_slice(p));
        }
        let mut w = Trickle {
            got: Vec::new(),
            step,
            calls: 0,
        };
        rt.block_on(gather.write_to(&mut w)).unwrap();
        assert!(gather.is_empty(), "a written round leaves nothing behind");
        (w.got, w.calls)
    }

    #[test]
    fn every_round_is_written_whole_and_in_order() {
        let big = vec![b'x'; JOIN_UP_TO + 1];
        let nine: Vec<&[u8]> = (0..9).map(|_| &b"0123456789"[..]).collect();
        let rounds: Vec<Vec<&[u8]>> = vec![
            vec![b"only one piece"],
            vec![b"HTTP/1.1 200 OK\r\n\r\n", b"", b"body"],
            vec![b"head\r\n\r\n", &big, b"tail"],
            nine,
        ];
        for pieces in rounds {
            let want = pieces.concat();
            for step in [1, 7, usize::MAX] {
                let (got, _) = write_round(&pieces, step);
                assert_eq!(
                    got,
                    want,
                    "pieces {} written {step} bytes at a time",
                    pieces.len()
                );
            }
        }
    }

    #[test]
    fn small_pieces_are_joined_into_one_write() {
        let (_, calls) = write_round(&[b"head\r\n\r\n", b"body", b"more"], usize::MAX);
        assert_eq!(calls, 1);
        // Nine pieces past the limit: one vectored call takes eight of them, a second the rest.
        let big = vec![b'y'; JOIN_UP_TO];
        let pieces: Vec<&[u8]> = (0..9).map(|_| &big[..]).collect();
        let (got, calls) = write_round(&pieces, usize::MAX);
        assert_eq!((got.len(), calls), (9 * JOIN_UP_TO, 2));
    }
}
