//! Transaction-scoped advisory locks: how writes on several connections (and several
//! daemons on one database) that must see each other's results take turns.
//!
//! Keys are the two-`int4` form: the configured schema's hash (`hashtext(current_schema())`,
//! so daemons on other schemas of the same database never wait for these) and a fixed
//! number per purpose. The migrations' session lock uses the one-`bigint` form, a separate
//! key space, and so does the provisioning policy's lock (`policy_facts.rs`, a hash of its
//! prefix and the schema).

use deadpool_postgres::GenericClient;

use crate::store::types::StoreError;

/// What a lock serialises. The numbers are part of the on-database protocol between
/// daemons of different versions: never reuse one for something else.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// The deletion guard's count against the rows it lets through (see
    /// `outbox::claim`): a claim holds it exclusively, a transaction queueing a
    /// deprovisioning shares it.
    DeletionGuard = 1,
}

/// Wait for `purpose`'s lock alone, until the transaction ends.
pub async fn exclusive(c: &impl GenericClient, purpose: Purpose) -> Result<(), StoreError> {
    c.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()), $1)", &[&(purpose as i32)]).await?;
    Ok(())
}

/// Wait for `purpose`'s lock alongside other sharers, until the transaction ends.
pub async fn shared(c: &impl GenericClient, purpose: Purpose) -> Result<(), StoreError> {
    c.execute("SELECT pg_advisory_xact_lock_shared(hashtext(current_schema()), $1)", &[&(purpose as i32)]).await?;
    Ok(())
}
