//! API tokens on PostgreSQL: the statements of the SQLite backend's `tokens` module. Tokens
//! are generated, parsed and compared by `store::types` (the same for both backends); only
//! their hashes are stored.

use deadpool_postgres::GenericClient;

use crate::store::types::{GeneratedToken, StoreError, TokenInfo, presented_id, token_matches};

pub async fn insert(c: &impl GenericClient, t: &GeneratedToken, now: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tokens (id, label, hash, created_at) VALUES ($1, $2, $3, $4)",
        &[&t.public.id, &t.public.label, &t.hash, &now],
    )
    .await?;
    Ok(())
}

pub async fn revoke(c: &impl GenericClient, id: &str, now: &str) -> Result<usize, StoreError> {
    Ok(c.execute("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &now]).await?
        as usize)
}

pub async fn list(c: &impl GenericClient) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = c.query("SELECT id, label, created_at, revoked_at FROM tokens ORDER BY created_at, id", &[]).await?;
    Ok(rows
        .iter()
        .map(|r| TokenInfo { id: r.get(0), label: r.get(1), created_at: r.get(2), revoked_at: r.get(3) })
        .collect())
}

/// The active token `presented` is, looked up by its public id and compared in constant time.
pub async fn verify(c: &impl GenericClient, presented: &str) -> Result<Option<TokenInfo>, StoreError> {
    let Some(id) = presented_id(presented) else { return Ok(None) };
    let Some(r) =
        c.query_opt("SELECT id, label, created_at, revoked_at, hash FROM tokens WHERE id = $1", &[&id]).await?
    else {
        return Ok(None);
    };
    let info = TokenInfo { id: r.get(0), label: r.get(1), created_at: r.get(2), revoked_at: r.get(3) };
    let stored: Vec<u8> = r.get(4);
    Ok((token_matches(presented, &stored) && info.revoked_at.is_none()).then_some(info))
}
