//! SCIM errors (RFC 7644 §3.12): the status and `scimType` every protocol failure maps to.
//!
//! Owns: the error vocabulary of the protocol layer. Must not touch: HTTP frameworks
//! (`http` renders a [`ScimError`] into a response in its one `recover()`).

use std::fmt;

/// `scimType` values of RFC 7644 §3.12, table 9 (plus the status-only errors, which have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
    /// RFC 9865 §2.1: a `cursor` the server did not issue, or issued for another query.
    InvalidCursor,
    /// RFC 9865 §2.3: a `cursor` older than the advertised `cursorTimeout`.
    ExpiredCursor,
    /// Not in table 9. Some servers send it with bulk payloads over the limit, but the
    /// RFC's own example there (§3.7.4) has none, so we do not emit it.
    TooLarge,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::InvalidCursor => "invalidCursor",
            ScimType::ExpiredCursor => "expiredCursor",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
            ScimType::TooLarge => "tooLarge",
        }
    }
}

/// A protocol error: HTTP status, optional `scimType`, and a `detail` that names the
/// offending attribute path or input position so an operator can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError { status, scim_type, detail: detail.into() }
    }
    fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidFilter, detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidSyntax, detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidPath, detail)
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidValue, detail)
    }
    pub fn invalid_cursor(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidCursor, detail)
    }
    pub fn expired_cursor(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::ExpiredCursor, detail)
    }
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::NoTarget, detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::Mutability, detail)
    }
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::TooMany, detail)
    }
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some(ScimType::Uniqueness), detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }
}

impl ScimError {
    /// The RFC 7644 §3.12 body: `{"schemas": [Error URN], "status": "400", "scimType": ...,
    /// "detail": ...}` (`status` is a string, as in every example of the RFC). `http`
    /// sends it as a response; a bulk response embeds it per operation (§3.7.3).
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "schemas": [super::schema::ERROR],
            "status": self.status.to_string(),
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = serde_json::json!(t.as_str());
        }
        body["detail"] = serde_json::json!(self.detail);
        body
    }
}

impl fmt::Display for ScimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scim_type {
            Some(t) => write!(f, "{} {}: {}", self.status, t.as_str(), self.detail),
            None => write!(f, "{}: {}", self.status, self.detail),
        }
    }
}

impl std::error::Error for ScimError {}
