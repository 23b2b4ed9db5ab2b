//! Attribute mapping: how one of our SCIM resources becomes the body a REST/webhook app
//! expects. Configured per resource type as `output field = source`, where a source is a
//! SCIM attribute path (`userName`, `name.givenName`, `emails[primary eq true].value`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`), a constant, or a
//! path with a simple transform. Without a mapping the SCIM representation is sent, minus
//! the attributes listed to drop.
//!
//! Paths are parsed and checked against the schema once, at start (`Mapping::compile`), so a
//! typo stops the daemon with the key named, not a delivery at 3 a.m.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::ResourceKind;
use crate::model::query::PatchPath;
use crate::scim::{filter, schema};

/// One output field's source, as written in TOML: a bare string is a path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FieldSource {
    Path(String),
    Spec(FieldSpec),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FieldSpec {
    /// A SCIM attribute path.
    pub from: Option<String>,
    /// A constant value (any TOML value) instead of a path.
    pub constant: Option<Value>,
    /// `lowercase`, `uppercase`, `trim`, `string` (stringify), `not` (negate a boolean).
    pub transform: Option<Transform>,
    /// Used when the path has no value.
    pub default: Option<Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    Lowercase,
    Uppercase,
    Trim,
    String,
    Not,
}

/// A field, compiled.
#[derive(Debug, Clone)]
// A handful per mapping, built once at start: boxing the path would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Compiled {
    Path { path: PatchPath, transform: Option<Transform>, default: Option<Value> },
    Constant(Value),
}

/// A compiled mapping for one resource type.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// (output field, dotted for nesting; source). Empty: send the SCIM representation.
    fields: Vec<(String, Compiled)>,
    /// Top-level attributes removed from the SCIM representation (pass-through mode).
    drop: Vec<String>,
}

impl Mapping {
    /// Compile `fields` for `kind`; errors name the output field and say what is wrong.
    pub fn compile(kind: ResourceKind, fields: &[(String, FieldSource)], drop: &[String]) -> Result<Mapping, String> {
        let mut out = Vec::with_capacity(fields.len());
        for (name, src) in fields {
            if name.trim().is_empty() || name.split('.').any(str::is_empty) {
                return Err(format!("output field {name:?} is not a name (use letters, digits, _ and . for nesting)"));
            }
            let spec = match src {
                FieldSource::Path(p) => FieldSpec { from: Some(p.clone()), ..Default::default() },
                FieldSource::Spec(s) => s.clone(),
            };
            let compiled = match (&spec.from, &spec.constant) {
                (Some(_), Some(_)) => {
                    return Err(format!("field {name:?}: give either `from` or `constant`, not both"));
                }
                (None, None) => return Err(format!("field {name:?}: needs `from` (an attribute path) or `constant`")),
                (None, Some(c)) => Compiled::Constant(c.clone()),
                (Some(p), None) => {
                    let mut path = filter::parse_path(p).map_err(|e| format!("field {name:?}: path {p:?}: {e}"))?;
                    schema::resolve_path(kind, &mut path).map_err(|e| format!("field {name:?}: {}", e.detail))?;
                    Compiled::Path { path, transform: spec.transform, default: spec.default.clone() }
                }
            };
            out.push((name.clone(), compiled));
        }
        Ok(Mapping { fields: out, drop: drop.to_vec() })
    }

    /// The output fields, dotted for nesting, in configuration order.
    pub fn output_fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(name, _)| name.as_str())
    }

    /// No fields mapped: the SCIM representation is sent (minus `drop`).
    pub fn is_pass_through(&self) -> bool {
        self.fields.is_empty()
    }

    /// Output fields whose source is the attribute `attr` (any sub-attribute or filter of
    /// it), in configuration order; `plain`: only the attribute itself, untransformed or
    /// case-folded (the fields that carry the value as it is, to match accounts by).
    pub fn fields_from(&self, attr: &str, plain: bool) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(_, c)| match c {
                Compiled::Path { path, transform, .. } => {
                    path.attr.urn.is_none()
                        && path.attr.name.eq_ignore_ascii_case(attr)
                        && (!plain
                            || (path.attr.sub.is_none()
                                && path.filter.is_none()
                                && matches!(transform, None | Some(Transform::Lowercase | Transform::Trim))))
                }
                Compiled::Constant(_) => false,
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The body for `representation` (our SCIM JSON for the resource).
    pub fn apply(&self, representation: &Map<String, Value>) -> Map<String, Value> {
        if self.fields.is_empty() {
            let mut m = representation.clone();
            for d in &self.drop {
                if let Some(k) = m.keys().find(|k| k.eq_ignore_ascii_case(d)).cloned() {
                    m.remove(&k);
                }
            }
            return m;
        }
        let whole = Value::Object(representation.clone());
        let mut out = Map::new();
        for (name, c) in &self.fields {
            let v = match c {
                Compiled::Constant(v) => Some(v.clone()),
                Compiled::Path { path, transform, default } => {
                    resolve(&whole, path).map(|v| apply_transform(v, *transform)).or_else(|| default.clone())
                }
            };
            if let Some(v) = v {
                insert_dotted(&mut out, name, v);
            }
        }
        out
    }
}

fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// Evaluate a PATCH-style path for reading: the attribute (inside its extension object for
/// URN paths), the first element matching a value filter, then the sub-attribute.
fn resolve(whole: &Value, path: &PatchPath) -> Option<Value> {
    let base = match &path.attr.urn {
        Some(urn) => get_ci(whole, urn)?,
        None => whole,
    };
    let mut v = get_ci(base, &path.attr.name)?.clone();
    if let Some(f) = &path.filter {
        v = v.as_array()?.iter().find(|e| filter::matches(f, e))?.clone();
        if let Some(sub) = &path.filter_sub {
            v = get_ci(&v, sub)?.clone();
        }
    } else if let Some(sub) = &path.attr.sub {
        v = match v {
            // `emails.value` reads the primary element's value, else the first one's.
            Value::Array(a) => {
                let el = a.iter().find(|e| e.get("primary") == Some(&Value::Bool(true))).or_else(|| a.first())?;
                get_ci(el, sub)?.clone()
            }
            other => get_ci(&other, sub)?.clone(),
        };
    }
    (!v.is_null()).then_some(v)
}

fn apply_transform(v: Value, t: Option<Transform>) -> Value {
    match (t, v) {
        (None, v) => v,
        (Some(Transform::Lowercase), Value::String(s)) => Value::String(s.to_lowercase()),
        (Some(Transform::Uppercase), Value::String(s)) => Value::String(s.to_uppercase()),
        (Some(Transform::Trim), Value::String(s)) => Value::String(s.trim().to_string()),
        (Some(Transform::String), Value::String(s)) => Value::String(s),
        (Some(Transform::String), v) => Value::String(v.to_string()),
        (Some(Transform::Not), Value::Bool(b)) => Value::Bool(!b),
        (Some(_), v) => v,
    }
}

fn insert_dotted(out: &mut Map<String, Value>, name: &str, v: Value) {
    match name.split_once('.') {
        None => {
            out.insert(name.to_string(), v);
        }
        Some((head, rest)) => {
            let entry = out.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(m) = entry {
                insert_dotted(m, rest, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "schemas": [schema::USER, schema::ENTERPRISE_USER],
            "userName": "Ada@Example.com",
            "name": {"givenName": " Ada ", "familyName": "Lovelace"},
            "emails": [{"value": "home@example.com", "type": "home"}, {"value": "ada@work.example", "type": "work", "primary": true}],
            "active": true,
            schema::ENTERPRISE_USER: {"department": "Engines"}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn fields(v: Value) -> Vec<(String, FieldSource)> {
        v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), serde_json::from_value(v.clone()).unwrap())).collect()
    }

    #[test]
    fn maps_paths_constants_and_transforms() {
        let m = Mapping::compile(
            ResourceKind::User,
            &fields(json!({
                "login": {"from": "userName", "transform": "lowercase"},
                "email": "emails[type eq \"work\"].value",
                "primary_email": "emails.value",
                "profile.first": {"from": "name.givenName", "transform": "trim"},
                "profile.last": "name.familyName",
                "department": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "disabled": {"from": "active", "transform": "not"},
                "plan": {"constant": "enterprise"},
                "title": {"from": "title", "default": "none"},
                "nickname": "nickName"
            })),
            &[],
        )
        .unwrap();
        assert_eq!(
            Value::Object(m.apply(&user())),
            json!({
                "login": "ada@example.com",
                "email": "ada@work.example",
                "primary_email": "ada@work.example",
                "profile": {"first": "Ada", "last": "Lovelace"},
                "department": "Engines",
                "disabled": false,
                "plan": "enterprise",
                "title": "none"
            })
        );
    }

    #[test]
    fn passthrough_with_drop() {
        let m = Mapping::compile(ResourceKind::User, &[], &["emails".into(), "NAME".into()]).unwrap();
        let out = m.apply(&user());
        assert!(out.get("emails").is_none() && out.get("name").is_none());
        assert_eq!(out["userName"], "Ada@Example.com");
    }

    #[test]
    fn bad_mappings_are_rejected_with_the_field_named() {
        for (f, needle) in [
            (json!({"x": "noSuchAttribute"}), "\"x\""),
            (json!({"x": "emails["}), "\"x\""),
            (json!({"x": {"from": "userName", "constant": 1}}), "not both"),
            (json!({"x": {}}), "needs"),
            (json!({"a..b": "userName"}), "not a name"),
        ] {
            let e = Mapping::compile(ResourceKind::User, &fields(f.clone()), &[]).unwrap_err();
            assert!(e.contains(needle), "{f}: {e}");
        }
    }
}
