//! `stopgap demo`: a built-in upstream, the gateway with the shipped patches, a scripted tour.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use stopgap_proto::http1::{parse_request_head, BodyDecoder, Limits};
use stopgap_proxy::audit::AuditTarget;
use stopgap_proxy::config::{GatewayConfig, DEFAULT_TOKEN_FILE};

use crate::gateway::{self, StartFailure, STATE_FILE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Recorder = Arc<Mutex<Vec<u8>>>;

/// A minimal keep-alive HTTP/1.1 server that records every byte it receives.
async fn upstream(listener: TcpListener, record: Recorder) {
    while let Ok((mut s, _)) = listener.accept().await {
        let record = record.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            let limits = Limits::default();
            loop {
                let Ok(n) = s.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                record
                    .lock()
                    .expect("recorder")
                    .extend_from_slice(&chunk[..n]);
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some(head)) = parse_request_head(&buf, &limits) {
                    let Ok(framing) = head.framing() else { return };
                    let mut decoder = BodyDecoder::new(framing, &limits);
                    let rest = &buf[head.raw().len()..];
                    let Ok(p) = decoder.decode(rest, |_| {}) else {
                        return;
                    };
                    if !p.done {
                        break; // wait for the rest of the body
                    }
                    let body = format!(
                        "hello from the demo upstream: {} {}\n",
                        String::from_utf8_lossy(head.method()),
                        String::from_utf8_lossy(head.target())
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nServer: stopgap-demo-upstream\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    let used = head.raw().len() + p.consumed;
                    buf.drain(..used);
                }
            }
        });
    }
}

async fn send(gateway: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(gateway).await?;
    s.write_all(request).await?;
    let mut resp = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the status line and head are in, or the gateway closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => resp.extend_from_slice(&chunk[..n]),
            }
            if resp.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let line = resp.split(|&b| b == b'\r').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).into_owned())
}

fn first_line(req: &[u8]) -> String {
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text.into_owned()
    }
}

pub async fn run(listen: SocketAddr, patches_dir: &Path, once: bool) -> anyhow::Result<ExitCode> {
    let patches = stopgap_patch::load_dir(patches_dir).map_err(|d| {
        anyhow!("{d}\n(the demo needs the shipped patches: run it from the repository root, or pass --patches DIR)")
    })?;
    let record: Recorder = Arc::default();
    let up = TcpListener::bind("127.0.0.1:0")
        .await
        .context("demo upstream")?;
    let up_addr = up.local_addr()?;
    tokio::spawn(upstream(up, record.clone()));

    let audit_path = std::env::temp_dir().join("stopgap-demo-audit.jsonl");
    let state_dir = std::env::temp_dir().join("stopgap-demo-state");
    // The demo always starts from the patch files' own modes.
    let _ = std::fs::remove_file(state_dir.join(STATE_FILE));
    let mut cfg = GatewayConfig::quick(listen, up_addr, patches_dir.to_path_buf());
    cfg.audit = AuditTarget::File(audit_path.clone());
    cfg.state_dir = Some(state_dir.clone());
    if once {
        cfg.admin.listen = None;
    }
    let running = match gateway::start(cfg, None, None).await {
        Ok(r) => r,
        Err(StartFailure::Located(text)) => return Err(anyhow!("{text}")),
        Err(StartFailure::Other(e)) => return Err(e),
    };
    let gw_addr = running.listening[0];
    println!(
        "stopgap demo: gateway {gw_addr} -> demo upstream {up_addr}, {} patches applied\n",
        patches.len()
    );
    println!("{:<14} {:<8} {:<62} RESULT", "PATCH", "VECTOR", "REQUEST");
    let mut failures = 0;
    // The demo upstream speaks HTTP; the FTP and SMTP patches have their own tests.
    for p in patches
        .iter()
        .filter(|p| p.protocol == stopgap_patch::Protocol::Http)
    {
        let picks = [
            p.vectors.iter().find(|v| v.kind == "exploit"),
            p.vectors.iter().find(|v| v.kind == "evasion"),
            p.vectors.iter().find(|v| v.kind == "benign"),
        ];
        for v in picks.into_iter().flatten() {
            record.lock().expect("recorder").clear();
            let status = send(gw_addr, &v.request).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let seen = record.lock().expect("recorder").clone();
            let result = if v.expect_match {
                if seen.is_empty() && status.contains(" 4") {
                    format!("refused: {status}")
                } else {
                    failures += 1;
                    format!("NOT REFUSED ({status})")
                }
            } else if seen == v.request {
                format!("passed byte-for-byte: {status}")
            } else {
                failures += 1;
                format!("ALTERED ({status})")
            };
            println!(
                "{:<14} {:<8} {:<62} {}",
                p.id,
                v.kind,
                first_line(&v.request),
                result
            );
        }
    }
    println!("\naudit events: {}", audit_path.display());
    if once {
        return Ok(if failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!("\nThe gateway keeps serving on http://{gw_addr}/ (Ctrl-C to stop). Try:");
    println!("  curl -i http://{gw_addr}/hello");
    println!("  curl -i -H 'Range: bytes=0-18446744073709551615' http://{gw_addr}/");
    println!("  curl -i -A '() {{ :; }}; /bin/id' http://{gw_addr}/cgi-bin/status");
    if let Some(admin) = running.admin {
        let flags = format!(
            "--admin http://{admin} --token-file {}",
            state_dir.join(DEFAULT_TOKEN_FILE).display()
        );
        println!("and switch patches live from another terminal:");
        println!("  stopgap patches list {flags}");
        println!("  stopgap patches unapply SG-2015-1635 {flags}   # the Range request now passes");
        println!("  stopgap patches apply SG-2015-1635 {flags}");
    }
    running.run_until_signalled().await
}
