//! `stopgap`: the command-line binary. Thin wiring only: argument parsing, loading
//! configuration and patches, starting listeners, the demo.
//!
//! It deliberately holds no protocol or patch logic; see the `stopgap-*` crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use stopgap_engine::InspectorConfig;
use stopgap_patch::{load_dir, PatchSet};
use stopgap_proxy::audit::AuditTarget;
use stopgap_proxy::config::{self, GatewayConfig, ListenerConfig, DEFAULT_CONNECT_TIMEOUT};
use stopgap_proxy::{serve_listener, AuditLog, ListenerRuntime};
use tokio::net::TcpListener;

mod demo;

/// stopgap: a virtual-patching gateway.
#[derive(Parser)]
#[command(name = "stopgap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway, from a config file or the quick form.
    Serve {
        /// Configuration file (stopgap.toml).
        #[arg(long, conflicts_with_all = ["listen", "upstream"])]
        config: Option<PathBuf>,
        /// Quick form: address to listen on.
        #[arg(long, requires_all = ["upstream", "patches"])]
        listen: Option<SocketAddr>,
        /// Quick form: upstream server address.
        #[arg(long)]
        upstream: Option<SocketAddr>,
        /// Patch directory (quick form; overrides the config file's).
        #[arg(long)]
        patches: Option<PathBuf>,
        /// Audit log file (default: standard error).
        #[arg(long)]
        audit_log: Option<PathBuf>,
    },
    /// Validate a configuration and/or a patch directory; print every problem.
    Check {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Patch directory.
        #[arg(long)]
        patches: Option<PathBuf>,
    },
    /// Start a demo upstream and the gateway with the shipped patches, show what is refused
    /// and what passes, then keep serving.
    Demo {
        /// Address for the gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Patch directory.
        #[arg(long, default_value = "patches")]
        patches: PathBuf,
        /// Run the scripted requests, print the table and exit instead of serving.
        #[arg(long)]
        once: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STOPGAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Check { config, patches } => check(config, patches),
        Command::Serve {
            config,
            listen,
            upstream,
            patches,
            audit_log,
        } => runtime()
            .and_then(|rt| rt.block_on(serve(config, listen, upstream, patches, audit_log))),
        Command::Demo {
            listen,
            patches,
            once,
        } => runtime().and_then(|rt| rt.block_on(demo::run(listen, &patches, once))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stopgap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Loads patches, printing diagnostics; `None` when there were errors.
fn load_patches(dir: &Path) -> Option<Vec<stopgap_patch::Patch>> {
    match load_dir(dir) {
        Ok(p) => Some(p),
        Err(diags) => {
            eprintln!("{diags}");
            None
        }
    }
}

fn check(config: Option<PathBuf>, patches: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    let mut dir = patches;
    let config = config.or_else(|| {
        Path::new("stopgap.toml")
            .exists()
            .then(|| "stopgap.toml".into())
    });
    if let Some(path) = &config {
        match config::load(path) {
            Ok(c) => {
                println!("{}: ok ({} listener(s))", path.display(), c.listeners.len());
                dir.get_or_insert(c.patches_dir);
            }
            Err(d) => {
                eprintln!("{d}");
                ok = false;
            }
        }
    }
    let dir = dir.unwrap_or_else(|| "patches".into());
    match load_patches(&dir) {
        Some(p) => {
            let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
            println!(
                "{}: ok ({} patches: {})",
                dir.display(),
                p.len(),
                ids.join(", ")
            );
        }
        None => ok = false,
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Binds a listener; a busy address is one clear sentence.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow!("cannot listen on {addr}: the address is already in use (pick another with --listen)")
        }
        _ => anyhow!("cannot listen on {addr}: {e}"),
    })
}

async fn serve(
    config_path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upstream: Option<SocketAddr>,
    patches: Option<PathBuf>,
    audit_log: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut cfg = match (&config_path, listen, upstream) {
        (Some(path), _, _) => match config::load(path) {
            Ok(c) => c,
            Err(d) => {
                eprintln!("{d}");
                return Ok(ExitCode::FAILURE);
            }
        },
        (None, Some(listen), Some(upstream)) => GatewayConfig {
            listeners: vec![ListenerConfig {
                name: "quick".into(),
                listen,
                upstream,
            }],
            patches_dir: patches.clone().unwrap_or_else(|| "patches".into()),
            audit: AuditTarget::Stderr,
            inspector: InspectorConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        },
        _ => {
            return Err(anyhow!(
                "nothing to serve: pass --config stopgap.toml, or --listen ADDR --upstream ADDR --patches DIR"
            ))
        }
    };
    if let Some(p) = patches {
        cfg.patches_dir = p;
    }
    if let Some(a) = audit_log {
        cfg.audit = AuditTarget::File(a);
    }
    let Some(loaded) = load_patches(&cfg.patches_dir) else {
        return Ok(ExitCode::FAILURE);
    };
    let count = loaded.len();
    let set = Arc::new(ArcSwap::from_pointee(PatchSet::from_patches(1, loaded)));
    let audit = AuditLog::start(cfg.audit.clone())
        .map_err(|e| anyhow!("cannot open the audit log: {e}"))?;
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        bound.push((l.clone(), bind(l.listen).await?));
    }
    for (l, listener) in bound {
        tracing::info!(
            listener = %l.name,
            "listening on {} -> upstream {}, {count} patches applied from {}",
            l.listen,
            l.upstream,
            cfg.patches_dir.display()
        );
        let rt = ListenerRuntime {
            upstream: l.upstream,
            inspector: cfg.inspector,
            connect_timeout: cfg.connect_timeout,
            patches: set.clone(),
            audit: audit.clone(),
        };
        tokio::spawn(serve_listener(listener, rt));
    }
    tokio::signal::ctrl_c().await.ok();
    tracing::info!("shutting down");
    Ok(ExitCode::SUCCESS)
}
