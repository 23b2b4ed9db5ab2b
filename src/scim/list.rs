//! Query parameters of list and search requests (RFC 7644 §3.4.2, §3.4.3) and the
//! `ListResponse` envelope (RFC 7644 §3.4.2).

use serde_json::{Map, Value, json};

use super::schema::{self, LIST_RESPONSE};
use super::{ScimError, filter};
use crate::model::ResourceKind;
use crate::model::query::{AttrPath, Sort};

/// What an IdP asked for, from the query string of a GET or the body of a `.search` POST.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub filter: Option<String>,
    /// 1-based (RFC 7644 §3.4.2.4); values below 1 are treated as 1.
    pub start_index: u64,
    /// `None`: the server's default page size.
    pub count: Option<u32>,
    pub attributes: Vec<String>,
    pub excluded_attributes: Vec<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    /// RFC 9865 §2: cursor paging was asked for (`Some("")`: the first page).
    pub cursor: Option<String>,
    /// Whether `startIndex` was sent (a request may not page both ways).
    pub start_index_given: bool,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Parse a count: negative counts mean 0 (RFC 7644 §3.4.2.4), and a count larger than we
/// serve is capped later by the caller.
fn parse_count(s: &str) -> Result<u32, ScimError> {
    let n: i64 =
        s.trim().parse().map_err(|_| ScimError::invalid_value(format!("count must be an integer, got {s:?}")))?;
    Ok(n.clamp(0, u32::MAX as i64) as u32)
}

fn parse_start(s: &str) -> Result<u64, ScimError> {
    let n: i64 =
        s.trim().parse().map_err(|_| ScimError::invalid_value(format!("startIndex must be an integer, got {s:?}")))?;
    Ok(n.max(1) as u64)
}

impl ListQuery {
    /// From decoded query-string pairs. Parameter names are matched case-insensitively;
    /// unknown parameters are ignored (Entra appends `aadOptscim062020` to every URL).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ScimError> {
        let mut q = ListQuery { start_index: 1, ..Default::default() };
        for (k, v) in pairs {
            match k.to_ascii_lowercase().as_str() {
                "filter" => q.filter = Some(v.to_string()),
                "startindex" => {
                    q.start_index = parse_start(v)?;
                    q.start_index_given = true;
                }
                "count" => q.count = Some(parse_count(v)?),
                "cursor" => q.cursor = Some(v.to_string()),
                "attributes" => q.attributes = split_list(v),
                "excludedattributes" => q.excluded_attributes = split_list(v),
                "sortby" => q.sort_by = Some(v.to_string()),
                "sortorder" => q.sort_order = Some(v.to_string()),
                _ => {}
            }
        }
        Ok(q)
    }

    /// From a `SearchRequest` body (RFC 7644 §3.4.3).
    pub fn from_search_body(body: &Value) -> Result<Self, ScimError> {
        let obj =
            body.as_object().ok_or_else(|| ScimError::invalid_syntax("the search request must be a JSON object"))?;
        let mut q = ListQuery { start_index: 1, ..Default::default() };
        for (k, v) in obj {
            let key = k.to_ascii_lowercase();
            let as_text = || match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            let as_list = || -> Result<Vec<String>, ScimError> {
                match v {
                    Value::String(s) => Ok(split_list(s)),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| ScimError::invalid_value(format!("{k} must list attribute names")))
                        })
                        .collect(),
                    _ => Err(ScimError::invalid_value(format!("{k} must be a list of attribute names"))),
                }
            };
            match key.as_str() {
                "filter" => {
                    q.filter = Some(as_text().ok_or_else(|| ScimError::invalid_value("filter must be a string"))?)
                }
                "startindex" => {
                    q.start_index = parse_start(&as_text().unwrap_or_default())?;
                    q.start_index_given = true;
                }
                "count" => q.count = Some(parse_count(&as_text().unwrap_or_default())?),
                "cursor" => {
                    q.cursor = Some(match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        _ => return Err(ScimError::invalid_cursor("cursor must be a string")),
                    })
                }
                "attributes" => q.attributes = as_list()?,
                "excludedattributes" => q.excluded_attributes = as_list()?,
                "sortby" => q.sort_by = as_text(),
                "sortorder" => q.sort_order = as_text(),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `sortOrder` (RFC 7644 §3.4.2.3): `ascending` (the default when absent) or `descending`,
/// matched case-insensitively like the other SCIM keywords; `true` means descending. The
/// RFC allows no other value, so anything else is `400 invalidValue` rather than silently
/// ascending.
pub fn parse_sort_order(text: Option<&str>) -> Result<bool, ScimError> {
    match text.map(str::trim) {
        None => Ok(false),
        Some(t) if t.is_empty() || t.eq_ignore_ascii_case("ascending") => Ok(false),
        Some(t) if t.eq_ignore_ascii_case("descending") => Ok(true),
        Some(t) => {
            Err(ScimError::invalid_value(format!("sortOrder must be \"ascending\" or \"descending\", got {t:?}")))
        }
    }
}

/// `sortBy` (RFC 7644 §3.4.2.3): an attribute path in the notation of §3.10, resolved
/// against `kind`'s schema ([`schema::resolve_sort`]). A path that does not parse, names
/// no attribute of `kind`, or names a complex attribute without a sub-attribute is
/// `400 invalidValue`: §3.12 has no `scimType` for sorting, and the value of the parameter
/// is what the server cannot use.
pub fn parse_sort_by(kind: ResourceKind, text: &str) -> Result<AttrPath, ScimError> {
    let parsed = filter::parse_path(text.trim())
        .map_err(|e| ScimError::invalid_value(format!("sortBy {text:?} is not an attribute path: {e}")))?;
    if parsed.filter.is_some() {
        return Err(ScimError::invalid_value(format!(
            "sortBy {text:?} must name an attribute, not filter one with [...]"
        )));
    }
    let mut path = parsed.attr;
    schema::resolve_sort(kind, &mut path)?;
    Ok(path)
}

/// `sortBy` and `sortOrder` together; `None` when no `sortBy` was given (then `sortOrder`,
/// "the order in which the sortBy parameter is applied", is only checked for validity).
pub fn parse_sort(
    kind: ResourceKind,
    sort_by: Option<&str>,
    sort_order: Option<&str>,
) -> Result<Option<Sort>, ScimError> {
    let descending = parse_sort_order(sort_order)?;
    match sort_by.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => Ok(Some(Sort { path: parse_sort_by(kind, text)?, descending })),
    }
}

/// The `ListResponse` envelope. `startIndex` echoes the request's (1-based).
pub fn list_response(total: u64, start_index: u64, resources: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([LIST_RESPONSE]));
    m.insert("totalResults".into(), json!(total));
    m.insert("startIndex".into(), json!(start_index));
    m.insert("itemsPerPage".into(), json!(resources.len()));
    m.insert("Resources".into(), Value::Array(resources));
    Value::Object(m)
}

/// The `ListResponse` of a page asked for by cursor (RFC 9865 §2.2): `nextCursor` when there
/// are more results (absent on the last page), no `startIndex`; `totalResults` stays exact.
/// `previousCursor` is OPTIONAL and not offered: walks go forward.
pub fn cursor_response(total: u64, next_cursor: Option<String>, resources: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([LIST_RESPONSE]));
    m.insert("totalResults".into(), json!(total));
    m.insert("itemsPerPage".into(), json!(resources.len()));
    if let Some(c) = next_cursor {
        m.insert("nextCursor".into(), Value::String(c));
    }
    m.insert("Resources".into(), Value::Array(resources));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_case_insensitive_and_lenient() {
        let q = ListQuery::from_pairs([
            ("Filter", "userName eq \"a\""),
            ("startIndex", "0"),
            ("COUNT", "-5"),
            ("aadOptscim062020", ""),
            ("excludedAttributes", "members, meta"),
        ])
        .unwrap();
        assert_eq!(q.filter.as_deref(), Some("userName eq \"a\""));
        assert_eq!(q.start_index, 1);
        assert_eq!(q.count, Some(0));
        assert_eq!(q.excluded_attributes, vec!["members", "meta"]);
    }

    #[test]
    fn bad_numbers_are_invalid_value() {
        let e = ListQuery::from_pairs([("count", "ten")]).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidValue));
        let e = ListQuery::from_pairs([("startIndex", "x")]).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn search_body() {
        let q = ListQuery::from_search_body(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "attributes": ["displayName", "userName"],
            "filter": "displayName sw \"smith\"",
            "startIndex": 1,
            "count": 10
        }))
        .unwrap();
        assert_eq!(q.count, Some(10));
        assert_eq!(q.attributes, vec!["displayName", "userName"]);
        assert!(ListQuery::from_search_body(&json!([])).is_err());
    }

    #[test]
    fn sort_order_is_case_insensitive_and_strict() {
        assert!(!parse_sort_order(None).unwrap());
        assert!(!parse_sort_order(Some("Ascending")).unwrap());
        assert!(parse_sort_order(Some("DESCENDING")).unwrap());
        let e = parse_sort_order(Some("down")).unwrap_err();
        assert_eq!((e.status, e.scim_type), (400, Some(crate::scim::ScimType::InvalidValue)));
    }

    #[test]
    fn sort_by_resolves_against_the_schema() {
        let s = parse_sort(ResourceKind::User, Some("NAME.familyname"), Some("descending")).unwrap().unwrap();
        assert_eq!((s.path.name.as_str(), s.path.sub.as_deref(), s.descending), ("name", Some("familyName"), true));
        assert!(!s.path.info.case_exact);
        // A multi-valued complex attribute alone means its value (of the primary element).
        let p = parse_sort_by(ResourceKind::User, "emails").unwrap();
        assert_eq!((p.sub.as_deref(), p.info.multi_valued), (Some("value"), true));
        let p = parse_sort_by(ResourceKind::User, "meta.lastModified").unwrap();
        assert_eq!(p.info.ty, crate::model::query::AttrType::DateTime);
        let p = parse_sort_by(
            ResourceKind::User,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        )
        .unwrap();
        assert!(p.urn.is_some());
        for bad in ["nope", "name", "password", "emails[type eq \"work\"]", "userName.x", "a b"] {
            let e = parse_sort_by(ResourceKind::User, bad).unwrap_err();
            assert_eq!((e.status, e.scim_type), (400, Some(crate::scim::ScimType::InvalidValue)), "{bad}: {e}");
        }
        assert_eq!(parse_sort(ResourceKind::Group, None, Some("descending")).unwrap(), None);
        assert!(parse_sort(ResourceKind::Group, None, Some("sideways")).is_err());
    }
}
