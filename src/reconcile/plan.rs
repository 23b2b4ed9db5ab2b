//! The repair policy, pure: which drift items a run repairs, which it must not touch
//! (protected accounts, never-delete types), and the safety limit that stops a run from
//! deactivating or deleting more than a configured count or share of the app's accounts
//! (the brake commercial provisioning services put on accidental mass deletion).

use super::diff::{DriftItem, DriftKind};
use crate::config::{ReconcileConfig, RepairMode};
use crate::model::ResourceKind;
use crate::store::RepairOp;

/// One drift item with what would fix it.
#[derive(Debug, Clone)]
pub struct Found {
    pub item: DriftItem,
    pub resource_kind: ResourceKind,
    pub fix: Option<Fix>,
}

/// What would bring the app in line.
#[derive(Debug, Clone, PartialEq)]
pub enum Fix {
    /// Send our whole state again (`forget_app_id`: the app lost the account;
    /// `deactivates`: our state switches off an account the app has active — known to the
    /// caller, who knows the vocabulary the item's values are in).
    Resync { forget_app_id: bool, deactivates: bool },
    /// Add/remove members (ours by our id, strangers by app id).
    Members { add: Vec<String>, remove: Vec<String>, remove_app_ids: Vec<String> },
    /// Deprovision an account the IdP does not know.
    Orphan,
}

pub use crate::model::drift::Repair;

/// The decision for a whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub ops: Vec<RepairOp>,
    /// Per input item, in order.
    pub repair: Vec<Repair>,
    /// Per input item: the index in `ops` of the change that repairs it (items marked
    /// `Queued`), so what the store made of that change can be reported per item.
    pub op_of: Vec<Option<usize>>,
    /// Deactivations and deletions the repair would make.
    pub deprovisions: u64,
    /// Set when the safety limit stopped the repair: what happened and how to confirm.
    pub refused: Option<String>,
    /// What each deactivation or deletion would do, as [`approval`] keys: stored with a
    /// refused report, they are what confirming that report approves.
    pub deprovisioning: Vec<String>,
}

/// The key an operator's confirmation approves a deprovisioning by: the action and the
/// account, named so that another account, or another action on the same one, is not
/// covered. An orphan by the app's id *and* its name (an app may hand a freed id to a new
/// account); a deactivation of ours by our id.
pub fn approval(action: &str, kind: ResourceKind, id: &str, name: &str) -> String {
    format!("{action}|{}|{id}|{}", kind.as_str(), crate::model::fold_case(name))
}

fn mode(cfg: &ReconcileConfig, kind: DriftKind) -> RepairMode {
    let r = &cfg.repair;
    match kind {
        DriftKind::MissingInApp => r.missing_in_app,
        DriftKind::OrphanedInApp => r.orphaned_in_app,
        DriftKind::AttributeMismatch => r.attribute_mismatch,
        DriftKind::ActiveMismatch => r.active_mismatch,
        DriftKind::MembershipMismatch => r.membership_mismatch,
        DriftKind::StuckProvision => RepairMode::Report,
    }
}

/// Whether `name` is a protected account (case-insensitive).
pub fn is_protected(cfg: &ReconcileConfig, name: &str) -> bool {
    let name = name.to_lowercase();
    cfg.protected.iter().any(|p| p.to_lowercase() == name)
}

/// An operator's confirmation of a refused report: the deprovisionings it listed (their
/// [`approval`] keys) may go past the safety limit, and no others.
#[derive(Debug, Clone, Default)]
pub struct Confirmed {
    pub run_id: i64,
    pub approved: std::collections::HashSet<String>,
}

/// Decide the repair. `listed`: accounts (users and groups) the app listed, the base of the
/// share limit. `confirmed`: the refused report an operator reviewed and confirmed: past the
/// safety limit only when every deprovisioning of this run was in it (a run that would now
/// remove more, or others, than the reviewed report said is refused again). `tried`:
/// fingerprints the previous run queued a repair for. `run_id`: this run, for the message.
pub fn plan(
    cfg: &ReconcileConfig,
    found: &[Found],
    listed: u64,
    confirmed: Option<&Confirmed>,
    tried: &std::collections::HashSet<String>,
    run_id: i64,
) -> Plan {
    let never_delete_users = cfg.never_delete.iter().any(|t| t == "users");
    let never_delete_groups = cfg.never_delete.iter().any(|t| t == "groups");
    let mut ops = Vec::new();
    let mut repair = Vec::with_capacity(found.len());
    let mut op_of: Vec<Option<usize>> = Vec::with_capacity(found.len());
    let mut deprovisions = 0u64;
    // The deprovisionings, as approval keys, to check against a confirmation.
    let mut deprovisioning: Vec<String> = Vec::new();
    let deactivating: std::collections::HashSet<&str> = found
        .iter()
        .filter(|f| {
            f.item.kind == DriftKind::ActiveMismatch && matches!(f.fix, Some(Fix::Resync { deactivates: true, .. }))
        })
        .filter_map(|f| f.item.resource_id.as_deref())
        .collect();
    for f in found {
        let it = &f.item;
        let (Some(fix), RepairMode::Repair) = (&f.fix, mode(cfg, it.kind)) else {
            repair.push(Repair::None);
            continue;
        };
        if it.cause != super::diff::Cause::NotAppliedYet && tried.contains(&it.fingerprint(f.resource_kind.as_str())) {
            repair.push(Repair::NoEffect);
            continue;
        }
        let op_index = match fix {
            Fix::Orphan => {
                if is_protected(cfg, &it.name) {
                    repair.push(Repair::Protected);
                    continue;
                }
                let group = f.resource_kind == ResourceKind::Group;
                if group && never_delete_groups {
                    repair.push(Repair::NeverDelete);
                    continue;
                }
                let Some(app_id) = it.app_id.clone() else {
                    repair.push(Repair::None);
                    continue;
                };
                deprovisions += 1;
                let deactivate_only = !group && never_delete_users;
                let action = if deactivate_only { "deactivate_orphan" } else { "delete_orphan" };
                deprovisioning.push(approval(action, f.resource_kind, &app_id, &it.name));
                ops.push(RepairOp::Orphan {
                    kind: f.resource_kind,
                    app_id,
                    name: it.name.clone(),
                    deactivate_only,
                    record: deactivate_only.then(|| it.app.clone()),
                });
                ops.len() - 1
            }
            Fix::Resync { forget_app_id, .. } => {
                let Some(id) = it.resource_id.clone() else {
                    repair.push(Repair::None);
                    continue;
                };
                // Resending our state deactivates an account we hold inactive and the app
                // active, whichever attribute the item is about: that is a deprovisioning,
                // allowed only where `active` is repaired, never for a protected account,
                // and counted against the safety limit (once per account).
                let deactivates = deactivating.contains(id.as_str());
                if deactivates {
                    if mode(cfg, DriftKind::ActiveMismatch) != RepairMode::Repair {
                        repair.push(Repair::None);
                        continue;
                    }
                    if is_protected(cfg, &it.name) {
                        repair.push(Repair::Protected);
                        continue;
                    }
                }
                // Several mismatches of one account need one resync.
                match ops.iter().position(|o| matches!(o, RepairOp::Resync { id: x, .. } if *x == id)) {
                    Some(at) => at,
                    None => {
                        if deactivates {
                            deprovisions += 1;
                            deprovisioning.push(approval("deactivate", f.resource_kind, &id, &it.name));
                        }
                        ops.push(RepairOp::Resync {
                            kind: f.resource_kind,
                            id,
                            forget_app_id: *forget_app_id,
                            deprovision: deactivates,
                        });
                        ops.len() - 1
                    }
                }
            }
            Fix::Members { add, remove, remove_app_ids } => {
                let Some(id) = it.resource_id.clone() else {
                    repair.push(Repair::None);
                    continue;
                };
                ops.push(RepairOp::Members {
                    group_id: id,
                    add: add.clone(),
                    remove: remove.clone(),
                    remove_app_ids: remove_app_ids.clone(),
                });
                ops.len() - 1
            }
        };
        repair.push(Repair::Queued);
        op_of.resize(repair.len() - 1, None);
        op_of.push(Some(op_index));
    }
    op_of.resize(repair.len(), None);
    let share_limit = (cfg.safety.max_deprovision_share * listed as f64).floor() as u64;
    let over = deprovisions > cfg.safety.max_deprovision_count || deprovisions > share_limit;
    let unconfirmed = match confirmed {
        Some(c) => deprovisioning.iter().filter(|f| !c.approved.contains(*f)).count(),
        None => deprovisioning.len(),
    };
    if over && unconfirmed > 0 {
        let limit = format!(
            "over the safety limit (reconcile.safety: max_deprovision_count = {}, max_deprovision_share = {} of \
             {listed} listed = {share_limit})",
            cfg.safety.max_deprovision_count, cfg.safety.max_deprovision_share
        );
        let reason = match confirmed {
            Some(c) => format!(
                "repair refused: it would deactivate or delete {deprovisions} account(s), {limit}, and {unconfirmed} \
                 of them were not in the report of run {} that was confirmed; nothing was repaired. Review this \
                 report with `scimsync drift --run {run_id}`, then run `scimsync sync now --confirm {run_id}` to \
                 repair anyway",
                c.run_id
            ),
            None => format!(
                "repair refused: it would deactivate or delete {deprovisions} account(s), {limit}; nothing was \
                 repaired. Review the report with `scimsync drift --run {run_id}`, then run `scimsync sync now \
                 --confirm {run_id}` to repair anyway"
            ),
        };
        for r in repair.iter_mut() {
            if *r == Repair::Queued {
                *r = Repair::RefusedLimit;
            }
        }
        let op_of = vec![None; repair.len()];
        return Plan { ops: Vec::new(), repair, op_of, deprovisions, refused: Some(reason), deprovisioning };
    }
    Plan { ops, repair, op_of, deprovisions, refused: None, deprovisioning }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::diff::Cause;
    use serde_json::{Value, json};

    fn item(kind: DriftKind, name: &str, rid: Option<&str>, app: Option<&str>) -> DriftItem {
        DriftItem {
            kind,
            resource_id: rid.map(str::to_string),
            app_id: app.map(str::to_string),
            name: name.into(),
            attribute: None,
            ours: Value::Null,
            app: Value::Null,
            cause: Cause::Unknown,
        }
    }

    fn orphan(name: &str) -> Found {
        Found {
            item: item(DriftKind::OrphanedInApp, name, None, Some(&format!("app-{name}"))),
            resource_kind: ResourceKind::User,
            fix: Some(Fix::Orphan),
        }
    }

    fn none() -> std::collections::HashSet<String> {
        Default::default()
    }

    fn repair_all() -> ReconcileConfig {
        let mut c = ReconcileConfig::default();
        c.repair.orphaned_in_app = RepairMode::Repair;
        c.repair.attribute_mismatch = RepairMode::Repair;
        c.repair.active_mismatch = RepairMode::Repair;
        c.safety.max_deprovision_count = 2;
        c.safety.max_deprovision_share = 1.0;
        c
    }

    #[test]
    fn report_mode_repairs_nothing() {
        let p = plan(&ReconcileConfig::default(), &[orphan("a")], 100, None, &none(), 7);
        assert_eq!((p.ops.len(), p.repair[0]), (0, Repair::None));
    }

    #[test]
    fn protected_and_never_delete() {
        let mut c = repair_all();
        c.protected = vec!["BreakGlass@corp.example".into()];
        c.never_delete = vec!["users".into(), "groups".into()];
        let mut g = orphan("Admins");
        g.resource_kind = ResourceKind::Group;
        let p = plan(&c, &[orphan("breakglass@CORP.example"), orphan("stray"), g], 100, None, &none(), 7);
        assert_eq!(p.repair, vec![Repair::Protected, Repair::Queued, Repair::NeverDelete]);
        assert_eq!(
            p.ops,
            vec![RepairOp::Orphan {
                kind: ResourceKind::User,
                app_id: "app-stray".into(),
                name: "stray".into(),
                deactivate_only: true,
                record: Some(Value::Null),
            }]
        );
        // A protected account is never deactivated by resending `active: false` either.
        let mut deact = item(DriftKind::ActiveMismatch, "breakglass@corp.example", Some("r"), Some("x"));
        deact.ours = json!(false);
        let p = plan(
            &c,
            &[Found {
                item: deact,
                resource_kind: ResourceKind::User,
                fix: Some(Fix::Resync { forget_app_id: false, deactivates: true }),
            }],
            100,
            None,
            &none(),
            7,
        );
        assert_eq!(p.repair, vec![Repair::Protected]);
    }

    #[test]
    fn repairing_another_attribute_never_deactivates_behind_the_operators_back() {
        // Ours inactive, the app active, and the title differs too.
        let mut active = item(DriftKind::ActiveMismatch, "f", Some("rf"), Some("xf"));
        active.ours = json!(false);
        let mut title = item(DriftKind::AttributeMismatch, "f", Some("rf"), Some("xf"));
        title.attribute = Some("title".into());
        let both = [
            Found {
                item: active,
                resource_kind: ResourceKind::User,
                fix: Some(Fix::Resync { forget_app_id: false, deactivates: true }),
            },
            Found {
                item: title,
                resource_kind: ResourceKind::User,
                fix: Some(Fix::Resync { forget_app_id: false, deactivates: false }),
            },
        ];
        // `active` report-only: the title is not repaired either (the resync would deactivate).
        let mut c = repair_all();
        c.repair.active_mismatch = RepairMode::Report;
        let p = plan(&c, &both, 100, None, &none(), 7);
        assert_eq!((p.ops.len(), p.repair.clone()), (0, vec![Repair::None, Repair::None]));
        // Both repaired: one resync, marked and counted as a deprovisioning.
        let p = plan(&repair_all(), &both, 100, None, &none(), 7);
        assert_eq!(p.deprovisions, 1);
        assert_eq!(
            p.ops,
            vec![RepairOp::Resync {
                kind: ResourceKind::User,
                id: "rf".into(),
                forget_app_id: false,
                deprovision: true
            }]
        );
    }

    #[test]
    fn the_safety_limit_refuses_the_whole_run_unless_confirmed() {
        let c = repair_all();
        let found: Vec<Found> = ["a", "b", "c"].iter().map(|n| orphan(n)).collect();
        let mut attr = item(DriftKind::AttributeMismatch, "d", Some("rd"), Some("xd"));
        attr.attribute = Some("title".into());
        let mut all = found.clone();
        all.push(Found {
            item: attr,
            resource_kind: ResourceKind::User,
            fix: Some(Fix::Resync { forget_app_id: false, deactivates: false }),
        });
        let p = plan(&c, &all, 1000, None, &none(), 7);
        assert!(p.ops.is_empty(), "nothing at all is repaired");
        assert_eq!(p.repair, vec![Repair::RefusedLimit; 4]);
        assert_eq!(p.deprovisions, 3);
        assert!(p.refused.as_deref().unwrap().contains("scimsync sync now --confirm 7"), "{:?}", p.refused);
        // Confirmed: the deprovisionings of the reviewed report may go.
        let refused = plan(&c, &all, 1000, None, &none(), 7);
        assert_eq!(refused.deprovisioning.len(), 3, "{:?}", refused.deprovisioning);
        let ok = Confirmed { run_id: 7, approved: refused.deprovisioning.into_iter().collect() };
        let p = plan(&c, &all, 1000, Some(&ok), &none(), 8);
        assert_eq!((p.ops.len(), p.refused), (4, None));
        // One more than the reviewed report: refused again, and the message says why.
        let mut more = all.clone();
        more.push(orphan("late"));
        let p = plan(&c, &more, 1000, Some(&ok), &none(), 8);
        assert!(p.ops.is_empty());
        let why = p.refused.unwrap();
        assert!(why.contains("1 of them were not in the report of run 7") && why.contains("--confirm 8"), "{why}");
        // Fewer than reviewed (one was fixed in the meantime): fine.
        let p = plan(&c, &all[1..], 1000, Some(&ok), &none(), 8);
        assert_eq!((p.ops.len(), p.refused), (3, None));
        // The same app id now naming another account (the app reused it): not approved.
        let mut reused = all.clone();
        reused[0].item.name = "someone-else".into();
        let p = plan(&c, &reused, 1000, Some(&ok), &none(), 8);
        assert!(p.refused.unwrap().contains("1 of them were not in the report of run 7"));
        // An account the reviewed report had for another reason (an attribute) is not
        // approved for a deactivation.
        let mut active = item(DriftKind::ActiveMismatch, "d", Some("rd"), Some("xd"));
        active.ours = json!(false);
        let mut turned = all.clone();
        turned.push(Found {
            item: active,
            resource_kind: ResourceKind::User,
            fix: Some(Fix::Resync { forget_app_id: false, deactivates: true }),
        });
        let p = plan(&c, &turned, 1000, Some(&ok), &none(), 8);
        assert!(p.refused.unwrap().contains("1 of them were not in the report of run 7"));
        // The share counts too: 2 of 10 listed is over 10 %.
        let mut c = repair_all();
        c.safety.max_deprovision_share = 0.1;
        c.safety.max_deprovision_count = 100;
        assert!(plan(&c, &found[..2], 10, None, &none(), 7).refused.is_some());
        assert!(plan(&c, &found[..1], 10, None, &none(), 7).refused.is_none());
    }

    #[test]
    fn a_repair_that_did_not_stick_is_not_queued_again() {
        let f = orphan("ghost");
        let tried: std::collections::HashSet<String> = [f.item.fingerprint("User")].into_iter().collect();
        let p = plan(&repair_all(), std::slice::from_ref(&f), 100, None, &tried, 7);
        assert_eq!((p.ops.len(), p.repair.clone()), (0, vec![Repair::NoEffect]));
        // Still on its way (not applied yet): that is not "no effect".
        let mut pending = f.clone();
        pending.item.cause = Cause::NotAppliedYet;
        assert_eq!(plan(&repair_all(), &[pending], 100, None, &tried, 7).repair, vec![Repair::Queued]);
    }

    #[test]
    fn one_resync_per_account() {
        let c = repair_all();
        let mk = |attr: &str| {
            let mut i = item(DriftKind::AttributeMismatch, "e", Some("re"), Some("xe"));
            i.attribute = Some(attr.into());
            Found {
                item: i,
                resource_kind: ResourceKind::User,
                fix: Some(Fix::Resync { forget_app_id: false, deactivates: false }),
            }
        };
        let p = plan(&c, &[mk("title"), mk("nickName")], 10, None, &none(), 7);
        assert_eq!(p.ops.len(), 1);
        assert_eq!(p.repair, vec![Repair::Queued, Repair::Queued]);
    }
}
