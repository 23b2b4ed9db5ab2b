//! Audit records: the one a change carries in, the ones a listing returns, and the query.

use serde_json::Value;

/// One audit record to write with a change. The time and (for resources) the version and
/// the resource's name are filled in by the store when the change commits.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// `token` for changes an IdP sent, `cli` for an operator's command.
    pub actor: String,
    pub token_id: Option<String>,
    /// `POST`, `PUT`, `PATCH`, `DELETE`, or the CLI action (`outbox discard`, `token create`).
    pub method: String,
    /// `User`, `Group`, `token`, `outbox`.
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// The IdP's request id (`client-request-id`, `X-Request-Id`, ...), when sent.
    pub request_id: Option<String>,
    /// JSON object: what changed, by name. The store may add to it (e.g. what was discarded).
    pub summary: Value,
}

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub token_id: Option<String>,
    pub method: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub version: Option<u64>,
    pub request_id: Option<String>,
    pub summary: Value,
}

/// Which records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only records at or after this time (our stored RFC 3339 format).
    pub since: Option<String>,
    /// Only records of this resource type (`User`, `Group`, ...), matched case-insensitively.
    pub resource_type: Option<String>,
    /// Only records whose resource id equals this, or whose resource name equals it
    /// case-insensitively (a userName or displayName).
    pub resource: Option<String>,
    /// The most recent `limit` records (returned oldest first).
    pub limit: usize,
}

impl NewAudit {
    /// A record by `actor` (`cli`, `token`, a tool's name) of `method` on `resource_type`,
    /// with no request, resource or summary yet (fill in what applies).
    pub fn new(actor: &str, method: &str, resource_type: &str) -> NewAudit {
        NewAudit {
            actor: actor.into(),
            token_id: None,
            method: method.into(),
            resource_type: resource_type.into(),
            resource_id: None,
            request_id: None,
            summary: Value::Object(Default::default()),
        }
    }
}
