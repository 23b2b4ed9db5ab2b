//! The SCIM listener's accept loop: warp's filter served through hyper-util, over plain TCP
//! or TLS (tokio-rustls), with a shutdown that stops accepting at once, lets in-flight
//! requests finish (idle keep-alive connections are closed), and cuts off whatever is still
//! running at the deadline. A request cut off was never answered, so the IdP retries it;
//! nothing it did is half-done (a change commits whole or not at all).
//!
//! warp's own server cannot take a TLS acceptor of ours (and its `tls` feature brings its
//! own rustls set-up), hence this loop.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use super::tls::CertStore;

/// A client that opens a connection and never finishes the TLS handshake must not hold a
/// task (or the shutdown) for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    tls: Option<Arc<CertStore>>,
    shutdown: CancellationToken,
    grace: Duration,
) where
    F: Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
{
    let acceptor = match tls.as_ref().map(|t| t.server_config()) {
        None => None,
        Some(Ok(cfg)) => Some(tokio_rustls::TlsAcceptor::from(cfg)),
        Some(Err(e)) => {
            // CertStore::load already succeeded, so this is a rustls defaults problem.
            tracing::error!(error = %e, "TLS could not be set up; the SCIM listener is not serving");
            shutdown.cancelled().await;
            return;
        }
    };
    let graceful = GracefulShutdown::new();
    let mut conns: JoinSet<()> = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; per-connection errors
                    // (reset before accept) are not worth a line.
                    if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(warp::service(filter.clone()));
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                None => {
                    watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).into_owned()).await
                }
                Some(a) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        watcher
                            .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned())
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(connections = open, "SCIM listener closed; finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(
                connections = conns.len(),
                grace_seconds = grace.as_secs(),
                "requests still running at the shutdown deadline (server.shutdown_grace_seconds); closing them unanswered"
            );
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
