//! The storage-neutral query AST: what a SCIM filter (RFC 7644 §3.4.2.2) or a PATCH path
//! (RFC 7644 §3.5.2) means, independent of both the text it came from (`scim::filter`) and
//! the SQL it becomes (`store`).
//!
//! Owns: the shape of filters and paths. Must not touch: parsing, SQL, JSON wire format.
//!
//! A filter arrives as text, `scim::filter::parse_filter` turns it into a [`Filter`] whose
//! [`AttrPath`]s carry the names as written and a default [`AttrInfo`]; `scim::schema`
//! then resolves every path against the resource type's schema (canonical spelling, type,
//! `caseExact`, multi-valuedness) so that `store` can translate it without knowing SCIM.

use serde_json::Number;

/// The type of the attribute a path names (RFC 7643 §2.3), as far as comparisons care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttrType {
    #[default]
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

/// What the schema says about the attribute a path names. Filled in by `scim::schema`;
/// `resolved == false` means the path has not been checked against a schema yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrInfo {
    pub resolved: bool,
    /// Type of the leaf (the sub-attribute when there is one).
    pub ty: AttrType,
    /// `caseExact` of the leaf (RFC 7643 §2.4): string comparisons ignore case when false.
    pub case_exact: bool,
    /// Whether the top-level attribute (`emails` in `emails.value`) is multi-valued.
    pub multi_valued: bool,
}

/// `attrPath = [URI ":"] ATTRNAME *1subAttr` (RFC 7644 §3.4.2.2, figure 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttrPath {
    /// Schema URN prefix, e.g. `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`.
    pub urn: Option<String>,
    /// Attribute name, e.g. `emails`. Matched case-insensitively (RFC 7643 §2.1).
    pub name: String,
    /// Sub-attribute name, e.g. `value` in `emails.value`.
    pub sub: Option<String>,
    pub info: AttrInfo,
}

/// Comparison operators of RFC 7644 §3.4.2.2, table 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// `compValue = false / null / true / number / string` (RFC 7644 §3.4.2.2).
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
}

/// A filter expression (RFC 7644 §3.4.2.2).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attrPath "pr"`
    Present(AttrPath),
    /// `attrPath SP compareOp SP compValue`
    Compare(AttrPath, CompareOp, Literal),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    /// `"not" "(" valFilter ")"`
    Not(Box<Filter>),
    /// `valuePath = attrPath "[" valFilter "]"`: the inner filter's paths are relative to
    /// one element of the multi-valued attribute named by the outer path (they name its
    /// sub-attributes, with `sub == None`).
    ValuePath(AttrPath, Box<Filter>),
}

/// A PATCH operation's `path` (RFC 7644 §3.5.2, figure 1):
/// `PATH = attrPath / valuePath [subAttr]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatchPath {
    /// The attribute (and, without a filter, optionally its sub-attribute).
    pub attr: AttrPath,
    /// The value filter in `attr[filter]`, selecting elements of a multi-valued attribute.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter: `.value` in `emails[type eq "work"].value`.
    /// (Without a filter the sub-attribute lives in `attr.sub`.)
    pub filter_sub: Option<String>,
}

/// A resolved `sortBy`/`sortOrder` pair (RFC 7644 §3.4.2.3): the attribute whose value
/// orders a list, and the direction. Resources without a value come last when ascending
/// and first when descending; ties keep creation order (reversed when descending) so that
/// pages never overlap or skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// A leaf attribute (sub-attributes named: `name.familyName`, `emails.value`), resolved
    /// against the resource type's schema so `info` says how to compare it.
    pub path: AttrPath,
    pub descending: bool,
}
