//! Bearer-token authentication (RFC 6750) for every `/scim/v2` route.

use warp::http::HeaderMap;

use crate::scim::ScimError;
use crate::service::{Service, ServiceError};
use crate::store::TokenInfo;

/// The token id of the caller, or the 401 to send (with `WWW-Authenticate: Bearer`).
pub async fn authenticate(service: &Service, headers: &HeaderMap) -> Result<TokenInfo, ServiceError> {
    let unauthorized = |d: &str| ServiceError::Scim(ScimError::new(401, None, d));
    let Some(value) = headers.get("authorization") else {
        return Err(unauthorized("authentication required: send Authorization: Bearer <token>"));
    };
    let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(|| unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("only Bearer tokens are accepted"));
    }
    match service.authenticate(token.trim()).await? {
        Some(info) => Ok(info),
        None => Err(unauthorized("invalid or revoked token")),
    }
}
