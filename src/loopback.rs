//! Loopback, the one place plain http is allowed: the URL policy for outbound calls (https,
//! or http to a loopback address for local work and tests), and serving warp routes on IPv4
//! loopback, the only address this program ever listens on.

use std::net::{Ipv4Addr, SocketAddr};
use url::Url;

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

/// Outbound calls are https, except to loopback addresses (local development and tests).
pub(crate) fn check_https_or_loopback(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err(format!(
            "{url} must use https (plain http only for loopback addresses)"
        )),
    }
}

/// Whether the URL's host is a loopback address (127.0.0.0/8, ::1 or localhost).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}
