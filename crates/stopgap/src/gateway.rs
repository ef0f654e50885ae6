//! A running gateway: state directory, control plane, listeners, admin API and signals.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use arc_swap::ArcSwap;
use stopgap_control::api::{router, AdminApi};
use stopgap_control::controller::{ConfigReload, PendingConfig, StartError};
use stopgap_control::token::Token;
use stopgap_control::{Actor, Controller};
use stopgap_proxy::audit::control_event;
use stopgap_proxy::config::{self, GatewayConfig, DEFAULT_TOKEN_FILE, DEFAULT_TOKEN_NAME};
use stopgap_proxy::{
    serve_listener, AuditLog, ControlEvent, DrainSwitch, ListenerRuntime, ListenerSettings, Metrics,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// File name of the patch states in the state directory.
pub const STATE_FILE: &str = "state.toml";
/// File name of the imported asset facts in the state directory.
pub const IMPORTS_FILE: &str = "imported-assets.json";
/// File name of the lock that makes one gateway the owner of a state directory.
pub const LOCK_FILE: &str = "gateway.lock";

/// Binds a listener; a busy address is one clear sentence.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow!("cannot listen on {addr}: the address is already in use (pick another with --listen)")
        }
        _ => anyhow!("cannot listen on {addr}: {e}"),
    })
}

/// Where `start` failed; diagnostics are already rendered.
pub enum StartFailure {
    /// Patch or state-file errors, printed as they are (file:line:col …).
    Located(String),
    /// Anything else.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartFailure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

/// A started gateway.
pub struct Running {
    /// The patch lifecycle.
    pub controller: Arc<Controller>,
    /// The bound listener addresses, in configuration order.
    pub listening: Vec<SocketAddr>,
    /// The admin API address, when it is on.
    pub admin: Option<SocketAddr>,
    drain: DrainSwitch,
    admin_stop: watch::Sender<bool>,
    shutdown_timeout: Duration,
    _lock: Option<File>,
}

/// Creates the state directory (0700) and takes its lock; `Err(reason)` when another gateway
/// holds it.
fn own_state_dir(dir: &Path) -> anyhow::Result<Result<File, String>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => {
            lock.set_len(0)?;
            writeln!(lock, "{}", std::process::id())?;
            Ok(Ok(lock))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            Ok(Err(format!(
                "the state directory {} belongs to another running gateway (pid {})",
                dir.display(),
                pid.trim()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow!("cannot lock {}: {e}", path.display())),
    }
}

fn load_tokens(cfg: &GatewayConfig, state_dir: &Path) -> anyhow::Result<Vec<Token>> {
    if cfg.admin.tokens.is_empty() {
        let t = Token::load_or_create(DEFAULT_TOKEN_NAME, &state_dir.join(DEFAULT_TOKEN_FILE))?;
        return Ok(vec![t]);
    }
    cfg.admin
        .tokens
        .iter()
        .map(|t| Token::load_or_create(&t.name, &t.file).map_err(Into::into))
        .collect()
}

/// The SIGHUP / `reload` hook: re-reads the configuration file and, once the patches load
/// too, puts the listener settings that can change without a restart in force.
fn config_reload(
    path: PathBuf,
    patches_override: Option<PathBuf>,
    running: GatewayConfig,
    settings: Vec<Arc<ArcSwap<ListenerSettings>>>,
) -> ConfigReload {
    Box::new(move || {
        let new = config::load(&path)
            .map_err(|d| d.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let mut updates = Vec::new();
        for (old, cell) in running.listeners.iter().zip(&settings) {
            match new.listeners.iter().find(|l| l.name == old.name) {
                Some(l) => {
                    if l.listen != old.listen {
                        tracing::warn!(listener = %old.name, "a new listen address needs a restart; keeping {}", old.listen);
                    }
                    updates.push((
                        cell.clone(),
                        ListenerSettings {
                            upstream: l.upstream,
                            inspector: new.inspector,
                            connect_timeout: new.connect_timeout,
                            ftp_max_line: new.ftp_max_line,
                            timeouts: new.timeouts,
                        },
                    ));
                }
                None => {
                    tracing::warn!(listener = %old.name, "removing a listener needs a restart; it keeps serving")
                }
            }
        }
        for l in &new.listeners {
            if !running.listeners.iter().any(|o| o.name == l.name) {
                tracing::warn!(listener = %l.name, "adding a listener needs a restart");
            }
        }
        if new.admin != running.admin
            || new.state_dir != running.state_dir
            || new.audit != running.audit
        {
            tracing::warn!("changes to [admin], [state] and [audit] need a restart");
        }
        Ok(PendingConfig {
            patches_dir: Some(patches_override.clone().unwrap_or(new.patches_dir)),
            commit: Box::new(move || {
                for (cell, s) in updates {
                    cell.store(Arc::new(s));
                }
            }),
        })
    })
}

/// Starts everything; listeners are bound before this returns.
pub async fn start(
    cfg: GatewayConfig,
    config_path: Option<PathBuf>,
    patches_override: Option<PathBuf>,
) -> Result<Running, StartFailure> {
    let state_dir = cfg.state_dir();
    let lock = own_state_dir(&state_dir)?;
    let read_only = lock.as_ref().err().cloned();
    let metrics = Arc::new(Metrics::new());
    let audit = AuditLog::start(cfg.audit.clone(), metrics.clone())
        .map_err(|e| anyhow!("cannot open the audit log: {e}"))?;
    let controller = match Controller::start(
        &cfg.patches_dir,
        &state_dir.join(STATE_FILE),
        read_only.clone(),
        audit.clone(),
    ) {
        Ok(c) => Arc::new(c),
        Err(StartError::Patches(d)) => return Err(StartFailure::Located(d.to_string())),
        Err(StartError::State(d)) => {
            return Err(StartFailure::Located(format!(
                "{d}\nthe gateway does not start with unknown patch states; nothing was changed"
            )))
        }
    };
    let mut inventory = match &cfg.assets_file {
        Some(path) => stopgap_assets::Inventory::load(path)
            .map_err(|d| StartFailure::Located(stopgap_patch::Diagnostics(d).to_string()))?,
        None => stopgap_assets::Inventory::default(),
    };
    // `listener = "NAME"` entries speak of that listener's upstream.
    inventory
        .resolve_listeners(|name| {
            cfg.listeners
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.upstream)
        })
        .map_err(|names| {
            StartFailure::Located(format!(
                "{}: no [[listener]] named {} in the configuration (asset entries by listener \
                 name must name one)",
                cfg.assets_file
                    .as_deref()
                    .map_or_else(|| "assets".into(), |p| p.display().to_string()),
                names.join(", ")
            ))
        })?;
    let assets = Arc::new(stopgap_assets::Assets::new(inventory));
    // Facts imported earlier (stopgap assets import) survive restarts.
    let imports_file = state_dir.join(IMPORTS_FILE);
    match stopgap_control::api::load_imports(&imports_file) {
        Ok(facts) => {
            let base = controller.snapshot().load_full();
            for (server, fact) in facts {
                assets.import(server, fact, &base);
            }
        }
        Err(e) => {
            return Err(StartFailure::Other(anyhow!(
            "the imported asset facts are unreadable: {e} (remove the file to start without them)"
        )))
        }
    }
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        bound.push((l.clone(), bind(l.listen).await?));
    }
    let drain = DrainSwitch::new();
    let escalation = Arc::new(stopgap_proxy::escalation::Escalation::new(
        cfg.escalation.clone(),
    ));
    let budget = Arc::new(stopgap_proxy::pump::MemoryBudget::new(
        cfg.inspection_budget,
    ));
    let mut settings_cells = Vec::new();
    let mut listening = Vec::new();
    for (l, listener) in bound {
        let addr = listener.local_addr().map_err(anyhow::Error::from)?;
        listening.push(addr);
        let status = controller.status().await;
        tracing::info!(
            listener = %l.name,
            "listening on {addr} ({}) -> upstream {}; {} patches applied, {} in monitor mode, from {}",
            l.protocol.as_str(),
            l.upstream,
            status.applied,
            status.monitor,
            cfg.patches_dir.display()
        );
        let settings = Arc::new(ArcSwap::from_pointee(ListenerSettings {
            upstream: l.upstream,
            inspector: cfg.inspector,
            connect_timeout: cfg.connect_timeout,
            ftp_max_line: cfg.ftp_max_line,
            timeouts: cfg.timeouts,
        }));
        settings_cells.push(settings.clone());
        let (drain_rx, open) = drain.drain();
        tokio::spawn(serve_listener(
            listener,
            ListenerRuntime {
                budget: budget.clone(),
                escalation: escalation.clone(),
                limits: Arc::new(stopgap_proxy::pump::ConnectionLimits::new(
                    cfg.max_connections,
                    cfg.max_connections_per_source,
                )),
                failure_policy: l.failure_policy,
                unknown_assets: l.unknown_assets,
                assets: assets.clone(),
                protocol: l.protocol,
                settings,
                patches: controller.snapshot(),
                audit: audit.clone(),
                metrics: metrics.listener(&l.name),
                drain: drain_rx,
                open,
            },
        ));
    }
    if let Some(path) = config_path {
        controller.set_config_reload(config_reload(
            path,
            patches_override,
            cfg.clone(),
            settings_cells,
        ));
    }
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin = start_admin(
        &cfg,
        &state_dir,
        read_only.as_deref(),
        &controller,
        &assets,
        &escalation,
        admin_stopped,
    )
    .await?;
    let status = controller.status().await;
    let _ = audit
        .record_control(ControlEvent {
            event: control_event::LIFECYCLE,
            actor: "startup".into(),
            generation: status.generation,
            result: "ok",
            detail: Some(format!(
                "started: {} applied, {} monitor, {} unapplied; state {}{}",
                status.applied,
                status.monitor,
                status.unapplied,
                status.state_file,
                if status.persisted { "" } else { " (read-only)" }
            )),
            ..ControlEvent::default()
        })
        .await;
    Ok(Running {
        controller,
        listening,
        admin,
        drain,
        admin_stop,
        shutdown_timeout: cfg.shutdown_timeout,
        _lock: lock.ok(),
    })
}

async fn start_admin(
    cfg: &GatewayConfig,
    state_dir: &Path,
    read_only: Option<&str>,
    controller: &Arc<Controller>,
    assets: &Arc<stopgap_assets::Assets>,
    escalation: &Arc<stopgap_proxy::escalation::Escalation>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = cfg.admin.listen else {
        tracing::info!("admin API off (admin listen = \"off\")");
        return Ok(None);
    };
    if let Some(why) = read_only {
        tracing::warn!(
            "admin API off: {why}. Traffic is served with the patch states found there, but they \
             cannot be changed from this gateway; give it its own with --state-dir DIR \
             (or [state] dir) and --admin ADDR (or [admin] listen)"
        );
        return Ok(None);
    }
    let tokens = load_tokens(cfg, state_dir)?;
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                "is already in use (another gateway?)".to_string()
            } else {
                format!("cannot be bound: {e}")
            };
            tracing::warn!(
                "admin API off: {addr} {why}. Traffic is served; to manage this gateway give \
                 its admin API another address with --admin ADDR (or [admin] listen)"
            );
            return Ok(None);
        }
    };
    let local = listener.local_addr()?;
    let api = Arc::new(AdminApi {
        escalation: escalation.clone(),
        imports_file: state_dir.join(IMPORTS_FILE),
        assets: assets.clone(),
        controller: controller.clone(),
        open_reads: local.ip().is_loopback(),
        tokens: tokens.clone(),
    });
    let files: Vec<String> = tokens
        .iter()
        .map(|t| format!("{} ({})", t.file.display(), t.name))
        .collect();
    tracing::info!(
        "admin API on http://{local}; token file(s): {}",
        files.join(", ")
    );
    if !local.ip().is_loopback() {
        tracing::warn!(
            "admin API listens on a non-loopback address {local}: every call needs a token"
        );
    }
    let app = router(api).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("admin API stopped: {e}");
        }
    });
    Ok(Some(local))
}

impl Running {
    /// Serves until SIGTERM or SIGINT, reloading on SIGHUP; then drains and returns.
    pub async fn run_until_signalled(self) -> anyhow::Result<ExitCode> {
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    match self.controller.reload(&Actor::named("signal:SIGHUP")).await {
                        Ok(r) => tracing::info!(
                            "reloaded: generation {}, {} patches (added: [{}], removed: [{}])",
                            r.generation, r.patches, r.added.join(", "), r.removed.join(", ")
                        ),
                        Err(e) => tracing::error!("{e}"),
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        self.shutdown().await;
        Ok(ExitCode::SUCCESS)
    }

    /// Stops accepting, lets in-flight requests finish (bounded), stops the admin API.
    pub async fn shutdown(self) {
        let started = Instant::now();
        self.drain.start();
        let _ = self.admin_stop.send(true);
        tracing::info!(
            "shutting down: {} connection(s) open, waiting up to {:?} for in-flight requests",
            self.drain.open_connections(),
            self.shutdown_timeout
        );
        while self.drain.open_connections() > 0 && started.elapsed() < self.shutdown_timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.drain.open_connections();
        if left > 0 {
            tracing::warn!("shutdown timeout: closing {left} connection(s) mid-request");
        }
        let generation = self.controller.snapshot().load().generation;
        let _ = self
            .controller
            .audit()
            .record_control(ControlEvent {
                event: control_event::LIFECYCLE,
                actor: "signal".into(),
                generation,
                result: "ok",
                detail: Some(format!(
                    "stopped after {} ms; {left} connection(s) cut",
                    started.elapsed().as_millis()
                )),
                ..ControlEvent::default()
            })
            .await;
    }
}
