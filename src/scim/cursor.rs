//! Cursor-based pagination (RFC 9865, which updates RFC 7643 and RFC 7644): the `cursor`
//! query parameter and the `nextCursor` of a list response.
//!
//! A cursor names a position in a list in creation order: "after the resource created
//! `seq`-th". New resources are created later and deleted ones leave no hole to fall into,
//! so a walk by cursor returns every resource that exists for the whole walk exactly once,
//! whatever is created or deleted meanwhile (index-based paging, RFC 7644 §3.4.2.4, shifts).
//!
//! The value is opaque to the client and made of unreserved characters only (RFC 9865 §2,
//! RFC 3986 §2.3): lowercase hex of a version byte, the position, the time it was issued,
//! a fingerprint of the query it belongs to (resource type and filter), and a checksum. It
//! carries no secret: a client that forges one can only move its own position in a list it
//! may read anyway. A cursor of another query, or one that does not decode, is
//! `400 invalidCursor` (RFC 9865 §2.1); one older than `cursorTimeout` is `400
//! expiredCursor` (§2.3).

use sha2::{Digest, Sha256};

use super::ScimError;
use crate::model::ResourceKind;

const VERSION: u8 = 1;
const BODY: usize = 1 + 8 + 8 + 8;
const CHECK: usize = 4;

/// How long a cursor stays valid between page requests, advertised as the
/// `ServiceProviderConfig`'s `pagination.cursorTimeout` (RFC 9865 §4).
pub const CURSOR_TIMEOUT_SECONDS: i64 = 3600;

/// What a cursor says, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The creation order (`seq`) of the last resource the previous page held; 0 for the
    /// first page.
    pub after: i64,
}

/// The fingerprint of a query a cursor belongs to: the resource type and the filter as sent
/// (trimmed). `count` may change between pages (each page is its own LIMIT).
pub fn fingerprint(kind: ResourceKind, filter: Option<&str>) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(filter.map(str::trim).unwrap_or("").as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

fn check(body: &[u8]) -> [u8; CHECK] {
    let d = Sha256::digest(body);
    let mut out = [0u8; CHECK];
    out.copy_from_slice(&d[..CHECK]);
    out
}

/// The cursor of the page after the resource `after`, issued at `now` (Unix seconds).
pub fn encode(after: i64, fingerprint: [u8; 8], now: i64) -> String {
    let mut b = Vec::with_capacity(BODY + CHECK);
    b.push(VERSION);
    b.extend_from_slice(&after.to_be_bytes());
    b.extend_from_slice(&now.to_be_bytes());
    b.extend_from_slice(&fingerprint);
    let c = check(&b);
    b.extend_from_slice(&c);
    hex::encode(b)
}

/// Read a `cursor` parameter (RFC 9865 §2): empty asks for the first page; otherwise it must
/// be a cursor this server issued for the same query within the timeout.
pub fn decode(text: &str, fingerprint: [u8; 8], now: i64) -> Result<Cursor, ScimError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Cursor { after: 0 });
    }
    let invalid = || {
        ScimError::invalid_cursor(
            "the cursor is not one this server issued: send an empty cursor for the first page, then the \
             nextCursor of the previous page",
        )
    };
    let b = hex::decode(text).map_err(|_| invalid())?;
    if b.len() != BODY + CHECK || b[0] != VERSION || check(&b[..BODY]) != b[BODY..] {
        return Err(invalid());
    }
    let int = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let (after, issued) = (int(1), int(9));
    if b[17..25] != fingerprint {
        return Err(ScimError::invalid_cursor(
            "the cursor belongs to another query (resource type or filter): keep the query the same while paging",
        ));
    }
    if after < 0 {
        return Err(invalid());
    }
    if now - issued > CURSOR_TIMEOUT_SECONDS {
        return Err(ScimError::expired_cursor(format!(
            "the cursor has expired (cursorTimeout is {CURSOR_TIMEOUT_SECONDS} s): start again with an empty cursor"
        )));
    }
    Ok(Cursor { after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::error::ScimType;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn round_trip_and_refusals() {
        let fp = fingerprint(ResourceKind::User, Some("userName sw \"a\""));
        let c = encode(42, fp, NOW);
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric()), "unreserved characters only: {c}");
        assert_eq!(decode(&c, fp, NOW + 10).unwrap(), Cursor { after: 42 });
        assert_eq!(decode("", fp, NOW).unwrap(), Cursor { after: 0 }, "empty: the first page");
        let other = fingerprint(ResourceKind::User, Some("userName sw \"b\""));
        let e = decode(&c, other, NOW).unwrap_err();
        assert_eq!((e.status, e.scim_type), (400, Some(ScimType::InvalidCursor)));
        assert_ne!(fingerprint(ResourceKind::Group, None), fingerprint(ResourceKind::User, None));
        let e = decode(&c, fp, NOW + CURSOR_TIMEOUT_SECONDS + 1).unwrap_err();
        assert_eq!((e.status, e.scim_type), (400, Some(ScimType::ExpiredCursor)));
        for bad in ["zz", "00", "abc", &c[..c.len() - 2], &format!("{c}00")] {
            let e = decode(bad, fp, NOW).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidCursor), "{bad}");
        }
        // One flipped digit fails the checksum.
        let mut flipped = c.clone().into_bytes();
        flipped[5] = if flipped[5] == b'0' { b'1' } else { b'0' };
        assert!(decode(std::str::from_utf8(&flipped).unwrap(), fp, NOW).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Any text is a first page, a cursor, or a 400 with invalidCursor/expiredCursor:
        /// never a panic, never another error.
        #[test]
        fn any_text_decodes_or_is_refused(text in ".{0,80}", hexy in "[0-9a-f]{0,120}") {
            let fp = fingerprint(ResourceKind::Group, None);
            for t in [text.as_str(), hexy.as_str()] {
                match decode(t, fp, NOW) {
                    Ok(_) => {}
                    Err(e) => prop_assert!(matches!(e.scim_type, Some(ScimType::InvalidCursor | ScimType::ExpiredCursor))),
                }
            }
        }

        #[test]
        fn every_position_round_trips(after in 0i64..i64::MAX, age in 0i64..CURSOR_TIMEOUT_SECONDS) {
            let fp = fingerprint(ResourceKind::User, None);
            prop_assert_eq!(decode(&encode(after, fp, NOW), fp, NOW + age).unwrap(), Cursor { after });
        }
    }
}
