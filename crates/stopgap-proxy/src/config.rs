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
//! connect_timeout_ms = 5000
//!
//! [[listener]]
//! name = "web"
//! listen = "127.0.0.1:8080"
//! upstream = "127.0.0.1:8081"
//! protocol = "http"              # the only protocol of this version
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use stopgap_engine::InspectorConfig;
use stopgap_patch::{Diagnostic, Diagnostics};
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

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Name, for logs.
    pub name: String,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    patches: RawPatches,
    #[serde(default)]
    audit: Option<RawAudit>,
    #[serde(default)]
    limits: Option<RawLimits>,
    listener: Vec<RawListener>,
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
    connect_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    listen: Spanned<String>,
    upstream: Spanned<String>,
    protocol: Option<Spanned<String>>,
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
    }
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
        if let Some(p) = &l.protocol {
            if p.get_ref() != "http" {
                err(
                    p.span().start,
                    format!("unsupported protocol `{}`", p.get_ref()),
                    "this version proxies `http`",
                );
            }
        }
        if let (Ok(listen), Ok(upstream)) = (listen, upstream) {
            listeners.push(ListenerConfig {
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
    }
}
