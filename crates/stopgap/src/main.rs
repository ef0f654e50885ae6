//! `stopgap`: the command-line binary. Thin wiring only: argument parsing, loading
//! configuration and patches, starting listeners, the demo.
//!
//! It deliberately holds no protocol or patch logic; see the `stopgap-*` crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand};
use stopgap_patch::load_dir;
use stopgap_proxy::audit::AuditTarget;
use stopgap_proxy::config::{self, GatewayConfig};

mod admin_cli;
mod demo;
mod gateway;
mod patch_cli;

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
        /// Quick form: the protocol spoken, `http`, `ftp` or `smtp`.
        #[arg(long, default_value = "http", value_parser = ["http", "ftp", "smtp"])]
        protocol: String,
        /// Patch directory (quick form; overrides the config file's).
        #[arg(long)]
        patches: Option<PathBuf>,
        /// Audit log file (default: standard error).
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Admin API address, or `off` (default 127.0.0.1:9190).
        #[arg(long, value_name = "ADDR|off")]
        admin: Option<String>,
        /// Asset inventory (assets.toml): what the upstream servers run.
        #[arg(long)]
        assets: Option<PathBuf>,
        /// State directory: patch states, default admin token, lock (default:
        /// $STOPGAP_STATE_DIR, /var/lib/stopgap for root, else ~/.local/state/stopgap).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Work with patch files offline.
    Patch {
        #[command(subcommand)]
        command: PatchCommand,
    },
    /// List, apply, un-apply or monitor patches on a running gateway.
    Patches {
        #[command(flatten)]
        conn: admin_cli::Connection,
        #[command(subcommand)]
        command: admin_cli::PatchesCommand,
    },
    /// What each upstream server runs, from which source, and which patches apply to it;
    /// `import` adds facts from an nmap service scan.
    Assets {
        #[command(flatten)]
        conn: admin_cli::Connection,
        #[command(subcommand)]
        command: Option<admin_cli::AssetsCommand>,
    },
    /// Source addresses refused for repeated exploit attempts (attacker escalation).
    Bans {
        #[command(flatten)]
        conn: admin_cli::Connection,
    },
    /// Show a running gateway's generation, patch counts and last reload.
    Status {
        #[command(flatten)]
        conn: admin_cli::Connection,
    },
    /// Make a running gateway re-read its configuration and patch directory.
    Reload {
        #[command(flatten)]
        conn: admin_cli::Connection,
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

#[derive(Subcommand)]
enum PatchCommand {
    /// Replay patch vectors through the engine (no network) and print pass/fail per vector:
    /// exploits and evasions must be refused, benign requests must pass byte for byte, each
    /// with the patch alone and with the whole directory applied.
    Test {
        /// A patch id from the directory, or a patch file (default: every patch).
        target: Option<String>,
        /// Patch directory.
        #[arg(long, default_value = "patches")]
        patches: PathBuf,
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
            admin,
            state_dir,
            protocol,
            assets,
        } => runtime().and_then(|rt| {
            rt.block_on(serve(ServeArgs {
                assets,
                protocol,
                config,
                listen,
                upstream,
                patches,
                audit_log,
                admin,
                state_dir,
            }))
        }),
        Command::Patches { conn, command } => admin_cli::patches(&conn, command),
        Command::Status { conn } => admin_cli::status(&conn),
        Command::Bans { conn } => admin_cli::bans(&conn),
        Command::Assets {
            conn,
            command: None,
        } => admin_cli::assets(&conn),
        Command::Assets {
            conn,
            command: Some(admin_cli::AssetsCommand::Import { file }),
        } => admin_cli::import(&conn, &file),
        Command::Patch {
            command: PatchCommand::Test { target, patches },
        } => patch_cli::test(target.as_deref(), &patches),
        Command::Reload { conn } => admin_cli::reload(&conn),
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

/// The runtime for the cores this process may run on: one thread and no work-stealing when
/// it has one core (no cross-thread wake-ups), one worker per core otherwise.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cores);
        b
    };
    builder
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

struct ServeArgs {
    assets: Option<PathBuf>,
    protocol: String,
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upstream: Option<SocketAddr>,
    patches: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    admin: Option<String>,
    state_dir: Option<PathBuf>,
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match (&args.config, args.listen, args.upstream) {
        (Some(path), _, _) => match config::load(path) {
            Ok(c) => c,
            Err(d) => {
                eprintln!("{d}");
                return Ok(ExitCode::FAILURE);
            }
        },
        (None, Some(listen), Some(upstream)) => {
            let mut c = GatewayConfig::quick(
                listen,
                upstream,
                args.patches.clone().unwrap_or_else(|| "patches".into()),
            );
            c.listeners[0].protocol =
                stopgap_patch::Protocol::parse(&args.protocol).unwrap_or(stopgap_patch::Protocol::Http);
            c
        }
        _ => {
            return Err(anyhow!(
                "nothing to serve: pass --config stopgap.toml, or --listen ADDR --upstream ADDR --patches DIR"
            ))
        }
    };
    if let Some(p) = &args.patches {
        cfg.patches_dir.clone_from(p);
    }
    if let Some(a) = args.audit_log {
        cfg.audit = AuditTarget::File(a);
    }
    if let Some(a) = &args.admin {
        cfg.admin.listen = if a == "off" {
            None
        } else {
            Some(
                a.parse()
                    .map_err(|_| anyhow!("--admin `{a}` is not an IP:port address or `off`"))?,
            )
        };
    }
    if let Some(d) = args.state_dir {
        cfg.state_dir = Some(d);
    }
    if let Some(a) = args.assets {
        cfg.assets_file = Some(a);
    }
    let running = match gateway::start(cfg, args.config.clone(), args.patches).await {
        Ok(r) => r,
        Err(gateway::StartFailure::Located(text)) => {
            eprintln!("{text}");
            return Ok(ExitCode::FAILURE);
        }
        Err(gateway::StartFailure::Other(e)) => return Err(e),
    };
    running.run_until_signalled().await
}
