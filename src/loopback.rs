//! Serving warp routes on IPv4 loopback, the only address this program ever listens on.

use std::net::{Ipv4Addr, SocketAddr};

/// Binds `127.0.0.1:port` (0 for a free port) and serves `route` in the background.
/// Returns the bound address.
pub async fn serve<F>(route: F, port: u16) -> std::io::Result<SocketAddr>
where
    F: warp::Filter<Error = warp::Rejection> + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Ok(addr)
}
