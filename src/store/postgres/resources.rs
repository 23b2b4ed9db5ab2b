//! SQL for resources, memberships, their outbox rows and audit records on PostgreSQL: the
//! statements of `store::resources` and `store::audit` in PostgreSQL's dialect, each write
//! one transaction of the caller's.
//!
//! A write to an existing resource first locks its row (`SELECT ... FOR UPDATE`): writes to
//! one resource then run one after the other, so its outbox rows get ids in commit order
//! (the outbox worker delivers one resource's changes in id order).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::filter_sql::{self, PgValue};
use crate::model::query::{AttrPath, Filter};
use crate::model::{ChangeOp, GroupRef, Member, MemberRef, Meta, OutboxPayload, Resource, ResourceKind, fold_case};
use crate::store::{Load, NewAudit, NewResource, Page, Position, StoreError, Update};

/// Fixed statements are prepared once per connection (deadpool's statement cache): a write
/// runs about ten of them, and preparing each again was a round trip apiece. Statements
/// built from a filter are not cached (their number is not bounded).
async fn cached_execute(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    c.execute(&c.prepare_cached(sql).await?, p).await
}

async fn cached_query(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    c.query(&c.prepare_cached(sql).await?, p).await
}

async fn cached_query_one(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    c.query_one(&c.prepare_cached(sql).await?, p).await
}

async fn cached_query_opt(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    c.query_opt(&c.prepare_cached(sql).await?, p).await
}

const SELECT_COLS: &str = "r.seq, r.id, r.kind, r.version, r.created, r.last_modified, r.data";

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// The columns we index, derived from the attributes as on SQLite (`store::resources`).
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

fn map_unique(e: tokio_postgres::Error, ix: &Indexed) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some("resources_user_name")
    {
        return StoreError::Unique { attribute: "userName", value: ix.user_name_ci.clone().unwrap_or_default() };
    }
    e.into()
}

async fn write_emails(c: &impl GenericClient, seq: i64, ix: &Indexed) -> Result<(), StoreError> {
    cached_execute(c, "DELETE FROM resource_emails WHERE resource_seq = $1", &[&seq]).await?;
    for (v, t) in &ix.emails {
        cached_execute(
            c,
            "INSERT INTO resource_emails (resource_seq, value_ci, type_ci) VALUES ($1, $2, $3)",
            &[&seq, v, t],
        )
        .await?;
    }
    Ok(())
}

async fn member_seq(c: &impl GenericClient, m: &MemberRef) -> Result<(i64, ResourceKind), StoreError> {
    let row = cached_query_opt(c, "SELECT seq, kind FROM resources WHERE id = $1", &[&m.id]).await?;
    let Some(row) = row else { return Err(StoreError::UnknownMember(m.id.clone())) };
    let k: String = row.get(1);
    let k = ResourceKind::parse(&k).ok_or_else(|| StoreError::Internal(format!("bad kind {k}")))?;
    if m.kind.is_some_and(|want| want != k) {
        return Err(StoreError::UnknownMember(m.id.clone()));
    }
    Ok((row.get(0), k))
}

async fn add_members(c: &impl GenericClient, group_seq: i64, add: &[MemberRef]) -> Result<Vec<String>, StoreError> {
    let mut added = Vec::new();
    for m in add {
        let (seq, _) = member_seq(c, m).await?;
        if seq == group_seq {
            return Err(StoreError::UnknownMember(format!("{} (a group cannot be its own member)", m.id)));
        }
        let n = cached_execute(
            c,
            "INSERT INTO group_members (group_seq, member_seq, display) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&group_seq, &seq, &m.display],
        )
        .await?;
        if n > 0 {
            added.push(m.id.clone());
        }
    }
    Ok(added)
}

async fn remove_members(c: &impl GenericClient, group_seq: i64, ids: &[String]) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    for id in ids {
        let n = cached_execute(
            c,
            "DELETE FROM group_members WHERE group_seq = $1 AND member_seq = (SELECT seq FROM resources WHERE id = $2)",
            &[&group_seq, id],
        )
        .await?;
        if n > 0 {
            removed.push(id.clone());
        }
    }
    Ok(removed)
}

async fn member_ids(c: &impl GenericClient, group_seq: i64) -> Result<Vec<String>, StoreError> {
    let rows = cached_query(
        c,
        "SELECT m.id FROM group_members gm JOIN resources m ON m.seq = gm.member_seq WHERE gm.group_seq = $1",
        &[&group_seq],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn create(c: &impl GenericClient, new: NewResource, now: &str) -> Result<Resource, StoreError> {
    let ix = indexed(new.kind, &new.attrs);
    let data = Value::Object(new.attrs);
    // Counted by the `resources_counted` trigger in `rank_shards` (no row every create of a
    // kind must lock in turn: migrations/postgres/0004_sharded_counts.sql).
    let row = cached_query_one(
        c,
        "INSERT INTO resources (id, kind, user_name_ci, display_name_ci, external_id, version, created,
                                    last_modified, data)
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7) RETURNING seq",
        &[&new.id, &new.kind.as_str(), &ix.user_name_ci, &ix.display_name_ci, &ix.external_id, &now, &data],
    )
    .await
    .map_err(|e| map_unique(e, &ix))?;
    let seq: i64 = row.get(0);
    write_emails(c, seq, &ix).await?;
    let added = if new.kind == ResourceKind::Group { add_members(c, seq, &new.members).await? } else { Vec::new() };
    let payload = OutboxPayload::members(added, Vec::new());
    if new.kind == ResourceKind::User
        && let Some(name) = &ix.user_name_ci
    {
        cancel_held_deletes_of(c, name, &new.id, now).await?;
    }
    super::outbox::enqueue(c, new.kind, &new.id, ChangeOp::Create, 1, &payload, now).await?;
    let load = Load { members: true, groups: true };
    get(c, new.kind, &new.id, load).await?.ok_or_else(|| StoreError::Internal("created row vanished".into()))
}

struct Current {
    seq: i64,
    version: u64,
    data: Value,
}

/// The resource's row, locked until the transaction ends.
async fn current_for_update(c: &impl GenericClient, kind: ResourceKind, id: &str) -> Result<Current, StoreError> {
    cached_query_opt(
        c,
        "SELECT seq, version, data FROM resources WHERE id = $1 AND kind = $2 FOR UPDATE",
        &[&id, &kind.as_str()],
    )
    .await?
    .map(|r| Current { seq: r.get(0), version: r.get::<_, i64>(1) as u64, data: r.get(2) })
    .ok_or_else(|| StoreError::NotFound { kind: kind.as_str(), id: id.to_string() })
}

pub async fn update(c: &impl GenericClient, upd: Update, now: &str) -> Result<Resource, StoreError> {
    let cur = current_for_update(c, upd.kind, &upd.id).await?;
    if let Some(expected) = upd.expected_version
        && expected != cur.version
    {
        return Err(StoreError::VersionMismatch { expected, current: cur.version });
    }
    let mut attrs_changed = false;
    let mut deprovision = false;
    if let Some(attrs) = upd.attrs {
        let data = Value::Object(attrs);
        let old = &cur.data;
        if *old != data {
            attrs_changed = true;
            if upd.kind == ResourceKind::User {
                deprovision = !inactive(old) && inactive(&data);
                if !inactive(&data) {
                    cancel_held(c, &upd.id, "cancelled: the IdP reactivated the user while it was held", now).await?;
                }
            }
            let ix = indexed(upd.kind, data.as_object().expect("constructed from a map"));
            cached_execute(
                c,
                "UPDATE resources SET user_name_ci = $2, display_name_ci = $3, external_id = $4, data = $5,
                                      version = $6, last_modified = $7 WHERE seq = $1",
                &[
                    &cur.seq,
                    &ix.user_name_ci,
                    &ix.display_name_ci,
                    &ix.external_id,
                    &data,
                    &((cur.version + 1) as i64),
                    &now,
                ],
            )
            .await
            .map_err(|e| map_unique(e, &ix))?;
            let old_emails = old.as_object().map(|o| indexed(upd.kind, o).emails);
            if old_emails.as_ref() != Some(&ix.emails) {
                write_emails(c, cur.seq, &ix).await?;
            }
        }
    }
    let mut added = Vec::new();
    let mut removed = Vec::new();
    if upd.kind == ResourceKind::Group {
        if let Some(replace) = &upd.members.replace {
            let want: HashSet<&str> = replace.iter().map(|m| m.id.as_str()).collect();
            let drop: Vec<String> =
                member_ids(c, cur.seq).await?.into_iter().filter(|id| !want.contains(id.as_str())).collect();
            removed.extend(remove_members(c, cur.seq, &drop).await?);
            added.extend(add_members(c, cur.seq, replace).await?);
        }
        added.extend(add_members(c, cur.seq, &upd.members.add).await?);
        removed.extend(remove_members(c, cur.seq, &upd.members.remove).await?);
    }
    let changed = attrs_changed || !added.is_empty() || !removed.is_empty();
    if changed {
        let version = cur.version + 1;
        if !attrs_changed {
            cached_execute(
                c,
                "UPDATE resources SET version = $2, last_modified = $3 WHERE seq = $1",
                &[&cur.seq, &(version as i64), &now],
            )
            .await?;
        }
        let payload =
            OutboxPayload { attributes_changed: attrs_changed, deprovision, ..OutboxPayload::members(added, removed) };
        super::outbox::enqueue_update(c, upd.kind, &upd.id, version, &payload, now).await?;
    }
    let load = Load { members: false, groups: upd.kind == ResourceKind::User };
    get(c, upd.kind, &upd.id, load).await?.ok_or_else(|| StoreError::Internal("updated row vanished".into()))
}

pub async fn delete(
    c: &impl GenericClient,
    kind: ResourceKind,
    id: &str,
    expected_version: Option<u64>,
    now: &str,
) -> Result<(), StoreError> {
    let cur = current_for_update(c, kind, id).await?;
    if let Some(expected) = expected_version
        && expected != cur.version
    {
        return Err(StoreError::VersionMismatch { expected, current: cur.version });
    }
    cached_execute(
        c,
        "UPDATE resources SET version = version + 1, last_modified = $2
         WHERE seq IN (SELECT group_seq FROM group_members WHERE member_seq = $1)",
        &[&cur.seq, &now],
    )
    .await?;
    cached_execute(c, "DELETE FROM resources WHERE seq = $1", &[&cur.seq]).await?;
    let old = &cur.data;
    let mut tombstone = Map::new();
    for k in ["userName", "externalId", "displayName"] {
        if let Some(v) = old.get(k) {
            tombstone.insert(k.to_string(), v.clone());
        }
    }
    if kind == ResourceKind::User {
        cached_execute(
            c,
            "INSERT INTO deleted_accounts (resource_id, user_name_ci, external_id, deleted_at) VALUES ($1, $2, $3, $4)",
            &[
                &id,
                &old.get("userName").and_then(Value::as_str).map(fold_case),
                &old.get("externalId").and_then(Value::as_str),
                &now,
            ],
        )
        .await?;
    }
    let payload = OutboxPayload { tombstone: Some(tombstone), deprovision: true, ..OutboxPayload::default() };
    super::outbox::enqueue(c, kind, id, ChangeOp::Delete, cur.version + 1, &payload, now).await?;
    Ok(())
}

fn inactive(attrs: &Value) -> bool {
    attrs.get("active") == Some(&Value::Bool(false))
}

async fn cancel_held(c: &impl GenericClient, resource_id: &str, reason: &str, now: &str) -> Result<u64, StoreError> {
    let n = cached_execute(
        c,
        "UPDATE outbox SET state = 'done', done_at = $3, last_error = $2 WHERE resource_id = $1 AND state = 'held'",
        &[&resource_id, &reason, &now],
    )
    .await?;
    if n > 0 {
        tracing::info!(resource = resource_id, rows = n, reason, "held deprovisioning cancelled");
    }
    Ok(n)
}

async fn cancel_held_deletes_of(
    c: &impl GenericClient,
    user_name_ci: &str,
    new_id: &str,
    now: &str,
) -> Result<(), StoreError> {
    let held = cached_query(
        c,
        "SELECT resource_id, payload::text FROM outbox
             WHERE state = 'held' AND op = 'delete' AND resource_kind = 'User'",
        &[],
    )
    .await?;
    for row in held {
        let (old_id, payload): (String, String) = (row.get(0), row.get(1));
        let p = OutboxPayload::from_json(&payload).unwrap_or_default();
        let name = p.tombstone.as_ref().and_then(|t| t.get("userName")).and_then(Value::as_str).map(fold_case);
        if name.as_deref() == Some(user_name_ci) {
            cancel_held(c, &old_id, &format!("cancelled: the IdP re-created the user as {new_id} while held"), now)
                .await?;
            cached_execute(c, "DELETE FROM id_map WHERE resource_id = $1", &[&old_id]).await?;
        }
    }
    Ok(())
}

fn row_to_resource(r: &Row) -> (i64, Resource) {
    let kind: String = r.get(2);
    let attrs = match r.get::<_, Value>(6) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    (
        r.get(0),
        Resource {
            kind: ResourceKind::parse(&kind).unwrap_or(ResourceKind::User),
            id: r.get(1),
            meta: Meta { version: r.get::<_, i64>(3) as u64, created: r.get(4), last_modified: r.get(5) },
            attrs,
            members: None,
            groups: None,
        },
    )
}

const MEMBER_DISPLAY: &str = "coalesce(gm.display, m.data ->> 'displayName', m.data ->> 'userName')";

/// Members and groups for a page of resources: one query per resource type.
async fn load_related_page(
    c: &impl GenericClient,
    rows: Vec<(i64, Resource)>,
    load: Load,
) -> Result<Vec<Resource>, StoreError> {
    let seqs_of =
        |kind: ResourceKind| -> Vec<i64> { rows.iter().filter(|(_, r)| r.kind == kind).map(|(s, _)| *s).collect() };
    let mut members: HashMap<i64, Vec<Member>> = HashMap::new();
    let mut groups: HashMap<i64, Vec<GroupRef>> = HashMap::new();
    let group_seqs = if load.members { seqs_of(ResourceKind::Group) } else { Vec::new() };
    if !group_seqs.is_empty() {
        let found = cached_query(
            c,
            &format!(
                "SELECT gm.group_seq, m.id, m.kind, {MEMBER_DISPLAY}
                     FROM group_members gm JOIN resources m ON m.seq = gm.member_seq
                     WHERE gm.group_seq = ANY($1) ORDER BY gm.group_seq, gm.member_seq"
            ),
            &[&group_seqs],
        )
        .await?;
        for r in found {
            let k: String = r.get(2);
            members.entry(r.get(0)).or_default().push(Member {
                id: r.get(1),
                kind: ResourceKind::parse(&k).unwrap_or(ResourceKind::User),
                display: r.get(3),
            });
        }
    }
    let user_seqs = if load.groups { seqs_of(ResourceKind::User) } else { Vec::new() };
    if !user_seqs.is_empty() {
        let found = cached_query(
            c,
            "SELECT gm.member_seq, g.id, g.data ->> 'displayName'
                 FROM group_members gm JOIN resources g ON g.seq = gm.group_seq
                 WHERE gm.member_seq = ANY($1) ORDER BY gm.member_seq, g.seq",
            &[&user_seqs],
        )
        .await?;
        for r in found {
            groups.entry(r.get(0)).or_default().push(GroupRef { id: r.get(1), display: r.get(2) });
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

pub async fn get(
    c: &impl GenericClient,
    kind: ResourceKind,
    id: &str,
    load: Load,
) -> Result<Option<Resource>, StoreError> {
    let row = cached_query_opt(
        c,
        &format!("SELECT {SELECT_COLS} FROM resources r WHERE r.id = $1 AND r.kind = $2"),
        &[&id, &kind.as_str()],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut page = load_related_page(c, vec![row_to_resource(&row)], load).await?;
    Ok(page.pop())
}

/// Resources of `kind` by id, without members or groups (as SQLite's `get_many`).
pub async fn get_many(
    c: &impl GenericClient,
    kind: ResourceKind,
    ids: &[&str],
) -> Result<HashMap<String, Resource>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {SELECT_COLS} FROM resources r WHERE r.id = ANY($1) AND r.kind = $2"),
            &[&ids, &kind.as_str()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (_, res) = row_to_resource(r);
            (res.id.clone(), res)
        })
        .collect())
}

/// One resource type's share of a list (see `store::resources::Part`).
pub struct Part<'a> {
    pub kind: ResourceKind,
    pub filter: Option<&'a Filter>,
    pub sort_path: Option<&'a AttrPath>,
}

/// A page of the resources matching any of `parts`, as `store::resources::list` returns it
/// (the same order, totals and cursor; see there).
pub async fn list(
    c: &impl GenericClient,
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
    let mut where_params: Vec<PgValue> = Vec::new();
    let mut conds = Vec::with_capacity(parts.len());
    for part in parts {
        where_params.push(PgValue::Text(part.kind.as_str().to_string()));
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
    // Sorted: by the sort key (computed once per row in a lateral subquery, so its
    // parameters are bound once), missing values last (ascending) or first (descending),
    // ties by creation order, all reversed when descending. Unsorted lists of several types
    // go in the order of the parts, then creation order.
    let mut key_params: Vec<PgValue> = Vec::new();
    let mut order_params: Vec<PgValue> = Vec::new();
    let (key_sql, order_sql) = match descending {
        Some(desc) => {
            let arms: Vec<(ResourceKind, filter_sql::Sql)> = parts
                .iter()
                .filter_map(|part| part.sort_path.map(|p| (part.kind, filter_sql::sort_key(part.kind, p))))
                .collect();
            let key = match arms.as_slice() {
                [] => "NULL::jsonb".to_string(),
                [(_, k)] if parts.len() == 1 => {
                    key_params.extend(k.params.iter().cloned());
                    k.text.clone()
                }
                _ => {
                    let mut case = String::from("CASE r.kind");
                    for (kind, k) in &arms {
                        key_params.push(PgValue::Text(kind.as_str().to_string()));
                        key_params.extend(k.params.iter().cloned());
                        case.push_str(&format!(" WHEN ? THEN {}", k.text));
                    }
                    case.push_str(" END");
                    case
                }
            };
            let dir = if desc { " DESC" } else { "" };
            let order = format!(
                "(sk.v IS NULL){dir}, scimsync_sort_class(sk.v){dir}, scimsync_sort_num(sk.v){dir}, \
                 scimsync_sort_text(sk.v) COLLATE \"C\"{dir}, r.seq{dir}"
            );
            (key, order)
        }
        None if parts.len() == 1 => ("NULL::jsonb".to_string(), "r.seq".to_string()),
        None => {
            let mut case = String::from("CASE r.kind");
            for (i, part) in parts.iter().enumerate() {
                order_params.push(PgValue::Text(part.kind.as_str().to_string()));
                case.push_str(&format!(" WHEN ? THEN {i}"));
            }
            case.push_str(" END, r.seq");
            ("NULL::jsonb".to_string(), case)
        }
    };
    let plain = match parts {
        [p] if p.filter.is_none() && descending.is_none() => Some(p.kind),
        _ => None,
    };
    let refs = |v: &[PgValue]| -> Vec<PgValue> { v.to_vec() };
    let total: i64 = match plain {
        Some(kind) => cached_query_one(
            c,
            "SELECT coalesce(sum(n), 0)::bigint FROM rank_shards WHERE kind = $1",
            &[&kind.as_str()],
        )
        .await?
        .get(0),
        None => {
            let sql = filter_sql::number(&format!("SELECT count(*) FROM resources r WHERE {where_sql}"));
            c.query_one(&sql, &params(&where_params)).await?.get(0)
        }
    };
    let mut resources = Vec::new();
    let mut next_after = None;
    match (position, after) {
        (_, Some(after)) => {
            let mut p = refs(&where_params);
            p.push(PgValue::Int(after));
            p.push(PgValue::Int(count as i64 + 1));
            let sql = filter_sql::number(&format!(
                "SELECT {SELECT_COLS} FROM resources r WHERE ({where_sql}) AND r.seq > ? ORDER BY r.seq LIMIT ?"
            ));
            let mut rows: Vec<(i64, Resource)> =
                c.query(&sql, &params(&p)).await?.iter().map(row_to_resource).collect();
            if rows.len() > count as usize {
                rows.truncate(count as usize);
                next_after = rows.last().map(|(seq, _)| *seq);
            }
            resources = load_related_page(c, rows, load).await?;
        }
        (Position::Offset(offset), None) if count > 0 && (offset as i64) < total => {
            let rows: Vec<(i64, Resource)> = match plain {
                Some(kind) => {
                    let (from_seq, skip) = seek(c, kind, offset).await?;
                    let mut p = refs(&where_params);
                    p.extend([PgValue::Int(from_seq), PgValue::Int(count as i64), PgValue::Int(skip as i64)]);
                    let sql = filter_sql::number(&format!(
                        "SELECT {SELECT_COLS} FROM resources r WHERE {where_sql} AND r.seq >= ? ORDER BY r.seq \
                         LIMIT ? OFFSET ?"
                    ));
                    c.query(&sql, &params(&p)).await?.iter().map(row_to_resource).collect()
                }
                None => {
                    // The placeholders in text order: the key's, the WHERE's, ORDER BY's, the page's.
                    let mut p = key_params;
                    p.extend(refs(&where_params));
                    p.extend(order_params);
                    p.extend([PgValue::Int(count as i64), PgValue::Int(offset as i64)]);
                    let sql = filter_sql::number(&format!(
                        "SELECT {SELECT_COLS} FROM resources r CROSS JOIN LATERAL (SELECT {key_sql} AS v) sk \
                         WHERE {where_sql} ORDER BY {order_sql} LIMIT ? OFFSET ?"
                    ));
                    c.query(&sql, &params(&p)).await?.iter().map(row_to_resource).collect()
                }
            };
            resources = load_related_page(c, rows, load).await?;
        }
        _ => {}
    }
    Ok(Page { total: total as u64, resources, next_after })
}

fn params(values: &[PgValue]) -> Params<'_> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// Where the resource at `offset` of `kind` is: the first seq of the bucket of `rank_shards`
/// it falls in, and how many rows of that bucket come before it.
async fn seek(c: &impl GenericClient, kind: ResourceKind, offset: u64) -> Result<(i64, u64), StoreError> {
    let rows = cached_query(
        c,
        "SELECT bucket * 2048, sum(n)::bigint FROM rank_shards WHERE kind = $1 GROUP BY bucket ORDER BY bucket",
        &[&kind.as_str()],
    )
    .await?;
    let mut before = 0u64;
    let mut at = (0i64, offset);
    for r in rows {
        let (first, n): (i64, i64) = (r.get(0), r.get(1));
        let n = n.max(0) as u64;
        at = (first, offset - before);
        if before + n > offset {
            break;
        }
        before += n;
    }
    Ok(at)
}

/// A resource's name for the audit log (userName, else displayName), read before a delete.
pub async fn resource_name(c: &impl GenericClient, id: &str) -> Result<Option<String>, StoreError> {
    Ok(cached_query_opt(
        c,
        "SELECT coalesce(data ->> 'userName', data ->> 'displayName') FROM resources WHERE id = $1",
        &[&id],
    )
    .await?
    .and_then(|r| r.get(0)))
}

/// An audit record (see `store::audit::insert`).
pub async fn insert_audit(
    c: &impl GenericClient,
    a: &NewAudit,
    name: Option<&str>,
    version: Option<u64>,
    now: &str,
) -> Result<(), StoreError> {
    cached_execute(
        c,
        "INSERT INTO audit_log (at, actor, token_id, method, resource_type, resource_id, resource_name, version,
                                request_id, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &now,
            &a.actor,
            &a.token_id,
            &a.method,
            &a.resource_type,
            &a.resource_id,
            &name,
            &version.map(|v| v as i64),
            &a.request_id,
            &a.summary.to_string(),
        ],
    )
    .await?;
    Ok(())
}
