//! Wiring: open the store, start the HTTP server (later: outbox worker, scheduler), and
//! shut them down in order — stop accepting HTTP and finish in-flight requests, then close
//! the store's writer last so every acknowledged change is committed.
//!
//! Owns: start and shutdown order. Must not touch: protocol rules, SQL, routing details.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, ApiState};
use crate::service::{ListLimits, Service};
use crate::store::{NewToken, Store, StoreError, StoreOptions};

pub fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        data_dir: cfg.store.data_dir.clone(),
        busy_timeout_seconds: cfg.store.busy_timeout_seconds,
        readers: cfg.store.readers,
        max_batch: cfg.store.max_batch,
    }
}

pub fn open_store(cfg: &Config) -> Result<Store, StoreError> {
    Store::open(&store_options(cfg))
}

/// On a fresh install there is no token and no IdP could connect: make one, to be shown once.
pub async fn bootstrap_token(store: &Store) -> Result<Option<NewToken>, StoreError> {
    if store.list_tokens().await?.iter().any(|t| t.revoked_at.is_none()) {
        return Ok(None);
    }
    Ok(Some(store.create_token("bootstrap").await?))
}

pub async fn bind(cfg: &Config) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = cfg
        .server
        .listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("server.listen: {e}")))?;
    TcpListener::bind(addr).await
}

/// Run until `shutdown` is cancelled, then stop in order.
pub async fn run(cfg: &Config, store: Store, listener: TcpListener, base_url: String, shutdown: CancellationToken) {
    let service = Service::new(
        store.clone(),
        ListLimits { default_page_size: cfg.scim.default_page_size, max_page_size: cfg.scim.max_page_size },
    );
    let state = Arc::new(ApiState {
        service,
        base_url,
        max_body_bytes: cfg.server.max_body_bytes,
        group_patch_returns_resource: cfg.scim.group_patch_returns_resource,
        max_page_size: cfg.scim.max_page_size,
        bulk_max_operations: cfg.scim.bulk_max_operations,
        bulk_max_payload_bytes: cfg.scim.bulk_max_payload_bytes,
    });
    http::serve(listener, state, shutdown).await;
    tracing::info!("http server stopped");
    // The writer goes last: it commits whatever the finished requests queued, then stops.
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    tracing::info!("store closed");
}
