//! Account policies (`[policy.account]`): what the IdP may do to an existing account —
//! reactivate it, change the attributes that identify it — and whether lists show
//! inactive users. Pure: the service applies the verdict.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `[policy.account]` as written. The defaults change nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccountPolicy {
    /// What a SCIM request that sets an inactive user `active = true` does: `allow` (the
    /// default), `ignore` (answered as success, the user stays inactive), `refuse` (409).
    pub reactivation: Reactivation,
    /// User attributes the IdP may set at create but not change later (e.g. `userName`,
    /// `externalId`): a PUT or PATCH changing or removing one is 400 `mutability`.
    pub immutable_attributes: Vec<String>,
    /// Whether `GET /Users` lists (and filters find) inactive users. Default true: IdPs look
    /// users up by `userName` before reactivating them.
    pub list_inactive_users: bool,
    /// Refuse (409 `uniqueness`) a user create or update whose email address another user
    /// already has. Off by default: SCIM does not make emails unique (RFC 7643 §4.1.2).
    pub unique_emails: bool,
    /// With `unique_emails`: what a create carrying an email address another user has gets.
    /// `conflict` (the default): 409 `uniqueness`. `return_existing`: the existing account,
    /// as a successful create (idempotent create: an IdP retrying a create that timed out,
    /// or re-pushing a user it lost track of, gets the account instead of an error).
    pub existing_email_on_create: ExistingEmail,
    /// Whether a deleted user may be provisioned again: `false` refuses (409) a create whose
    /// `userName` or `externalId` a deleted user had (an offboarded account coming back
    /// needs an administrator, not an IdP push). Default true.
    pub reprovision_deleted: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExistingEmail {
    Conflict,
    ReturnExisting,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        AccountPolicy {
            reactivation: Reactivation::Allow,
            immutable_attributes: Vec::new(),
            list_inactive_users: true,
            unique_emails: false,
            existing_email_on_create: ExistingEmail::Conflict,
            reprovision_deleted: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reactivation {
    Allow,
    Ignore,
    Refuse,
}

/// Why an update is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// RFC 7644 §3.12 `mutability`: an immutable attribute with a value would change.
    Immutable { attribute: String },
    /// The account is inactive and reactivation through SCIM is refused.
    Reactivation,
}

impl Refusal {
    pub fn detail(&self) -> String {
        match self {
            Refusal::Immutable { attribute } => format!(
                "{attribute} cannot be changed once set (policy.account.immutable_attributes); create a new account instead"
            ),
            Refusal::Reactivation => "this account is inactive and reactivation through SCIM is refused \
                 (policy.account.reactivation = \"refuse\"); an administrator must reactivate it in the app"
                .into(),
        }
    }
}

fn inactive(attrs: &Map<String, Value>) -> bool {
    attrs.get("active") == Some(&Value::Bool(false))
}

/// Attribute value as compared for immutability: `userName` ignores case (RFC 7643 §4.1.1:
/// not case-exact), everything else compares exactly.
fn same(attr: &str, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if attr.eq_ignore_ascii_case("userName") => {
            x.to_lowercase() == y.to_lowercase()
        }
        _ => a == b,
    }
}

impl AccountPolicy {
    /// Check (and, for `ignore`, adjust) a user update from `old` to `new`.
    pub fn check_update(&self, old: &Map<String, Value>, new: &mut Map<String, Value>) -> Result<(), Refusal> {
        for attr in &self.immutable_attributes {
            let key = |m: &Map<String, Value>| m.keys().find(|k| k.eq_ignore_ascii_case(attr)).cloned();
            let Some(before) = key(old).and_then(|k| old.get(&k).cloned()).filter(|v| !v.is_null()) else {
                continue; // no value yet: it may be set (RFC 7643 §2.2 "immutable")
            };
            let after = key(new).and_then(|k| new.get(&k).cloned());
            if !after.is_some_and(|a| same(attr, &before, &a)) {
                return Err(Refusal::Immutable { attribute: attr.clone() });
            }
        }
        if inactive(old) && !inactive(new) {
            match self.reactivation {
                Reactivation::Allow => {}
                Reactivation::Ignore => {
                    new.insert("active".into(), Value::Bool(false));
                }
                Reactivation::Refuse => return Err(Refusal::Reactivation),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn immutable_attributes() {
        let p =
            AccountPolicy { immutable_attributes: vec!["userName".into(), "externalId".into()], ..Default::default() };
        let old = m(json!({"userName": "Ada", "externalId": "e1", "title": "x"}));
        assert_eq!(p.check_update(&old, &mut m(json!({"userName": "ada", "externalId": "e1", "title": "y"}))), Ok(()));
        assert_eq!(
            p.check_update(&old, &mut m(json!({"userName": "bob", "externalId": "e1"}))),
            Err(Refusal::Immutable { attribute: "userName".into() })
        );
        assert_eq!(
            p.check_update(&old, &mut m(json!({"userName": "Ada"}))),
            Err(Refusal::Immutable { attribute: "externalId".into() }),
            "removing is changing"
        );
        // Not set before: may be set now.
        assert_eq!(
            p.check_update(&m(json!({"userName": "Ada"})), &mut m(json!({"userName": "Ada", "externalId": "e2"}))),
            Ok(())
        );
    }

    #[test]
    fn reactivation() {
        let old = m(json!({"userName": "a", "active": false}));
        let on = || m(json!({"userName": "a", "active": true}));
        assert_eq!(AccountPolicy::default().check_update(&old, &mut on()), Ok(()));
        let ignore = AccountPolicy { reactivation: Reactivation::Ignore, ..Default::default() };
        let mut new = on();
        assert_eq!(ignore.check_update(&old, &mut new), Ok(()));
        assert_eq!(new["active"], false);
        let refuse = AccountPolicy { reactivation: Reactivation::Refuse, ..Default::default() };
        assert_eq!(refuse.check_update(&old, &mut on()), Err(Refusal::Reactivation));
        // An active user's updates are not reactivations.
        assert_eq!(refuse.check_update(&on(), &mut on()), Ok(()));
    }
}
