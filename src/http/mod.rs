//! HTTP: the SCIM API under `/scim/v2` on warp, and the admin listener ([`ops_api`]).
//!
//! Owns: routes, authentication, body limits, content types, and the one place where
//! errors become responses ([`respond::error`]). Must not touch: SQL, outbox internals,
//! reqwest.

mod auth;
pub mod gate;
pub mod html;
pub mod ops_api;
pub mod rate_limit;
mod respond;
mod scim_api;
pub mod server;
pub mod status_page;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};

use crate::scim::ScimError;
use crate::service::Service;

pub use gate::Gate;
pub use respond::SCIM_CONTENT_TYPE;

/// What the handlers share.
pub struct ApiState {
    pub service: Service,
    /// `http(s)://host:port/scim/v2`, for `Location` and `meta.location`.
    pub base_url: String,
    pub max_body_bytes: u64,
    pub group_patch_returns_resource: bool,
    pub max_page_size: u32,
    /// The page size of a list that asks for none (advertised, RFC 9865 §4).
    pub default_page_size: u32,
    /// RFC 7644 §3.7.4 limits of `POST /Bulk`.
    pub bulk_max_operations: u32,
    pub bulk_max_payload_bytes: u64,
    /// Per-token token buckets (`[server.rate_limit]`); reconfigured on SIGHUP.
    pub rate_limits: rate_limit::RateLimits,
}

/// One request, as the handlers see it: everything read off the wire, body included.
pub struct Request {
    pub method: Method,
    /// Path segments after `/scim/v2`, empty ones dropped (a trailing `/` is harmless).
    pub segments: Vec<String>,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Serve the SCIM API on an already bound listener (over TLS when `tls` is given) until
/// `shutdown` is cancelled; then stop accepting and let in-flight requests finish, for at
/// most `grace`. Until `gate` opens (the store is not open yet), every request is a 503.
pub async fn serve(
    listener: TcpListener,
    state: Arc<Gate<ApiState>>,
    tls: Option<Arc<tls::CertStore>>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) {
    server::serve(listener, routes(state), tls, shutdown, grace).await;
}

fn routes(
    state: Arc<Gate<ApiState>>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let st = state.clone();
    let scim = warp::path("scim")
        .and(warp::path("v2"))
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |tail: warp::path::Tail, method: Method, query: String, headers: HeaderMap, body| {
            let st = st.clone();
            let segments: Vec<String> =
                tail.as_str().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
            async move { handle(st, method, segments, query, headers, body).await }
        });
    let fallback = warp::any()
        .map(|| respond::error(&ScimError::not_found("no such endpoint; the SCIM API is under /scim/v2"), None));
    // The fallback never rejects, so no rejection escapes to warp's default (non-SCIM) body.
    scim.or(fallback).unify()
}

async fn handle(
    gate: Arc<Gate<ApiState>>,
    method: Method,
    segments: Vec<String>,
    query: String,
    headers: HeaderMap,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send,
) -> warp::reply::Response {
    let started = Instant::now();
    let path = format!("/scim/v2/{}", segments.join("/"));
    let route = route_template(&segments);
    let (resp, token_id) = match gate.state().await {
        // Nothing can be checked or stored yet (not even the token): the IdP retries later.
        Err(why) => (respond::error(&ScimError::new(503, None, format!("the daemon is starting: {why}")), None), None),
        Ok(state) => serve_request(&state, method.clone(), segments, query, headers, body).await,
    };
    let status = resp.status();
    let elapsed = started.elapsed();
    crate::telemetry::scim_request(route, method.as_str(), status.as_u16(), elapsed);
    // Whole microseconds: `3.705`, not the float noise of `3.7054110000000002`.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    if status.is_server_error() {
        tracing::warn!(%method, path, status = status.as_u16(), latency_ms, token = token_id.as_deref().unwrap_or("-"), "request");
    } else {
        tracing::info!(%method, path, status = status.as_u16(), latency_ms, token = token_id.as_deref().unwrap_or("-"), "request");
    }
    resp
}

/// One request on a started daemon: the body (within its limit), then the SCIM handlers.
async fn serve_request(
    state: &ApiState,
    method: Method,
    segments: Vec<String>,
    query: String,
    headers: HeaderMap,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send,
) -> (warp::reply::Response, Option<String>) {
    // `POST /Bulk` has its own payload limit (RFC 7644 §3.7.4), advertised as
    // `bulk.maxPayloadSize`; its 413 must name that limit, so it replaces the general one.
    let is_bulk = method == Method::POST && matches!(segments.as_slice(), [s] if s.eq_ignore_ascii_case("Bulk"));
    let (limit, too_large) = if is_bulk {
        (state.bulk_max_payload_bytes, crate::scim::bulk::payload_too_large(state.bulk_max_payload_bytes))
    } else {
        let limit = state.max_body_bytes;
        (
            limit,
            ScimError::new(StatusCode::PAYLOAD_TOO_LARGE.as_u16(), None, format!("request body exceeds {limit} bytes")),
        )
    };
    match read_body(&headers, body, limit, too_large).await {
        Err(e) => (respond::error(&e, None), None),
        Ok(body) => scim_api::dispatch(state, Request { method, segments, query, headers, body }).await,
    }
}

/// Collect the body up to the limit: a declared or actual size over it is 413. An
/// oversized body is still read (and discarded) up to [`DRAIN_FACTOR`] times the limit so
/// the client sees the 413 instead of a reset connection; anything larger is cut off.
async fn read_body(
    headers: &HeaderMap,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send,
    limit: u64,
    too_large_error: ScimError,
) -> Result<Bytes, ScimError> {
    let too_large = || too_large_error.clone();
    let drain_cap = limit.saturating_mul(DRAIN_FACTOR);
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > drain_cap) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut seen: u64 = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ScimError::invalid_syntax(format!("could not read the request body: {e}")))?;
        seen += chunk.remaining() as u64;
        if seen > drain_cap {
            break;
        }
        if seen > limit || declared.is_some_and(|len| len > limit) {
            chunk.advance(chunk.remaining());
            continue;
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            let n = c.len();
            buf.extend_from_slice(c);
            chunk.advance(n);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

const DRAIN_FACTOR: u64 = 4;

/// The route a request hit, templated (`/Users/{id}`), for metric labels: ids never become
/// label values, and anything unknown is `other`, so the label set stays bounded.
fn route_template(segments: &[String]) -> &'static str {
    let is = |s: &String, name: &str| s.eq_ignore_ascii_case(name);
    match segments {
        [a] if is(a, "Users") => "/Users",
        [a, b] if is(a, "Users") && is(b, ".search") => "/Users/.search",
        [a, _] if is(a, "Users") => "/Users/{id}",
        [a] if is(a, "Groups") => "/Groups",
        [a, b] if is(a, "Groups") && is(b, ".search") => "/Groups/.search",
        [a, _] if is(a, "Groups") => "/Groups/{id}",
        [a] if is(a, ".search") => "/.search",
        [a] if is(a, "Bulk") => "/Bulk",
        [a, ..] if is(a, "Me") => "/Me",
        [a] if is(a, "ServiceProviderConfig") => "/ServiceProviderConfig",
        [a] if is(a, "Schemas") => "/Schemas",
        [a, _] if is(a, "Schemas") => "/Schemas/{id}",
        [a] if is(a, "ResourceTypes") => "/ResourceTypes",
        [a, _] if is(a, "ResourceTypes") => "/ResourceTypes/{id}",
        _ => "other",
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Work on bytes, never on str slices: `%a` followed by a multi-byte character must not
        // split a character.
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_templated() {
        let t = |p: &str| {
            super::route_template(&p.split('/').filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>())
        };
        assert_eq!(t("users"), "/Users");
        assert_eq!(t("Users/2819c223-7f76-453a-919d-413861904646"), "/Users/{id}");
        assert_eq!(t("Groups/.search"), "/Groups/.search");
        assert_eq!(t("Schemas/urn:ietf:params:scim:schemas:core:2.0:User"), "/Schemas/{id}");
        assert_eq!(t("Users/x/y"), "other");
        assert_eq!(t(""), "other");
    }

    #[test]
    fn percent_decode_is_byte_safe() {
        assert_eq!(super::percent_decode("a%20b"), "a b");
        assert_eq!(super::percent_decode("%aé"), "%aé");
        assert_eq!(super::percent_decode("%"), "%");
        assert_eq!(super::percent_decode("%4"), "%4");
        assert_eq!(super::percent_decode("urn%3Aietf"), "urn:ietf");
    }
}
