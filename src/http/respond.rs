//! Building responses, and the one function that renders every error as an RFC 7644 §3.12
//! body: `{"schemas": [Error URN], "status": "400", "scimType": ..., "detail": ...}`.

use serde_json::Value;
use warp::Reply;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use crate::scim::ScimError;
use crate::service::ServiceError;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

pub fn json(status: StatusCode, body: &Value) -> Response {
    let mut r = body.to_string().into_response();
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", HeaderValue::from_static(SCIM_CONTENT_TYPE));
    r
}

pub fn empty(status: StatusCode) -> Response {
    let mut r = "".into_response();
    *r.status_mut() = status;
    r
}

/// Render a protocol error. `request_id` is set for 500s so the log line can be found.
pub fn error(e: &ScimError, request_id: Option<&str>) -> Response {
    let body = match request_id {
        Some(id) => ScimError { detail: format!("{} (request id {id})", e.detail), ..e.clone() }.to_json(),
        None => e.to_json(),
    };
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json(status, &body);
    match e.status {
        401 => {
            r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"scimsync\""));
        }
        503 => {
            r.headers_mut().insert("retry-after", HeaderValue::from_static("5"));
        }
        _ => {}
    }
    r
}

/// Render a use-case failure: protocol errors as they are; anything unexpected as a logged
/// 500 carrying a request id, never internal text.
pub fn service_error(e: &ServiceError) -> Response {
    let shown = to_scim(e);
    error(&shown, None)
}

/// What the client may see of a use-case failure (the body of [`service_error`], also
/// embedded per operation in a bulk response): protocol errors as they are; an internal
/// error is logged with a request id and shown only as that id.
pub fn to_scim(e: &ServiceError) -> ScimError {
    match e {
        ServiceError::Scim(s) => s.clone(),
        ServiceError::Unavailable(why) => ScimError::new(503, None, format!("service unavailable: {why}")),
        ServiceError::Internal(msg) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(request_id = %id, error = %msg, "internal error");
            ScimError::new(500, None, format!("internal error (request id {id})"))
        }
    }
}
