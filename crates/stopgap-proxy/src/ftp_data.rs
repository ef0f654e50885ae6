//! FTP data connections: a one-shot listener per `PASV`/`EPSV` reply or `PORT`/`EPRT`
//! command, relaying the data bytes untouched between the client and the server.
//!
//! A listener accepts only the peer it was opened for (the client's host for passive mode,
//! the server's for active mode), so nobody else can steal or inject a transfer, and gives up
//! after [`DATA_ACCEPT_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a data listener waits for its peer.
pub const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens a listener on `local_ip` that accepts one connection from `peer_ip` and relays it to
/// `target`; returns the listener's address.
///
/// # Errors
/// The listener cannot be bound.
pub async fn relay_once(
    local_ip: IpAddr,
    peer_ip: IpAddr,
    target: SocketAddr,
    connect_timeout: Duration,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(local_ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let accepted = tokio::time::timeout(DATA_ACCEPT_TIMEOUT, async {
            loop {
                match listener.accept().await {
                    Ok((s, from)) if from.ip() == peer_ip => return Some(s),
                    Ok((_, from)) => {
                        tracing::warn!("FTP data port {addr}: refused a connection from {from}, expected {peer_ip}");
                    }
                    Err(e) => {
                        tracing::debug!("FTP data port {addr}: accept failed: {e}");
                        return None;
                    }
                }
            }
        })
        .await;
        let Ok(Some(mut inbound)) = accepted else {
            return;
        };
        drop(listener);
        let outbound = match tokio::time::timeout(connect_timeout, TcpStream::connect(target)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!("FTP data connection to {target} failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("FTP data connection to {target} timed out");
                return;
            }
        };
        let mut outbound = outbound;
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    Ok(addr)
}
