//! The webhook target's settings (`[target.webhook]`, `[target.webhook.list]`), declared
//! once: the configuration file deserialises into these types (`config` embeds them), and
//! [`WebhookConfig::options`] compiles them into the target's options. Config validation
//! calls the same function, so validating never builds the app and a file that validates
//! builds a target.
//!
//! Owns: the settings' names, defaults and compilation. Must not touch: the configuration's
//! loading and layering (`config`), the store, HTTP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Throttle;
use super::mapping::{FieldSource, Mapping};
use super::webhook_list::{ListOptions, Paging};
use super::webhook_target::{Endpoint, Event, WebhookOptions};
use crate::model::{ResourceKind, Secret};

/// A REST/webhook app: one request per event kind, bodies from an attribute mapping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub base_url: String,
    /// HMAC-SHA256 key for `X-Scimsync-Signature`; required.
    pub secret: Secret,
    /// Extra headers sent with every request (e.g. an API key). Values are secrets.
    pub headers: BTreeMap<String, Secret>,
    /// Field of the create response that holds the app's id (`id`, `data.id`); empty: the
    /// app is keyed by our ids.
    pub id_field: String,
    pub max_members_per_request: usize,
    pub request_timeout_seconds: u64,
    /// PEM bundle of extra CA certificates to trust; empty: system roots only.
    pub ca_file: PathBuf,
    /// Event kind -> request: user_create, user_update, user_delete, group_create,
    /// group_update, group_delete, members_add, members_remove.
    pub events: BTreeMap<String, WebhookEndpointConfig>,
    /// Output field -> source for users / groups. Empty: send the SCIM representation.
    pub user_fields: BTreeMap<String, FieldSource>,
    pub group_fields: BTreeMap<String, FieldSource>,
    /// Attributes left out of the SCIM representation when no fields are mapped.
    pub drop: Vec<String>,
    /// How to list the app's accounts, for reconciliation.
    pub list: WebhookListConfig,
}

/// Reading a REST app's accounts back (`[target.webhook.list]`); `users` empty: the target
/// is not reconciled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookListConfig {
    /// GET path of the users list under base_url.
    pub users: String,
    /// GET path of the groups list; empty: groups are not reconciled.
    pub groups: String,
    /// GET path of one group (`{app_id}`), read when the list leaves members out.
    pub group: String,
    /// Dotted path of the records array in a list response; empty: the body is the array.
    pub items: String,
    /// none | offset | page | cursor | link.
    pub paging: String,
    pub page_size: usize,
    pub size_param: String,
    pub offset_param: String,
    pub page_param: String,
    pub cursor_param: String,
    /// Dotted path of the next cursor in a list response (paging = "cursor").
    pub next_cursor: String,
    /// Record fields (dotted). `id` empty: target.webhook.id_field's last part, else "id".
    pub id: String,
    /// Empty: the output field mapped from userName / displayName / externalId.
    pub user_name: String,
    pub group_name: String,
    pub external_id: String,
    pub members: String,
}

impl Default for WebhookListConfig {
    fn default() -> Self {
        WebhookListConfig {
            users: String::new(),
            groups: String::new(),
            group: String::new(),
            items: String::new(),
            paging: "offset".into(),
            page_size: 100,
            size_param: "limit".into(),
            offset_param: "offset".into(),
            page_param: "page".into(),
            cursor_param: "cursor".into(),
            next_cursor: "next_cursor".into(),
            id: String::new(),
            user_name: String::new(),
            group_name: String::new(),
            external_id: String::new(),
            members: "members".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    pub method: String,
    /// Under base_url; `{app_id}`, `{id}`, `{external_id}` are filled in.
    pub path: String,
    /// Success statuses; empty: any 2xx.
    #[serde(default)]
    pub expect: Vec<u16>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            base_url: String::new(),
            secret: Secret::default(),
            headers: BTreeMap::new(),
            id_field: "id".into(),
            max_members_per_request: 100,
            request_timeout_seconds: 30,
            ca_file: PathBuf::new(),
            events: BTreeMap::new(),
            user_fields: BTreeMap::new(),
            group_fields: BTreeMap::new(),
            drop: Vec::new(),
            list: WebhookListConfig::default(),
        }
    }
}

impl WebhookConfig {
    /// The settings compiled: methods parsed, events known, mappings checked against the
    /// schema, the list's names resolved. Config validation calls it too, so a file that
    /// validates builds a target. Errors name the key under `target.webhook`.
    pub fn options(&self, throttle: Throttle) -> Result<WebhookOptions, String> {
        let w = self;
        let mut events = BTreeMap::new();
        for (name, ep) in &w.events {
            let Some((_, ev)) = Event::ALL.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = Event::ALL.iter().map(|(n, _)| *n).collect();
                return Err(format!("events.{name}: unknown event; use one of {}", known.join(", ")));
            };
            let method = reqwest::Method::from_bytes(ep.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("events.{name}.method: {:?} is not an HTTP method", ep.method))?;
            events.insert(*ev, Endpoint { method, path: ep.path.clone(), expect: ep.expect.clone() });
        }
        let fields =
            |m: &BTreeMap<String, FieldSource>| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
        let user_mapping = Mapping::compile(ResourceKind::User, &fields(&w.user_fields), &w.drop)
            .map_err(|e| format!("user_fields: {e}"))?;
        let group_mapping = Mapping::compile(ResourceKind::Group, &fields(&w.group_fields), &w.drop)
            .map_err(|e| format!("group_fields: {e}"))?;
        let list = w.list_options(&user_mapping, &group_mapping).map_err(|e| format!("list.{e}"))?;
        Ok(WebhookOptions {
            list,
            base_url: w.base_url.clone(),
            secret: w.secret.expose().to_string(),
            headers: w.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
            id_field: (!w.id_field.is_empty()).then(|| w.id_field.clone()),
            events,
            user_mapping,
            group_mapping,
            max_members_per_request: w.max_members_per_request,
            request_timeout: Duration::from_secs(w.request_timeout_seconds),
            throttle,
            ca_file: (!w.ca_file.as_os_str().is_empty()).then(|| w.ca_file.clone()),
        })
    }

    /// `[target.webhook.list]` with its names resolved: record fields left empty are the output
    /// fields the mapping fills from userName, displayName and externalId (in pass-through
    /// mode, those names themselves).
    fn list_options(&self, users: &Mapping, groups: &Mapping) -> Result<Option<ListOptions>, String> {
        let w = self;
        let l = &w.list;
        if l.users.is_empty() {
            if !l.groups.is_empty() || !l.group.is_empty() {
                return Err("users: is needed too: reconciliation starts from the users list".into());
            }
            return Ok(None);
        }
        let Some((_, paging)) = Paging::ALL.iter().find(|(n, _)| *n == l.paging) else {
            let known: Vec<&str> = Paging::ALL.iter().map(|(n, _)| *n).collect();
            return Err(format!("paging: {:?} is not one of {}", l.paging, known.join(", ")));
        };
        if l.page_size == 0 || l.page_size > 10_000 {
            return Err("page_size: must be between 1 and 10000".into());
        }
        if *paging == Paging::Cursor && l.next_cursor.is_empty() {
            return Err("next_cursor: paging = \"cursor\" needs the field of the next cursor".into());
        }
        if !l.group.is_empty() && !l.group.contains("{app_id}") {
            return Err(format!("group: {:?} must contain {{app_id}}", l.group));
        }
        let field = |given: &str, mapping: &Mapping, attr: &str, key: &str| -> Result<String, String> {
            if !given.is_empty() {
                return Ok(given.to_string());
            }
            if mapping.is_pass_through() {
                return Ok(attr.to_string());
            }
            match mapping.fields_from(attr, true).first() {
                Some(f) => Ok(f.to_string()),
                None if attr == "externalId" => Ok(String::new()),
                None => Err(format!(
                    "{key}: no output field is mapped from {attr} as it is; name the record field that holds it"
                )),
            }
        };
        let id = if !l.id.is_empty() {
            l.id.clone()
        } else {
            // The create response may wrap the record (`data.id`); a listed record is the
            // record itself.
            w.id_field.rsplit('.').next().filter(|s| !s.is_empty()).unwrap_or("id").to_string()
        };
        Ok(Some(ListOptions {
            settings: l.clone(),
            paging: *paging,
            id,
            user_name: field(&l.user_name, users, "userName", "user_name")?,
            group_name: if l.groups.is_empty() {
                String::new()
            } else {
                field(&l.group_name, groups, "displayName", "group_name")?
            },
            external_id: field(&l.external_id, users, "externalId", "external_id")?,
        }))
    }
}
