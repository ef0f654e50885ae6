//! Listener and per-connection pump.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use stopgap_engine::{FlowInspector, FlowMeta, InspectorConfig, Output, Side};
use stopgap_patch::PatchSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::audit::AuditLog;

/// Size of each per-connection read buffer.
pub const READ_BUFFER: usize = 16 * 1024;

/// How long a closing connection keeps reading (and discarding) what the client still sends.
pub const LINGER: Duration = Duration::from_secs(2);

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

/// What a running listener needs.
#[derive(Clone)]
pub struct ListenerRuntime {
    /// Where to connect for each client.
    pub upstream: SocketAddr,
    /// Engine settings.
    pub inspector: InspectorConfig,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// The current patch snapshot.
    pub patches: Arc<ArcSwap<PatchSet>>,
    /// The audit log.
    pub audit: AuditLog,
}

/// Accepts connections forever, one task each.
pub async fn serve_listener(listener: TcpListener, rt: ListenerRuntime) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let rt = rt.clone();
                tokio::spawn(async move {
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

async fn handle_connection(
    client: TcpStream,
    peer: SocketAddr,
    id: u64,
    rt: ListenerRuntime,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let meta = FlowMeta {
        id,
        client: peer.to_string(),
        upstream: rt.upstream.to_string(),
    };
    let mut insp = FlowInspector::new(rt.inspector, meta);
    let server =
        match tokio::time::timeout(rt.connect_timeout, TcpStream::connect(rt.upstream)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            Ok(Err(e)) => {
                insp.upstream_failed(&format!("connect to {}: {e}", rt.upstream));
                None
            }
            Err(_) => {
                insp.upstream_failed(&format!("connect to {}: timed out", rt.upstream));
                None
            }
        };
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = match server {
        Some(s) => {
            let (r, w) = s.into_split();
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let mut cbuf = vec![0u8; READ_BUFFER];
    let mut sbuf = vec![0u8; READ_BUFFER];
    let mut client_open = true;
    loop {
        let server_open = server_r.is_some();
        if !client_open && !server_open {
            break;
        }
        tokio::select! {
            r = client_r.read(&mut cbuf), if client_open => {
                match r {
                    Ok(0) | Err(_) => {
                        client_open = false;
                        insp.handle_eof(Side::Client);
                        if let Some(w) = server_w.as_mut() {
                            let _ = w.shutdown().await;
                        }
                    }
                    Ok(n) => {
                        let snapshot = rt.patches.load_full();
                        insp.handle_data(Side::Client, &cbuf[..n], &snapshot);
                    }
                }
            }
            r = async { server_r.as_mut().expect("guarded").read(&mut sbuf).await }, if server_open => {
                match r {
                    Ok(0) | Err(_) => {
                        server_r = None;
                        insp.handle_eof(Side::Server);
                    }
                    Ok(n) => {
                        let snapshot = rt.patches.load_full();
                        insp.handle_data(Side::Server, &sbuf[..n], &snapshot);
                    }
                }
            }
        }
        while let Some(out) = insp.poll_output() {
            match out {
                Output::ToServer(bytes) => {
                    if let Some(w) = server_w.as_mut() {
                        w.write_all(&bytes).await?;
                    }
                }
                Output::ToClient(bytes) => client_w.write_all(&bytes).await?,
                Output::Audit(event) => rt.audit.record(*event),
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
                            while matches!(client_r.read(&mut cbuf).await, Ok(n) if n > 0) {}
                        })
                        .await;
                    }
                    return Ok(());
                }
            }
        }
    }
    let _ = client_w.shutdown().await;
    Ok(())
}
