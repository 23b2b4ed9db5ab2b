//! A secret string (tokens, passwords, signing keys) that never prints: shared by the
//! configuration and the targets that use the secrets.
//!
//! Owns: the newtype and its redacted `Debug` and serialisation. Must not touch: anything else.

use serde::{Deserialize, Serialize};

/// A secret string: never printed. `Debug` and serialisation show `<redacted>` (empty stays
/// empty, so the defaults layer does not invent a value).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "<redacted>" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}
