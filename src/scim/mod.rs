//! SCIM 2.0 protocol, pure: RFC 7643 schemas and resource representation, RFC 7644 filter
//! and path grammar, PATCH semantics, list/query parameters, discovery documents, IdP
//! quirk normalisation and §3.12 errors.
//!
//! Owns: turning wire JSON and query text into `model` types and back. Must not touch:
//! the database, HTTP servers or clients, async I/O, the store, the config.

pub mod bulk;
pub mod cursor;
pub mod error;
pub mod filter;
pub mod list;
pub mod patch;
pub mod resource;
pub mod schema;

pub use error::{ScimError, ScimType};
