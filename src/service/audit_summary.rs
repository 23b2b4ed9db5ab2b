//! What an audit record says changed: attribute names, PATCH operations and member counts,
//! never values (a password, or any other attribute value, stays out of the log).

use serde_json::{Map, Value, json};

use crate::model::MemberDelta;
use crate::scim::patch::{PatchOp, PatchOpKind};

/// Longest PATCH path kept (a filter in a path can be long); longer ones are cut.
const MAX_PATH_CHARS: usize = 200;

/// POST: the attributes the resource was created with, and its member count.
pub fn created(attrs: &Map<String, Value>, members: usize) -> Value {
    let mut s = json!({"attributes": attrs.keys().collect::<Vec<_>>()});
    if members > 0 {
        s["members"] = json!({"added": members});
    }
    s
}

/// PUT: the top-level attributes whose value differs (added, changed or removed).
pub fn replaced(before: &Map<String, Value>, after: &Map<String, Value>, members: &MemberDelta) -> Value {
    let mut s = json!({"changed": changed(before, Some(after))});
    activity(&mut s, before, Some(after));
    if let Some(m) = members_summary(members) {
        s["members"] = m;
    }
    s
}

/// PATCH: each operation as `op path` (or `op name` for each key of a path-less value), the
/// attributes that changed, and the member changes.
pub fn patched(
    ops: &[PatchOp],
    before: &Map<String, Value>,
    after: Option<&Map<String, Value>>,
    members: &MemberDelta,
) -> Value {
    let mut list = Vec::new();
    for op in ops {
        let verb = match op.op {
            PatchOpKind::Add => "add",
            PatchOpKind::Remove => "remove",
            PatchOpKind::Replace => "replace",
        };
        match (&op.path, &op.value) {
            (Some(p), _) => {
                let attr = p.attr.to_string();
                // A filter selects elements by value; keep it, except on anything secret.
                let text = if attr.to_ascii_lowercase().contains("password") { attr } else { p.to_string() };
                list.push(format!("{verb} {}", truncate(&text)));
            }
            (None, Some(Value::Object(o))) => list.extend(o.keys().map(|k| format!("{verb} {}", truncate(k)))),
            (None, _) => list.push(verb.to_string()),
        }
    }
    let mut s = json!({"operations": list, "changed": changed(before, after)});
    activity(&mut s, before, after);
    if let Some(m) = members_summary(members) {
        s["members"] = m;
    }
    s
}

/// `"deactivated": true` / `"reactivated": true` when `active` flipped: the one value an
/// operator reading the log needs in words, and not personal data.
fn activity(s: &mut Value, before: &Map<String, Value>, after: Option<&Map<String, Value>>) {
    let Some(after) = after else { return };
    let was_active = before.get("active") != Some(&Value::Bool(false));
    let is_active = after.get("active") != Some(&Value::Bool(false));
    if was_active && !is_active {
        s["deactivated"] = true.into();
    } else if !was_active && is_active {
        s["reactivated"] = true.into();
    }
}

fn changed(before: &Map<String, Value>, after: Option<&Map<String, Value>>) -> Vec<String> {
    let Some(after) = after else { return Vec::new() };
    let mut names: Vec<String> =
        after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    names.extend(before.keys().filter(|k| !after.contains_key(*k)).cloned());
    names.sort();
    names
}

fn members_summary(m: &MemberDelta) -> Option<Value> {
    if m.is_empty() {
        return None;
    }
    let mut s = json!({});
    if let Some(r) = &m.replace {
        s["replaced_with"] = r.len().into();
    }
    if !m.add.is_empty() {
        s["added"] = m.add.len().into();
    }
    if !m.remove.is_empty() {
        s["removed"] = m.remove.len().into();
    }
    Some(s)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_PATH_CHARS {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_PATH_CHARS).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResourceKind;
    use crate::scim::patch;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn summaries_name_attributes_never_values() {
        let before = obj(json!({"userName": "a", "password": "old-secret", "title": "x"}));
        let after = obj(json!({"userName": "a", "password": "new-secret", "active": false}));
        let s = replaced(&before, &after, &MemberDelta::default());
        assert_eq!(s, json!({"changed": ["active", "password", "title"], "deactivated": true}));
        assert_eq!(replaced(&after, &before, &MemberDelta::default())["reactivated"], true);
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
            {"op": "replace", "path": "password", "value": "new-secret"},
            {"op": "Replace", "value": {"active": false, "title": "t"}},
            {"op": "add", "path": "emails[type eq \"work\"].value", "value": "w@example.com"},
        ]});
        let ops = patch::parse_request(ResourceKind::User, &body).unwrap();
        let s = patched(&ops, &before, Some(&after), &MemberDelta::default());
        assert_eq!(
            s["operations"],
            json!(["replace password", "replace active", "replace title", "add emails[type eq \"work\"].value"])
        );
        let text = s.to_string() + &created(&after, 0).to_string();
        for secret in ["old-secret", "new-secret", "w@example.com"] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
    }

    #[test]
    fn member_changes_are_counted() {
        let m = MemberDelta { replace: None, add: vec![], remove: vec!["a".into(), "b".into()] };
        let s = patched(&[], &Map::new(), None, &m);
        assert_eq!(s, json!({"operations": [], "changed": [], "members": {"removed": 2}}));
    }
}
