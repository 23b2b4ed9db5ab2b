//! Domain types shared by every layer: resources as stored, their ids and versions, and
//! the changes that travel to the outbox (their payload is [`OutboxPayload`]). The neutral
//! query AST lives in [`query`].
//!
//! Owns: the vocabulary. Must not touch: SQL, HTTP, the SCIM wire format (rendering
//! `schemas`, `meta.location`, and friends is `scim`'s job).

pub mod drift;
pub mod outbox;
pub mod query;
pub mod secret;

pub use outbox::OutboxPayload;
pub use secret::Secret;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The two resource types of RFC 7643 §4 we serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    /// The name used in `meta.resourceType` and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("User") {
            Some(ResourceKind::User)
        } else if s.eq_ignore_ascii_case("Group") {
            Some(ResourceKind::Group)
        } else {
            None
        }
    }
}

/// A group member as stored: the member's id and type. `display` is filled in on read from
/// the member's current name, so it never goes stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub kind: ResourceKind,
    pub display: Option<String>,
}

/// A group a user belongs to (the read-only `groups` attribute of RFC 7643 §4.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRef {
    pub id: String,
    pub display: Option<String>,
}

/// Server-maintained metadata (RFC 7643 §3.1 `meta`, minus what is derived at render time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// RFC 3339, UTC, millisecond precision.
    pub created: String,
    pub last_modified: String,
    /// Incremented on every change; rendered as the weak ETag `W/"<version>"`.
    pub version: u64,
}

/// A resource as the store holds it.
///
/// `attrs` holds the client-settable attributes in canonical spelling (extension attributes
/// under their schema URN key), without `id`, `meta`, `schemas`, `members` or `groups`:
/// memberships live in their own table so that adding one member to a 10,000-member group
/// does not rewrite the group.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub kind: ResourceKind,
    pub id: String,
    pub meta: Meta,
    pub attrs: Map<String, Value>,
    /// Groups only; `None` when the caller asked not to load them.
    pub members: Option<Vec<Member>>,
    /// Users only; `None` when not loaded.
    pub groups: Option<Vec<GroupRef>>,
}

impl Resource {
    /// The name a human knows it by: `userName` for users, `displayName` for groups (the id
    /// when missing).
    pub fn display_name(&self) -> &str {
        let key = match self.kind {
            ResourceKind::User => "userName",
            ResourceKind::Group => "displayName",
        };
        self.attrs.get(key).and_then(Value::as_str).unwrap_or(&self.id)
    }
}

/// A reference to a would-be member, as the IdP sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRef {
    pub id: String,
    /// `None` when the IdP did not say (Okta): the store finds out.
    pub kind: Option<ResourceKind>,
    /// The `display` the IdP sent, echoed back as given; `None`: the member's current name.
    pub display: Option<String>,
}

/// A change to a group's membership, applied by the store without loading the member list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberDelta {
    /// Replace the whole list with this one (applied before `add` and `remove`).
    pub replace: Option<Vec<MemberRef>>,
    pub add: Vec<MemberRef>,
    pub remove: Vec<String>,
}

impl MemberDelta {
    pub fn is_empty(&self) -> bool {
        self.replace.is_none() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// What happened to a resource, as recorded in the outbox for the provisioning worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Create,
    Update,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

/// Username as indexed: SCIM `userName` is unique case-insensitively (RFC 7643 §4.1.1).
pub fn fold_case(s: &str) -> String {
    s.to_lowercase()
}

/// Now as RFC 3339 UTC with millisecond precision: the one timestamp format we store, so
/// that text order is time order.
pub fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

const TS_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

pub fn format_time(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(TS_FORMAT).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// Normalise an RFC 3339 timestamp to our stored format (for comparisons); `None` when it
/// is not RFC 3339.
pub fn normalize_time(s: &str) -> Option<String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(format_time)
}

/// `now + d` in our stored timestamp format (for `next_attempt_at`, leases).
pub fn time_after(d: std::time::Duration) -> String {
    format_time(time::OffsetDateTime::now_utc() + d)
}

/// `now - d` in our stored timestamp format (for windows looking back).
pub fn time_before(d: std::time::Duration) -> String {
    format_time(time::OffsetDateTime::now_utc() - d)
}

/// How long ago an RFC 3339 timestamp was; zero for a future or unreadable one.
pub fn age_of(ts: &str) -> std::time::Duration {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| (time::OffsetDateTime::now_utc() - t).try_into().ok())
        .unwrap_or_default()
}
