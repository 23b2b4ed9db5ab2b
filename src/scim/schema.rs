//! The SCIM schemas we serve (RFC 7643 §7, §8.7) and everything that needs to know them:
//! the schema URNs, attribute lookup, canonicalisation of filter and PATCH paths, and the
//! discovery documents `/Schemas`, `/ResourceTypes` and `/ServiceProviderConfig`
//! (RFC 7643 §5–§7, RFC 7644 §4).
//!
//! Owns: the attribute definitions (parsed once from the JSON files in `schemas/`, which are
//! embedded with `include_str!`) and the rules for resolving a path against them. Must not
//! touch: I/O, SQL, HTTP, the filter text grammar (`scim::filter` parses, this module only
//! resolves what it produced).
//!
//! The JSON files are the schema representations of RFC 7643 §8.7.1 (User, Group,
//! EnterpriseUser) and §8.7.2 (ServiceProviderConfig, ResourceType, Schema), with these
//! corrections to the RFC text:
//! - every attribute carries every characteristic: where §8.7 leaves one out (booleans and
//!   complex attributes have no `caseExact`/`uniqueness` there) the §2.2 default is written;
//! - `groups.$ref` refers to `Group` only (verified erratum 8471);
//! - `caseExact` is true for values that compare exactly whatever §8.7 says: references
//!   (URIs, §2.3.7), binary (`x509Certificates.value`, §2.3.6; errata 6000/8470), the
//!   sub-attributes holding another resource's `id` (`groups.value`, `members.value`,
//!   `manager.value`; ids are case exact, §3.1) and `password`;
//! - `manager.value` and `manager.$ref` stay `required: false`, as §8.7.1 has them, despite
//!   "REQUIRED." in their descriptions: IdPs send a manager without `$ref`;
//! - `addresses` has a `primary` sub-attribute, as §4.1.2 and §2.4 give it (§8.7.1 omits it);
//! - Group `displayName` is `required` (§4.2 says REQUIRED; the §8.7.1 `false` is an erratum);
//! - Group `members` has a `display` sub-attribute, readWrite: echoed as the IdP sent it, filled in
//!   with the member's name when absent (scim2-tester checks that what it sends comes back);
//! - `schemaExtensions` and `referenceTypes` are multi-valued (errata 7522 and 5607);
//! - the ServiceProviderConfig schema is named `ServiceProviderConfig` (not "Service Provider
//!   Configuration"), the name validators look the mandatory discovery schemas up by.
//!
//! The common attributes of §3.1 (`id`, `externalId`, `meta`, plus `schemas` of §3) belong
//! to no schema; they live in `schemas/common.json` and are found by [`find_attr`] without a
//! URN (or with the core schema's URN).

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value, json};

pub use crate::model::ResourceKind;
use crate::model::query::{AttrInfo, AttrPath, AttrType, CompareOp, Filter, Literal, PatchPath};
use crate::scim::error::ScimError;

/// Core User schema (RFC 7643 §4.1).
pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema (RFC 7643 §4.2).
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension (RFC 7643 §4.3).
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// List response message (RFC 7644 §3.4.2).
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PATCH request message (RFC 7644 §3.5.2).
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// `POST .search` request message (RFC 7644 §3.4.3).
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// Error response message (RFC 7644 §3.12).
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Bulk request message (RFC 7644 §3.7).
pub const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// Bulk response message (RFC 7644 §3.7).
pub const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
/// Schema resources served by `/Schemas` (RFC 7643 §7).
pub const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// Resource type resources served by `/ResourceTypes` (RFC 7643 §6).
pub const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// The service provider configuration (RFC 7643 §5).
pub const SERVICE_PROVIDER_CONFIG: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

// The SCIM side of the resource kinds. `ResourceKind` is declared in `model` (the store and
// the outbox use it too); its wire vocabulary is declared here, where the URNs live.
impl ResourceKind {
    /// The endpoint relative to the base URL (RFC 7643 §6 `endpoint`), e.g. `/Users`.
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "/Users",
            ResourceKind::Group => "/Groups",
        }
    }

    /// The endpoint's path segment, `Users` / `Groups` (for URLs: `{base}/Users/{id}`).
    pub fn segment(self) -> &'static str {
        &self.endpoint()[1..]
    }

    /// The resource type an endpoint segment names (`Users`, `groups`): matched
    /// case-insensitively, as IdPs are not consistent about it.
    pub fn from_segment(s: &str) -> Option<ResourceKind> {
        [ResourceKind::User, ResourceKind::Group].into_iter().find(|k| k.segment().eq_ignore_ascii_case(s))
    }

    /// The resource type name (`meta.resourceType`, RFC 7643 §3.1; the resource type's `id`
    /// and `name`, §6), e.g. `User`. The same as [`ResourceKind::as_str`].
    pub fn name(self) -> &'static str {
        self.as_str()
    }

    /// The resource type's human-readable description (RFC 7643 §6).
    pub fn description(self) -> &'static str {
        match self {
            ResourceKind::User => "User Account",
            ResourceKind::Group => "Group",
        }
    }

    /// The URN of the resource type's base schema (RFC 7643 §6 `schema`).
    pub fn core_schema(self) -> &'static str {
        match self {
            ResourceKind::User => USER,
            ResourceKind::Group => GROUP,
        }
    }

    /// The URNs of the schema extensions the resource type accepts (RFC 7643 §6
    /// `schemaExtensions`); none of them is required.
    pub fn extension_schemas(self) -> &'static [&'static str] {
        match self {
            ResourceKind::User => &[ENTERPRISE_USER],
            ResourceKind::Group => &[],
        }
    }
}

/// [`ResourceKind::core_schema`] as a function.
pub fn core_urn(kind: ResourceKind) -> &'static str {
    kind.core_schema()
}

/// [`ResourceKind::extension_schemas`] as a function.
pub fn extension_urns(kind: ResourceKind) -> &'static [&'static str] {
    kind.extension_schemas()
}

/// `mutability` (RFC 7643 §2.2, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// `returned` (RFC 7643 §2.2, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// `uniqueness` (RFC 7643 §2.2, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute (or sub-attribute) definition with its characteristics (RFC 7643 §2.2, §7).
#[derive(Clone, Debug, PartialEq)]
pub struct AttributeDef {
    /// Canonical spelling, e.g. `userName`, `$ref`.
    pub name: String,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: String,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    /// Empty unless the type is complex (RFC 7643 §2.3.8).
    pub sub_attributes: Vec<AttributeDef>,
    /// Suggested values, e.g. `work`, `home`; empty when the schema suggests none.
    pub canonical_values: Vec<String>,
    /// For references (RFC 7643 §2.3.7): resource type names, `external` or `uri`.
    pub reference_types: Vec<String>,
}

impl AttributeDef {
    /// The sub-attribute called `name`, compared case-insensitively (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&AttributeDef> {
        find_named(&self.sub_attributes, name)
    }

    pub fn is_complex(&self) -> bool {
        self.ty == AttrType::Complex
    }
}

fn find_named<'a>(attrs: &'a [AttributeDef], name: &str) -> Option<&'a AttributeDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

// ---------------------------------------------------------------------------------------
// Loading the embedded definitions.

/// The schema resources in `/Schemas` order: the resource schemas of §8.7.1, then the
/// discovery schemas of §8.7.2 (RFC 7644 §4 lists them among the schemas a provider serves).
const SCHEMA_FILES: [(&str, &str); 6] = [
    ("user.json", include_str!("schemas/user.json")),
    ("group.json", include_str!("schemas/group.json")),
    ("enterprise_user.json", include_str!("schemas/enterprise_user.json")),
    ("service_provider_config.json", include_str!("schemas/service_provider_config.json")),
    ("resource_type.json", include_str!("schemas/resource_type.json")),
    ("schema.json", include_str!("schemas/schema.json")),
];

const COMMON_FILE: (&str, &str) = ("common.json", include_str!("schemas/common.json"));

/// The wire form of an attribute definition. Every characteristic is mandatory (no serde
/// defaults) so that a file missing one fails to load instead of silently taking a default.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAttr {
    name: String,
    #[serde(rename = "type")]
    ty: RawType,
    multi_valued: bool,
    description: String,
    required: bool,
    case_exact: bool,
    mutability: Mutability,
    returned: Returned,
    uniqueness: Uniqueness,
    #[serde(default)]
    canonical_values: Vec<String>,
    reference_types: Option<Vec<String>>,
    sub_attributes: Option<Vec<RawAttr>>,
}

/// The data types of RFC 7643 §2.3.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
enum RawType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl From<RawType> for AttrType {
    fn from(t: RawType) -> Self {
        match t {
            RawType::String => AttrType::String,
            RawType::Boolean => AttrType::Boolean,
            RawType::Decimal => AttrType::Decimal,
            RawType::Integer => AttrType::Integer,
            RawType::DateTime => AttrType::DateTime,
            RawType::Binary => AttrType::Binary,
            RawType::Reference => AttrType::Reference,
            RawType::Complex => AttrType::Complex,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    id: String,
    #[allow(dead_code, reason = "required so that a file without it fails to load; rendered from the JSON")]
    name: String,
    #[allow(dead_code, reason = "required so that a file without it fails to load; rendered from the JSON")]
    description: String,
    attributes: Vec<RawAttr>,
}

/// A parsed schema resource, plus its JSON as written, which `/Schemas` renders verbatim.
struct SchemaDef {
    id: String,
    attributes: Vec<AttributeDef>,
    json: Value,
}

struct Registry {
    common: Vec<AttributeDef>,
    schemas: Vec<SchemaDef>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    // The files are compiled in and covered by the tests, so failing here is a build defect.
    Registry::load().unwrap_or_else(|e| panic!("embedded SCIM schema definitions are invalid: {e}"))
});

impl Registry {
    fn load() -> Result<Registry, String> {
        let (file, text) = COMMON_FILE;
        let raw: Vec<RawAttr> = serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        let common = convert_all(raw, file)?;

        let mut schemas = Vec::with_capacity(SCHEMA_FILES.len());
        for (file, text) in SCHEMA_FILES {
            let json: Value = serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))?;
            let raw: RawSchema = serde_json::from_value(json.clone()).map_err(|e| format!("{file}: {e}"))?;
            let attributes = convert_all(raw.attributes, file)?;
            schemas.push(SchemaDef { id: raw.id, attributes, json });
        }
        for kind in [ResourceKind::User, ResourceKind::Group] {
            for urn in std::iter::once(kind.core_schema()).chain(kind.extension_schemas().iter().copied()) {
                if !schemas.iter().any(|s| s.id == urn) {
                    return Err(format!("no schema file defines {urn}"));
                }
            }
        }
        Ok(Registry { common, schemas })
    }

    fn schema(&self, urn: &str) -> Option<&SchemaDef> {
        self.schemas.iter().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    fn attributes(&self, urn: &str) -> &[AttributeDef] {
        self.schema(urn).map(|s| s.attributes.as_slice()).unwrap_or_default()
    }
}

fn convert_all(raw: Vec<RawAttr>, at: &str) -> Result<Vec<AttributeDef>, String> {
    let mut out: Vec<AttributeDef> = Vec::with_capacity(raw.len());
    for r in raw {
        let def = convert(r, at)?;
        // RFC 7643 §2.1: names are case-insensitive, so two that differ only in case clash.
        if find_named(&out, &def.name).is_some() {
            return Err(format!("{at}: attribute '{}' is defined twice", def.name));
        }
        out.push(def);
    }
    Ok(out)
}

fn convert(r: RawAttr, at: &str) -> Result<AttributeDef, String> {
    let here = format!("{at}: {}", r.name);
    let ty = AttrType::from(r.ty);
    let sub_attributes = match (ty, r.sub_attributes) {
        (AttrType::Complex, Some(subs)) if !subs.is_empty() => convert_all(subs, &here)?,
        (AttrType::Complex, _) => return Err(format!("{here}: complex without subAttributes")),
        (_, None) => Vec::new(),
        (_, Some(_)) => return Err(format!("{here}: subAttributes on a non-complex attribute")),
    };
    let reference_types = match (ty, r.reference_types) {
        (AttrType::Reference, Some(types)) if !types.is_empty() => types,
        (AttrType::Reference, _) => {
            return Err(format!("{here}: reference without referenceTypes"));
        }
        (_, None) => Vec::new(),
        (_, Some(_)) => {
            return Err(format!("{here}: referenceTypes on a non-reference attribute"));
        }
    };
    Ok(AttributeDef {
        name: r.name,
        ty,
        multi_valued: r.multi_valued,
        description: r.description,
        required: r.required,
        case_exact: r.case_exact,
        mutability: r.mutability,
        returned: r.returned,
        uniqueness: r.uniqueness,
        sub_attributes,
        canonical_values: r.canonical_values,
        reference_types,
    })
}

/// Parses the embedded definitions now rather than on first use, so that a defect shows at
/// startup. Calling it is optional; every lookup loads them too.
pub fn init() {
    LazyLock::force(&REGISTRY);
}

// ---------------------------------------------------------------------------------------
// Lookup.

/// The common attributes of RFC 7643 §3.1 (`id`, `externalId`, `meta`) and `schemas` (§3).
pub fn common_attributes() -> &'static [AttributeDef] {
    &REGISTRY.common
}

/// The attributes of the schema with this URN (case-insensitive), or `None` if we serve no
/// such schema. Includes the discovery schemas of RFC 7643 §8.7.2.
pub fn schema_attributes(urn: &str) -> Option<&'static [AttributeDef]> {
    REGISTRY.schema(urn).map(|s| s.attributes.as_slice())
}

/// Finds a top-level attribute of `kind` by name, case-insensitively (RFC 7643 §2.1).
///
/// Returns the URN of the schema it belongs to (`""` for the common attributes) and its
/// definition. Without a URN the common attributes and then the core schema are searched;
/// extension attributes are found only with their schema's URN (RFC 7644 §3.10), so that an
/// extension attribute can never shadow or be confused with a core one. With the core
/// schema's URN the common attributes are found too, so a client that qualifies `id`
/// with it is understood.
pub fn find_attr(kind: ResourceKind, urn: Option<&str>, name: &str) -> Option<(&'static str, &'static AttributeDef)> {
    let reg: &'static Registry = &REGISTRY;
    let core = kind.core_schema();
    let common_or_core = || {
        find_named(&reg.common, name)
            .map(|a| ("", a))
            .or_else(|| find_named(reg.attributes(core), name).map(|a| (core, a)))
    };
    match urn {
        None => common_or_core(),
        Some(u) if u.eq_ignore_ascii_case(core) => common_or_core(),
        Some(u) => {
            let ext = kind.extension_schemas().iter().copied().find(|e| e.eq_ignore_ascii_case(u))?;
            find_named(reg.attributes(ext), name).map(|a| (ext, a))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Resolving filters and PATCH paths.

/// Which error a resolution failure becomes (RFC 7644 §3.12, table 9).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Filter,
    Path,
    /// `sortBy` (RFC 7644 §3.4.2.3), which §3.12 gives no `scimType` of its own: a query
    /// parameter whose value the server cannot use is `invalidValue`.
    Sort,
}

impl Mode {
    fn err(self, detail: String) -> ScimError {
        match self {
            Mode::Filter => ScimError::invalid_filter(detail),
            Mode::Path => ScimError::invalid_path(detail),
            Mode::Sort => ScimError::invalid_value(format!("sortBy: {detail}")),
        }
    }
}

/// Checks every attribute path in `filter` against `kind`'s schemas and rewrites it in
/// canonical form (RFC 7644 §3.4.2.2):
///
/// - names take their schema spelling (`USERNAME` → `userName`); a core-schema URN prefix is
///   dropped (`urn`: `None`), an extension URN is kept in its canonical spelling;
/// - `info` is filled: type and `caseExact` of the leaf, multi-valuedness of the top attribute;
/// - a complex attribute compared without a sub-attribute means its `value` sub-attribute
///   (`emails co "x"` is `emails.value co "x"`, RFC 7644 §3.4.2.2); a complex attribute that
///   has no `value` may only be tested with `pr`;
/// - inside `attr[...]` the paths name sub-attributes of `attr` (`multi_valued` false).
///
/// Attributes that are never returned (`password`) cannot be filtered on: a filter would
/// let a client test guesses against a value it may not read.
///
/// Every comparison's value must fit the attribute's type, see [`check_comparison`].
pub fn resolve_filter(kind: ResourceKind, filter: &mut Filter) -> Result<(), ScimError> {
    resolve_filter_in(kind, filter, Mode::Filter)
}

fn resolve_filter_in(kind: ResourceKind, filter: &mut Filter, mode: Mode) -> Result<(), ScimError> {
    match filter {
        Filter::Present(path) => resolve_compared(kind, path, mode, true),
        Filter::Compare(path, op, lit) => {
            resolve_compared(kind, path, mode, false)?;
            if mode == Mode::Filter {
                check_comparison(&path.to_string(), path, *op, lit)?;
            }
            Ok(())
        }
        Filter::And(a, b) | Filter::Or(a, b) => {
            resolve_filter_in(kind, a, mode)?;
            resolve_filter_in(kind, b, mode)
        }
        Filter::Not(inner) => resolve_filter_in(kind, inner, mode),
        Filter::ValuePath(path, inner) => {
            let top = resolve_top(kind, path, mode)?;
            if let Some(sub) = &path.sub {
                return Err(
                    mode.err(format!("a value filter applies to a whole attribute, not to '{}.{sub}'", top.name))
                );
            }
            if !top.is_complex() {
                return Err(
                    mode.err(format!("'{}' is not a complex attribute, so it takes no value filter '[...]'", top.name))
                );
            }
            if mode == Mode::Filter && top.name == "meta" {
                // `meta` is not one stored object but the server's columns, each filterable
                // by its own path; a value filter over it would read nothing.
                return Err(mode.err(
                    "'meta' is single-valued: filter on its sub-attributes directly, as in \
                     'meta.lastModified gt \"2026-01-01T00:00:00Z\"'"
                        .to_string(),
                ));
            }
            path.info = info(top, top);
            resolve_value_filter(top, inner, mode)
        }
    }
}

/// Resolves the path of a `pr` or comparison expression outside any value filter.
fn resolve_compared(kind: ResourceKind, path: &mut AttrPath, mode: Mode, present: bool) -> Result<(), ScimError> {
    let top = resolve_top(kind, path, mode)?;
    if mode == Mode::Filter && top.returned == Returned::Never {
        return Err(mode.err(format!("attribute '{}' cannot be used in a filter", top.name)));
    }
    let leaf = match path.sub.take() {
        Some(sub) => resolve_sub(top, &sub, mode)?,
        None if top.is_complex() => match top.sub("value") {
            Some(value) => value,
            None if present => top,
            None => {
                let example = top.sub_attributes.first().map_or("value", |s| s.name.as_str());
                return Err(mode.err(format!(
                    "'{}' is a complex attribute: compare one of its sub-attributes, e.g. '{}.{example}'",
                    top.name, top.name
                )));
            }
        },
        None => top,
    };
    if mode == Mode::Filter {
        refuse_computed(&top.name, &leaf.name)?;
    }
    // `leaf` is `top` itself exactly when no sub-attribute was named or implied.
    if !std::ptr::eq(leaf, top) {
        path.sub = Some(leaf.name.clone());
    }
    path.info = info(leaf, top);
    Ok(())
}

/// `meta.location`, `members.$ref` and `groups.$ref` are not stored: each response builds
/// them from the server's public URL and an id, which the store does not know. Rather than
/// answer a filter on them wrongly (as if absent), it is refused, pointing at the id they
/// are made of. (`manager.$ref` is stored as the client sent it, and filters like any
/// other attribute.)
fn refuse_computed(top: &str, leaf: &str) -> Result<(), ScimError> {
    let instead = match (top, leaf) {
        ("meta", "location") => "id",
        ("members", "$ref") => "members.value",
        ("groups", "$ref") => "groups.value",
        _ => return Ok(()),
    };
    Err(ScimError::invalid_filter(format!(
        "'{top}.{leaf}' is built from the server's URL in each response and cannot be filtered on; \
         filter on '{instead}' instead"
    )))
}

/// Resolves the filter inside `top[...]`: its paths name sub-attributes of `top`.
fn resolve_value_filter(top: &AttributeDef, filter: &mut Filter, mode: Mode) -> Result<(), ScimError> {
    match filter {
        Filter::Present(path) | Filter::Compare(path, _, _) => {
            if path.urn.is_some() || path.sub.is_some() {
                return Err(mode.err(format!(
                    "inside '{}[...]' name a sub-attribute of '{}', not '{}'",
                    top.name,
                    top.name,
                    written(path)
                )));
            }
            let def = top
                .sub(&path.name)
                .ok_or_else(|| mode.err(format!("unknown sub-attribute '{}' of '{}'", path.name, top.name)))?;
            path.name = def.name.clone();
            path.info = AttrInfo { resolved: true, ty: def.ty, case_exact: def.case_exact, multi_valued: false };
            if mode == Mode::Filter {
                refuse_computed(&top.name, &def.name)?;
            }
            if mode == Mode::Filter
                && let Filter::Compare(path, op, lit) = filter
            {
                check_comparison(&format!("{}.{}", top.name, path.name), path, *op, lit)?;
            }
            Ok(())
        }
        Filter::And(a, b) | Filter::Or(a, b) => {
            resolve_value_filter(top, a, mode)?;
            resolve_value_filter(top, b, mode)
        }
        Filter::Not(inner) => resolve_value_filter(top, inner, mode),
        Filter::ValuePath(path, _) => Err(mode.err(format!(
            "value filters cannot be nested: '{}[...]' inside '{}[...]'",
            written(path),
            top.name
        ))),
    }
}

/// Checks that a comparison's value fits the type of the (resolved) attribute it compares,
/// and rewrites IdPs' string booleans (`active eq "True"`) as booleans.
///
/// RFC 7644 §3.4.2.2 defines each operator for values of the attribute's own type
/// (strings compared by `caseExact`, dateTime values "chronologically", numbers and
/// booleans as such), says that `gt`, `ge`, `lt` and `le` on a boolean or binary attribute
/// "SHALL cause a failed response (HTTP status code 400) with "scimType" of
/// "invalidFilter"", and defines nothing for a value of another type (a number against a
/// string, a string against a boolean). Such a filter asks a question that has no answer,
/// so it gets the same answer as an ordering on a boolean: 400 `invalidFilter` whose
/// `detail` names the attribute, its type and what it can be compared with. It never
/// reaches the store, and a client's mistake never looks like "no match". Precisely:
///
/// - `null` is "no value" (RFC 7643 §2.5): `eq null` means not present (`not (a pr)`),
///   `ne null` present (`a pr`), for every type; other operators with `null` are refused;
/// - string, reference and binary attributes take a string with every operator, except
///   the orderings on binary ones;
/// - boolean attributes take `eq` and `ne` with `true`/`false`, or the strings `"true"`
///   and `"false"` in any case (Entra's default dialect sends `"True"`);
/// - integer and decimal attributes take a number with every operator but `co`, `sw`, `ew`;
/// - dateTime attributes take an RFC 3339 timestamp string with `eq`, `ne` and the
///   orderings, compared as instants; `co`, `sw` and `ew` would test the stored spelling,
///   which is ours, not the client's, and are refused.
///
/// `shown` is the attribute as the error should name it.
fn check_comparison(shown: &str, path: &AttrPath, op: CompareOp, lit: &mut Literal) -> Result<(), ScimError> {
    let ty = path.info.ty;
    let text = || Filter::Compare(path.clone(), op, lit.clone()).to_string();
    let ordering = matches!(op, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le);
    let substring = matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
    let refuse = |why: String| Err(ScimError::invalid_filter(format!("'{}': {why}", text())));
    if let Literal::Null = lit {
        if matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Ok(());
        }
        return refuse(format!(
            "null means no value, so it compares only with eq (not present) or ne (present);              '{shown}' has no order or substrings of null"
        ));
    }
    match ty {
        AttrType::String | AttrType::Reference | AttrType::Binary => {
            if ty == AttrType::Binary && ordering {
                return refuse(format!(
                    "'{shown}' is binary: gt, ge, lt and le do not apply to binary attributes (RFC 7644 §3.4.2.2)"
                ));
            }
            if !matches!(lit, Literal::String(_)) {
                return refuse(format!("'{shown}' is a string attribute: compare it with a quoted string"));
            }
        }
        AttrType::Boolean => {
            if ordering {
                return refuse(format!(
                    "'{shown}' is a boolean: gt, ge, lt and le do not apply to booleans (RFC 7644 §3.4.2.2);                      use eq or ne"
                ));
            }
            if substring {
                return refuse(format!("'{shown}' is a boolean: co, sw and ew compare strings; use eq or ne"));
            }
            let value = match &*lit {
                Literal::Bool(b) => *b,
                Literal::String(s) if s.eq_ignore_ascii_case("true") => true,
                Literal::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return refuse(format!("'{shown}' is a boolean: compare it with true or false")),
            };
            *lit = Literal::Bool(value);
        }
        AttrType::Integer | AttrType::Decimal => {
            if substring {
                return refuse(format!("'{shown}' is a number: co, sw and ew compare strings"));
            }
            if !matches!(lit, Literal::Number(_)) {
                return refuse(format!("'{shown}' is a number: compare it with a number"));
            }
        }
        AttrType::DateTime => {
            if substring {
                return refuse(format!(
                    "'{shown}' is a dateTime: co, sw and ew do not apply; compare instants with eq, ne, gt, ge, lt or le"
                ));
            }
            let fits = matches!(&*lit, Literal::String(s) if crate::model::normalize_time(s).is_some());
            if !fits {
                return refuse(format!(
                    "'{shown}' is a dateTime: compare it with an RFC 3339 timestamp such as \"2026-01-02T03:04:05Z\""
                ));
            }
        }
        AttrType::Complex => {
            return refuse(format!("'{shown}' is a complex attribute: compare one of its sub-attributes"));
        }
    }
    Ok(())
}

/// Checks a PATCH operation's `path` (RFC 7644 §3.5.2) against `kind`'s schemas and rewrites
/// it in canonical form, as [`resolve_filter`] does for filters (including the filter inside
/// `attr[...]`), except that no `value` sub-attribute is implied: `emails` names the whole
/// attribute. `attr.info` describes the leaf the path ends at: the sub-attribute
/// (`name.givenName`, `emails[type eq "work"].value`) or else the attribute. A value filter
/// is only accepted on a multi-valued complex attribute, whose elements it selects.
pub fn resolve_path(kind: ResourceKind, path: &mut PatchPath) -> Result<(), ScimError> {
    let mode = Mode::Path;
    let top = resolve_top(kind, &mut path.attr, mode)?;
    let leaf = match path.filter.as_mut() {
        Some(filter) => {
            if let Some(sub) = &path.attr.sub {
                return Err(
                    mode.err(format!("a value filter applies to a whole attribute, not to '{}.{sub}'", top.name))
                );
            }
            if !top.is_complex() || !top.multi_valued {
                return Err(mode.err(format!(
                    "'{}' is not a multi-valued complex attribute, so it takes no value filter '[...]'",
                    top.name
                )));
            }
            resolve_value_filter(top, filter, mode)?;
            match path.filter_sub.take() {
                Some(sub) => {
                    let def = resolve_sub(top, &sub, mode)?;
                    path.filter_sub = Some(def.name.clone());
                    def
                }
                None => top,
            }
        }
        None => {
            if let Some(sub) = &path.filter_sub {
                return Err(mode.err(format!("'{}' has a sub-attribute '{sub}' after no value filter", top.name)));
            }
            match path.attr.sub.take() {
                Some(sub) => {
                    let def = resolve_sub(top, &sub, mode)?;
                    path.attr.sub = Some(def.name.clone());
                    def
                }
                None => top,
            }
        }
    };
    path.attr.info = info(leaf, top);
    Ok(())
}

/// Checks a `sortBy` attribute path (RFC 7644 §3.4.2.3) against `kind`'s schemas and
/// rewrites it in canonical form, as [`resolve_filter`] does for a filter's paths.
///
/// "If the attribute is complex, the attribute name must be a path to a sub-attribute"
/// (`name.familyName`); a multi-valued complex attribute with a `value` sub-attribute may
/// be named alone and means its `value` (`emails` is `emails.value`), since the RFC sorts
/// multi-valued attributes "by the value of the primary attribute, if any, or else the
/// first value in the list". Attributes that are never returned (`password`) cannot order a
/// list: the order would disclose them.
pub fn resolve_sort(kind: ResourceKind, path: &mut AttrPath) -> Result<(), ScimError> {
    let mode = Mode::Sort;
    let top = resolve_top(kind, path, mode)?;
    if top.returned == Returned::Never {
        return Err(mode.err(format!("attribute '{}' is never returned, so it cannot order a list", top.name)));
    }
    let leaf = match path.sub.take() {
        Some(sub) => resolve_sub(top, &sub, mode)?,
        None if top.is_complex() => match top.sub("value") {
            Some(value) if top.multi_valued => value,
            _ => {
                let example = top.sub_attributes.first().map_or("value", |s| s.name.as_str());
                return Err(mode.err(format!(
                    "'{}' is a complex attribute: sort by one of its sub-attributes, e.g. '{}.{example}'",
                    top.name, top.name
                )));
            }
        },
        None => top,
    };
    if leaf.is_complex() {
        return Err(mode.err(format!("'{}.{}' is complex and cannot order a list", top.name, leaf.name)));
    }
    if !std::ptr::eq(leaf, top) {
        path.sub = Some(leaf.name.clone());
    }
    path.info = info(leaf, top);
    Ok(())
}

fn info(leaf: &AttributeDef, top: &AttributeDef) -> AttrInfo {
    AttrInfo { resolved: true, ty: leaf.ty, case_exact: leaf.case_exact, multi_valued: top.multi_valued }
}

/// Finds the top-level attribute a path names and canonicalises `urn` and `name`.
fn resolve_top(kind: ResourceKind, path: &mut AttrPath, mode: Mode) -> Result<&'static AttributeDef, ScimError> {
    resplit_urn(path);
    let found = find_attr(kind, path.urn.as_deref(), &path.name).or_else(|| match (&path.urn, mode) {
        (None, Mode::Path) => find_in_one_extension(kind, &path.name),
        _ => None,
    });
    let Some((schema, def)) = found else {
        let shown = match &path.urn {
            Some(urn) => format!("{urn}:{}", path.name),
            None => path.name.clone(),
        };
        return Err(mode.err(format!("unknown attribute '{shown}' for resource type {}", kind.name())));
    };
    // Core-schema attributes are stored and compared without their (optional) URN prefix;
    // extension attributes keep theirs, since the prefix is what tells them apart.
    path.urn = if schema.is_empty() || schema == kind.core_schema() { None } else { Some(schema.to_string()) };
    path.name = def.name.clone();
    Ok(def)
}

/// A PATCH path naming, without its URN, an attribute that is not a core one but is found in
/// exactly one of the resource type's extensions. RFC 7644 §3.10 only makes the core URN
/// optional, but Microsoft Entra ID patches the enterprise `manager` as `"path": "manager"`
/// (the Entra tutorial's "Example 5"); when just one extension has the name there is nothing
/// to confuse it with. Filters stay strict: no IdP is documented to need it there.
fn find_in_one_extension(kind: ResourceKind, name: &str) -> Option<(&'static str, &'static AttributeDef)> {
    let mut hits = kind.extension_schemas().iter().filter_map(|ext| find_attr(kind, Some(ext), name));
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

fn resolve_sub<'a>(top: &'a AttributeDef, sub: &str, mode: Mode) -> Result<&'a AttributeDef, ScimError> {
    if !top.is_complex() {
        return Err(mode.err(format!("attribute '{}' is not complex, so it has no sub-attribute '{sub}'", top.name)));
    }
    top.sub(sub).ok_or_else(|| mode.err(format!("unknown sub-attribute '{sub}' of '{}'", top.name)))
}

/// Repairs a URN-qualified path whose URN the parser could not tell apart from the name.
///
/// The URN itself contains dots (`...:2.0:User`), so a parser that splits `name.sub` at the
/// first dot before splitting off the URN at the last colon yields e.g. name
/// `urn:...:core:2` and sub `0:User:userName`. RFC 7644 §3.10 makes the last colon the
/// separator, and the attribute name the text after it; so when the name holds a colon the
/// written path is put back together and split that way.
fn resplit_urn(path: &mut AttrPath) {
    if path.urn.is_some() || !path.name.contains(':') {
        return;
    }
    let mut full = std::mem::take(&mut path.name);
    if let Some(sub) = path.sub.take() {
        full.push('.');
        full.push_str(&sub);
    }
    let (urn, rest) = full.rsplit_once(':').unwrap_or(("", &full));
    let (name, sub) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub.to_string())),
        None => (rest, None),
    };
    path.urn = Some(urn.to_string());
    path.name = name.to_string();
    path.sub = sub;
}

/// The path as the client wrote it, for error messages.
fn written(path: &AttrPath) -> String {
    let mut s = String::new();
    if let Some(urn) = &path.urn {
        s.push_str(urn);
        s.push(':');
    }
    s.push_str(&path.name);
    if let Some(sub) = &path.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}

// ---------------------------------------------------------------------------------------
// Discovery documents (RFC 7644 §4).

fn trim_base(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

fn meta(resource_type: &str, location: String) -> Value {
    json!({ "resourceType": resource_type, "location": location })
}

fn render_schema(base_url: &str, def: &SchemaDef) -> Value {
    // Per RFC 7643 §7 (and erratum 8417) a schema is a resource with `schemas` and `meta`;
    // the files hold only what does not depend on where we are served.
    let mut out = Map::new();
    out.insert("schemas".into(), json!([SCHEMA]));
    if let Value::Object(fields) = &def.json {
        for (k, v) in fields {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("meta".into(), meta("Schema", format!("{}/Schemas/{}", trim_base(base_url), def.id)));
    Value::Object(out)
}

/// Every schema we serve, as `/Schemas` lists them (RFC 7644 §4, RFC 7643 §7): User, Group,
/// EnterpriseUser, then the discovery schemas ServiceProviderConfig, ResourceType, Schema.
/// `base_url` is the SCIM base, e.g. `http://127.0.0.1:8080/scim/v2`.
pub fn schemas_json(base_url: &str) -> Vec<Value> {
    REGISTRY.schemas.iter().map(|s| render_schema(base_url, s)).collect()
}

/// The schema whose id is exactly `id` (`/Schemas/{id}`), or `None` (a 404).
pub fn schema_json(base_url: &str, id: &str) -> Option<Value> {
    REGISTRY.schemas.iter().find(|s| s.id == id).map(|s| render_schema(base_url, s))
}

fn render_resource_type(base_url: &str, kind: ResourceKind) -> Value {
    let extensions: Vec<Value> =
        kind.extension_schemas().iter().map(|urn| json!({ "schema": urn, "required": false })).collect();
    json!({
        "schemas": [RESOURCE_TYPE],
        "id": kind.name(),
        "name": kind.name(),
        "description": kind.description(),
        "endpoint": kind.endpoint(),
        "schema": kind.core_schema(),
        "schemaExtensions": extensions,
        "meta": meta(
            "ResourceType",
            format!("{}/ResourceTypes/{}", trim_base(base_url), kind.name()),
        ),
    })
}

/// The resource types we serve, as `/ResourceTypes` lists them (RFC 7643 §6): User (with the
/// optional enterprise extension) and Group.
pub fn resource_types_json(base_url: &str) -> Vec<Value> {
    [ResourceKind::User, ResourceKind::Group].into_iter().map(|kind| render_resource_type(base_url, kind)).collect()
}

/// The resource type whose id is exactly `id` (`/ResourceTypes/{id}`: `User` or `Group`).
pub fn resource_type_json(base_url: &str, id: &str) -> Option<Value> {
    [ResourceKind::User, ResourceKind::Group]
        .into_iter()
        .find(|kind| kind.name() == id)
        .map(|kind| render_resource_type(base_url, kind))
}

/// What `/ServiceProviderConfig` advertises (RFC 7643 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpcOptions {
    pub patch: bool,
    pub bulk: bool,
    pub bulk_max_operations: u32,
    pub bulk_max_payload_bytes: u64,
    pub filter_max_results: u32,
    /// The page size of a list that asks for none (RFC 9865 §4 `defaultPageSize`).
    pub default_page_size: u32,
    pub sort: bool,
    pub etag: bool,
    pub change_password: bool,
}

/// The service provider configuration (RFC 7643 §5). Filtering is always supported; the
/// only authentication scheme is the bearer token (RFC 6750). `documentationUri` is
/// OPTIONAL and left out.
pub fn service_provider_config_json(base_url: &str, opts: &SpcOptions) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "patch": { "supported": opts.patch },
        "bulk": {
            "supported": opts.bulk,
            "maxOperations": opts.bulk_max_operations,
            "maxPayloadSize": opts.bulk_max_payload_bytes,
        },
        "filter": { "supported": true, "maxResults": opts.filter_max_results },
        // RFC 9865 §4: both paging methods; index stays the default, so IdPs that know
        // only RFC 7644 see no change.
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": opts.default_page_size,
            "maxPageSize": opts.filter_max_results,
            "cursorTimeout": super::cursor::CURSOR_TIMEOUT_SECONDS,
        },
        "changePassword": { "supported": opts.change_password },
        "sort": { "supported": opts.sort },
        "etag": { "supported": opts.etag },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": meta(
            "ServiceProviderConfig",
            format!("{}/ServiceProviderConfig", trim_base(base_url)),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::{CompareOp, Literal};
    use crate::scim::error::ScimType;

    const BASE: &str = "http://127.0.0.1:8080/scim/v2";

    fn p(name: &str) -> AttrPath {
        AttrPath { name: name.into(), ..AttrPath::default() }
    }

    fn ps(name: &str, sub: &str) -> AttrPath {
        AttrPath { name: name.into(), sub: Some(sub.into()), ..AttrPath::default() }
    }

    fn pu(urn: &str, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath { urn: Some(urn.into()), name: name.into(), sub: sub.map(Into::into), ..AttrPath::default() }
    }

    fn eq(path: AttrPath, v: &str) -> Filter {
        Filter::Compare(path, CompareOp::Eq, Literal::String(v.into()))
    }

    fn co(path: AttrPath, v: &str) -> Filter {
        Filter::Compare(path, CompareOp::Co, Literal::String(v.into()))
    }

    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }

    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }

    fn vp(path: AttrPath, inner: Filter) -> Filter {
        Filter::ValuePath(path, Box::new(inner))
    }

    /// The resolved path of a single-expression filter.
    fn resolved(kind: ResourceKind, mut f: Filter) -> AttrPath {
        resolve_filter(kind, &mut f).expect("filter resolves");
        match f {
            Filter::Present(p) | Filter::Compare(p, _, _) => p,
            other => panic!("not a single expression: {other:?}"),
        }
    }

    fn filter_err(kind: ResourceKind, mut f: Filter) -> ScimError {
        let e = resolve_filter(kind, &mut f).expect_err("filter is rejected");
        assert_eq!((e.status, e.scim_type), (400, Some(ScimType::InvalidFilter)), "{e}");
        e
    }

    fn info(ty: AttrType, case_exact: bool, multi_valued: bool) -> AttrInfo {
        AttrInfo { resolved: true, ty, case_exact, multi_valued }
    }

    // --- the embedded definitions -------------------------------------------------------

    #[test]
    fn embedded_definitions_load() {
        Registry::load().expect("all embedded schema files parse and validate");
        init();
    }

    const CHARACTERISTICS: [&str; 9] =
        ["name", "type", "multiValued", "description", "required", "caseExact", "mutability", "returned", "uniqueness"];

    fn check_attr(file: &str, a: &Value) {
        let obj = a.as_object().unwrap_or_else(|| panic!("{file}: attribute is not an object: {a}"));
        let name = obj.get("name").and_then(Value::as_str).unwrap_or("?");
        for key in CHARACTERISTICS {
            assert!(obj.contains_key(key), "{file}: '{name}' lacks '{key}'");
        }
        match obj["type"].as_str() {
            Some("complex") => {
                let subs = obj["subAttributes"].as_array().expect("complex has subAttributes");
                assert!(!subs.is_empty(), "{file}: '{name}' has no sub-attributes");
                for sub in subs {
                    check_attr(file, sub);
                }
            }
            Some("reference") => {
                let types = obj["referenceTypes"].as_array().expect("reference has referenceTypes");
                assert!(!types.is_empty(), "{file}: '{name}' has empty referenceTypes");
            }
            _ => assert!(!obj.contains_key("subAttributes"), "{file}: '{name}'"),
        }
    }

    #[test]
    fn every_attribute_has_every_characteristic() {
        for (file, text) in SCHEMA_FILES {
            let doc: Value = serde_json::from_str(text).expect(file);
            for key in ["id", "name", "description", "attributes"] {
                assert!(doc.get(key).is_some(), "{file} lacks {key}");
            }
            // The base URL is not known until render time (RFC 7643 §7 `meta.location`).
            assert!(doc.get("meta").is_none() && doc.get("schemas").is_none(), "{file}");
            for a in doc["attributes"].as_array().expect(file) {
                check_attr(file, a);
            }
        }
        let (file, text) = COMMON_FILE;
        let common: Value = serde_json::from_str(text).expect(file);
        for a in common.as_array().expect(file) {
            check_attr(file, a);
        }
    }

    #[test]
    fn resource_schemas_nest_one_level_only() {
        // RFC 7643 §2.3.8: a complex attribute's sub-attributes are not complex.
        for urn in [USER, GROUP, ENTERPRISE_USER] {
            for a in schema_attributes(urn).expect(urn) {
                for s in &a.sub_attributes {
                    assert!(!s.is_complex(), "{urn}: {}.{}", a.name, s.name);
                }
            }
        }
    }

    #[test]
    fn schemas_are_complete() {
        let names =
            |urn: &str| -> Vec<String> { schema_attributes(urn).expect(urn).iter().map(|a| a.name.clone()).collect() };
        assert_eq!(
            names(USER),
            [
                "userName",
                "name",
                "displayName",
                "nickName",
                "profileUrl",
                "title",
                "userType",
                "preferredLanguage",
                "locale",
                "timezone",
                "active",
                "password",
                "emails",
                "phoneNumbers",
                "ims",
                "photos",
                "addresses",
                "groups",
                "entitlements",
                "roles",
                "x509Certificates",
            ]
        );
        assert_eq!(names(GROUP), ["displayName", "members"]);
        assert_eq!(
            names(ENTERPRISE_USER),
            ["employeeNumber", "costCenter", "organization", "division", "department", "manager"]
        );
        let common: Vec<&str> = common_attributes().iter().map(|a| a.name.as_str()).collect();
        assert_eq!(common, ["id", "externalId", "meta", "schemas"]);
    }

    #[test]
    fn characteristics_match_the_rfc() {
        let user = |n: &str| find_attr(ResourceKind::User, None, n).expect(n).1;
        let user_name = user("userName");
        assert!(user_name.required && !user_name.case_exact);
        assert_eq!(user_name.uniqueness, Uniqueness::Server);
        let password = user("password");
        assert_eq!((password.mutability, password.returned), (Mutability::WriteOnly, Returned::Never));
        let groups = user("groups");
        assert_eq!(groups.mutability, Mutability::ReadOnly);
        assert!(groups.sub_attributes.iter().all(|s| s.mutability == Mutability::ReadOnly));
        assert_eq!(groups.sub("$ref").expect("$ref").reference_types, ["Group"]);
        let emails = user("emails");
        assert!(emails.multi_valued && emails.is_complex());
        let subs: Vec<&str> = emails.sub_attributes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(subs, ["value", "display", "type", "primary"]);
        assert_eq!(emails.sub("type").expect("type").canonical_values, ["work", "home", "other"]);
        assert!(user("addresses").sub("primary").is_some());
        assert!(user("x509Certificates").sub("value").expect("value").case_exact);
        assert_eq!(user("profileUrl").reference_types, ["external"]);

        let members = find_attr(ResourceKind::Group, None, "members").expect("members").1;
        for (sub, m) in [
            ("value", Mutability::Immutable),
            ("$ref", Mutability::Immutable),
            ("type", Mutability::Immutable),
            ("display", Mutability::ReadWrite),
        ] {
            assert_eq!(members.sub(sub).expect(sub).mutability, m, "members.{sub}");
        }
        assert_eq!(members.sub("$ref").expect("$ref").reference_types, ["User", "Group"]);
        // Ids and references compare exactly (RFC 7643 §3.1, §2.3.7).
        assert!(members.sub("value").expect("value").case_exact);
        assert!(members.sub("$ref").expect("$ref").case_exact);
        assert!(groups.sub("value").expect("value").case_exact);
        assert!(password.case_exact);
        assert!(find_attr(ResourceKind::Group, None, "displayName").expect("displayName").1.required);

        let manager = find_attr(ResourceKind::User, Some(ENTERPRISE_USER), "manager").expect("manager").1;
        assert!(!manager.multi_valued && manager.is_complex());
        assert_eq!(manager.sub("displayName").expect("displayName").mutability, Mutability::ReadOnly);
        assert_eq!(manager.sub("$ref").expect("$ref").reference_types, ["User"]);

        let id = find_attr(ResourceKind::User, None, "id").expect("id").1;
        assert!(id.case_exact);
        assert_eq!(
            (id.mutability, id.returned, id.uniqueness),
            (Mutability::ReadOnly, Returned::Always, Uniqueness::Server)
        );
        let external_id = find_attr(ResourceKind::Group, None, "externalId").expect("externalId").1;
        assert!(external_id.case_exact);
        assert_eq!(external_id.mutability, Mutability::ReadWrite);
        let meta = find_attr(ResourceKind::User, None, "meta").expect("meta").1;
        assert_eq!(meta.mutability, Mutability::ReadOnly);
        assert_eq!(meta.sub("lastModified").expect("lastModified").ty, AttrType::DateTime);
        assert_eq!(meta.sub("created").expect("created").ty, AttrType::DateTime);
        assert_eq!(meta.sub("location").expect("location").ty, AttrType::Reference);
        assert!(meta.sub("version").expect("version").case_exact);
        assert!(meta.sub("resourceType").is_some());
    }

    #[test]
    fn enum_spellings() {
        assert_eq!(Mutability::WriteOnly.as_str(), "writeOnly");
        assert_eq!(Returned::Request.as_str(), "request");
        assert_eq!(Uniqueness::Global.as_str(), "global");
        let m: Mutability = serde_json::from_value(json!("readOnly")).expect("readOnly");
        assert_eq!(m, Mutability::ReadOnly);
        assert!(serde_json::from_value::<Mutability>(json!("ReadOnly")).is_err());
    }

    #[test]
    fn invalid_definitions_are_refused() {
        let base = json!({
            "name": "x", "type": "string", "multiValued": false, "description": "",
            "required": false, "caseExact": false, "mutability": "readWrite",
            "returned": "default", "uniqueness": "none"
        });
        let parse = |v: Value| -> Result<AttributeDef, String> {
            let raw: RawAttr = serde_json::from_value(v).map_err(|e| e.to_string())?;
            convert(raw, "test")
        };
        assert!(parse(base.clone()).is_ok());
        let mut missing = base.clone();
        missing.as_object_mut().expect("object").remove("caseExact");
        assert!(parse(missing).is_err(), "a missing characteristic fails");
        let mut unknown = base.clone();
        unknown["multivalued"] = json!(true);
        assert!(parse(unknown).is_err(), "a misspelt key fails");
        let mut complex = base.clone();
        complex["type"] = json!("complex");
        assert!(parse(complex).is_err(), "complex needs sub-attributes");
        let mut reference = base.clone();
        reference["type"] = json!("reference");
        assert!(parse(reference).is_err(), "reference needs referenceTypes");
        let dup = json!([base.clone(), {
            "name": "X", "type": "string", "multiValued": false, "description": "",
            "required": false, "caseExact": false, "mutability": "readWrite",
            "returned": "default", "uniqueness": "none"
        }]);
        let raw: Vec<RawAttr> = serde_json::from_value(dup).expect("parses");
        assert!(convert_all(raw, "test").is_err(), "names differing in case clash");
    }

    // --- resource kinds and lookups ------------------------------------------------------

    #[test]
    fn resource_kinds() {
        assert_eq!(ResourceKind::User.endpoint(), "/Users");
        assert_eq!(ResourceKind::Group.endpoint(), "/Groups");
        assert_eq!(ResourceKind::User.name(), "User");
        assert_eq!(ResourceKind::Group.name(), "Group");
        assert_eq!(ResourceKind::User.core_schema(), USER);
        assert_eq!(core_urn(ResourceKind::Group), GROUP);
        assert_eq!(ResourceKind::User.extension_schemas(), [ENTERPRISE_USER]);
        assert!(extension_urns(ResourceKind::Group).is_empty());
    }

    #[test]
    fn lookups_are_case_insensitive() {
        let (urn, def) = find_attr(ResourceKind::User, None, "USERNAME").expect("userName");
        assert_eq!((urn, def.name.as_str()), (USER, "userName"));
        let (urn, def) = find_attr(ResourceKind::User, None, "Id").expect("id");
        assert_eq!((urn, def.name.as_str()), ("", "id"));
        let (urn, def) = find_attr(ResourceKind::Group, None, "externalid").expect("externalId");
        assert_eq!((urn, def.name.as_str()), ("", "externalId"));
        let emails = find_attr(ResourceKind::User, None, "emails").expect("emails").1;
        assert_eq!(emails.sub("VALUE").expect("value").name, "value");
        assert_eq!(emails.sub("Primary").expect("primary").ty, AttrType::Boolean);
        assert!(emails.sub("nope").is_none());
        let meta = find_attr(ResourceKind::Group, None, "META").expect("meta").1;
        assert_eq!(meta.sub("lastmodified").expect("lastModified").name, "lastModified");
        // A core attribute of the other resource type is unknown.
        assert!(find_attr(ResourceKind::Group, None, "userName").is_none());
        assert!(find_attr(ResourceKind::User, None, "members").is_none());
    }

    #[test]
    fn urn_qualified_lookups() {
        let upper = USER.to_uppercase();
        let (urn, def) = find_attr(ResourceKind::User, Some(&upper), "username").expect("userName");
        assert_eq!((urn, def.name.as_str()), (USER, "userName"));
        // Common attributes under the core URN.
        let (urn, def) = find_attr(ResourceKind::User, Some(USER), "id").expect("id");
        assert_eq!((urn, def.name.as_str()), ("", "id"));
        // Extension attributes only with their URN.
        assert!(find_attr(ResourceKind::User, None, "employeeNumber").is_none());
        let ext = ENTERPRISE_USER.to_lowercase();
        let (urn, def) = find_attr(ResourceKind::User, Some(&ext), "EMPLOYEENUMBER").expect("employeeNumber");
        assert_eq!((urn, def.name.as_str()), (ENTERPRISE_USER, "employeeNumber"));
        // The extension does not see core or common attributes, nor is it a Group's.
        assert!(find_attr(ResourceKind::User, Some(ENTERPRISE_USER), "userName").is_none());
        assert!(find_attr(ResourceKind::User, Some(ENTERPRISE_USER), "id").is_none());
        assert!(find_attr(ResourceKind::Group, Some(ENTERPRISE_USER), "employeeNumber").is_none());
        // Another resource type's core URN is no schema of this one.
        assert!(find_attr(ResourceKind::Group, Some(USER), "userName").is_none());
        assert!(find_attr(ResourceKind::User, Some("urn:example:nope"), "userName").is_none());
    }

    // --- filters -------------------------------------------------------------------------

    #[test]
    fn resolves_simple_rfc_examples() {
        // RFC 7644 §3.4.2.2 examples.
        let user = ResourceKind::User;
        let r = resolved(user, eq(p("username"), "bjensen"));
        assert_eq!((r.urn, r.name.as_str(), r.sub), (None, "userName", None));
        assert_eq!(r.info, info(AttrType::String, false, false));

        let r = resolved(user, co(ps("NAME", "FAMILYNAME"), "O'Malley"));
        assert_eq!((r.name.as_str(), r.sub.as_deref()), ("name", Some("familyName")));
        assert_eq!(r.info, info(AttrType::String, false, false));

        let r = resolved(user, eq(pu(&USER.to_lowercase(), "userName", None), "J"));
        assert_eq!((r.urn, r.name.as_str()), (None, "userName"));

        let r = resolved(user, Filter::Present(p("title")));
        assert_eq!(r.info, info(AttrType::String, false, false));

        let r = resolved(
            user,
            Filter::Compare(ps("meta", "lastmodified"), CompareOp::Gt, Literal::String("2011-05-13T04:42:34Z".into())),
        );
        assert_eq!((r.name.as_str(), r.sub.as_deref()), ("meta", Some("lastModified")));
        assert_eq!(r.info, info(AttrType::DateTime, false, false));

        let r = resolved(ResourceKind::Group, eq(ps("meta", "resourcetype"), "Group"));
        assert_eq!(r.sub.as_deref(), Some("resourceType"));
        for sub in ["created", "version"] {
            let r = resolved(user, Filter::Present(ps("meta", sub)));
            assert_eq!(r.sub.as_deref(), Some(sub));
        }

        let r = resolved(user, eq(p("schemas"), ENTERPRISE_USER));
        assert_eq!((r.urn, r.name.as_str(), r.sub), (None, "schemas", None));
        assert_eq!(r.info, info(AttrType::String, false, true));

        let r = resolved(user, eq(p("ID"), "2819c223"));
        assert_eq!(r.name, "id");
        assert_eq!(r.info, info(AttrType::String, true, false));

        let r = resolved(user, eq(p("active"), "True"));
        assert_eq!(r.info.ty, AttrType::Boolean);
    }

    fn parsed_err(kind: ResourceKind, text: &str) -> String {
        let mut f = crate::scim::filter::parse_filter(text).expect("parses");
        let e = resolve_filter(kind, &mut f).expect_err(text);
        assert_eq!((e.status, e.scim_type), (400, Some(ScimType::InvalidFilter)), "{text}: {e}");
        e.detail
    }

    fn parsed_ok(kind: ResourceKind, text: &str) -> Filter {
        let mut f = crate::scim::filter::parse_filter(text).expect("parses");
        resolve_filter(kind, &mut f).unwrap_or_else(|e| panic!("{text}: {e}"));
        f
    }

    /// Issue #13: a value that does not fit the attribute's type is 400 `invalidFilter`
    /// naming the attribute (see `check_comparison`), never a query.
    #[test]
    fn type_mismatched_comparisons_are_invalid_filter() {
        let user = ResourceKind::User;
        let cases = [
            (r#"active le "%%%%%""#, "'active' is a boolean: gt, ge, lt and le"),
            ("not (name.givenName co false)", "'name.givenName' is a string attribute"),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department ew false",
                "'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department' is a string attribute",
            ),
            (
                "(externalId co -1.5e10) AND urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department lt null",
                "'externalId' is a string attribute",
            ),
            ("userName lt null", "null means no value"),
            ("active eq 1", "'active' is a boolean: compare it with true or false"),
            (r#"active eq "yes""#, "'active' is a boolean: compare it with true or false"),
            ("active co true", "co, sw and ew compare strings"),
            (r#"meta.lastModified gt "yesterday""#, "'meta.lastModified' is a dateTime"),
            (r#"meta.created co "2026""#, "'meta.created' is a dateTime: co, sw and ew do not apply"),
            ("emails[primary gt false]", "'emails.primary' is a boolean"),
            ("emails[value eq 5]", "'emails.value' is a string attribute"),
            (r#"x509Certificates.value gt "AA==""#, "binary"),
        ];
        for (text, want) in cases {
            let detail = parsed_err(user, text);
            assert!(detail.contains(want), "{text}: {detail}");
        }
        assert!(parsed_err(ResourceKind::Group, "members.value sw 1").contains("'members.value' is a string"));
        // Built from the server's URL in each response, never stored.
        for (kind, text) in [
            (user, "meta.location pr"),
            (user, r#"meta.location eq "https://x/Users/1""#),
            (user, r#"groups[$ref co "x"]"#),
            (ResourceKind::Group, "members.$ref pr"),
        ] {
            assert!(parsed_err(kind, text).contains("is built from the server's URL"), "{text}");
        }
        assert!(parsed_err(user, r#"meta[version eq "W/\"1\""]"#).contains("'meta' is single-valued"));

        // What does fit, including IdPs' string booleans, which become booleans.
        for text in [
            "userName eq null",
            "title ne null",
            r#"meta.lastModified ge "2026-01-02T03:04:05+01:00""#,
            "emails[primary eq true]",
            r#"x509Certificates.value eq "AA==""#,
        ] {
            parsed_ok(user, text);
        }
        let f = parsed_ok(user, r#"active eq "True""#);
        assert!(matches!(f, Filter::Compare(_, CompareOp::Eq, Literal::Bool(true))), "{f:?}");
        let f = parsed_ok(user, r#"emails[primary eq "FALSE"]"#);
        let Filter::ValuePath(_, inner) = f else { panic!() };
        assert!(matches!(*inner, Filter::Compare(_, CompareOp::Eq, Literal::Bool(false))), "{inner:?}");
    }

    #[test]
    fn complex_multi_valued_without_sub_means_value() {
        let r = resolved(ResourceKind::User, co(p("emails"), "example.com"));
        assert_eq!((r.name.as_str(), r.sub.as_deref()), ("emails", Some("value")));
        assert_eq!(r.info, info(AttrType::String, false, true));
        let r = resolved(ResourceKind::User, Filter::Present(p("Emails")));
        assert_eq!(r.sub.as_deref(), Some("value"));
        let r = resolved(ResourceKind::Group, eq(p("members"), "2819c223"));
        assert_eq!(r.sub.as_deref(), Some("value"));
        let r = resolved(ResourceKind::User, eq(ps("emails", "TYPE"), "work"));
        assert_eq!(r.sub.as_deref(), Some("type"));
        assert_eq!(r.info, info(AttrType::String, false, true));
        // x509Certificates.value is binary and case exact.
        let r = resolved(ResourceKind::User, Filter::Present(p("x509certificates")));
        assert_eq!(r.info, info(AttrType::Binary, true, true));
        // A complex attribute without `value` can only be tested for presence.
        let r = resolved(ResourceKind::User, Filter::Present(p("name")));
        assert_eq!((r.name.as_str(), r.sub), ("name", None));
        assert_eq!(r.info, info(AttrType::Complex, false, false));
        let r = resolved(ResourceKind::User, Filter::Present(p("addresses")));
        assert_eq!(r.info, info(AttrType::Complex, false, true));
        let e = filter_err(ResourceKind::User, eq(p("name"), "Barbara"));
        assert!(e.detail.contains("'name' is a complex attribute"), "{e}");
        filter_err(ResourceKind::User, eq(p("addresses"), "x"));
        filter_err(ResourceKind::User, eq(p("meta"), "x"));
    }

    #[test]
    fn resolves_enterprise_manager() {
        let f = eq(pu(ENTERPRISE_USER, "manager", Some("value")), "26118915-6090-4610-87e4-49d8ca9f808d");
        let r = resolved(ResourceKind::User, f);
        assert_eq!(r.urn.as_deref(), Some(ENTERPRISE_USER));
        assert_eq!((r.name.as_str(), r.sub.as_deref()), ("manager", Some("value")));
        // The manager's id, which is case exact like every id (RFC 7643 §3.1).
        assert_eq!(r.info, info(AttrType::String, true, false));

        let r = resolved(ResourceKind::User, eq(pu(&ENTERPRISE_USER.to_uppercase(), "EMPLOYEENUMBER", None), "701984"));
        assert_eq!(r.urn.as_deref(), Some(ENTERPRISE_USER));
        assert_eq!(r.name, "employeeNumber");

        // `manager eq "x"` compares the manager's id.
        let r = resolved(ResourceKind::User, eq(pu(ENTERPRISE_USER, "manager", None), "x"));
        assert_eq!(r.sub.as_deref(), Some("value"));

        let e = filter_err(ResourceKind::User, eq(p("employeeNumber"), "701984"));
        assert_eq!(e.detail, "unknown attribute 'employeeNumber' for resource type User");
        filter_err(ResourceKind::Group, eq(pu(ENTERPRISE_USER, "employeeNumber", None), "1"));
    }

    #[test]
    fn repairs_urn_split_at_the_wrong_dot() {
        // `urn:...:enterprise:2.0:User:manager.value` split at its first dot.
        let (head, tail) = ENTERPRISE_USER.split_once('.').expect("the URN has a dot");
        let f = eq(ps(head, &format!("{tail}:manager.value")), "x");
        let r = resolved(ResourceKind::User, f);
        assert_eq!(r.urn.as_deref(), Some(ENTERPRISE_USER));
        assert_eq!((r.name.as_str(), r.sub.as_deref()), ("manager", Some("value")));
        // The whole qualified name in `name`.
        let r = resolved(ResourceKind::User, eq(p(&format!("{USER}:userName")), "x"));
        assert_eq!((r.urn, r.name.as_str()), (None, "userName"));
        let (head, tail) = USER.split_once('.').expect("the URN has a dot");
        let r = resolved(ResourceKind::User, co(ps(head, &format!("{tail}:name.givenName")), "x"));
        assert_eq!((r.urn, r.name.as_str(), r.sub.as_deref()), (None, "name", Some("givenName")));
    }

    #[test]
    fn resolves_logical_and_value_filters() {
        // userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")
        let mut f = and(
            eq(p("usertype"), "Employee"),
            or(co(p("emails"), "example.com"), co(ps("emails", "value"), "example.org")),
        );
        resolve_filter(ResourceKind::User, &mut f).expect("resolves");
        let want = and(
            eq(p("userType"), "Employee"),
            or(co(ps("emails", "value"), "example.com"), co(ps("emails", "value"), "example.org")),
        );
        assert_eq!(strip_info(f), want);

        // userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")
        let mut f = and(
            Filter::Compare(p("userType"), CompareOp::Ne, Literal::String("Employee".into())),
            Filter::Not(Box::new(or(co(p("emails"), "example.com"), co(ps("emails", "value"), "example.org")))),
        );
        resolve_filter(ResourceKind::User, &mut f).expect("resolves");

        // emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]
        let mut f = or(
            vp(p("EMAILS"), and(eq(p("TYPE"), "work"), co(p("value"), "@example.com"))),
            vp(p("ims"), and(eq(p("type"), "xmpp"), co(p("Value"), "@foo.com"))),
        );
        resolve_filter(ResourceKind::User, &mut f).expect("resolves");
        let Filter::Or(left, _) = &f else { panic!("{f:?}") };
        let Filter::ValuePath(outer, inner) = left.as_ref() else { panic!("{left:?}") };
        assert_eq!((outer.name.as_str(), outer.sub.as_ref()), ("emails", None));
        assert_eq!(outer.info, info(AttrType::Complex, false, true));
        let Filter::And(a, b) = inner.as_ref() else { panic!("{inner:?}") };
        let (Filter::Compare(a, ..), Filter::Compare(b, ..)) = (a.as_ref(), b.as_ref()) else { panic!() };
        assert_eq!((a.name.as_str(), a.sub.as_ref(), a.urn.as_ref()), ("type", None, None));
        assert_eq!(a.info, info(AttrType::String, false, false));
        assert_eq!(b.name, "value");

        let mut f = vp(p("members"), eq(p("value"), "2819c223"));
        resolve_filter(ResourceKind::Group, &mut f).expect("resolves");
        let mut f = vp(p("addresses"), Filter::Not(Box::new(eq(p("postalcode"), "91608"))));
        resolve_filter(ResourceKind::User, &mut f).expect("resolves");
        // A single-valued complex attribute may be grouped too.
        let mut f = vp(pu(ENTERPRISE_USER, "manager", None), eq(p("value"), "x"));
        resolve_filter(ResourceKind::User, &mut f).expect("resolves");
        let Filter::ValuePath(outer, _) = &f else { panic!() };
        assert_eq!(outer.urn.as_deref(), Some(ENTERPRISE_USER));
        assert_eq!(outer.info, info(AttrType::Complex, false, false));
    }

    fn strip_info(f: Filter) -> Filter {
        fn clear(mut p: AttrPath) -> AttrPath {
            p.info = AttrInfo::default();
            p
        }
        match f {
            Filter::Present(p) => Filter::Present(clear(p)),
            Filter::Compare(p, op, v) => Filter::Compare(clear(p), op, v),
            Filter::And(a, b) => and(strip_info(*a), strip_info(*b)),
            Filter::Or(a, b) => or(strip_info(*a), strip_info(*b)),
            Filter::Not(x) => Filter::Not(Box::new(strip_info(*x))),
            Filter::ValuePath(p, x) => vp(clear(p), strip_info(*x)),
        }
    }

    #[test]
    fn filter_errors() {
        let e = filter_err(ResourceKind::User, eq(p("foo"), "x"));
        assert_eq!(e.detail, "unknown attribute 'foo' for resource type User");
        let e = filter_err(ResourceKind::Group, Filter::Present(p("userName")));
        assert_eq!(e.detail, "unknown attribute 'userName' for resource type Group");
        let e = filter_err(ResourceKind::User, eq(pu("urn:example:x", "foo", None), "x"));
        assert_eq!(e.detail, "unknown attribute 'urn:example:x:foo' for resource type User");
        // A sub-attribute of a simple attribute, or an unknown sub-attribute.
        let e = filter_err(ResourceKind::User, eq(ps("userName", "x"), "x"));
        assert!(e.detail.contains("not complex"), "{e}");
        let e = filter_err(ResourceKind::User, eq(ps("emails", "nope"), "x"));
        assert_eq!(e.detail, "unknown sub-attribute 'nope' of 'emails'");
        // Errors deep inside logical expressions surface.
        filter_err(ResourceKind::User, and(eq(p("userName"), "a"), Filter::Not(Box::new(eq(p("bogus"), "b")))));
        // Value filters: only on complex attributes, on the whole attribute, not nested,
        // naming sub-attributes of the outer attribute.
        filter_err(ResourceKind::User, vp(p("userName"), eq(p("value"), "x")));
        filter_err(ResourceKind::User, vp(ps("emails", "value"), eq(p("type"), "x")));
        let e = filter_err(ResourceKind::User, vp(p("emails"), eq(p("bogus"), "x")));
        assert_eq!(e.detail, "unknown sub-attribute 'bogus' of 'emails'");
        filter_err(ResourceKind::User, vp(p("emails"), eq(ps("emails", "type"), "x")));
        filter_err(ResourceKind::User, vp(p("emails"), eq(pu(USER, "type", None), "x")));
        filter_err(ResourceKind::User, vp(p("emails"), vp(p("type"), eq(p("value"), "x"))));
        // Never-returned attributes cannot be probed through filters.
        let e = filter_err(ResourceKind::User, eq(p("password"), "hunter2"));
        assert_eq!(e.detail, "attribute 'password' cannot be used in a filter");
        filter_err(ResourceKind::User, Filter::Present(p("PASSWORD")));
    }

    // --- PATCH paths ---------------------------------------------------------------------

    fn path(attr: AttrPath) -> PatchPath {
        PatchPath { attr, ..PatchPath::default() }
    }

    fn path_err(kind: ResourceKind, mut pp: PatchPath) -> ScimError {
        let e = resolve_path(kind, &mut pp).expect_err("path is rejected");
        assert_eq!((e.status, e.scim_type), (400, Some(ScimType::InvalidPath)), "{e}");
        e
    }

    #[test]
    fn resolves_patch_paths() {
        // `members`: the whole attribute, no implied `value`.
        let mut pp = path(p("MEMBERS"));
        resolve_path(ResourceKind::Group, &mut pp).expect("resolves");
        assert_eq!((pp.attr.name.as_str(), pp.attr.sub.as_ref()), ("members", None));
        assert_eq!(pp.attr.info, info(AttrType::Complex, false, true));

        let mut pp = path(ps("name", "givenname"));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!(pp.attr.sub.as_deref(), Some("givenName"));
        assert_eq!(pp.attr.info, info(AttrType::String, false, false));

        // emails[type eq "work"].value
        let mut pp =
            PatchPath { attr: p("emails"), filter: Some(eq(p("Type"), "work")), filter_sub: Some("VALUE".into()) };
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!(pp.filter_sub.as_deref(), Some("value"));
        assert_eq!(pp.attr.info, info(AttrType::String, false, true));
        let Some(Filter::Compare(inner, ..)) = &pp.filter else { panic!("{pp:?}") };
        assert_eq!(inner.name, "type");
        assert!(inner.info.resolved && !inner.info.multi_valued);

        // members[value eq "2819c223"]
        let mut pp = PatchPath { attr: p("members"), filter: Some(eq(p("value"), "2819c223")), filter_sub: None };
        resolve_path(ResourceKind::Group, &mut pp).expect("resolves");
        assert_eq!(pp.attr.info, info(AttrType::Complex, false, true));

        // Enterprise manager, and a URN-qualified core attribute.
        let mut pp = path(pu(&ENTERPRISE_USER.to_lowercase(), "Manager", None));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!(pp.attr.urn.as_deref(), Some(ENTERPRISE_USER));
        assert_eq!(pp.attr.name, "manager");
        assert_eq!(pp.attr.info, info(AttrType::Complex, false, false));
        let mut pp = path(pu(ENTERPRISE_USER, "manager", Some("value")));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!(pp.attr.sub.as_deref(), Some("value"));
        let mut pp = path(pu(USER, "displayname", None));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!((pp.attr.urn, pp.attr.name.as_str()), (None, "displayName"));

        // Paths may name attributes a filter may not (the client sets a password).
        let mut pp = path(p("password"));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        let mut pp = path(p("active"));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!(pp.attr.info.ty, AttrType::Boolean);
    }

    /// Entra patches `"path": "manager"` (tutorial "Example 5"): in a PATCH path, an
    /// unqualified name found in exactly one extension resolves there. Filters stay strict.
    #[test]
    fn unqualified_extension_attribute_resolves_to_its_one_extension() {
        let mut pp = path(p("manager"));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!((pp.attr.urn.as_deref(), pp.attr.name.as_str()), (Some(ENTERPRISE_USER), "manager"));
        let mut pp = path(ps("Manager", "value"));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!((pp.attr.urn.as_deref(), pp.attr.sub.as_deref()), (Some(ENTERPRISE_USER), Some("value")));
        filter_err(ResourceKind::User, eq(p("manager"), "42"));
        // Core attributes keep winning, and groups have no extension to fall back to.
        let mut pp = path(p("displayName"));
        resolve_path(ResourceKind::User, &mut pp).expect("resolves");
        assert_eq!(pp.attr.urn, None);
        path_err(ResourceKind::Group, path(p("manager")));
    }

    #[test]
    fn patch_path_errors() {
        let e = path_err(ResourceKind::User, path(p("foo")));
        assert_eq!(e.detail, "unknown attribute 'foo' for resource type User");
        path_err(ResourceKind::Group, path(pu(ENTERPRISE_USER, "manager", None)));
        path_err(ResourceKind::User, path(ps("userName", "x")));
        path_err(ResourceKind::User, path(ps("name", "nope")));
        // A value filter needs a multi-valued complex attribute.
        let with_filter = |attr: AttrPath, f: Filter, sub: Option<&str>| PatchPath {
            attr,
            filter: Some(f),
            filter_sub: sub.map(Into::into),
        };
        path_err(ResourceKind::User, with_filter(p("userName"), eq(p("value"), "x"), None));
        path_err(ResourceKind::User, with_filter(p("name"), eq(p("givenName"), "x"), None));
        path_err(ResourceKind::User, with_filter(ps("emails", "value"), eq(p("type"), "x"), None));
        let e = path_err(ResourceKind::User, with_filter(p("emails"), eq(p("bogus"), "x"), None));
        assert_eq!(e.detail, "unknown sub-attribute 'bogus' of 'emails'");
        path_err(ResourceKind::User, with_filter(p("emails"), eq(p("type"), "work"), Some("bogus")));
        path_err(ResourceKind::User, PatchPath { attr: p("emails"), filter: None, filter_sub: Some("value".into()) });
    }

    // --- discovery -----------------------------------------------------------------------

    #[test]
    fn schemas_discovery() {
        let all = schemas_json(BASE);
        let ids: Vec<&str> = all.iter().map(|s| s["id"].as_str().expect("id")).collect();
        assert_eq!(ids, [USER, GROUP, ENTERPRISE_USER, SERVICE_PROVIDER_CONFIG, RESOURCE_TYPE, SCHEMA]);
        for s in &all {
            assert_eq!(s["schemas"], json!([SCHEMA]));
            let id = s["id"].as_str().expect("id");
            assert_eq!(s["meta"], json!({"resourceType": "Schema", "location": format!("{BASE}/Schemas/{id}")}));
            assert!(s["name"].is_string() && s["description"].is_string() && s["attributes"].is_array());
        }
        let keys: Vec<&String> = all[0].as_object().expect("object").keys().collect();
        assert_eq!(keys, ["schemas", "id", "name", "description", "attributes", "meta"]);
        let names: Vec<&str> = all.iter().map(|s| s["name"].as_str().expect("name")).collect();
        assert_eq!(names, ["User", "Group", "EnterpriseUser", "ServiceProviderConfig", "ResourceType", "Schema"]);

        let user = schema_json(BASE, USER).expect("user schema");
        assert_eq!(user, all[0]);
        assert_eq!(user["attributes"][0]["name"], "userName");
        assert_eq!(user["attributes"].as_array().expect("array").len(), 21);
        let ent = schema_json(&format!("{BASE}/"), ENTERPRISE_USER).expect("enterprise");
        assert_eq!(ent["meta"]["location"], format!("{BASE}/Schemas/{ENTERPRISE_USER}"));
        assert!(schema_json(BASE, &USER.to_lowercase()).is_none(), "ids match exactly");
        assert!(schema_json(BASE, "User").is_none());
        // Common attributes are no part of any schema (RFC 7643 §3.1).
        for s in &all[..3] {
            for a in s["attributes"].as_array().expect("array") {
                assert!(!["id", "externalId", "meta"].contains(&a["name"].as_str().expect("name")));
            }
        }
    }

    #[test]
    fn resource_types_discovery() {
        let all = resource_types_json(BASE);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            json!({
                "schemas": [RESOURCE_TYPE],
                "id": "User",
                "name": "User",
                "description": "User Account",
                "endpoint": "/Users",
                "schema": USER,
                "schemaExtensions": [{"schema": ENTERPRISE_USER, "required": false}],
                "meta": {"resourceType": "ResourceType", "location": format!("{BASE}/ResourceTypes/User")},
            })
        );
        assert_eq!(all[1]["id"], "Group");
        assert_eq!(all[1]["endpoint"], "/Groups");
        assert_eq!(all[1]["schema"], GROUP);
        assert_eq!(all[1]["schemaExtensions"], json!([]));
        assert_eq!(all[1]["meta"]["location"], format!("{BASE}/ResourceTypes/Group"));
        assert_eq!(resource_type_json(BASE, "Group"), Some(all[1].clone()));
        assert_eq!(resource_type_json(BASE, "User"), Some(all[0].clone()));
        assert!(resource_type_json(BASE, "user").is_none());
        assert!(resource_type_json(BASE, "Nope").is_none());
        // Every schema a resource type names is served.
        for rt in &all {
            assert!(schema_json(BASE, rt["schema"].as_str().expect("schema")).is_some());
            for ext in rt["schemaExtensions"].as_array().expect("array") {
                assert!(schema_json(BASE, ext["schema"].as_str().expect("schema")).is_some());
            }
        }
    }

    #[test]
    fn service_provider_config_discovery() {
        let opts = SpcOptions {
            patch: true,
            bulk: true,
            bulk_max_operations: 1000,
            bulk_max_payload_bytes: 1_048_576,
            filter_max_results: 200,
            default_page_size: 100,
            sort: false,
            etag: true,
            change_password: false,
        };
        let spc = service_provider_config_json(BASE, &opts);
        assert_eq!(spc["schemas"], json!([SERVICE_PROVIDER_CONFIG]));
        assert_eq!(spc["patch"], json!({"supported": true}));
        assert_eq!(spc["bulk"], json!({"supported": true, "maxOperations": 1000, "maxPayloadSize": 1_048_576}));
        assert_eq!(spc["filter"], json!({"supported": true, "maxResults": 200}));
        assert_eq!(
            spc["pagination"],
            json!({"cursor": true, "index": true, "defaultPaginationMethod": "index", "defaultPageSize": 100,
                   "maxPageSize": 200, "cursorTimeout": 3600})
        );
        assert_eq!(spc["changePassword"], json!({"supported": false}));
        assert_eq!(spc["sort"], json!({"supported": false}));
        assert_eq!(spc["etag"], json!({"supported": true}));
        let schemes = spc["authenticationSchemes"].as_array().expect("array");
        assert_eq!(schemes.len(), 1);
        assert_eq!(schemes[0]["type"], "oauthbearertoken");
        assert_eq!(schemes[0]["name"], "OAuth Bearer Token");
        assert_eq!(schemes[0]["primary"], true);
        assert!(schemes[0]["description"].is_string());
        assert_eq!(
            spc["meta"],
            json!({"resourceType": "ServiceProviderConfig", "location": format!("{BASE}/ServiceProviderConfig")})
        );
        assert!(spc.get("id").is_none(), "RFC 7643 §5: the configuration has no id");
        let off = service_provider_config_json(BASE, &SpcOptions { patch: false, bulk: false, ..opts });
        assert_eq!(off["patch"]["supported"], false);
        assert_eq!(off["bulk"]["supported"], false);
    }
}
