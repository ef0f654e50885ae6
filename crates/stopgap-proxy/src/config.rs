//! `stopgap.toml`: file → raw model → validated [`GatewayConfig`], every error located.
//!
//! ```toml
//! [patches]
//! dir = "patches"                # patch directory (relative to this file)
//!
//! [audit]
//! log = "audit.jsonl"            # file to append to, or "-" for standard error
//!
//! [limits]                       # all optional; defaults shown
//! max_request_line = 8192
//! max_head = 32768
//! max_headers = 100
//! inspection_window = 65536
//! body_beyond_window = "pass"    # or "refuse" (413): bodies longer than the window
//! connect_timeout_ms = 5000
//! shutdown_timeout_ms = 10000   # how long SIGTERM waits for in-flight requests
//! client_timeout_ms = 30000     # a client silent part-way through a message: 408 / 421
//! message_timeout_ms = 20000    # a message from its first byte (slowloris): 408 / 421 ...
//! message_min_rate = 500        # ... plus one second per this many bytes (slow bodies)
//! idle_timeout_ms = 60000       # a connection silent between messages: closed
//! upstream_timeout_ms = 60000   # an upstream silent while it owes an answer: 504 / 421
//! max_connections = 10000       # per listener; over it: 503 / 421
//! max_connections_per_source = 256
//! inspection_budget_kib = 262144 # bytes all inspectors may hold; beyond: failure policy
//!
//! [admin]                        # optional; defaults shown
//! listen = "127.0.0.1:9190"      # or "off"
//! [[admin.token]]                # optional; default: one token named "local" in
//! name = "ops"                   #   <state dir>/admin.token, created on first start
//! file = "ops.token"             # relative to this file; created (0600) when missing
//!
//! [assets]                       # optional: the asset inventory (docs/assets.md)
//! file = "assets.toml"
//!
//! [escalation]                   # optional: repeat offenders (docs/configuration.md)
//! mode = "enforce"               # off (default) | monitor | enforce
//! strikes = 5                    # neutralised attempts ...
//! window_s = 60                  # ... within this many seconds ...
//! ban_s = 600                    # ... refuse the source this long
//! allow = ["10.0.0.0/8"]         # never banned
//!
//! [state]                        # optional
//! dir = "/var/lib/stopgap"       # patch states, default token, lock (default: see below)
//!
//! [[listener]]
//! name = "web"
//! listen = "127.0.0.1:8080"
//! upstream = "127.0.0.1:8081"
//! protocol = "http"              # or "ftp", "smtp"
//! unknown_assets = "protect"     # or "skip" (default: the asset inventory's setting)
//! failure_policy = "fail_closed" # or "fail_open": when a connection's inspection fails
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use stopgap_engine::InspectorConfig;
use stopgap_patch::{Diagnostic, Diagnostics, Protocol};
use stopgap_proto::http1::Limits;
use toml::Spanned;

use crate::audit::AuditTarget;

/// Smallest accepted head limit.
pub const MIN_MAX_HEAD: usize = 1024;
/// Largest accepted head limit.
pub const MAX_MAX_HEAD: usize = 1024 * 1024;
/// Smallest accepted request-line limit.
pub const MIN_MAX_REQUEST_LINE: usize = 256;
/// Largest accepted header count.
pub const MAX_MAX_HEADERS: usize = 10_000;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bytes all inspectors together may hold (256 MiB).
pub const DEFAULT_INSPECTION_BUDGET: usize = 256 * 1024 * 1024;
/// Default most connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// Default most connections per listener from one source address.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u32 = 256;
/// Default bound on how long a graceful shutdown waits for in-flight requests.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default admin API address.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9190,
));
/// Name of the token created when none is configured.
pub const DEFAULT_TOKEN_NAME: &str = "local";
/// File name of that token in the state directory.
pub const DEFAULT_TOKEN_FILE: &str = "admin.token";

/// The default state directory: `$STOPGAP_STATE_DIR`, else `/var/lib/stopgap` for root, else
/// `$XDG_STATE_HOME/stopgap`, else `~/.local/state/stopgap`.
#[must_use]
pub fn default_state_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if let Some(d) = std::env::var_os("STOPGAP_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return PathBuf::from("/var/lib/stopgap");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("stopgap");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/stopgap"),
        None => PathBuf::from(".stopgap-state"),
    }
}

/// One admin token: its name (the actor in the audit trail) and its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Name.
    pub name: String,
    /// File holding the secret.
    pub file: PathBuf,
}

/// The admin API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address, or `None` when switched off.
    pub listen: Option<SocketAddr>,
    /// Tokens; empty means the default token in the state directory.
    pub tokens: Vec<TokenConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(DEFAULT_ADMIN),
            tokens: Vec::new(),
        }
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Name, for logs.
    pub name: String,
    /// The protocol spoken (`http`, `ftp` or `smtp`).
    pub protocol: Protocol,
    /// Patches for servers of unknown product: `protect` (apply) or `skip`; `None`: the
    /// inventory's setting.
    pub unknown_assets: Option<stopgap_assets::UnknownPolicy>,
    /// What to do when a connection's inspection fails.
    pub failure_policy: crate::pump::FailurePolicy,
    /// Address to accept clients on.
    pub listen: SocketAddr,
    /// Upstream server address.
    pub upstream: SocketAddr,
}

/// The validated gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Patch directory.
    pub patches_dir: PathBuf,
    /// Audit log target.
    pub audit: AuditTarget,
    /// Engine settings.
    pub inspector: InspectorConfig,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// FTP: longest command line accepted (longer ones get `500` and are discarded).
    pub ftp_max_line: usize,
    /// Connection timers.
    pub timeouts: crate::pump::Timeouts,
    /// Most connections open at once per listener.
    pub max_connections: u64,
    /// Bytes all inspectors together may hold.
    pub inspection_budget: usize,
    /// Most connections open at once per listener from one source address.
    pub max_connections_per_source: u32,
    /// Bound on a graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Admin API.
    pub admin: AdminConfig,
    /// State directory (`None`: [`default_state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// The asset inventory (`assets.toml`), if any.
    pub assets_file: Option<PathBuf>,
    /// Attacker escalation.
    pub escalation: crate::escalation::EscalationConfig,
}

impl GatewayConfig {
    /// A configuration with one listener and every default (the quick form).
    #[must_use]
    pub fn quick(listen: SocketAddr, upstream: SocketAddr, patches_dir: PathBuf) -> Self {
        Self {
            listeners: vec![ListenerConfig {
                name: "quick".into(),
                protocol: Protocol::Http,
                unknown_assets: None,
                failure_policy: crate::pump::FailurePolicy::FailClosed,
                listen,
                upstream,
            }],
            patches_dir,
            audit: AuditTarget::Stderr,
            inspector: InspectorConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ftp_max_line: stopgap_proto::ftp::DEFAULT_MAX_COMMAND_LINE,
            timeouts: crate::pump::Timeouts::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            inspection_budget: DEFAULT_INSPECTION_BUDGET,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            admin: AdminConfig::default(),
            state_dir: None,
            assets_file: None,
            escalation: crate::escalation::EscalationConfig::default(),
        }
    }

    /// The state directory in use.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(default_state_dir)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    patches: RawPatches,
    #[serde(default)]
    audit: Option<RawAudit>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    state: Option<RawState>,
    #[serde(default)]
    assets: Option<RawAssets>,
    #[serde(default)]
    escalation: Option<RawEscalation>,
    listener: Vec<RawListener>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    mode: Option<Spanned<String>>,
    strikes: Option<Spanned<i64>>,
    window_s: Option<Spanned<i64>>,
    ban_s: Option<Spanned<i64>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssets {
    file: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatches {
    dir: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    log: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_line: Option<Spanned<i64>>,
    max_head: Option<Spanned<i64>>,
    max_headers: Option<Spanned<i64>>,
    inspection_window: Option<Spanned<i64>>,
    body_beyond_window: Option<Spanned<String>>,
    connect_timeout_ms: Option<Spanned<i64>>,
    shutdown_timeout_ms: Option<Spanned<i64>>,
    ftp_max_command_line: Option<Spanned<i64>>,
    client_timeout_ms: Option<Spanned<i64>>,
    message_timeout_ms: Option<Spanned<i64>>,
    message_min_rate: Option<Spanned<i64>>,
    idle_timeout_ms: Option<Spanned<i64>>,
    upstream_timeout_ms: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_source: Option<Spanned<i64>>,
    inspection_budget_kib: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    listen: Spanned<String>,
    upstream: Spanned<String>,
    protocol: Option<Spanned<String>>,
    unknown_assets: Option<Spanned<String>>,
    failure_policy: Option<Spanned<String>>,
}

/// Reads and validates a configuration file; every problem is reported.
///
/// # Errors
/// The file cannot be read, is not valid TOML, or breaks a rule.
pub fn load(path: &Path) -> Result<GatewayConfig, Diagnostics> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::at(path, "", 0, format!("cannot read configuration: {e}"))
            .with_hint("pass --config FILE, or use the quick form: serve --listen ADDR --upstream ADDR --patches DIR")])
    })?;
    parse(path, &source)
}

/// Parses configuration text (relative paths are relative to `path`'s folder).
///
/// # Errors
/// Every problem, located.
pub fn parse(path: &Path, source: &str) -> Result<GatewayConfig, Diagnostics> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        Diagnostics(vec![Diagnostic::at(
            path,
            source,
            at,
            e.message().trim().to_string(),
        )
        .with_hint("see docs/configuration.md for the keys of stopgap.toml")])
    })?;
    let mut errors = Vec::new();
    let mut err = |at: usize, msg: String, hint: &str| {
        errors.push(Diagnostic::at(path, source, at, msg).with_hint(hint));
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let patches_dir = base.join(raw.patches.dir.get_ref());
    if !patches_dir.is_dir() {
        err(
            raw.patches.dir.span().start,
            format!("patch directory `{}` does not exist", patches_dir.display()),
            "dir is relative to the configuration file",
        );
    }
    let audit = match raw.audit.map(|a| a.log) {
        None => AuditTarget::Stderr,
        Some(l) if l == "-" => AuditTarget::Stderr,
        Some(l) => AuditTarget::File(base.join(l)),
    };
    let mut limits = Limits::default();
    let mut inspector = InspectorConfig::default();
    let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    let mut shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    let mut ftp_max_line = stopgap_proto::ftp::DEFAULT_MAX_COMMAND_LINE;
    let mut timeouts = crate::pump::Timeouts::default();
    let mut max_connections = DEFAULT_MAX_CONNECTIONS;
    let mut inspection_budget = DEFAULT_INSPECTION_BUDGET;
    let mut max_connections_per_source = DEFAULT_MAX_CONNECTIONS_PER_SOURCE;
    if let Some(l) = raw.limits {
        let mut bounded =
            |v: &Option<Spanned<i64>>, min: usize, max: usize, name: &str| -> Option<usize> {
                let v = v.as_ref()?;
                let n = *v.get_ref();
                if n < min as i64 || n > max as i64 {
                    err(
                        v.span().start,
                        format!("{name} = {n} is out of range"),
                        &format!("{name} must be between {min} and {max}"),
                    );
                    return None;
                }
                Some(n as usize)
            };
        if let Some(n) = bounded(
            &l.max_request_line,
            MIN_MAX_REQUEST_LINE,
            MAX_MAX_HEAD,
            "max_request_line",
        ) {
            limits.max_request_line = n;
        }
        if let Some(n) = bounded(&l.max_head, MIN_MAX_HEAD, MAX_MAX_HEAD, "max_head") {
            limits.max_head = n;
        }
        if let Some(n) = bounded(&l.max_headers, 1, MAX_MAX_HEADERS, "max_headers") {
            limits.max_headers = n;
        }
        if let Some(n) = bounded(
            &l.inspection_window,
            InspectorConfig::MIN_INSPECTION_WINDOW,
            InspectorConfig::MAX_INSPECTION_WINDOW,
            "inspection_window",
        ) {
            inspector.inspection_window = n;
        }
        if let Some(n) = bounded(&l.connect_timeout_ms, 1, 600_000, "connect_timeout_ms") {
            connect_timeout = Duration::from_millis(n as u64);
        }
        if let Some(n) = bounded(&l.shutdown_timeout_ms, 0, 3_600_000, "shutdown_timeout_ms") {
            shutdown_timeout = Duration::from_millis(n as u64);
        }
        if let Some(n) = bounded(&l.ftp_max_command_line, 64, 65_536, "ftp_max_command_line") {
            ftp_max_line = n;
        }
        let ms = |n: usize| Duration::from_millis(n as u64);
        if let Some(n) = bounded(&l.client_timeout_ms, 100, 3_600_000, "client_timeout_ms") {
            timeouts.client = ms(n);
        }
        if let Some(n) = bounded(&l.message_timeout_ms, 100, 3_600_000, "message_timeout_ms") {
            timeouts.message = ms(n);
        }
        if let Some(n) = bounded(&l.message_min_rate, 1, 1_000_000_000, "message_min_rate") {
            timeouts.min_rate = n as u64;
        }
        if let Some(n) = bounded(&l.idle_timeout_ms, 100, 86_400_000, "idle_timeout_ms") {
            timeouts.idle = ms(n);
        }
        if let Some(n) = bounded(
            &l.upstream_timeout_ms,
            100,
            3_600_000,
            "upstream_timeout_ms",
        ) {
            timeouts.upstream = ms(n);
        }
        if let Some(n) = bounded(&l.max_connections, 1, 1_000_000, "max_connections") {
            max_connections = n as u64;
        }
        if let Some(n) = bounded(
            &l.inspection_budget_kib,
            64,
            64 * 1024 * 1024,
            "inspection_budget_kib",
        ) {
            inspection_budget = n * 1024;
        }
        if let Some(n) = bounded(
            &l.max_connections_per_source,
            1,
            1_000_000,
            "max_connections_per_source",
        ) {
            max_connections_per_source = n as u32;
        }
        if let Some(policy) = &l.body_beyond_window {
            inspector.beyond_window = match policy.get_ref().as_str() {
                "pass" => stopgap_engine::BeyondWindow::Pass,
                "refuse" => stopgap_engine::BeyondWindow::Refuse,
                other => {
                    err(
                        policy.span().start,
                        format!("unknown body_beyond_window policy `{other}`"),
                        "body_beyond_window is \"pass\" (judge the window, pass the rest) or \"refuse\" (413)",
                    );
                    stopgap_engine::BeyondWindow::Pass
                }
            };
        }
    }
    let mut admin = AdminConfig::default();
    if let Some(a) = raw.admin {
        if let Some(l) = &a.listen {
            if l.get_ref() == "off" {
                admin.listen = None;
            } else {
                match l.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => admin.listen = Some(addr),
                    Err(_) => err(
                        l.span().start,
                        format!("admin listen `{}` is not an IP:port address", l.get_ref()),
                        "write it as 127.0.0.1:9190, or \"off\" to switch the admin API off",
                    ),
                }
            }
        }
        for t in &a.token {
            let name = t.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                err(
                    t.name.span().start,
                    format!("token name `{name}` is not a plain name"),
                    "use letters, digits, '-', '_', '.', '@'",
                );
            } else if admin.tokens.iter().any(|x| &x.name == name) {
                err(
                    t.name.span().start,
                    format!("token name `{name}` is used twice"),
                    "each token needs its own name: it is the actor in the audit trail",
                );
            }
            admin.tokens.push(TokenConfig {
                name: name.clone(),
                file: base.join(&t.file),
            });
        }
    }
    let state_dir = raw.state.map(|s| base.join(s.dir));
    let mut escalation = crate::escalation::EscalationConfig::default();
    if let Some(e) = raw.escalation {
        use crate::escalation::EscalationMode;
        escalation.mode = match e.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("off", _)) => EscalationMode::Off,
            Some(("monitor", _)) => EscalationMode::Monitor,
            Some(("enforce", _)) => EscalationMode::Enforce,
            Some((other, span)) => {
                err(
                    span.start,
                    format!("unknown escalation mode `{other}`"),
                    "mode is \"off\", \"monitor\" or \"enforce\"",
                );
                EscalationMode::Off
            }
        };
        let mut positive = |v: &Option<Spanned<i64>>, name: &str, max: i64| -> Option<u64> {
            let v = v.as_ref()?;
            if (1..=max).contains(v.get_ref()) {
                Some(*v.get_ref() as u64)
            } else {
                err(
                    v.span().start,
                    format!("{name} = {} is out of range", v.get_ref()),
                    &format!("{name} must be between 1 and {max}"),
                );
                None
            }
        };
        if let Some(n) = positive(&e.strikes, "strikes", 1_000_000) {
            escalation.strikes = n as u32;
        }
        if let Some(n) = positive(&e.window_s, "window_s", 86_400) {
            escalation.window = Duration::from_secs(n);
        }
        if let Some(n) = positive(&e.ban_s, "ban_s", 30 * 86_400) {
            escalation.ban = Duration::from_secs(n);
        }
        for a in &e.allow {
            let text = a.get_ref();
            let parsed = match text.split_once('/') {
                Some((ip, len)) => ip
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .zip(len.parse::<u8>().ok()),
                None => text
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| (ip, if ip.is_ipv4() { 32 } else { 128 })),
            };
            match parsed {
                Some((ip, len)) if len <= if ip.is_ipv4() { 32 } else { 128 } => {
                    escalation.allow.push((ip, len))
                }
                _ => err(
                    a.span().start,
                    format!("`{text}` is not an address or network"),
                    "allow = [\"10.0.0.0/8\", \"192.0.2.7\"]",
                ),
            }
        }
    }
    let assets_file = raw.assets.map(|a| {
        let f = base.join(a.file.get_ref());
        if !f.is_file() {
            err(
                a.file.span().start,
                format!("asset inventory `{}` does not exist", f.display()),
                "file is relative to the configuration file; see docs/assets.md",
            );
        }
        f
    });
    inspector.limits = limits;
    let mut listeners = Vec::new();
    if raw.listener.is_empty() {
        err(
            0,
            "no [[listener]]".into(),
            "add [[listener]] with listen and upstream",
        );
    }
    for (i, l) in raw.listener.iter().enumerate() {
        let addr = |s: &Spanned<String>, what: &str, err: &mut dyn FnMut(usize, String, &str)| {
            s.get_ref().parse::<SocketAddr>().map_err(|_| {
                err(
                    s.span().start,
                    format!("{what} `{}` is not an IP:port address", s.get_ref()),
                    "write it as 127.0.0.1:8080 or [::1]:8080",
                );
            })
        };
        let listen = addr(&l.listen, "listen", &mut err);
        let upstream = addr(&l.upstream, "upstream", &mut err);
        let protocol = match &l.protocol {
            None => Protocol::Http,
            Some(p) => match Protocol::parse(p.get_ref()) {
                Some(proto) => proto,
                None => {
                    err(
                        p.span().start,
                        format!("unsupported protocol `{}`", p.get_ref()),
                        "a listener speaks `http`, `ftp` or `smtp`",
                    );
                    Protocol::Http
                }
            },
        };
        if let (Ok(listen), Ok(upstream)) = (listen, upstream) {
            let unknown_assets = match l
                .unknown_assets
                .as_ref()
                .map(|u| (u.get_ref().as_str(), u.span()))
            {
                None => None,
                Some(("protect", _)) => Some(stopgap_assets::UnknownPolicy::Protect),
                Some(("skip", _)) => Some(stopgap_assets::UnknownPolicy::Skip),
                Some((other, span)) => {
                    err(
                        span.start,
                        format!("unknown policy `{other}`"),
                        "unknown_assets is \"protect\" or \"skip\"",
                    );
                    None
                }
            };
            let failure_policy = match l
                .failure_policy
                .as_ref()
                .map(|u| (u.get_ref().as_str(), u.span()))
            {
                None | Some(("fail_closed", _)) => crate::pump::FailurePolicy::FailClosed,
                Some(("fail_open", _)) => crate::pump::FailurePolicy::FailOpen,
                Some((other, span)) => {
                    err(
                        span.start,
                        format!("unknown failure policy `{other}`"),
                        "failure_policy is \"fail_closed\" or \"fail_open\"",
                    );
                    crate::pump::FailurePolicy::FailClosed
                }
            };
            listeners.push(ListenerConfig {
                failure_policy,
                unknown_assets,
                protocol,
                name: l.name.clone().unwrap_or_else(|| format!("listener-{i}")),
                listen,
                upstream,
            });
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    Ok(GatewayConfig {
        listeners,
        patches_dir,
        audit,
        inspector,
        connect_timeout,
        ftp_max_line,
        timeouts,
        max_connections,
        inspection_budget,
        max_connections_per_source,
        shutdown_timeout,
        admin,
        state_dir,
        assets_file,
        escalation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_located() {
        let src = "[patches]\ndir = \"/nonexistent\"\n[limits]\nmax_head = 5\n[[listener]]\nlisten = \"nowhere\"\nupstream = \"127.0.0.1:1\"\n";
        let e = parse(Path::new("gw.toml"), src).unwrap_err();
        let lines: Vec<_> = e.0.iter().map(|d| (d.line, d.message.clone())).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0].0, 2);
        assert_eq!(lines[1].0, 4);
        assert!(lines[1].1.contains("max_head = 5 is out of range"));
        assert_eq!(lines[2].0, 6);
    }

    #[test]
    fn unknown_key_is_located() {
        let src = "[patches]\ndir = \".\"\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nupstraem = 1\n";
        let e = parse(Path::new("gw.toml"), src).unwrap_err();
        assert_eq!(e.0[0].line, 6, "{e}");
    }

    #[test]
    fn valid_config() {
        let dir = std::env::temp_dir();
        let src = format!(
            "[patches]\ndir = \"{}\"\n[audit]\nlog = \"-\"\n[limits]\ninspection_window = 4096\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\nupstream = \"127.0.0.1:8081\"\n",
            dir.display()
        );
        let c = parse(Path::new("gw.toml"), &src).unwrap();
        assert_eq!(c.inspector.inspection_window, 4096);
        assert_eq!(c.listeners[0].name, "web");
        assert_eq!(c.audit, AuditTarget::Stderr);
        assert_eq!(c.admin, AdminConfig::default());
        assert_eq!(c.state_dir, None);
    }

    #[test]
    fn listener_protocols() {
        let tmp = std::env::temp_dir();
        let src = "[patches]\ndir = \".\"\n[limits]\nftp_max_command_line = 1024\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nprotocol = \"ftp\"\n[[listener]]\nlisten = \"127.0.0.1:3\"\nupstream = \"127.0.0.1:4\"\nprotocol = \"smtp\"\n";
        let c = parse(&tmp.join("gw.toml"), src).unwrap();
        assert_eq!(c.listeners[0].protocol, Protocol::Ftp);
        assert_eq!(c.listeners[1].protocol, Protocol::Smtp);
        assert_eq!(c.ftp_max_line, 1024);
        let e = parse(&tmp.join("gw.toml"), &src.replace("\"smtp\"", "\"gopher\"")).unwrap_err();
        assert_eq!(e.0[0].line, 12, "{e}");
        assert!(e.0[0].message.contains("unsupported protocol `gopher`"));
    }

    #[test]
    fn admin_and_state_sections() {
        let src = "[patches]\ndir = \".\"\n[admin]\nlisten = \"off\"\n[[admin.token]]\nname = \"ops\"\nfile = \"ops.token\"\n[state]\ndir = \"st\"\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n";
        let tmp = std::env::temp_dir();
        let c = parse(&tmp.join("gw.toml"), src).unwrap();
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.admin.tokens[0].file, tmp.join("ops.token"));
        assert_eq!(c.state_dir, Some(tmp.join("st")));
        let bad = src
            .replace("\"off\"", "\"9190\"")
            .replace("\"ops\"", "\"o p\"");
        let e = parse(&tmp.join("gw.toml"), &bad).unwrap_err();
        let lines: Vec<_> = e.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, [4, 6], "{e}");
    }
}
