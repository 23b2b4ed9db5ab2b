//! API tokens: generated here, stored as SHA-256 hashes, verified in constant time.
//!
//! A token reads `scimsync_<id>_<secret>`: `<id>` (8 hex digits) is public and names the
//! token in logs and lists; `<secret>` is 256 random bits. Only the hash of the whole token
//! is stored, so a stolen database does not yield a working token.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::store::types::{GeneratedToken, TokenInfo, presented_id, token_matches};

pub fn insert(conn: &Connection, t: &GeneratedToken, now: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO tokens (id, label, hash, created_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![t.public.id, t.public.label, t.hash, now])?;
    Ok(())
}

pub fn revoke(conn: &Connection, id: &str, now: &str) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute(params![id, now])?)
}

pub fn list(conn: &Connection) -> Result<Vec<TokenInfo>, StoreError> {
    let mut st = conn.prepare_cached("SELECT id, label, created_at, revoked_at FROM tokens ORDER BY created_at, id")?;
    let rows = st.query_map([], |r| {
        Ok(TokenInfo { id: r.get(0)?, label: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored row of the token `presented` names by its public id, active or not: its
/// details and the hash to compare with. `None` when no token has that id.
pub fn lookup(conn: &Connection, presented: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StoreError> {
    let Some(id) = presented_id(presented) else { return Ok(None) };
    Ok(conn
        .prepare_cached("SELECT id, label, created_at, revoked_at, hash FROM tokens WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                TokenInfo { id: r.get(0)?, label: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? },
                r.get::<_, Vec<u8>>(4)?,
            ))
        })
        .optional()?)
}

/// Whether `presented` is the active token stored as `row`. The token is looked up by its
/// public id and the hashes compared in constant time, so timing tells an attacker nothing
/// about how much of a guess was right.
pub fn check(presented: &str, row: &(TokenInfo, Vec<u8>)) -> Option<TokenInfo> {
    let (info, stored) = row;
    (token_matches(presented, stored) && info.revoked_at.is_none()).then(|| info.clone())
}
