//! A loopback TCP relay in front of a service, which a test can make hang: while frozen it
//! keeps accepting connections and reading requests but forwards nothing either way, as a
//! storage account that has stopped answering does (the connection stays open, no answer
//! comes). Thawed, it forwards what it held.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay.
pub(super) struct Relay {
    /// Where clients connect.
    pub(super) addr: SocketAddr,
}

impl Relay {
    /// Relays `127.0.0.1:<free port>` to `target`, for the life of the process, holding
    /// everything while `frozen` is set.
    pub(super) async fn start(
        target: SocketAddr,
        frozen: Arc<AtomicBool>,
    ) -> std::io::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let gate = frozen;
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = gate.clone();
                tokio::spawn(async move {
                    // A target that refuses drops the client, as a refused connection would.
                    if let Ok(server) = TcpStream::connect(target).await {
                        pipe(client, server, gate).await;
                    }
                });
            }
        });
        Ok(Relay { addr })
    }
}

/// Copies both ways until either side closes, holding every chunk while `frozen`.
async fn pipe(client: TcpStream, server: TcpStream, frozen: Arc<AtomicBool>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = copy(cr, sw, frozen.clone());
    let down = copy(sr, cw, frozen);
    let _ = tokio::join!(up, down);
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
