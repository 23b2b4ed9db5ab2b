//! The app's own SCIM 2.0 API as the target (RFC 7644 as a client).
//!
//! Creating is "find or create": an account that already exists in the app (same
//! `userName`, or `displayName` for groups) is adopted, never duplicated, and a 409 on create
//! adopts too. Updates go by PUT or PATCH (configurable); deprovisioning deactivates or
//! deletes (configurable). Group memberships travel as PATCH deltas in batches no larger than
//! the app accepts, never as a full member list.

use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::{Value, json};

use super::{Job, Outcome, classify, parse_retry_after, representation};
use crate::model::ResourceKind;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMethod {
    Put,
    Patch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deprovision {
    /// `active: false` on users; groups are deleted (they have no `active`).
    Deactivate,
    Delete,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4): a token fetched from `token_url`
    /// with HTTP Basic client authentication (§2.3.1), cached until shortly before it expires,
    /// and fetched again when the app answers 401.
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: String,
    },
}

#[derive(Debug, Clone)]
pub struct ScimTargetOptions {
    /// e.g. `https://app.example.com/scim/v2` (no trailing slash needed).
    pub base_url: String,
    pub auth: Auth,
    pub update_method: UpdateMethod,
    pub deprovision: Deprovision,
    pub max_members_per_patch: usize,
    /// Page size of list calls (some apps cap pages at 50).
    pub page_size: usize,
    pub request_timeout: Duration,
    pub throttle: super::Throttle,
    /// Extra trusted CA certificates (PEM), for apps with a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

pub struct ScimTarget {
    opts: ScimTargetOptions,
    http: Client,
    /// The current OAuth access token and when to stop using it.
    oauth: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
}

/// A response we keep: status, Retry-After, body.
struct Resp {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// The SCIM filter string literal for `s` (RFC 7644 §3.4.2.2: a JSON string).
fn lit(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

impl ScimTarget {
    pub fn new(opts: ScimTargetOptions) -> Result<Self, String> {
        let http = super::http_client(opts.request_timeout, opts.ca_file.as_deref())?;
        Ok(ScimTarget { opts, http, oauth: tokio::sync::Mutex::new(None) })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.opts.base_url.trim_end_matches('/'), path)
    }

    /// An access token for the client credentials grant, from the cache or the token endpoint.
    /// `rejected`: a token the app just refused; it is replaced unless another delivery has
    /// already replaced it (so concurrent 401s fetch one new token, not one each).
    async fn access_token(&self, rejected: Option<&str>) -> Result<String, Outcome> {
        let Auth::ClientCredentials { token_url, client_id, client_secret, scope } = &self.opts.auth else {
            return Ok(String::new());
        };
        let mut cached = self.oauth.lock().await;
        if let Some((tok, until)) = cached.as_ref()
            && std::time::Instant::now() < *until
            && rejected != Some(tok.as_str())
        {
            return Ok(tok.clone());
        }
        let mut form = String::from("grant_type=client_credentials");
        if !scope.is_empty() {
            form.push_str(&format!("&scope={}", urlencode(scope)));
        }
        self.opts.throttle.wait().await;
        let resp = self
            .http
            .post(token_url)
            .basic_auth(urlencode(client_id), Some(urlencode(client_secret)))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| Outcome::Retry {
                after: None,
                error: format!("OAuth token request: {}", super::error_chain(&e)),
            })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(classify(status, retry_after, "OAuth token request", &text));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(tok) = v["access_token"].as_str() else {
            return Err(Outcome::Permanent { error: "OAuth token response has no access_token".into() });
        };
        // Renew a minute early (or at half-life for short tokens) so a request never carries
        // a token that expires in flight.
        let life = v["expires_in"].as_u64().unwrap_or(3600);
        let margin = (life / 2).min(60);
        *cached = Some((tok.to_string(), std::time::Instant::now() + Duration::from_secs(life - margin)));
        Ok(tok.to_string())
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>, key: &str) -> Result<Resp, Outcome> {
        let (r, token) = self.send_once(method.clone(), path, body, key, None).await?;
        if r.status == 401 && matches!(self.opts.auth, Auth::ClientCredentials { .. }) {
            // The token may have been revoked or expired early: get a new one, retry once.
            return Ok(self.send_once(method, path, body, key, Some(&token)).await?.0);
        }
        Ok(r)
    }

    /// One request; returns the response and the OAuth token it carried (empty without OAuth).
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: &str,
        rejected: Option<&str>,
    ) -> Result<(Resp, String), Outcome> {
        let oauth = self.access_token(rejected).await?;
        self.opts.throttle.wait().await;
        let mut rb = self
            .http
            .request(method.clone(), self.url(path))
            .header("accept", "application/scim+json, application/json")
            .header("idempotency-key", key);
        rb = match &self.opts.auth {
            Auth::None => rb,
            Auth::Bearer(t) => rb.bearer_auth(t),
            Auth::Basic { user, password } => rb.basic_auth(user, Some(password)),
            Auth::ClientCredentials { .. } => rb.bearer_auth(&oauth),
        };
        if let Some(b) = body {
            rb = rb.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = rb.send().await.map_err(|e| Outcome::Retry {
            after: None,
            error: format!(
                "{method} {path}: {}",
                if e.is_timeout() { "timed out".to_string() } else { super::error_chain(&e) }
            ),
        })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let body = resp.text().await.unwrap_or_default();
        Ok((Resp { status, retry_after, body }, oauth))
    }

    fn fail(&self, r: &Resp, what: &str) -> Outcome {
        classify(r.status, r.retry_after, what, &r.body)
    }

    pub async fn deliver(&self, job: &Job) -> Outcome {
        match self.deliver_inner(job).await {
            Ok(o) | Err(o) => o,
        }
    }

    async fn deliver_inner(&self, job: &Job) -> Result<Outcome, Outcome> {
        let key = job.idempotency_key.as_str();
        let Some(current) = &job.current else {
            return self.deprovision(job).await;
        };
        let mut body = representation(current);
        let ep = job.kind.segment();
        // Find the app's account: known id, else look it up, else create it.
        let mut app_id = job.app_id.clone();
        let mut fresh = false;
        let looked_up = app_id.is_none();
        if app_id.is_none() {
            app_id = self.lookup(job.kind, &body, key).await?;
        }
        if app_id.is_none() {
            if job.kind == ResourceKind::Group {
                body.insert("members".into(), json!([]));
            }
            let r = self.send(Method::POST, ep, Some(&Value::Object(body.clone())), key).await?;
            match r.status {
                200 | 201 => {
                    app_id = r.json().get("id").and_then(Value::as_str).map(str::to_string);
                    if app_id.is_none() {
                        return Err(Outcome::Permanent { error: format!("POST /{ep}: the app returned no id") });
                    }
                    fresh = true;
                }
                // Exists already (a race, or a lookup the app does not support): adopt it.
                409 => {
                    app_id = self.lookup(job.kind, &body, key).await?;
                    if app_id.is_none() {
                        return Err(self.fail(&r, &format!("POST /{ep} (409, and the lookup found nothing)")));
                    }
                }
                _ => return Err(self.fail(&r, &format!("POST /{ep}"))),
            }
            body.remove("members");
        }
        let app_id = app_id.unwrap_or_default();
        // An adopted account gets our state even if nothing changed on our side since.
        if !fresh && (job.attrs_changed || looked_up) {
            self.update(job.kind, &app_id, &body, key).await?;
        }
        if job.kind == ResourceKind::Group {
            self.push_members(job, &app_id, key).await?;
        }
        Ok(Outcome::Done { app_id: Some(app_id) })
    }

    /// One page of every resource of a type (RFC 7644 §3.4.2.4: `startIndex` is 1-based),
    /// and where the next page starts: `None` at the app's `totalResults`, or at a short or
    /// empty page for apps that misreport it. The reconciler walks these so that memory is
    /// bounded by the page size, not by the app's size.
    pub async fn list_page(&self, kind: ResourceKind, start: u64) -> Result<(Vec<Value>, Option<u64>), Outcome> {
        let size = self.opts.page_size.max(1);
        let path = format!("{}?startIndex={start}&count={size}", kind.segment());
        let r = self.send(Method::GET, &path, None, "list").await?;
        if r.status != 200 {
            return Err(self.fail(&r, &format!("GET /{path}")));
        }
        let mut v = r.json();
        let page: Vec<Value> = match v.get_mut("Resources").map(Value::take) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        let total = v["totalResults"].as_u64();
        let n = page.len() as u64;
        let seen = start - 1 + n;
        let done = n == 0 || total.is_some_and(|t| seen >= t) || (total.is_none() && (n as usize) < size);
        Ok((page, if done { None } else { Some(start + n) }))
    }

    /// One resource by the app's id; `None` when the app says 404.
    pub async fn get_one(&self, kind: ResourceKind, app_id: &str) -> Result<Option<Value>, Outcome> {
        let path = format!("{}/{}", kind.segment(), super::segment(app_id));
        let r = self.send(Method::GET, &path, None, "get").await?;
        match r.status {
            200 => Ok(Some(r.json())),
            404 => Ok(None),
            _ => Err(self.fail(&r, &format!("GET /{path}"))),
        }
    }

    /// Find an existing account by its unique name (and `externalId` for users without a
    /// match on name), so a create never duplicates.
    async fn lookup(
        &self,
        kind: ResourceKind,
        body: &serde_json::Map<String, Value>,
        key: &str,
    ) -> Result<Option<String>, Outcome> {
        let attr = match kind {
            ResourceKind::User => "userName",
            ResourceKind::Group => "displayName",
        };
        let mut filters = Vec::new();
        if let Some(v) = body.get(attr).and_then(Value::as_str) {
            filters.push(format!("{attr} eq {}", lit(v)));
        }
        if let Some(v) = body.get("externalId").and_then(Value::as_str) {
            filters.push(format!("externalId eq {}", lit(v)));
        }
        for f in filters {
            let q = format!("{}?filter={}", kind.segment(), urlencode(&f));
            let r = self.send(Method::GET, &q, None, key).await?;
            if r.status != 200 {
                // Some apps reject filters on an attribute: not fatal, try the next or create.
                if r.status == 400 {
                    continue;
                }
                return Err(self.fail(&r, &format!("GET /{}?filter", kind.segment())));
            }
            let v = r.json();
            if let Some(id) = v["Resources"].as_array().and_then(|a| a.first()).and_then(|x| x["id"].as_str()) {
                return Ok(Some(id.to_string()));
            }
            // The unique name answered "no such account": that is authoritative, so skip the
            // externalId lookup (it cost every create a third request, per the delivery bench).
            if f.starts_with(attr) {
                return Ok(None);
            }
        }
        Ok(None)
    }

    async fn update(
        &self,
        kind: ResourceKind,
        app_id: &str,
        body: &serde_json::Map<String, Value>,
        key: &str,
    ) -> Result<(), Outcome> {
        let ep = kind.segment();
        let path = format!("{ep}/{}", super::segment(app_id));
        // Groups are never PUT: a PUT without members would empty the group in the app.
        let r = if self.opts.update_method == UpdateMethod::Put && kind == ResourceKind::User {
            let mut b = body.clone();
            b.insert("id".into(), Value::String(app_id.to_string()));
            self.send(Method::PUT, &path, Some(&Value::Object(b)), key).await?
        } else {
            let mut value = body.clone();
            value.remove("schemas");
            let patch = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": value}]});
            self.send(Method::PATCH, &path, Some(&patch), key).await?
        };
        match r.status {
            200 | 204 => Ok(()),
            404 => Err(Outcome::Gone { error: format!("update /{path}: the app no longer has this account (404)") }),
            _ => Err(self.fail(&r, &format!("update /{path}"))),
        }
    }

    /// Member adds and removes as PATCH requests of at most `max_members_per_patch` values.
    async fn push_members(&self, job: &Job, group_app_id: &str, key: &str) -> Result<(), Outcome> {
        let path = format!("Groups/{}", super::segment(group_app_id));
        let batch = self.opts.max_members_per_patch.max(1);
        let app = |id: &String| job.member_app_ids.get(id).cloned();
        let adds: Vec<String> = job.members_added.iter().filter_map(app).collect();
        let removes: Vec<String> = job.members_removed.iter().filter_map(app).collect();
        for chunk in adds.chunks(batch) {
            let value: Vec<Value> = chunk.iter().map(|id| json!({"value": id})).collect();
            let patch =
                json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": value}]});
            self.member_patch(&path, &patch, key).await?;
        }
        for chunk in removes.chunks(batch) {
            let ops: Vec<Value> = chunk
                .iter()
                .map(|id| json!({"op": "remove", "path": format!("members[value eq {}]", lit(id))}))
                .collect();
            let patch = json!({"schemas": [PATCH_OP], "Operations": ops});
            self.member_patch(&path, &patch, key).await?;
        }
        Ok(())
    }

    async fn member_patch(&self, path: &str, patch: &Value, key: &str) -> Result<(), Outcome> {
        let r = self.send(Method::PATCH, path, Some(patch), key).await?;
        match r.status {
            200 | 204 => Ok(()),
            404 => {
                Err(Outcome::Gone { error: format!("PATCH /{path} members: the app no longer has this group (404)") })
            }
            _ => Err(self.fail(&r, &format!("PATCH /{path} members"))),
        }
    }

    async fn deprovision(&self, job: &Job) -> Result<Outcome, Outcome> {
        let key = job.idempotency_key.as_str();
        let app_id = match &job.app_id {
            Some(id) => Some(id.clone()),
            None => self.lookup(job.kind, &job.tombstone, key).await?,
        };
        let Some(app_id) = app_id else {
            // Never reached the app: nothing to remove.
            return Ok(Outcome::Done { app_id: None });
        };
        let path = format!("{}/{}", job.kind.segment(), super::segment(&app_id));
        if (self.opts.deprovision == Deprovision::Deactivate || job.deactivate_only) && job.kind == ResourceKind::User {
            let patch =
                json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]});
            let r = self.send(Method::PATCH, &path, Some(&patch), key).await?;
            return match r.status {
                200 | 204 | 404 => Ok(Outcome::Done { app_id: None }),
                _ => Err(self.fail(&r, &format!("deactivate /{path}"))),
            };
        }
        let r = self.send(Method::DELETE, &path, None, key).await?;
        match r.status {
            200 | 204 | 404 => Ok(Outcome::Done { app_id: None }),
            _ => Err(self.fail(&r, &format!("DELETE /{path}"))),
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
