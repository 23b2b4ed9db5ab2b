//! The SCIM endpoints (RFC 7644 §3): dispatch on method and path, parse what the IdP sent,
//! call the service, render the reply.

use serde_json::Value;
use warp::http::{HeaderValue, Method, StatusCode};
use warp::reply::Response;

use super::{ApiState, Request, auth, respond};
use crate::model::{Resource, ResourceKind};
use crate::scim::list::{ListQuery, cursor_response, list_response};
use crate::scim::resource::{self, Projection};
use crate::scim::{ScimError, schema};
use crate::service::{ListRequest, Origin, ServiceError};
use crate::store::Load;

/// Handle one request; returns the response and the caller's token id (for the log line).
pub async fn dispatch(state: &ApiState, req: Request) -> (Response, Option<String>) {
    let token = match auth::authenticate(&state.service, &req.headers).await {
        Ok(t) => t,
        Err(e) => return (respond::service_error(&e), None),
    };
    if let Err(wait) = state.rate_limits.check(&token.id) {
        return (too_many_requests(&token.id, wait), Some(token.id));
    }
    let origin = Origin { token_id: token.id, request_id: idp_request_id(&req.headers) };
    let resp = match route(state, &req, &origin).await {
        Ok(r) => r,
        Err(e) => respond::service_error(&e),
    };
    (resp, Some(origin.token_id))
}

/// Headers an IdP may name its request by, most specific first: Entra's `client-request-id`
/// (and the `x-ms-` form Microsoft clients use), Okta's `X-Okta-Request-Id`, then the
/// generic ones a proxy or another IdP adds. The value goes to the audit log, so the
/// IdP's own logs can be joined with ours.
const REQUEST_ID_HEADERS: [&str; 6] = [
    "client-request-id",
    "x-ms-client-request-id",
    "x-okta-request-id",
    "x-request-id",
    "request-id",
    "x-correlation-id",
];

/// Longest request id kept: an id is short; anything longer is not one.
const MAX_REQUEST_ID_CHARS: usize = 128;

fn idp_request_id(headers: &warp::http::HeaderMap) -> Option<String> {
    REQUEST_ID_HEADERS.iter().find_map(|h| {
        let v = headers.get(*h)?.to_str().ok()?.trim();
        (!v.is_empty()).then(|| v.chars().filter(|c| !c.is_control()).take(MAX_REQUEST_ID_CHARS).collect())
    })
}

type Reply = Result<Response, ServiceError>;

/// 429 with `Retry-After` (whole seconds, rounded up) and a §3.12 body.
fn too_many_requests(token_id: &str, wait: std::time::Duration) -> Response {
    crate::telemetry::rate_limited(token_id);
    let secs = super::rate_limit::retry_after_seconds(wait);
    let mut r = respond::error(
        &ScimError::new(
            429,
            None,
            format!("too many requests with this token; retry after {secs} second(s) (server.rate_limit)"),
        ),
        None,
    );
    r.headers_mut().insert("retry-after", HeaderValue::from(secs));
    r
}

fn method_not_allowed(req: &Request, allowed: &str) -> Reply {
    let mut r = respond::error(
        &ScimError::new(405, None, format!("{} is not supported on this endpoint; use {allowed}", req.method)),
        None,
    );
    if let Ok(v) = HeaderValue::from_str(allowed) {
        r.headers_mut().insert("allow", v);
    }
    Ok(r)
}

async fn route(state: &ApiState, req: &Request, origin: &Origin) -> Reply {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = &req.method;
    let kind_of = ResourceKind::from_segment;
    let base = &state.base_url;
    match segs.as_slice() {
        [s] if s.eq_ignore_ascii_case("ServiceProviderConfig") => match *m {
            Method::GET => Ok(respond::json(StatusCode::OK, &schema::service_provider_config_json(base, &spc(state)))),
            _ => method_not_allowed(req, "GET"),
        },
        [s] if s.eq_ignore_ascii_case("Schemas") => discovery_list(req, schema::schemas_json(base)),
        [s, id] if s.eq_ignore_ascii_case("Schemas") => discovery_one(req, schema::schema_json(base, id), "schema", id),
        [s] if s.eq_ignore_ascii_case("ResourceTypes") => discovery_list(req, schema::resource_types_json(base)),
        [s, id] if s.eq_ignore_ascii_case("ResourceTypes") => {
            discovery_one(req, schema::resource_type_json(base, id), "resource type", id)
        }
        [s] if s.eq_ignore_ascii_case(".search") => match *m {
            Method::POST => search_all(state, req).await,
            _ => method_not_allowed(req, "POST"),
        },
        [s] if s.eq_ignore_ascii_case("Bulk") => match *m {
            Method::POST => bulk(state, req, origin).await,
            _ => method_not_allowed(req, "POST"),
        },
        [s] if s.eq_ignore_ascii_case("Me") => {
            Err(ScimError::new(501, None, "/Me is not supported: tokens belong to IdPs, not users").into())
        }
        [s] => match kind_of(s) {
            Some(kind) => match *m {
                Method::GET => {
                    let q =
                        ListQuery::from_pairs(query_pairs(&req.query)?.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
                    list(state, kind, q).await
                }
                Method::POST => create(state, req, kind, origin).await,
                _ => method_not_allowed(req, "GET, POST"),
            },
            None => Err(ScimError::not_found(format!("no endpoint /{s}")).into()),
        },
        [s, id] => match kind_of(s) {
            Some(kind) if id.eq_ignore_ascii_case(".search") => match *m {
                Method::POST => {
                    let q = ListQuery::from_search_body(&parse_json(req)?)?;
                    list(state, kind, q).await
                }
                _ => method_not_allowed(req, "POST"),
            },
            Some(kind) => match *m {
                Method::GET => get_one(state, req, kind, id).await,
                Method::PUT => replace(state, req, kind, id, origin).await,
                Method::PATCH => patch(state, req, kind, id, origin).await,
                Method::DELETE => {
                    state.service.delete(origin, kind, id, if_match(req)).await?;
                    Ok(respond::empty(StatusCode::NO_CONTENT))
                }
                _ => method_not_allowed(req, "GET, PUT, PATCH, DELETE"),
            },
            None => Err(ScimError::not_found(format!("no endpoint /{s}")).into()),
        },
        _ => Err(ScimError::not_found(format!("no endpoint {}", req.segments.join("/"))).into()),
    }
}

/// A discovery list (RFC 7644 §4): GET only, as a ListResponse.
fn discovery_list(req: &Request, all: Vec<Value>) -> Reply {
    if req.method != Method::GET {
        return method_not_allowed(req, "GET");
    }
    Ok(respond::json(StatusCode::OK, &list_response(all.len() as u64, 1, all)))
}

/// One discovery document by id: GET only, 404 when unknown.
fn discovery_one(req: &Request, one: Option<Value>, what: &str, id: &str) -> Reply {
    if req.method != Method::GET {
        return method_not_allowed(req, "GET");
    }
    one.map(|v| respond::json(StatusCode::OK, &v)).ok_or_else(|| ScimError::not_found(format!("no {what} {id}")).into())
}

fn spc(state: &ApiState) -> schema::SpcOptions {
    schema::SpcOptions {
        patch: true,
        bulk: true,
        bulk_max_operations: state.bulk_max_operations,
        bulk_max_payload_bytes: state.bulk_max_payload_bytes,
        filter_max_results: state.max_page_size,
        default_page_size: state.default_page_size,
        sort: true,
        etag: true,
        change_password: false,
    }
}

fn query_pairs(q: &str) -> Result<Vec<(String, String)>, ScimError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .map_err(|e| ScimError::invalid_syntax(format!("malformed query string: {e}")))
}

/// `attributes` / `excludedAttributes` from the query string (RFC 7644 §3.9).
fn projection(req: &Request) -> Result<Projection, ScimError> {
    let q = ListQuery::from_pairs(query_pairs(&req.query)?.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(Projection::new(q.attributes, q.excluded_attributes))
}

fn parse_json(req: &Request) -> Result<Value, ScimError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request body is empty; a JSON object is required"));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")))
}

fn if_match(req: &Request) -> Option<u64> {
    req.headers.get("if-match").and_then(|v| v.to_str().ok()).and_then(resource::parse_etag)
}

fn with_resource(status: StatusCode, state: &ApiState, res: Resource, proj: &Projection) -> Response {
    let etag = resource::etag(res.meta.version);
    let body = resource::render(res, &state.base_url, proj);
    let mut r = respond::json(status, &body);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert("etag", v);
    }
    r
}

fn load_for(kind: ResourceKind, proj: &Projection) -> Load {
    Load {
        members: kind == ResourceKind::Group && proj.wants("members"),
        groups: kind == ResourceKind::User && proj.wants("groups"),
    }
}

async fn create(state: &ApiState, req: &Request, kind: ResourceKind, origin: &Origin) -> Reply {
    let proj = projection(req)?;
    let body = parse_json(req)?;
    let res = state.service.create(origin, kind, body).await?;
    let location = format!("{}/{}/{}", state.base_url, kind.segment(), res.id);
    let mut r = with_resource(StatusCode::CREATED, state, res, &proj);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert("location", v);
    }
    Ok(r)
}

async fn get_one(state: &ApiState, req: &Request, kind: ResourceKind, id: &str) -> Reply {
    let proj = projection(req)?;
    let res = state.service.get(kind, id, load_for(kind, &proj)).await?;
    // RFC 7644 §3.14: If-None-Match with the current version answers 304.
    if let Some(v) = req.headers.get("if-none-match").and_then(|v| v.to_str().ok()).and_then(resource::parse_etag)
        && v == res.meta.version
    {
        let mut r = respond::empty(StatusCode::NOT_MODIFIED);
        if let Ok(v) = HeaderValue::from_str(&resource::etag(res.meta.version)) {
            r.headers_mut().insert("etag", v);
        }
        return Ok(r);
    }
    Ok(with_resource(StatusCode::OK, state, res, &proj))
}

async fn replace(state: &ApiState, req: &Request, kind: ResourceKind, id: &str, origin: &Origin) -> Reply {
    let proj = projection(req)?;
    let body = parse_json(req)?;
    let res = state.service.replace(origin, kind, id, body, if_match(req)).await?;
    let res = reload_if_needed(state, kind, res, &proj).await?;
    Ok(with_resource(StatusCode::OK, state, res, &proj))
}

async fn patch(state: &ApiState, req: &Request, kind: ResourceKind, id: &str, origin: &Origin) -> Reply {
    let proj = projection(req)?;
    let body = parse_json(req)?;
    let res = state.service.patch(origin, kind, id, body, if_match(req)).await?;
    // Groups answer 204 unless the IdP asked for attributes or the config says otherwise:
    // Entra expects 204, and a large group must not be echoed for every member change.
    if kind == ResourceKind::Group && !state.group_patch_returns_resource && proj.attributes.is_empty() {
        let mut r = respond::empty(StatusCode::NO_CONTENT);
        if let Ok(v) = HeaderValue::from_str(&resource::etag(res.meta.version)) {
            r.headers_mut().insert("etag", v);
        }
        return Ok(r);
    }
    let res = reload_if_needed(state, kind, res, &proj).await?;
    Ok(with_resource(StatusCode::OK, state, res, &proj))
}

/// Writes return a group without its members; load them when the reply shows them.
async fn reload_if_needed(
    state: &ApiState,
    kind: ResourceKind,
    res: Resource,
    proj: &Projection,
) -> Result<Resource, ServiceError> {
    if kind == ResourceKind::Group && res.members.is_none() && proj.wants("members") {
        return state.service.get(kind, &res.id, load_for(kind, proj)).await;
    }
    Ok(res)
}

/// The service's list request for what the IdP asked, loading `load`.
fn list_request(q: &ListQuery, load: Load) -> ListRequest {
    ListRequest {
        filter: q.filter.clone(),
        sort_by: q.sort_by.clone(),
        sort_order: q.sort_order.clone(),
        start_index: q.start_index,
        count: q.count,
        load,
        cursor: q.cursor.clone(),
        start_index_given: q.start_index_given,
    }
}

async fn list(state: &ApiState, kind: ResourceKind, q: ListQuery) -> Reply {
    let proj = Projection::new(q.attributes.clone(), q.excluded_attributes.clone());
    let lreq = list_request(&q, load_for(kind, &proj));
    let listed = state.service.list(kind, lreq).await?;
    let page = listed.page;
    let items: Vec<Value> = page.resources.into_iter().map(|r| resource::render(r, &state.base_url, &proj)).collect();
    let body = match listed.next_cursor {
        Some(next) => cursor_response(page.total, next, items),
        None => list_response(page.total, q.start_index.max(1), items),
    };
    Ok(respond::json(StatusCode::OK, &body))
}

/// `POST /Bulk` (RFC 7644 §3.7). The request as a whole fails only when it cannot be read
/// or exceeds a §3.7.4 limit (413); otherwise the answer is 200 with one result per
/// operation that ran, failures included (§3.7.3).
async fn bulk(state: &ApiState, req: &Request, origin: &Origin) -> Reply {
    if req.body.len() as u64 > state.bulk_max_payload_bytes {
        return Err(crate::scim::bulk::payload_too_large(state.bulk_max_payload_bytes).into());
    }
    let breq = crate::scim::bulk::parse_request(&parse_json(req)?, state.bulk_max_operations)?;
    let results = state.service.bulk(origin, &breq).await;
    let results = results.into_iter().map(|r| r.map_err(|e| respond::to_scim(&e))).collect();
    Ok(respond::json(StatusCode::OK, &crate::scim::bulk::response(&state.base_url, results)))
}

/// `POST /.search` at the root (RFC 7644 §3.4.3): users and groups paged as one list.
async fn search_all(state: &ApiState, req: &Request) -> Reply {
    let q = ListQuery::from_search_body(&parse_json(req)?)?;
    let proj = Projection::new(q.attributes.clone(), q.excluded_attributes.clone());
    let lreq = list_request(&q, Load { members: proj.wants("members"), groups: proj.wants("groups") });
    let page = state.service.search_all(lreq).await?;
    let items: Vec<Value> = page.resources.into_iter().map(|r| resource::render(r, &state.base_url, &proj)).collect();
    Ok(respond::json(StatusCode::OK, &list_response(page.total, q.start_index.max(1), items)))
}
