//! Building responses, and the one function that renders every error as an RFC 7644 §3.12
//! body: `{"schemas": [Error URN], "status": "400", "scimType": ..., "detail": ...}`.

use serde_json::{Value, json};
use warp::Reply;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use crate::scim::ScimError;
use crate::scim::schema::ERROR;
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
    let mut body = json!({
        "schemas": [ERROR],
        "status": e.status.to_string(),
    });
    if let Some(t) = e.scim_type {
        body["scimType"] = json!(t.as_str());
    }
    body["detail"] = json!(match request_id {
        Some(id) => format!("{} (request id {id})", e.detail),
        None => e.detail.clone(),
    });
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
    match e {
        ServiceError::Scim(s) => error(s, None),
        ServiceError::Unavailable(why) => {
            error(&ScimError::new(503, None, format!("service unavailable: {why}")), None)
        }
        ServiceError::Internal(msg) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(request_id = %id, error = %msg, "internal error");
            error(&ScimError::new(500, None, "internal error"), Some(&id))
        }
    }
}
