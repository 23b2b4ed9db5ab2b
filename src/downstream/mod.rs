//! Talking to the downstream app: a [`Target`] takes one [`Job`] (the current state of one
//! resource plus what changed since it was last delivered) and says how it went, as an
//! [`Outcome`]: done, retry (maybe after a time the app asked for), permanent failure, or
//! waiting for a dependency.
//!
//! Owns: request shapes and outcome classification. Must not touch: the store, warp, retry
//! timing (the outbox worker decides when to try again).

pub mod dry_run;
pub mod mapping;
pub mod scim_target;
pub mod webhook_list;
pub mod webhook_settings;
pub mod webhook_target;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::model::{ChangeOp, Resource, ResourceKind};

/// One resource's pending changes, ready to deliver.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: ResourceKind,
    pub resource_id: String,
    /// The outbox id of the oldest change in the job: sent as `Idempotency-Key`.
    pub idempotency_key: String,
    /// The coalesced changes, oldest first.
    pub ops: Vec<ChangeOp>,
    /// The resource as it is now; `None` when it has been deleted.
    pub current: Option<Resource>,
    /// What the app calls this resource, when known.
    pub app_id: Option<String>,
    /// `userName` / `externalId` / `displayName` of a deleted resource, to find it in the app.
    pub tombstone: Map<String, Value>,
    /// An orphan to switch off: the account as the app listed it (see `RepairOp::Orphan`).
    pub app_record: Option<Map<String, Value>>,
    /// Group members to add and remove (our ids), net over the coalesced changes.
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
    /// Our member id -> the app's id, for every member named above.
    pub member_app_ids: HashMap<String, String>,
    /// Whether attributes changed (or the resource is new): otherwise a membership-only job
    /// sends no attribute update.
    pub attrs_changed: bool,
    /// Deprovision by deactivation even when the target deletes (a repair under a
    /// never-delete policy).
    pub deactivate_only: bool,
}

impl Job {
    pub fn is_delete(&self) -> bool {
        self.current.is_none()
    }
}

/// How a delivery went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied. `app_id`: the app's id for the resource now (`None`: it no longer exists there).
    Done { app_id: Option<String> },
    /// Worth trying again; `after` is what the app asked for (`Retry-After`), if anything.
    Retry { after: Option<Duration>, error: String },
    /// Will not succeed by retrying (a 400 the app will keep giving, bad credentials, ...).
    Permanent { error: String },
    /// The app answered 404 for the account under the app id we hold: it was deleted there
    /// behind our back. Retrying the same request would loop for ever; the worker forgets the
    /// stale id and delivers the whole current state again (found by name, else created).
    Gone { error: String },
    /// Nothing was sent (the dry-run target recorded it): done, but no app id or applied
    /// state is recorded, since no app has the account.
    Recorded { note: String },
}

/// The HTTP client every target uses: rustls with the `ring` provider (no OpenSSL, no C
/// toolchain surprises), the system's roots plus an optional private CA bundle (PEM) for
/// apps with internal certificates.
pub fn http_client(timeout: Duration, ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    // Installing twice is harmless (the second call reports the first one won).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Redirects are followed only within the origin asked: configured headers (an API key)
    // and signatures must never travel to another host because the app said so.
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else { return attempt.follow() };
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if !same_origin(first, attempt.url()) {
            let to = attempt.url().to_string();
            attempt.error(format!("redirect to {to} leaves the app's origin; not followed"))
        } else {
            attempt.follow()
        }
    });
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(redirects)
        .user_agent(concat!("scimsync/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("CA file {} is not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("CA file {} holds no certificate", path.display()));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// An id as one URL path segment (RFC 3986 §3.3): everything but the unreserved characters
/// percent-encoded, so an app id like `../teams/7` (a login, a name) cannot reach another
/// path than the one configured.
pub fn segment(id: &str) -> String {
    const NOT_UNRESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let s = percent_encoding::utf8_percent_encode(id, NOT_UNRESERVED).to_string();
    // `.` and `..` are unreserved but mean "this" and "up" as whole segments.
    match s.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => s,
    }
}

/// Same scheme, host and port (RFC 6454 origin).
pub fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// An error with its causes (`error sending request: ...: invalid peer certificate: UnknownIssuer`):
/// reqwest's own message alone rarely says what to fix.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out
}

/// Per-target flow control: a token bucket (governor's GCRA) that every request to the app
/// passes through, so a burst of queued changes never exceeds what the app allows.
#[derive(Clone)]
pub struct Throttle(Option<std::sync::Arc<governor::DefaultDirectRateLimiter>>);

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Throttle(on)" } else { "Throttle(off)" })
    }
}

impl Throttle {
    /// `per_second == 0` turns it off.
    pub fn new(per_second: u32, burst: u32) -> Throttle {
        let (Some(rate), Some(burst)) =
            (std::num::NonZeroU32::new(per_second), std::num::NonZeroU32::new(burst.max(1)))
        else {
            return Throttle(None);
        };
        Throttle(Some(std::sync::Arc::new(governor::RateLimiter::direct(
            governor::Quota::per_second(rate).allow_burst(burst),
        ))))
    }

    pub fn off() -> Throttle {
        Throttle(None)
    }

    /// Wait for a token.
    pub async fn wait(&self) {
        if let Some(l) = &self.0 {
            l.until_ready().await;
        }
    }
}

/// The configured downstream. An enum rather than a trait object: the set is closed and
/// known at build time, and async methods stay simple.
// One per daemon, behind an Arc: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Scim(scim_target::ScimTarget),
    Webhook(webhook_target::WebhookTarget),
    DryRun(dry_run::DryRun),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Scim(_) => "scim",
            Target::Webhook(_) => "webhook",
            Target::DryRun(_) => "dry-run",
        }
    }

    /// Whether the target can list the app's accounts (for reconciliation): a SCIM app
    /// always, a REST app when `[target.webhook.list]` says how.
    pub fn can_list(&self) -> bool {
        match self {
            Target::Scim(_) => true,
            Target::Webhook(t) => t.lists(ResourceKind::User),
            Target::DryRun(_) => false,
        }
    }

    pub async fn deliver(&self, job: &Job) -> Outcome {
        match self {
            Target::Scim(t) => t.deliver(job).await,
            Target::Webhook(t) => t.deliver(job).await,
            Target::DryRun(t) => t.deliver(job).await,
        }
    }
}

/// The SCIM representation we send for a resource: its attributes (never the password
/// hash, which is ours), `schemas`, and no `id`/`meta` (the app assigns its own).
pub fn representation(res: &Resource) -> Map<String, Value> {
    let mut m = Map::new();
    let mut schemas = vec![Value::String(crate::scim::schema::core_urn(res.kind).to_string())];
    for ext in crate::scim::schema::extension_urns(res.kind) {
        if res.attrs.contains_key(*ext) {
            schemas.push(Value::String(ext.to_string()));
        }
    }
    m.insert("schemas".into(), Value::Array(schemas));
    for (k, v) in &res.attrs {
        if k != "password" {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

/// Outcome of an HTTP status that is not the success we wanted (RFC 7231 semantics plus
/// provisioning practice): 408, 409, 429 and 5xx are worth retrying; other 4xx are not, except
/// that the caller handles 404 and 409 itself where they mean "gone" or "exists".
pub fn classify(status: u16, retry_after: Option<Duration>, what: &str, body: &str) -> Outcome {
    let error = format!("{what}: HTTP {status}: {}", truncate(body, 300));
    // 409 is a conflict of the moment (a concurrent change, an edit lock in the app); the
    // create path handles its "already exists" meaning itself.
    if status == 408 || status == 409 || status == 429 || status >= 500 {
        Outcome::Retry { after: retry_after, error }
    } else {
        Outcome::Permanent { error }
    }
}

/// `Retry-After` as delay-seconds (the HTTP-date form is rare from APIs and treated as absent).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    v?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(segment("2819c223-7f76-453a-919d-413861904646"), "2819c223-7f76-453a-919d-413861904646");
        assert_eq!(segment("../teams/7"), "..%2Fteams%2F7");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a b?c#d%"), "a%20b%3Fc%23d%25");
        assert_eq!(segment("ünï"), "%C3%BCn%C3%AF");
    }

    #[test]
    fn classification() {
        assert!(matches!(classify(503, None, "x", ""), Outcome::Retry { .. }));
        assert!(matches!(classify(429, Some(Duration::from_secs(3)), "x", ""), Outcome::Retry { after: Some(_), .. }));
        assert!(matches!(classify(408, None, "x", ""), Outcome::Retry { .. }));
        assert!(matches!(classify(409, None, "x", ""), Outcome::Retry { .. }));
        assert!(matches!(classify(400, None, "x", ""), Outcome::Permanent { .. }));
        assert!(matches!(classify(401, None, "x", ""), Outcome::Permanent { .. }));
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(truncate("héllo", 2), "h…");
    }
}
