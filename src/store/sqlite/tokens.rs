//! API tokens: generated here, stored as SHA-256 hashes, verified in constant time.
//!
//! A token reads `scimsync_<id>_<secret>`: `<id>` (8 hex digits) is public and names the
//! token in logs and lists; `<secret>` is 256 random bits. Only the hash of the whole token
//! is stored, so a stolen database does not yield a working token.

use rusqlite::{Connection, OptionalExtension, params};
use subtle::ConstantTimeEq;

use super::StoreError;
use crate::store::types::{GeneratedToken, TOKEN_PREFIX, TokenInfo, token_hash};

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

pub fn verify(conn: &Connection, presented: &str) -> Result<Option<TokenInfo>, StoreError> {
    // Look the token up by its public id, then compare hashes in constant time, so timing
    // tells an attacker nothing about how much of a guess was right.
    let Some(rest) = presented.strip_prefix(TOKEN_PREFIX) else { return Ok(None) };
    let Some((id, _)) = rest.split_once('_') else { return Ok(None) };
    let row = conn
        .prepare_cached("SELECT id, label, created_at, revoked_at, hash FROM tokens WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                TokenInfo { id: r.get(0)?, label: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? },
                r.get::<_, Vec<u8>>(4)?,
            ))
        })
        .optional()?;
    let Some((info, stored)) = row else { return Ok(None) };
    let ok: bool = token_hash(presented).ct_eq(&stored).into();
    Ok((ok && info.revoked_at.is_none()).then_some(info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::generate_token;

    #[test]
    fn generated_tokens_are_long_prefixed_and_distinct() {
        let a = generate_token("a").unwrap();
        let b = generate_token("b").unwrap();
        assert!(a.public.token.starts_with("scimsync_"));
        // prefix + 8 hex id + '_' + 64 hex (256 bits)
        assert_eq!(a.public.token.len(), TOKEN_PREFIX.len() + 8 + 1 + 64);
        assert_ne!(a.public.token, b.public.token);
        assert_eq!(a.hash, token_hash(&a.public.token));
    }
}
