//! SQL for resources, memberships and the outbox rows that record their changes.

use std::collections::{HashMap, HashSet};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::{Map, Value};

use super::filter_sql;
use super::{Load, NewResource, Page, Position, StoreError, Update};
use crate::model::query::{AttrPath, Filter};
use crate::model::{ChangeOp, GroupRef, Member, MemberRef, Meta, OutboxPayload, Resource, ResourceKind, fold_case};

const SELECT_COLS: &str = "r.seq, r.id, r.kind, r.version, r.created, r.last_modified, r.data";

/// The columns we index, derived from the attributes so they can never disagree.
struct Indexed {
    user_name_ci: Option<String>,
    display_name_ci: Option<String>,
    external_id: Option<String>,
    emails: Vec<(String, Option<String>)>,
}

fn indexed(kind: ResourceKind, attrs: &Map<String, Value>) -> Indexed {
    let s = |k: &str| attrs.get(k).and_then(Value::as_str);
    let emails = attrs
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    let v = e.get("value")?.as_str()?;
                    Some((fold_case(v), e.get("type").and_then(Value::as_str).map(fold_case)))
                })
                .collect()
        })
        .unwrap_or_default();
    Indexed {
        user_name_ci: if kind == ResourceKind::User { s("userName").map(fold_case) } else { None },
        display_name_ci: s("displayName").map(fold_case),
        external_id: s("externalId").map(str::to_string),
        emails,
    }
}

fn map_unique(e: rusqlite::Error, ix: &Indexed) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
        && msg.contains("user_name_ci")
    {
        return StoreError::Unique { attribute: "userName", value: ix.user_name_ci.clone().unwrap_or_default() };
    }
    e.into()
}

fn write_emails(conn: &Connection, seq: i64, ix: &Indexed) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM resource_emails WHERE resource_seq = ?1")?.execute([seq])?;
    insert_emails(conn, seq, ix)
}

/// The address rows of a resource that has none yet (a new one).
fn insert_emails(conn: &Connection, seq: i64, ix: &Indexed) -> Result<(), StoreError> {
    let mut st =
        conn.prepare_cached("INSERT INTO resource_emails (resource_seq, value_ci, type_ci) VALUES (?1, ?2, ?3)")?;
    for (v, t) in &ix.emails {
        st.execute(params![seq, v, t])?;
    }
    Ok(())
}

pub(super) fn enqueue(
    conn: &Connection,
    kind: ResourceKind,
    id: &str,
    op: ChangeOp,
    version: u64,
    payload: &OutboxPayload,
    now: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO outbox (resource_kind, resource_id, op, version, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![kind.as_str(), id, op.as_str(), version as i64, payload.to_json(), now])?;
    Ok(())
}

/// Queue an update of a resource, coalesced into the resource's newest outbox row when that
/// row is an update nobody has tried to deliver yet (`pending`, never attempted: not in a
/// bundle now, not the head of a failed one) and both changes are plain (see
/// [`OutboxPayload::coalesce`]). Delivery sends the resource's current state, so the app gets
/// what it would have got from the two rows in one bundle, under the older row's id (the
/// idempotency key) and in the same place in the resource's order; the version moves on.
/// So a queue that is not draining (no target, the app down) holds about one row per
/// resource instead of one per change, and a write's cost does not grow with its length.
/// Deprovisionings, deletes, creates, repairs and resyncs keep their own rows: the deletion
/// guard, the dry run and the repair read them one by one. The audit log keeps every change.
fn enqueue_update(
    conn: &Connection,
    kind: ResourceKind,
    id: &str,
    version: u64,
    payload: &OutboxPayload,
    now: &str,
) -> Result<(), StoreError> {
    if payload.is_plain_change() {
        let newest: Option<(i64, String)> = conn
            .prepare_cached(
                "SELECT id, payload FROM outbox
                 WHERE resource_id = ?1 AND state != 'done' AND id = (
                     SELECT max(id) FROM outbox WHERE resource_id = ?1 AND state != 'done')
                   AND op = 'update' AND state = 'pending' AND attempts = 0",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let merged = newest.and_then(|(row, p)| {
            let older = OutboxPayload::from_json(&p).ok()?;
            Some((row, older.coalesce(payload)?))
        });
        if let Some((row, merged)) = merged {
            conn.prepare_cached("UPDATE outbox SET version = ?2, payload = ?3 WHERE id = ?1")?.execute(params![
                row,
                version as i64,
                merged.to_json()
            ])?;
            return Ok(());
        }
    }
    enqueue(conn, kind, id, ChangeOp::Update, version, payload, now)
}

/// Look up a would-be member: its row number and kind. An id that names nothing, or names
/// a resource of another kind than the IdP said, is an unknown member.
fn member_seq(conn: &Connection, m: &MemberRef) -> Result<(i64, ResourceKind), StoreError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, kind FROM resources WHERE id = ?1")?
        .query_row([&m.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((seq, k)) = row else { return Err(StoreError::UnknownMember(m.id.clone())) };
    let k = ResourceKind::parse(&k).ok_or_else(|| StoreError::Internal(format!("bad kind {k}")))?;
    if m.kind.is_some_and(|want| want != k) {
        return Err(StoreError::UnknownMember(m.id.clone()));
    }
    Ok((seq, k))
}

/// Add members; returns the ids actually added (already-present ones are no-ops).
fn add_members(conn: &Connection, group_seq: i64, add: &[MemberRef]) -> Result<Vec<String>, StoreError> {
    let mut added = Vec::new();
    for m in add {
        let (seq, _) = member_seq(conn, m)?;
        if seq == group_seq {
            return Err(StoreError::UnknownMember(format!("{} (a group cannot be its own member)", m.id)));
        }
        let n = conn
            .prepare_cached("INSERT OR IGNORE INTO group_members (group_seq, member_seq, display) VALUES (?1, ?2, ?3)")?
            .execute(params![group_seq, seq, m.display])?;
        if n > 0 {
            added.push(m.id.clone());
        }
    }
    Ok(added)
}

fn remove_members(conn: &Connection, group_seq: i64, ids: &[String]) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    let mut st = conn.prepare_cached(
        "DELETE FROM group_members WHERE group_seq = ?1 AND member_seq = (SELECT seq FROM resources WHERE id = ?2)",
    )?;
    for id in ids {
        if st.execute(params![group_seq, id])? > 0 {
            removed.push(id.clone());
        }
    }
    Ok(removed)
}

fn member_ids(conn: &Connection, group_seq: i64) -> Result<Vec<String>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT m.id FROM group_members gm JOIN resources m ON m.seq = gm.member_seq WHERE gm.group_seq = ?1",
    )?;
    let rows = st.query_map([group_seq], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn create(conn: &Connection, new: NewResource, now: &str) -> Result<Resource, StoreError> {
    let ix = indexed(new.kind, &new.attrs);
    let data = serde_json::to_string(&new.attrs).map_err(|e| StoreError::Internal(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO resources (id, kind, user_name_ci, display_name_ci, external_id, version, created, last_modified, data)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6, ?7)",
    )?
    .execute(params![new.id, new.kind.as_str(), ix.user_name_ci, ix.display_name_ci, ix.external_id, now, data])
    .map_err(|e| map_unique(e, &ix))?;
    let seq = conn.last_insert_rowid();
    insert_emails(conn, seq, &ix)?;
    let added = if new.kind == ResourceKind::Group { add_members(conn, seq, &new.members)? } else { Vec::new() };
    let payload = OutboxPayload::members(added, Vec::new());
    if new.kind == ResourceKind::User
        && let Some(name) = &ix.user_name_ci
    {
        cancel_held_deletes_of(conn, name, &new.id, now)?;
    }
    enqueue(conn, new.kind, &new.id, ChangeOp::Create, 1, &payload, now)?;
    if new.kind == ResourceKind::User {
        // Everything a read would return is known: the attributes just written, version 1,
        // and no groups (a new id is in none). Reading the row back parsed its JSON again:
        // ~8 % of the writer's time per create. `store::tests` checks this equals a read.
        return Ok(Resource {
            kind: new.kind,
            id: new.id,
            meta: Meta { version: 1, created: now.to_string(), last_modified: now.to_string() },
            attrs: new.attrs,
            members: None,
            groups: Some(Vec::new()),
        });
    }
    // A group's members come back with the names the read resolves (the member's own when
    // the IdP sent none).
    let load = Load { members: true, groups: true };
    get(conn, new.kind, &new.id, load)?.ok_or_else(|| StoreError::Internal("created row vanished".into()))
}

struct Current {
    seq: i64,
    version: u64,
    data: String,
}

fn current(conn: &Connection, kind: ResourceKind, id: &str) -> Result<Current, StoreError> {
    conn.prepare_cached("SELECT seq, version, data FROM resources WHERE id = ?1 AND kind = ?2")?
        .query_row(params![id, kind.as_str()], |r| {
            Ok(Current { seq: r.get(0)?, version: r.get::<_, i64>(1)? as u64, data: r.get(2)? })
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound { kind: kind.as_str(), id: id.to_string() })
}

pub fn update(conn: &Connection, upd: Update, now: &str) -> Result<Resource, StoreError> {
    let cur = current(conn, upd.kind, &upd.id)?;
    if let Some(expected) = upd.expected_version
        && expected != cur.version
    {
        return Err(StoreError::VersionMismatch { expected, current: cur.version });
    }
    let mut attrs_changed = false;
    let mut deprovision = false;
    if let Some(attrs) = upd.attrs {
        let data = Value::Object(attrs);
        let old: Value = serde_json::from_str(&cur.data).map_err(|e| StoreError::Internal(e.to_string()))?;
        if old != data {
            attrs_changed = true;
            if upd.kind == ResourceKind::User {
                deprovision = !inactive(&old) && inactive(&data);
                if !inactive(&data) {
                    // Active again while its deactivation is held: the IdP took it back.
                    cancel_held(conn, &upd.id, "cancelled: the IdP reactivated the user while it was held", now)?;
                }
            }
            let ix = indexed(upd.kind, data.as_object().expect("constructed from a map"));
            // The version moves with the attributes, in the same statement (a second UPDATE
            // would rewrite the whole row, data included, again).
            conn.prepare_cached(
                "UPDATE resources SET user_name_ci = ?2, display_name_ci = ?3, external_id = ?4, data = ?5,
                                      version = ?6, last_modified = ?7 WHERE seq = ?1",
            )?
            .execute(params![
                cur.seq,
                ix.user_name_ci,
                ix.display_name_ci,
                ix.external_id,
                data.to_string(),
                (cur.version + 1) as i64,
                now
            ])
            .map_err(|e| map_unique(e, &ix))?;
            // Most changes (`active`, a name, a title) leave the addresses alone: their rows
            // (and two indexes) are rewritten only when they differ.
            let old_emails = old.as_object().map(|o| indexed(upd.kind, o).emails);
            if old_emails.as_ref() != Some(&ix.emails) {
                write_emails(conn, cur.seq, &ix)?;
            }
        }
    }
    let mut added = Vec::new();
    let mut removed = Vec::new();
    if upd.kind == ResourceKind::Group {
        if let Some(replace) = &upd.members.replace {
            let want: HashSet<&str> = replace.iter().map(|m| m.id.as_str()).collect();
            let drop: Vec<String> =
                member_ids(conn, cur.seq)?.into_iter().filter(|id| !want.contains(id.as_str())).collect();
            removed.extend(remove_members(conn, cur.seq, &drop)?);
            added.extend(add_members(conn, cur.seq, replace)?);
        }
        added.extend(add_members(conn, cur.seq, &upd.members.add)?);
        removed.extend(remove_members(conn, cur.seq, &upd.members.remove)?);
    }
    let changed = attrs_changed || !added.is_empty() || !removed.is_empty();
    if changed {
        let version = cur.version + 1;
        if !attrs_changed {
            conn.prepare_cached("UPDATE resources SET version = ?2, last_modified = ?3 WHERE seq = ?1")?
                .execute(params![cur.seq, version as i64, now])?;
        }
        let payload =
            OutboxPayload { attributes_changed: attrs_changed, deprovision, ..OutboxPayload::members(added, removed) };
        enqueue_update(conn, upd.kind, &upd.id, version, &payload, now)?;
    }
    // Users come back with their groups (cheap); a group's member list is loaded by the
    // caller only when the reply needs it.
    let load = Load { members: false, groups: upd.kind == ResourceKind::User };
    get(conn, upd.kind, &upd.id, load)?.ok_or_else(|| StoreError::Internal("updated row vanished".into()))
}

pub fn delete(
    conn: &Connection,
    kind: ResourceKind,
    id: &str,
    expected_version: Option<u64>,
    now: &str,
) -> Result<(), StoreError> {
    let cur = current(conn, kind, id)?;
    if let Some(expected) = expected_version
        && expected != cur.version
    {
        return Err(StoreError::VersionMismatch { expected, current: cur.version });
    }
    // The groups that lose this member change too: their version moves so ETags stay honest.
    conn.prepare_cached(
        "UPDATE resources SET version = version + 1, last_modified = ?2
         WHERE seq IN (SELECT group_seq FROM group_members WHERE member_seq = ?1)",
    )?
    .execute(params![cur.seq, now])?;
    conn.prepare_cached("DELETE FROM resources WHERE seq = ?1")?.execute([cur.seq])?;
    // The outbox keeps what identifies the account in the app, since the row is gone: the
    // provisioner may need it to find an account it never learnt the app id of.
    let old: Value = serde_json::from_str(&cur.data).unwrap_or(Value::Null);
    let mut tombstone = Map::new();
    for k in ["userName", "externalId", "displayName"] {
        if let Some(v) = old.get(k) {
            tombstone.insert(k.to_string(), v.clone());
        }
    }
    if kind == ResourceKind::User {
        conn.prepare_cached(
            "INSERT INTO deleted_accounts (resource_id, user_name_ci, external_id, deleted_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            id,
            old.get("userName").and_then(Value::as_str).map(fold_case),
            old.get("externalId").and_then(Value::as_str),
            now
        ])?;
    }
    // Every delete deprovisions (the deletion guard counts it), even of an inactive user.
    let payload = OutboxPayload { tombstone: Some(tombstone), deprovision: true, ..OutboxPayload::default() };
    enqueue(conn, kind, id, ChangeOp::Delete, cur.version + 1, &payload, now)?;
    Ok(())
}

/// `active` is false. Absent means active (RFC 7643 §4.1.1 leaves it to the provider; we
/// provision such users as active).
fn inactive(attrs: &Value) -> bool {
    attrs.get("active") == Some(&Value::Bool(false))
}

/// Cancel the held (deletion guard) rows of one resource: they are done without reaching
/// the app, with `reason` as their last word. Rows behind them then flow.
fn cancel_held(conn: &Connection, resource_id: &str, reason: &str, now: &str) -> Result<usize, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET state = 'done', done_at = ?3, last_error = ?2 WHERE resource_id = ?1 AND state != 'done' AND state = 'held'",
        )?
        .execute(params![resource_id, reason, now])?;
    if n > 0 {
        tracing::info!(resource = resource_id, rows = n, reason, "held deprovisioning cancelled");
    }
    Ok(n)
}

/// A user created with the userName of a user whose deletion is held: the IdP re-created
/// it, so the deletion is cancelled and the old app account is left to the new resource
/// (the provisioner adopts it by userName), its old id mapping forgotten.
fn cancel_held_deletes_of(conn: &Connection, user_name_ci: &str, new_id: &str, now: &str) -> Result<(), StoreError> {
    let held: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT resource_id, payload FROM outbox WHERE state = 'held' AND op = 'delete' AND resource_kind = 'User'",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (old_id, payload) in held {
        let p = OutboxPayload::from_json(&payload).unwrap_or_default();
        let name = p.tombstone.as_ref().and_then(|t| t.get("userName")).and_then(Value::as_str).map(fold_case);
        if name.as_deref() == Some(user_name_ci) {
            cancel_held(conn, &old_id, &format!("cancelled: the IdP re-created the user as {new_id} while held"), now)?;
            conn.prepare_cached("DELETE FROM id_map WHERE resource_id = ?1")?.execute([&old_id])?;
        }
    }
    Ok(())
}

fn row_to_resource(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Resource)> {
    let kind: String = r.get(2)?;
    let data: String = r.get(6)?;
    let attrs = match serde_json::from_str::<Value>(&data) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Ok((
        r.get(0)?,
        Resource {
            kind: ResourceKind::parse(&kind).unwrap_or(ResourceKind::User),
            id: r.get(1)?,
            meta: Meta { version: r.get::<_, i64>(3)? as u64, created: r.get(4)?, last_modified: r.get(5)? },
            attrs,
            members: None,
            groups: None,
        },
    ))
}

/// Resources of a kind by id, in one query (the ids travel as one JSON array); ids that
/// name none are absent from the map. Members and groups are not loaded. (`+r.kind`: look
/// up by id, never scan the kind.)
pub fn get_many(conn: &Connection, kind: ResourceKind, ids: &[&str]) -> Result<HashMap<String, Resource>, StoreError> {
    let list = serde_json::to_string(ids).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT {SELECT_COLS} FROM resources r WHERE r.id IN (SELECT value FROM json_each(?1)) AND +r.kind = ?2"
    ))?;
    let rows = st.query_map(params![list, kind.as_str()], row_to_resource)?;
    let mut out = HashMap::with_capacity(ids.len());
    for row in rows {
        let (_, r) = row?;
        out.insert(r.id.clone(), r);
    }
    Ok(out)
}

fn load_related(conn: &Connection, seq: i64, res: &mut Resource, load: Load) -> Result<(), StoreError> {
    match res.kind {
        ResourceKind::Group if load.members => {
            let mut st = conn.prepare_cached(
                "SELECT m.id, m.kind,
                        coalesce(gm.display, json_extract(m.data, '$.displayName'), json_extract(m.data, '$.userName'))
                 FROM group_members gm JOIN resources m ON m.seq = gm.member_seq
                 WHERE gm.group_seq = ?1 ORDER BY gm.member_seq",
            )?;
            let rows = st.query_map([seq], |r| {
                let k: String = r.get(1)?;
                Ok(Member {
                    id: r.get(0)?,
                    kind: ResourceKind::parse(&k).unwrap_or(ResourceKind::User),
                    display: r.get(2)?,
                })
            })?;
            res.members = Some(rows.collect::<Result<_, _>>()?);
        }
        ResourceKind::User if load.groups => {
            let mut st = conn.prepare_cached(
                "SELECT g.id, json_extract(g.data, '$.displayName')
                 FROM group_members gm JOIN resources g ON g.seq = gm.group_seq
                 WHERE gm.member_seq = ?1 ORDER BY g.seq",
            )?;
            let rows = st.query_map([seq], |r| Ok(GroupRef { id: r.get(0)?, display: r.get(1)? }))?;
            res.groups = Some(rows.collect::<Result<_, _>>()?);
        }
        _ => {}
    }
    Ok(())
}

/// Members and groups for a whole page with one query per resource type, not one per row
/// (a page of 100 users used to cost 100 group look-ups).
fn load_related_page(conn: &Connection, rows: Vec<(i64, Resource)>, load: Load) -> Result<Vec<Resource>, StoreError> {
    let seqs_of =
        |kind: ResourceKind| -> Vec<i64> { rows.iter().filter(|(_, r)| r.kind == kind).map(|(s, _)| *s).collect() };
    let mut members: HashMap<i64, Vec<Member>> = HashMap::new();
    let mut groups: HashMap<i64, Vec<GroupRef>> = HashMap::new();
    let group_seqs = if load.members { seqs_of(ResourceKind::Group) } else { Vec::new() };
    if !group_seqs.is_empty() {
        let mut st = conn.prepare_cached(
            "SELECT gm.group_seq, m.id, m.kind,
                    coalesce(gm.display, json_extract(m.data, '$.displayName'), json_extract(m.data, '$.userName'))
             FROM group_members gm JOIN resources m ON m.seq = gm.member_seq
             WHERE gm.group_seq IN (SELECT value FROM json_each(?1)) ORDER BY gm.group_seq, gm.member_seq",
        )?;
        let list = serde_json::to_string(&group_seqs).map_err(|e| StoreError::Internal(e.to_string()))?;
        let rows = st.query_map([list], |r| {
            let k: String = r.get(2)?;
            Ok((
                r.get::<_, i64>(0)?,
                Member {
                    id: r.get(1)?,
                    kind: ResourceKind::parse(&k).unwrap_or(ResourceKind::User),
                    display: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (g, m) = row?;
            members.entry(g).or_default().push(m);
        }
    }
    let user_seqs = if load.groups { seqs_of(ResourceKind::User) } else { Vec::new() };
    if !user_seqs.is_empty() {
        let mut st = conn.prepare_cached(
            "SELECT gm.member_seq, g.id, json_extract(g.data, '$.displayName')
             FROM group_members gm JOIN resources g ON g.seq = gm.group_seq
             WHERE gm.member_seq IN (SELECT value FROM json_each(?1)) ORDER BY gm.member_seq, g.seq",
        )?;
        let list = serde_json::to_string(&user_seqs).map_err(|e| StoreError::Internal(e.to_string()))?;
        let rows =
            st.query_map([list], |r| Ok((r.get::<_, i64>(0)?, GroupRef { id: r.get(1)?, display: r.get(2)? })))?;
        for row in rows {
            let (u, g) = row?;
            groups.entry(u).or_default().push(g);
        }
    }
    Ok(rows
        .into_iter()
        .map(|(seq, mut res)| {
            match res.kind {
                ResourceKind::Group if load.members => res.members = Some(members.remove(&seq).unwrap_or_default()),
                ResourceKind::User if load.groups => res.groups = Some(groups.remove(&seq).unwrap_or_default()),
                _ => {}
            }
            res
        })
        .collect())
}

pub fn get(conn: &Connection, kind: ResourceKind, id: &str, load: Load) -> Result<Option<Resource>, StoreError> {
    let row = conn
        .prepare_cached(&format!("SELECT {SELECT_COLS} FROM resources r WHERE r.id = ?1 AND r.kind = ?2"))?
        .query_row(params![id, kind.as_str()], row_to_resource)
        .optional()?;
    let Some((seq, mut res)) = row else { return Ok(None) };
    load_related(conn, seq, &mut res, load)?;
    Ok(Some(res))
}

/// One resource type's share of a list: which kind, which of its resources match, and the
/// path its sort key is read from (`None`: no value, so it sorts as missing).
pub struct Part<'a> {
    pub kind: ResourceKind,
    pub filter: Option<&'a Filter>,
    pub sort_path: Option<&'a AttrPath>,
}

/// A page of the resources matching any of `parts`. Unsorted (`descending == None`): in the
/// order of `parts`, then creation order. Sorted: by the sort key, resources without one
/// last (ascending) or first (descending), ties by creation order, the whole order reversed
/// when descending (RFC 7644 §3.4.2.3), so consecutive pages neither overlap nor skip.
///
/// What a page costs does not grow with the directory where it need not: the total of an
/// unfiltered list is the count kept in `resource_counts` (migration 0009), an unfiltered
/// page by offset seeks through `rank_blocks` instead of walking the offset, and a page
/// after a position (cursor paging, RFC 9865) seeks by `seq`. A filtered total is counted
/// over the filter, which an indexed filter bounds by its matches.
pub fn list(
    conn: &Connection,
    parts: &[Part<'_>],
    descending: Option<bool>,
    position: Position,
    count: u32,
    load: Load,
) -> Result<Page, StoreError> {
    let after = match position {
        Position::After(seq) => {
            if parts.len() != 1 || descending.is_some() {
                return Err(StoreError::Internal("paging after a position needs one resource type, unsorted".into()));
            }
            Some(seq)
        }
        Position::Offset(_) => None,
    };
    // WHERE: one `r.kind = ? AND (filter)` per part, OR-ed.
    let mut where_params: Vec<SqlValue> = Vec::new();
    let mut conds = Vec::with_capacity(parts.len());
    for part in parts {
        where_params.push(SqlValue::Text(part.kind.as_str().to_string()));
        match part.filter {
            Some(f) => {
                let sql = filter_sql::translate(part.kind, f)?;
                conds.push(format!("(r.kind = ? AND ({}))", sql.text));
                where_params.extend(sql.params);
            }
            None => conds.push("r.kind = ?".to_string()),
        }
    }
    if conds.is_empty() {
        return Ok(Page { total: 0, resources: Vec::new(), next_after: None });
    }
    let where_sql = conds.join(" OR ");
    // The sort key (selected as `sk`, so ORDER BY binds its parameters once), or the rank of
    // the part for unsorted multi-kind lists.
    let mut key_params: Vec<SqlValue> = Vec::new();
    let (key_sql, order_sql) = match descending {
        Some(desc) => {
            let mut arms = Vec::new();
            for part in parts {
                if let Some(p) = part.sort_path {
                    let k = filter_sql::sort_key(part.kind, p);
                    arms.push((part.kind, k));
                }
            }
            let key = match arms.as_slice() {
                [] => "NULL".to_string(),
                [(_, k)] if parts.len() == 1 => {
                    key_params.extend(k.params.iter().cloned());
                    k.text.clone()
                }
                _ => {
                    let mut case = String::from("CASE r.kind");
                    for (kind, k) in &arms {
                        key_params.push(SqlValue::Text(kind.as_str().to_string()));
                        key_params.extend(k.params.iter().cloned());
                        case.push_str(&format!(" WHEN ? THEN {}", k.text));
                    }
                    case.push_str(" END");
                    case
                }
            };
            let order = if desc { "sk IS NULL DESC, sk DESC, r.seq DESC" } else { "sk IS NULL, sk, r.seq" };
            (key, order.to_string())
        }
        None if parts.len() == 1 => ("NULL".to_string(), "r.seq".to_string()),
        None => {
            let mut case = String::from("CASE r.kind");
            for (i, part) in parts.iter().enumerate() {
                key_params.push(SqlValue::Text(part.kind.as_str().to_string()));
                case.push_str(&format!(" WHEN ? THEN {i}"));
            }
            case.push_str(" END");
            (case, "sk, r.seq".to_string())
        }
    };
    // An unfiltered list of one type: its count is kept, and its pages seek.
    let plain = match parts {
        [p] if p.filter.is_none() && descending.is_none() => Some(p.kind),
        _ => None,
    };
    // One read transaction, so the total and the page agree.
    let tx = conn.unchecked_transaction()?;
    let total: i64 = match plain {
        Some(kind) => tx
            .prepare_cached("SELECT n FROM resource_counts WHERE kind = ?1")?
            .query_row([kind.as_str()], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
        None => tx
            .prepare_cached(&format!("SELECT count(*) FROM resources r WHERE {where_sql}"))?
            .query_row(params_from_iter(where_params.iter()), |r| r.get(0))?,
    };
    let mut resources = Vec::new();
    let mut next_after = None;
    match (position, after) {
        (_, Some(after)) => {
            // Cursor paging: the rows after the position, one more to know whether the
            // walk goes on.
            let mut page_params = where_params;
            page_params.push(SqlValue::Integer(after));
            page_params.push(SqlValue::Integer(count as i64 + 1));
            let mut st = tx.prepare_cached(&format!(
                "SELECT {SELECT_COLS} FROM resources r WHERE ({where_sql}) AND r.seq > ? ORDER BY r.seq LIMIT ?"
            ))?;
            let mut rows: Vec<(i64, Resource)> =
                st.query_map(params_from_iter(page_params.iter()), row_to_resource)?.collect::<Result<_, _>>()?;
            if rows.len() > count as usize {
                rows.truncate(count as usize);
                next_after = rows.last().map(|(seq, _)| *seq);
            }
            resources = load_related_page(&tx, rows, load)?;
        }
        (Position::Offset(offset), None) if count > 0 && (offset as i64) < total => {
            let mut page_params = key_params;
            page_params.extend(where_params);
            let rows: Vec<(i64, Resource)> = match plain {
                Some(kind) => {
                    let (from_seq, skip) = seek(&tx, kind, offset)?;
                    page_params.push(SqlValue::Integer(from_seq));
                    page_params.push(SqlValue::Integer(count as i64));
                    page_params.push(SqlValue::Integer(skip as i64));
                    let mut st = tx.prepare_cached(&format!(
                        "SELECT {SELECT_COLS} FROM resources r WHERE {where_sql} AND r.seq >= ? ORDER BY r.seq \
                         LIMIT ? OFFSET ?"
                    ))?;
                    st.query_map(params_from_iter(page_params.iter()), row_to_resource)?.collect::<Result<_, _>>()?
                }
                None => {
                    page_params.push(SqlValue::Integer(count as i64));
                    page_params.push(SqlValue::Integer(offset as i64));
                    let mut st = tx.prepare_cached(&format!(
                        "SELECT {SELECT_COLS}, {key_sql} AS sk FROM resources r WHERE {where_sql} ORDER BY {order_sql} \
                         LIMIT ? OFFSET ?"
                    ))?;
                    st.query_map(params_from_iter(page_params.iter()), row_to_resource)?.collect::<Result<_, _>>()?
                }
            };
            resources = load_related_page(&tx, rows, load)?;
        }
        _ => {}
    }
    tx.commit()?;
    Ok(Page { total: total as u64, resources, next_after })
}

/// Where the resource at `offset` (0-based, creation order) of `kind` is: the first `seq` of
/// its block and how many rows of that block come before it. Reads the block counts
/// (`rank_blocks`) up to it, not the rows.
fn seek(conn: &Connection, kind: ResourceKind, offset: u64) -> Result<(i64, u64), StoreError> {
    let mut st = conn.prepare_cached("SELECT first_seq, n FROM rank_blocks WHERE kind = ?1 ORDER BY first_seq")?;
    let mut rows = st.query([kind.as_str()])?;
    let mut before = 0u64;
    let mut at = (0i64, offset);
    while let Some(r) = rows.next()? {
        let (first, n): (i64, i64) = (r.get(0)?, r.get(1)?);
        let n = n.max(0) as u64;
        at = (first, offset - before);
        if before + n > offset {
            break;
        }
        before += n;
    }
    Ok(at)
}

pub fn outbox_counts(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut st = conn.prepare_cached("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn outbox_for(conn: &Connection, id: &str) -> Result<Vec<(String, u64, String)>, StoreError> {
    let mut st = conn.prepare_cached("SELECT op, version, payload FROM outbox WHERE resource_id = ?1 ORDER BY id")?;
    let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The effective access of a user changed (a group it is in was renamed, deleted, or its
/// membership changed): queue an attribute update so the app gets its new roles and
/// entitlements. The user's own version does not move: nothing the IdP reads changed.
pub fn enqueue_access_change(conn: &Connection, id: &str, now: &str) -> Result<(), StoreError> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM resources WHERE id = ?1 AND kind = 'User'")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if let Some(v) = version {
        let payload = OutboxPayload { attributes_changed: true, access_changed: true, ..OutboxPayload::default() };
        enqueue_update(conn, ResourceKind::User, id, v as u64, &payload, now)?;
    }
    Ok(())
}

/// Queue a full re-delivery of a resource (provision on demand): an update row marked
/// `resync`, so the worker sends the whole current state, group members included.
pub fn resync(conn: &Connection, kind: ResourceKind, id: &str, now: &str) -> Result<i64, StoreError> {
    let cur = current(conn, kind, id)?;
    let payload = OutboxPayload { attributes_changed: true, resync: true, ..OutboxPayload::default() };
    enqueue(conn, kind, id, ChangeOp::Update, cur.version, &payload, now)?;
    Ok(conn.last_insert_rowid())
}
