//! Effective access of one user, by userName or id: the store finds the user and its
//! groups, the policy (pure) explains what they give. One function, so `scimsync access`
//! and the admin listener's `GET /access/{user}` can never disagree.

use crate::model::ResourceKind;
use crate::policy::Policy;
use crate::policy::access::{AccessReport, ReportUser};
use crate::store::{Load, Store, StoreError};

/// The report for the user whose id or userName (any case) is `who`; `None` when there is
/// no such user.
pub async fn effective_access(store: &Store, policy: &Policy, who: &str) -> Result<Option<AccessReport>, StoreError> {
    let load = Load { members: false, groups: true };
    let mut user = store.resources().get(ResourceKind::User, who, load).await?;
    if user.is_none() {
        // A userName eq filter, parsed as the SCIM API parses one: the store compares
        // userName case-insensitively, as the API does. The JSON string literal makes any
        // text a valid operand, so parsing cannot fail on what an operator types.
        let text = format!("userName eq {}", serde_json::Value::from(who));
        let Ok(f) = super::parse_filter(ResourceKind::User, &text) else { return Ok(None) };
        user = store
            .resources()
            .list(ResourceKind::User, Some(f), None, crate::store::Position::Offset(0), 1, load)
            .await?
            .resources
            .into_iter()
            .next();
    }
    let Some(user) = user else { return Ok(None) };
    let report_user = ReportUser {
        id: user.id.to_string(),
        user_name: user.attrs.get("userName").and_then(|v| v.as_str()).unwrap_or("").to_string(),
        active: user.attrs.get("active") != Some(&serde_json::Value::Bool(false)),
    };
    let groups = user.groups.unwrap_or_default();
    Ok(Some(policy.report(report_user, groups.iter().map(|g| g.display.as_deref().unwrap_or("")))))
}
