//! `stopgap patches …`, `stopgap status`, `stopgap reload`: the admin API from the command
//! line. With no flags they find a gateway started with defaults on this machine (admin API
//! on 127.0.0.1:9190, token in the default state directory).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use stopgap_control::client::{AdminClient, Reply};
use stopgap_control::token::read_secret;
use stopgap_proxy::config::{default_state_dir, DEFAULT_ADMIN, DEFAULT_TOKEN_FILE};

/// Where the admin API is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Admin API address (default: $STOPGAP_ADMIN, else http://127.0.0.1:9190).
    #[arg(long, global = true)]
    admin: Option<String>,
    /// File holding the admin token (default: admin.token in the default state directory).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `stopgap assets …`
#[derive(Subcommand, Debug)]
pub enum AssetsCommand {
    /// Add product/version facts from an nmap service scan (`nmap -sV -oX scan.xml`).
    Import {
        /// The scan's XML file.
        file: PathBuf,
    },
}

/// `stopgap patches …`
#[derive(Subcommand, Debug)]
pub enum PatchesCommand {
    /// Every patch with its state, mode and hit counts.
    List,
    /// Apply (enforce) patches.
    Apply {
        /// Patch ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Un-apply patches (they are no longer evaluated).
    Unapply {
        /// Patch ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Put patches in monitor mode (evaluated and logged, nothing changed).
    Monitor {
        /// Patch ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

impl Connection {
    fn client(&self, need_token: bool) -> anyhow::Result<AdminClient> {
        let url = self
            .admin
            .clone()
            .or_else(|| {
                std::env::var("STOPGAP_ADMIN")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("http://{DEFAULT_ADMIN}"));
        let (path, explicit) = match &self.token_file {
            Some(p) => (p.clone(), true),
            None => (default_state_dir().join(DEFAULT_TOKEN_FILE), false),
        };
        let token = match read_secret(&path) {
            Ok(t) => Some(t),
            Err(e) if explicit || (need_token && path.exists()) => return Err(e.into()),
            Err(_) if need_token => {
                return Err(anyhow!(
                    "no admin token: {} does not exist. Pass --token-file FILE (the gateway logs \
                     where its token file is when it starts)",
                    path.display()
                ))
            }
            Err(_) => None,
        };
        Ok(AdminClient::new(&url, token)?)
    }
}

/// Prints a reply (JSON or via `table`) and turns API errors into a failing exit.
fn finish(conn: &Connection, reply: &Reply, table: impl Fn(&Value)) -> anyhow::Result<ExitCode> {
    if !(200..300).contains(&reply.status) {
        if conn.json {
            println!("{}", serde_json::to_string_pretty(&reply.body)?);
        }
        eprintln!("stopgap: error: {}", reply.error_message());
        return Ok(ExitCode::FAILURE);
    }
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&reply.body)?);
    } else {
        table(&reply.body);
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `stopgap patches …`
pub fn patches(conn: &Connection, cmd: PatchesCommand) -> anyhow::Result<ExitCode> {
    let (verb, ids) = match cmd {
        PatchesCommand::List => {
            let reply = conn.client(false)?.get("/v1/patches")?;
            return finish(conn, &reply, |body| {
                println!(
                    "{:<16} {:<16} {:<10} {:<9} {:>7} {:>8}  {:<24} TITLE",
                    "ID", "CVE", "STATE", "SEVERITY", "HITS", "MONITOR", "LAST HIT"
                );
                for p in body["patches"].as_array().into_iter().flatten() {
                    println!(
                        "{:<16} {:<16} {:<10} {:<9} {:>7} {:>8}  {:<24} {}",
                        s(&p["id"]),
                        s(&p["cve"]),
                        s(&p["state"]),
                        s(&p["severity"]),
                        s(&p["hits_enforced"]),
                        s(&p["hits_monitored"]),
                        s(&p["last_hit"]),
                        s(&p["title"])
                    );
                }
                println!("generation {}", s(&body["generation"]));
            });
        }
        PatchesCommand::Apply { ids } => ("apply", ids),
        PatchesCommand::Unapply { ids } => ("unapply", ids),
        PatchesCommand::Monitor { ids } => ("monitor", ids),
    };
    let reply = conn
        .client(true)?
        .post(&format!("/v1/patches/{verb}"), &json!({ "ids": ids }))?;
    finish(conn, &reply, |body| {
        for p in body["patches"].as_array().into_iter().flatten() {
            let what = if p["changed"] == Value::Bool(true) {
                format!("{} -> {}", s(&p["old_state"]), s(&p["new_state"]))
            } else {
                format!("already {}", s(&p["new_state"]))
            };
            println!("{:<16} {what}", s(&p["id"]));
        }
        println!("generation {}", s(&body["generation"]));
    })
}

/// `stopgap status`
pub fn status(conn: &Connection) -> anyhow::Result<ExitCode> {
    let reply = conn.client(false)?.get("/v1/status")?;
    finish(conn, &reply, |b| {
        println!(
            "stopgap {} — generation {}",
            s(&b["version"]),
            s(&b["generation"])
        );
        println!(
            "patches: {} applied, {} monitor, {} unapplied (from {})",
            s(&b["applied"]),
            s(&b["monitor"]),
            s(&b["unapplied"]),
            s(&b["patches_dir"])
        );
        let persisted = if b["persisted"] == Value::Bool(true) {
            ""
        } else {
            " (read-only: another gateway owns it)"
        };
        println!("state file: {}{persisted}", s(&b["state_file"]));
        match b["last_reload"].as_object() {
            None => println!("last reload: none"),
            Some(r) if r["ok"] == Value::Bool(true) => println!("last reload: {} ok", s(&r["at"])),
            Some(r) => {
                println!(
                    "last reload: {} FAILED (the previous patches stay in force):",
                    s(&r["at"])
                );
                for e in r["errors"].as_array().into_iter().flatten() {
                    println!("{}", s(e));
                }
            }
        }
    })
}

/// `stopgap reload`
pub fn reload(conn: &Connection) -> anyhow::Result<ExitCode> {
    let reply = conn.client(true)?.post("/v1/reload", &json!({}))?;
    finish(conn, &reply, |b| {
        println!(
            "reloaded: generation {}, {} patches; added: [{}]; removed: [{}]",
            s(&b["generation"]),
            s(&b["patches"]),
            s(&b["added"]),
            s(&b["removed"])
        );
    })
}

/// `stopgap assets`
pub fn assets(conn: &Connection) -> anyhow::Result<ExitCode> {
    let reply = conn.client(false)?.get("/v1/assets")?;
    finish(conn, &reply, |b| {
        let list = b["assets"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!("no server seen yet (facts come from traffic, the inventory and imports)");
        }
        for a in list {
            println!(
                "{}  {} {}",
                s(&a["server"]),
                s(&a["product"]),
                s(&a["version"])
            );
            for f in a["facts"].as_array().into_iter().flatten() {
                println!(
                    "    fact: {} {} from {} {:?}",
                    s(&f["product"]),
                    s(&f["version"]),
                    s(&f["source"]["kind"]),
                    s(&f["raw"])
                );
            }
            for p in a["patches"].as_array().into_iter().flatten() {
                let decision = &p[1];
                if decision["decision"] != "apply" {
                    println!(
                        "    {:<16} {:<8} {}",
                        s(&p[0]),
                        s(&decision["decision"]),
                        s(&decision["reason"])
                    );
                }
            }
            let applied = a["patches"].as_array().map_or(0, |ps| {
                ps.iter().filter(|p| p[1]["decision"] == "apply").count()
            });
            println!("    {applied} patch(es) applied here");
        }
    })
}

/// `stopgap assets import FILE`
pub fn import(conn: &Connection, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let xml = std::fs::read_to_string(file)
        .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
    let body = json!({ "source": file.display().to_string(), "xml": xml });
    let reply = conn.client(true)?.post("/v1/assets/import", &body)?;
    finish(conn, &reply, |b| {
        for f in b["imported"].as_array().into_iter().flatten() {
            println!(
                "{}  {} {}  ({})",
                s(&f["server"]),
                s(&f["product"]),
                s(&f["version"]),
                s(&f["raw"])
            );
        }
        for t in b["retired"].as_array().into_iter().flatten() {
            println!(
                "retired {} on {}: {}",
                s(&t["patch"]),
                s(&t["server"]),
                s(&t["reason"])
            );
        }
        for t in b["reengaged"].as_array().into_iter().flatten() {
            println!("re-engaged {} on {}", s(&t["patch"]), s(&t["server"]));
        }
    })
}

/// `stopgap bans`
pub fn bans(conn: &Connection) -> anyhow::Result<ExitCode> {
    let reply = conn.client(false)?.get("/v1/bans")?;
    finish(conn, &reply, |b| {
        println!(
            "escalation {}: {} neutralised attempts within {} s ban the source for {} s",
            s(&b["mode"]),
            s(&b["strikes"]),
            s(&b["window_s"]),
            s(&b["ban_s"])
        );
        let bans = b["bans"].as_array().cloned().unwrap_or_default();
        if bans.is_empty() {
            println!("no source banned");
        }
        for ban in bans {
            println!(
                "{:<40} {:>6} s left  {} strikes{}",
                s(&ban["source"]),
                s(&ban["remaining_s"]),
                s(&ban["strikes"]),
                if ban["enforced"] == Value::Bool(true) {
                    ""
                } else {
                    "  (monitor: not refused)"
                }
            );
        }
    })
}
