//! The REST/webhook target: one configured HTTP request per event kind, a JSON body built by
//! the attribute [`Mapping`](super::mapping::Mapping), an HMAC-SHA256 signature, expected
//! statuses, and the app's id taken from the create response for later calls.
//!
//! Signature (the scheme Stripe and Svix popularised, so receivers have libraries for it):
//! `X-Scimsync-Timestamp: <unix seconds>` and
//! `X-Scimsync-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. The
//! timestamp inside the signed text stops replays of old requests.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use sha2::Sha256;

use super::mapping::Mapping;
use super::{Job, Outcome, classify, parse_retry_after, representation};
use crate::model::ResourceKind;

/// One configured request.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: Method,
    /// Path template under the base URL: `{app_id}`, `{id}` and `{external_id}` are replaced.
    pub path: String,
    /// Statuses that mean success (empty: any 2xx).
    pub expect: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    UserCreate,
    UserUpdate,
    UserDelete,
    GroupCreate,
    GroupUpdate,
    GroupDelete,
    MembersAdd,
    MembersRemove,
}

impl Event {
    pub const ALL: [(&'static str, Event); 8] = [
        ("user_create", Event::UserCreate),
        ("user_update", Event::UserUpdate),
        ("user_delete", Event::UserDelete),
        ("group_create", Event::GroupCreate),
        ("group_update", Event::GroupUpdate),
        ("group_delete", Event::GroupDelete),
        ("members_add", Event::MembersAdd),
        ("members_remove", Event::MembersRemove),
    ];
}

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub base_url: String,
    pub secret: String,
    pub headers: Vec<(String, String)>,
    /// Field of the create response holding the app's id (dotted for nesting); `None`: the
    /// app is keyed by our ids.
    pub id_field: Option<String>,
    pub events: BTreeMap<Event, Endpoint>,
    pub user_mapping: Mapping,
    pub group_mapping: Mapping,
    pub max_members_per_request: usize,
    pub request_timeout: Duration,
    pub throttle: super::Throttle,
    /// Extra trusted CA certificates (PEM), for apps with a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// How to list the app's accounts for reconciliation; `None`: it is not reconciled.
    pub list: Option<super::webhook_list::ListOptions>,
}

pub struct WebhookTarget {
    pub(super) opts: WebhookOptions,
    http: Client,
}

/// `sha256=<hex>` over `"<timestamp>.<body>"`.
pub fn sign(secret: &str, timestamp: u64, body: &str) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Set `key` in `into` to `v`, merging objects key by key (so a nested active field does not
/// wipe its siblings).
fn merge(into: &mut serde_json::Map<String, Value>, key: &str, v: Value) {
    match (into.get_mut(key), v) {
        (Some(Value::Object(have)), Value::Object(new)) => {
            for (k, v) in new {
                merge(have, &k, v);
            }
        }
        (_, v) => {
            into.insert(key.to_string(), v);
        }
    }
}

/// The value at a dotted path (`data.id`); the empty path is the value itself.
pub(super) fn dotted<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |acc, k| acc.get(k))
}

impl WebhookTarget {
    pub fn new(opts: WebhookOptions) -> Result<Self, String> {
        let http = super::http_client(opts.request_timeout, opts.ca_file.as_deref())?;
        Ok(WebhookTarget { opts, http })
    }

    /// A request with the configured headers and the signature over `text` (the body; empty
    /// for a read).
    pub(super) fn signed(&self, method: Method, url: &str, event: &str, text: &str) -> reqwest::RequestBuilder {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut rb = self
            .http
            .request(method, url)
            .header("x-scimsync-event", event)
            .header("x-scimsync-timestamp", ts.to_string())
            .header("x-scimsync-signature", sign(&self.opts.secret, ts, text));
        for (k, v) in &self.opts.headers {
            rb = rb.header(k, v);
        }
        rb
    }

    async fn call(&self, event: Event, job: &Job, app_id: Option<&str>, body: Option<Value>) -> Result<Value, Outcome> {
        let Some(ep) = self.opts.events.get(&event) else {
            // Not configured: the app does not want this event (e.g. no group support).
            return Ok(Value::Null);
        };
        let ext = job.current.as_ref().and_then(|c| c.attrs.get("externalId")).and_then(Value::as_str).unwrap_or("");
        let path = ep
            .path
            .replace("{app_id}", &super::segment(app_id.unwrap_or(&job.resource_id)))
            .replace("{id}", &super::segment(&job.resource_id))
            .replace("{external_id}", &super::segment(ext));
        let url = format!("{}/{}", self.opts.base_url.trim_end_matches('/'), path.trim_start_matches('/'));
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        self.opts.throttle.wait().await;
        let event_name = Event::ALL.iter().find(|(_, e)| *e == event).map(|(n, _)| *n).unwrap_or("");
        let mut rb =
            self.signed(ep.method.clone(), &url, event_name, &text).header("idempotency-key", &job.idempotency_key);
        if !text.is_empty() {
            rb = rb.header("content-type", "application/json").body(text);
        }
        let what = format!("{} {path}", ep.method);
        let resp = rb
            .send()
            .await
            .map_err(|e| Outcome::Retry { after: None, error: format!("{what}: {}", super::error_chain(&e)) })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let body = resp.text().await.unwrap_or_default();
        let ok = if ep.expect.is_empty() { (200..300).contains(&status) } else { ep.expect.contains(&status) };
        if ok {
            return Ok(serde_json::from_str(&body).unwrap_or(Value::Null));
        }
        // Deleting something already gone is success.
        if status == 404 && matches!(event, Event::UserDelete | Event::GroupDelete) {
            return Ok(Value::Null);
        }
        // An update of an account we know by its app id, answered 404: deleted in the app.
        if status == 404 && app_id.is_some() && !matches!(event, Event::UserCreate | Event::GroupCreate) {
            return Err(Outcome::Gone { error: format!("{what}: the app no longer has this account (404)") });
        }
        Err(classify(status, retry_after, &what, &body))
    }

    pub async fn deliver(&self, job: &Job) -> Outcome {
        match self.deliver_inner(job).await {
            Ok(o) | Err(o) => o,
        }
    }

    async fn deliver_inner(&self, job: &Job) -> Result<Outcome, Outcome> {
        let (create, update, delete, mapping) = match job.kind {
            ResourceKind::User => (Event::UserCreate, Event::UserUpdate, Event::UserDelete, &self.opts.user_mapping),
            ResourceKind::Group => {
                (Event::GroupCreate, Event::GroupUpdate, Event::GroupDelete, &self.opts.group_mapping)
            }
        };
        let Some(current) = &job.current else {
            // A repair under `never_delete = ["users"]`: the account the IdP does not know is
            // switched off, not deleted; we know only its name (the tombstone) and that it is off.
            if job.deactivate_only && job.kind == ResourceKind::User {
                if !self.opts.events.contains_key(&update) {
                    return Err(Outcome::Permanent {
                        error: "deactivating an account needs target.webhook.events.user_update".into(),
                    });
                }
                let mut rep = job.tombstone.clone();
                rep.insert("active".into(), Value::Bool(false));
                let off = mapping.apply(&rep);
                // The account as the app listed it, with only the mapped active state
                // changed: an update that replaces the record (a PUT) keeps everything else.
                // Without the listed record: its name and the inactive state.
                let body = match &job.app_record {
                    Some(record) => {
                        let mut r = record.clone();
                        if let Some(field) = mapping.fields_from("active", false).first() {
                            let top = field.split('.').next().unwrap_or(field);
                            if let Some(v) = off.get(top) {
                                merge(&mut r, top, v.clone());
                            }
                        } else if mapping.is_pass_through() {
                            r.insert("active".into(), Value::Bool(false));
                        }
                        Value::Object(r)
                    }
                    None => Value::Object(off),
                };
                self.call(update, job, job.app_id.as_deref(), Some(body)).await?;
                return Ok(Outcome::Done { app_id: None });
            }
            self.call(delete, job, job.app_id.as_deref(), None).await?;
            return Ok(Outcome::Done { app_id: None });
        };
        let body = Value::Object(mapping.apply(&representation(current)));
        let app_id = match &job.app_id {
            Some(id) => {
                if job.attrs_changed {
                    self.call(update, job, Some(id), Some(body)).await?;
                }
                id.clone()
            }
            None => {
                let resp = self.call(create, job, None, Some(body)).await?;
                match &self.opts.id_field {
                    None => job.resource_id.clone(),
                    Some(f) => match dotted(&resp, f) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => {
                            return Err(Outcome::Permanent {
                                error: format!("create response has no {f:?} field to take the app's id from"),
                            });
                        }
                    },
                }
            }
        };
        if job.kind == ResourceKind::Group {
            let batch = self.opts.max_members_per_request.max(1);
            let ids = |list: &[String]| -> Vec<String> {
                list.iter().filter_map(|m| job.member_app_ids.get(m).cloned()).collect()
            };
            for chunk in ids(&job.members_added).chunks(batch) {
                self.call(Event::MembersAdd, job, Some(&app_id), Some(json!({ "members": chunk }))).await?;
            }
            for chunk in ids(&job.members_removed).chunks(batch) {
                self.call(Event::MembersRemove, job, Some(&app_id), Some(json!({ "members": chunk }))).await?;
            }
        }
        Ok(Outcome::Done { app_id: Some(app_id) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"key", b"1.{}", hashlib.sha256).hexdigest())'
        assert_eq!(sign("key", 1, "{}"), "sha256=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
        assert_ne!(sign("key", 1, "{}"), sign("key", 2, "{}"), "the timestamp is signed");
        assert_ne!(sign("key", 1, "{}"), sign("other", 1, "{}"));
    }
}
