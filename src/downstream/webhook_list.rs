//! Reading a REST app's accounts back, so reconciliation covers webhook targets too: a
//! configured list request per resource type, paged the way the app pages (offset, page
//! number, cursor, or RFC 8288 `Link: <...>; rel="next"`), records found at a configured
//! place in the body, and each record's id, name, `externalId` and group members read from
//! configured fields.
//!
//! Records are compared in the app's vocabulary: our state goes through the same field
//! [`Mapping`](super::mapping::Mapping) the provisioner uses for its bodies, so the drift
//! report names the app's fields (`login`, `disabled`) with the values we would send.

use std::collections::BTreeSet;

use reqwest::{Method, Url};
use serde_json::{Map, Value};

use super::webhook_target::{WebhookTarget, dotted};
use super::{Outcome, classify, parse_retry_after, same_origin};
use crate::model::ResourceKind;

/// How the app pages a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// One request returns everything.
    None,
    /// `?offset=N&limit=S`, `offset` counting records from 0; an empty page is the end.
    Offset,
    /// `?page=N&per_page=S`, pages counting from 1; an empty page is the end.
    Page,
    /// `?cursor=T&limit=S`, the next `T` read from the body; none (or empty) ends the list.
    Cursor,
    /// The next page's URL in the `Link` response header (RFC 8288, `rel="next"`), as
    /// GitHub, Okta and many others do.
    Link,
}

impl Paging {
    pub const ALL: [(&'static str, Paging); 5] = [
        ("none", Paging::None),
        ("offset", Paging::Offset),
        ("page", Paging::Page),
        ("cursor", Paging::Cursor),
        ("link", Paging::Link),
    ];
}

/// The listing side of a webhook target: the settings as configured
/// (`[target.webhook.list]`: paths, paging parameters, record fields) and what is resolved
/// from them.
#[derive(Debug, Clone)]
pub struct ListOptions {
    pub settings: super::webhook_settings::WebhookListConfig,
    pub paging: Paging,
    /// Record fields (dotted), left-empty settings filled in: the app's id, the user's
    /// userName, the group's displayName, the externalId (empty: not read).
    pub id: String,
    pub user_name: String,
    pub group_name: String,
    pub external_id: String,
}

impl ListOptions {
    /// GET path of the groups list; `None`: groups are not reconciled.
    pub fn groups(&self) -> Option<&str> {
        Some(self.settings.groups.as_str()).filter(|s| !s.is_empty())
    }
    /// GET path of one group (`{app_id}` filled in), read when a listed group carries no
    /// members; `None`: membership is compared only when lists carry members.
    pub fn group(&self) -> Option<&str> {
        Some(self.settings.group.as_str()).filter(|s| !s.is_empty())
    }
}

/// The vocabulary records compare in: the SCIM names when no fields are mapped, otherwise
/// the output fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    pub scim: bool,
    pub active: Option<String>,
    pub case_insensitive: Vec<String>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The URL of `rel="next"` in a `Link` header value (RFC 8288 §3): `<uri>; rel="next"`,
/// links separated by commas, `rel` possibly unquoted or holding several relation types.
pub fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let uri = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else { return false };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_end_matches(',')
                    .trim_end()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(uri.trim().to_string());
        }
        rest = &after[params_end..];
    }
    None
}

impl WebhookTarget {
    fn list_opts(&self) -> Result<&ListOptions, Outcome> {
        self.opts
            .list
            .as_ref()
            .ok_or_else(|| Outcome::Permanent { error: "target.webhook.list.users is not configured".into() })
    }

    /// Whether reconciliation lists `kind` (groups only when a groups list is configured).
    pub fn lists(&self, kind: ResourceKind) -> bool {
        match (&self.opts.list, kind) {
            (None, _) => false,
            (Some(_), ResourceKind::User) => true,
            (Some(l), ResourceKind::Group) => l.groups().is_some(),
        }
    }

    pub fn can_get(&self, kind: ResourceKind) -> bool {
        kind == ResourceKind::Group && self.opts.list.as_ref().is_some_and(|l| l.group().is_some())
    }

    fn url(&self, path: &str) -> Result<Url, Outcome> {
        let raw = format!("{}/{}", self.opts.base_url.trim_end_matches('/'), path.trim_start_matches('/'));
        Url::parse(&raw).map_err(|e| Outcome::Permanent { error: format!("{raw:?} is not a URL: {e}") })
    }

    /// GET `url`: the JSON body and the `Link` header's next URL.
    async fn read(&self, url: Url) -> Result<(u16, Value, Option<String>), Outcome> {
        self.opts.throttle.wait().await;
        let what = format!("GET {url}");
        let resp = self
            .signed(Method::GET, url.as_str(), "list", "")
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| Outcome::Retry { after: None, error: format!("{what}: {}", super::error_chain(&e)) })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let link = resp.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).find_map(link_next);
        let text = resp.text().await.unwrap_or_default();
        if status == 404 {
            return Ok((status, Value::Null, None));
        }
        if !(200..300).contains(&status) {
            return Err(classify(status, retry_after, &what, &text));
        }
        let body = serde_json::from_str(&text)
            .map_err(|e| Outcome::Permanent { error: format!("{what}: the body is not JSON: {e}") })?;
        Ok((status, body, link))
    }

    /// One page of `kind` and the token of the next (see [`Paging`]).
    pub async fn list_page(
        &self,
        kind: ResourceKind,
        at: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), Outcome> {
        let l = self.list_opts()?;
        let path = match kind {
            ResourceKind::User => l.settings.users.as_str(),
            ResourceKind::Group => l
                .groups()
                .ok_or_else(|| Outcome::Permanent { error: "target.webhook.list.groups is not configured".into() })?,
        };
        let first = self.url(path)?;
        let size = l.settings.page_size.max(1);
        let number = |default: u64| -> Result<u64, Outcome> {
            at.map_or(Ok(default), |s| {
                s.parse().map_err(|_| Outcome::Permanent { error: format!("bad page token {s:?}") })
            })
        };
        let url = match (l.paging, at) {
            (Paging::Link, Some(next)) => {
                // Relative links resolve against the list URL; a link to another origin is
                // refused, so the app's credentials never travel elsewhere.
                let u = first
                    .join(next)
                    .map_err(|e| Outcome::Permanent { error: format!("next link {next:?} is not a URL: {e}") })?;
                if !same_origin(&u, &first) {
                    return Err(Outcome::Permanent {
                        error: format!("next link {u} leaves the app's origin; not followed"),
                    });
                }
                u
            }
            (paging, _) => {
                let mut u = first.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if paging != Paging::None && !l.settings.size_param.is_empty() {
                        q.append_pair(&l.settings.size_param, &size.to_string());
                    }
                    match paging {
                        Paging::Offset => {
                            q.append_pair(&l.settings.offset_param, &number(0)?.to_string());
                        }
                        Paging::Page => {
                            q.append_pair(&l.settings.page_param, &number(1)?.to_string());
                        }
                        Paging::Cursor => {
                            if let Some(c) = at {
                                q.append_pair(&l.settings.cursor_param, c);
                            }
                        }
                        Paging::None | Paging::Link => {}
                    }
                }
                u
            }
        };
        let (status, body, link) = self.read(url.clone()).await?;
        if status == 404 {
            return Err(Outcome::Permanent { error: format!("GET {url}: HTTP 404: the list path is wrong") });
        }
        let records = match dotted(&body, &l.settings.items) {
            Some(Value::Array(a)) => a.clone(),
            _ => {
                let place = if l.settings.items.is_empty() {
                    "the body".to_string()
                } else {
                    format!("{:?}", l.settings.items)
                };
                return Err(Outcome::Permanent {
                    error: format!("GET {url}: {place} is not an array of records (target.webhook.list.items)"),
                });
            }
        };
        // A record without an id could be neither matched nor repaired: the setting is wrong.
        if let Some(bad) = records.iter().position(|r| dotted(r, &l.id).and_then(scalar).is_none()) {
            return Err(Outcome::Permanent {
                error: format!(
                    "GET {url}: record {} has no id at {:?} (target.webhook.list.id): {}",
                    bad + 1,
                    l.id,
                    super::truncate(&records[bad].to_string(), 200)
                ),
            });
        }
        let n = records.len();
        let next = match l.paging {
            _ if n == 0 => None,
            Paging::None => None,
            // Only an empty page ends these: apps cap page sizes below what was asked without
            // saying so, and a short page taken for the last would report the rest missing.
            // An app that ignores the parameters repeats itself, which the sync refuses.
            Paging::Offset => Some((number(0).unwrap_or(0) + n as u64).to_string()),
            Paging::Page => Some((number(1).unwrap_or(1) + 1).to_string()),
            Paging::Cursor => {
                let c = dotted(&body, &l.settings.next_cursor).and_then(scalar);
                if c.is_some() && c.as_deref() == at {
                    return Err(Outcome::Permanent {
                        error: format!("GET {url}: the app returned the cursor it was given; the list would not end"),
                    });
                }
                c
            }
            Paging::Link => {
                if link.is_some() && link.as_deref() == at {
                    return Err(Outcome::Permanent {
                        error: format!("GET {url}: the next link points at this page; the list would not end"),
                    });
                }
                link
            }
        };
        Ok((records, next))
    }

    /// One group by the app's id, from `list.group`; `None`: 404.
    pub async fn get_one(&self, kind: ResourceKind, app_id: &str) -> Result<Option<Value>, Outcome> {
        let l = self.list_opts()?;
        let Some(path) = l.group().filter(|_| kind == ResourceKind::Group) else {
            return Err(Outcome::Permanent { error: format!("no single read configured for {}", kind.segment()) });
        };
        let (status, body, _) = self.read(self.url(&path.replace("{app_id}", &super::segment(app_id)))?).await?;
        if status == 404 {
            return Ok(None);
        }
        // `{"data": {...}}` as well as the bare record.
        Ok(Some(match dotted(&body, &l.settings.items) {
            Some(inner @ Value::Object(_)) if !l.settings.items.is_empty() => inner.clone(),
            _ => body,
        }))
    }

    /// A record's app id, name and externalId.
    pub fn record_key(&self, kind: ResourceKind, record: &Value) -> (String, String, Option<String>) {
        let Some(l) = &self.opts.list else { return (String::new(), String::new(), None) };
        let read = |f: &str| if f.is_empty() { None } else { dotted(record, f).and_then(scalar) };
        let name_field = if kind == ResourceKind::User { &l.user_name } else { &l.group_name };
        (read(&l.id).unwrap_or_default(), read(name_field).unwrap_or_default(), read(&l.external_id))
    }

    /// A group record's members as app ids: scalars, or objects with `value` or `id`.
    pub fn record_members(&self, record: &Value) -> Option<BTreeSet<String>> {
        let l = self.opts.list.as_ref()?;
        let members = dotted(record, &l.settings.members)?.as_array()?;
        Some(
            members
                .iter()
                .filter_map(|m| match m {
                    Value::Object(o) => o.get("value").or_else(|| o.get("id")).and_then(scalar),
                    other => scalar(other),
                })
                .collect(),
        )
    }

    /// Our attributes as the app should hold them: the body the provisioner sends, keyed by
    /// output field (`profile.first_name` as one key, so each field compares and reports on
    /// its own, a nested active field included); as sent in pass-through mode.
    pub fn view(&self, kind: ResourceKind, attrs: &Map<String, Value>) -> Map<String, Value> {
        let mapping = self.mapping(kind);
        let body = if attrs.contains_key("password") {
            let mut a = attrs.clone();
            a.remove("password");
            mapping.apply(&a)
        } else {
            mapping.apply(attrs)
        };
        if mapping.is_pass_through() {
            return body;
        }
        let body = Value::Object(body);
        mapping.output_fields().filter_map(|f| dotted(&body, f).map(|v| (f.to_string(), v.clone()))).collect()
    }

    /// An app record keyed like [`view`](Self::view): its mapped output fields; `None` in
    /// pass-through mode (the record is compared as listed).
    pub fn record_view(&self, kind: ResourceKind, record: &Value) -> Option<Map<String, Value>> {
        let mapping = self.mapping(kind);
        if mapping.is_pass_through() {
            return None;
        }
        Some(mapping.output_fields().filter_map(|f| dotted(record, f).map(|v| (f.to_string(), v.clone()))).collect())
    }

    fn mapping(&self, kind: ResourceKind) -> &super::mapping::Mapping {
        if kind == ResourceKind::User { &self.opts.user_mapping } else { &self.opts.group_mapping }
    }

    /// Whether a record is switched off: its active field holds what the mapping sends for
    /// `active: false` (`disabled: true` under a `not` transform).
    pub fn record_inactive(&self, kind: ResourceKind, record: &Value) -> bool {
        let Some(field) = self.vocabulary(kind).active else { return false };
        let mut off = Map::new();
        off.insert("active".into(), Value::Bool(false));
        let sent = self.view(kind, &off);
        match (sent.get(&field), dotted(record, &field)) {
            (Some(want), Some(have)) => want == have,
            _ => false,
        }
    }

    pub fn vocabulary(&self, kind: ResourceKind) -> Vocabulary {
        let mapping = if kind == ResourceKind::User { &self.opts.user_mapping } else { &self.opts.group_mapping };
        if mapping.is_pass_through() {
            return Vocabulary {
                scim: true,
                active: Some("active".into()),
                case_insensitive: vec!["userName".into(), "emails".into(), "displayName".into()],
            };
        }
        let mut ci: Vec<String> = Vec::new();
        for attr in ["userName", "emails", "displayName"] {
            ci.extend(mapping.fields_from(attr, false).into_iter().map(str::to_string));
        }
        Vocabulary {
            scim: false,
            active: mapping.fields_from("active", false).first().map(|s| s.to_string()),
            case_insensitive: ci,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_name_the_next_page() {
        assert_eq!(
            link_next(r#"<https://a.example/u?page=2>; rel="next", <https://a.example/u?page=9>; rel="last""#)
                .as_deref(),
            Some("https://a.example/u?page=2")
        );
        // Order, unquoted rel, several relation types, other parameters.
        assert_eq!(
            link_next(r#"</u?after=x>; rel=last, </u?after=y>; title="n"; rel="prev next""#).as_deref(),
            Some("/u?after=y")
        );
        assert_eq!(link_next("<https://a.example/u?page=1>; rel=\"self\""), None);
        assert_eq!(link_next(""), None);
        assert_eq!(link_next("<broken; rel=next"), None);
        // A comma inside the URI does not split the link.
        assert_eq!(link_next("<https://a.example/u?f=a,b>; rel=next").as_deref(), Some("https://a.example/u?f=a,b"));
    }

    proptest::proptest! {
        /// Any header value: no panic. Links built from parts: the one with `rel` holding
        /// `next` is found, wherever it stands and however `rel` is written.
        #[test]
        fn link_parsing(junk in ".{0,200}",
                        before in proptest::collection::vec("[a-z0-9/?=&._-]{1,20}", 0..4),
                        after in proptest::collection::vec("[a-z0-9/?=&._-]{1,20}", 0..4),
                        next in "[a-z0-9/?=&.,_-]{1,30}",
                        quoted in proptest::bool::ANY,
                        extra in proptest::bool::ANY) {
            let _ = link_next(&junk);
            let link = |uri: &str, rel: &str| {
                let rel = if quoted { format!("\"{rel}\"") } else { rel.to_string() };
                if extra { format!("<{uri}>; title=\"t\"; rel={rel}") } else { format!("<{uri}>; rel={rel}") }
            };
            let mut parts: Vec<String> = before.iter().map(|u| link(u, "prev")).collect();
            parts.push(link(&next, if quoted { "next last" } else { "next" }));
            parts.extend(after.iter().map(|u| link(u, "last")));
            let header = parts.join(", ");
            proptest::prop_assert_eq!(link_next(&header), Some(next.clone()), "{}", header);
        }
    }

    #[test]
    fn origins() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("https://a.example/x"), &u("https://a.example:443/y?z")));
        assert!(!same_origin(&u("https://a.example/x"), &u("http://a.example/x")));
        assert!(!same_origin(&u("https://a.example/x"), &u("https://evil.example/x")));
        assert!(!same_origin(&u("http://127.0.0.1:80/x"), &u("http://127.0.0.1:81/x")));
    }
}
