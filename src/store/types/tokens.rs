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
