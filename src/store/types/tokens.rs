//! API tokens as callers see them. A token is generated here (the same way for every
//! backend) and only its SHA-256 is stored; the secret is shown once.

use sha2::{Digest, Sha256};

use super::StoreError;

pub const TOKEN_PREFIX: &str = "scimsync_";

/// A freshly created token: the only time the secret exists outside the IdP's config.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub label: String,
    pub token: String,
}

/// A new token with the hash the store keeps.
#[derive(Debug, Clone)]
pub struct GeneratedToken {
    pub public: NewToken,
    pub hash: Vec<u8>,
}

/// What the store knows about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub label: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub fn generate_token(label: &str) -> Result<GeneratedToken, StoreError> {
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| StoreError::Internal(format!("no randomness: {e}")))?;
    getrandom::fill(&mut secret).map_err(|e| StoreError::Internal(format!("no randomness: {e}")))?;
    let id = hex::encode(id);
    let token = format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret));
    Ok(GeneratedToken { hash: token_hash(&token), public: NewToken { id, label: label.to_string(), token } })
}

/// The public id a presented token names (`scimsync_<id>_<secret>`), if it has the form.
pub fn presented_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(TOKEN_PREFIX)?;
    rest.split_once('_').map(|(id, _)| id)
}

/// Whether `presented` is the token stored as `hash`, compared in constant time, so timing
/// tells an attacker nothing about how much of a guess was right.
pub fn token_matches(presented: &str, hash: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    token_hash(presented).ct_eq(hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_prefixed_and_distinct() {
        let a = generate_token("a").unwrap();
        let b = generate_token("b").unwrap();
        assert!(a.public.token.starts_with("scimsync_"));
        // prefix + 8 hex id + '_' + 64 hex (256 bits)
        assert_eq!(a.public.token.len(), TOKEN_PREFIX.len() + 8 + 1 + 64);
        assert_ne!(a.public.token, b.public.token);
        assert_eq!(a.hash, token_hash(&a.public.token));
        assert_eq!(presented_id(&a.public.token), Some(a.public.id.as_str()));
        assert!(token_matches(&a.public.token, &a.hash));
        assert!(!token_matches(&b.public.token, &a.hash));
        assert_eq!(presented_id("scimsync_nounderscore"), None);
        assert_eq!(presented_id("Bearer x"), None);
    }
}
