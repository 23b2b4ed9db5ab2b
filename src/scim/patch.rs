//! The PATCH engine (RFC 7644 §3.5.2): parses a `PatchOp` message into operations and
//! applies them to a resource's attributes, with the leniency real IdPs need (Microsoft
//! Entra ID's capitalised ops, dotted and URN-qualified keys in path-less values, member
//! removal by value list; Okta's `id` inside path-less values and member adds without
//! `type`).
//!
//! Owns: PATCH semantics — which value ends up where, and which requests are refused with
//! which `scimType`. Must not touch: I/O, SQL, HTTP, the store's member table (member
//! changes come out as a [`MemberDelta`] for the store to apply), value type checking (the
//! caller re-validates and normalises the whole resource afterwards, so `"False"` stays a
//! string here).
//!
//! Data model: `attrs` holds the client-settable attributes in canonical spelling, extension
//! attributes nested under their schema URN key, never `id`, `meta`, `schemas`, `members`
//! or `groups`. A group's members live in the store; the engine composes member operations,
//! in request order, into a delta whose net effect under the store's "replace, then add,
//! then remove" is the request's.
//!
//! Choices where the RFC is silent or IdPs disagree with it (each is marked where it lives):
//! - a body without `schemas` is accepted; a `schemas` without the PatchOp URN is not;
//! - `remove` with a value filter that matches nothing is a no-op, not `noTarget`;
//! - `add`/`replace` with a filter that matches nothing creates the element when the filter
//!   is `type eq "..."` (possibly `and`-ed with other `eq`s), as Entra and Okta expect;
//! - adding a multi-valued element equal to an existing one (same `value`, else same JSON)
//!   merges into it instead of duplicating it;
//! - unknown attributes are `invalidPath` both as `path` and as keys of a path-less value;
//!   `id`, `meta` and `schemas` keys of a path-less value are ignored (Okta sends `id`).

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use super::ScimError;
use super::filter;
use super::schema::{self, AttributeDef, Mutability};
use crate::model::query::{AttrPath, AttrType, CompareOp, Filter, Literal, PatchPath};
use crate::model::{Member, MemberDelta, MemberRef, ResourceKind};

/// Most operations one request may carry. Entra sends a handful, Okta one per change; a
/// request with more is a client bug or an attempt to make us spin (RFC 7644 §3.12 `tooMany`).
pub const MAX_OPERATIONS: usize = 1000;

/// `op` of RFC 7644 §3.5.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

impl PatchOpKind {
    /// Case-insensitive: Entra sends `"Add"`, `"Replace"`, `"Remove"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "add" => Some(PatchOpKind::Add),
            "remove" => Some(PatchOpKind::Remove),
            "replace" => Some(PatchOpKind::Replace),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Remove => "remove",
            PatchOpKind::Replace => "replace",
        }
    }
}

/// One operation of a PATCH request, with its path parsed and resolved against the schema.
///
/// A path naming a whole schema extension (`urn:ietf:params:scim:schemas:extension:
/// enterprise:2.0:User`) has `attr.urn = Some(<canonical URN>)` and an empty `attr.name`:
/// the RFC 7644 path grammar has no production for it, yet IdPs and test suites send it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: PatchOpKind,
    pub path: Option<PatchPath>,
    /// As sent; `None` when the operation had no `value` member (only valid for `remove`).
    pub value: Option<Value>,
}

/// Why [`apply`] did not apply a request.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchError {
    /// The request is wrong; answer with this error.
    Scim(ScimError),
    /// A member operation uses a filter that can only be evaluated against the group's
    /// member list (anything but `value eq "..."`, or an `or` of those, on `remove`; any
    /// filter on `add`/`replace`). Load the members and call [`apply`] again with them.
    NeedsMemberList,
}

impl From<ScimError> for PatchError {
    fn from(e: ScimError) -> Self {
        PatchError::Scim(e)
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Scim(e) => fmt::Display::fmt(e, f),
            PatchError::NeedsMemberList => f.write_str("the group's member list is needed to evaluate a member filter"),
        }
    }
}

impl std::error::Error for PatchError {}

/// What [`apply`] did besides editing `attrs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchEffect {
    /// Membership changes for the store (groups only; empty for users and when no
    /// operation touched `members`).
    pub members: MemberDelta,
    /// Whether `attrs` differ from before. RFC 7644 §3.5.2.1: a PATCH that changes nothing
    /// SHALL NOT change the modify timestamp, so the caller can skip the write when this is
    /// false and `members` is empty.
    pub attrs_changed: bool,
}

// ---------------------------------------------------------------------------------------
// Parsing the request (RFC 7644 §3.5.2)
// ---------------------------------------------------------------------------------------

/// Parse a PATCH body (RFC 7644 §3.5.2) into operations, each path parsed and resolved to
/// canonical names.
///
/// Lenient where IdPs deviate harmlessly: keys (`Operations`, `op`, `path`, `value`,
/// `schemas`) match case-insensitively (Entra has sent `operations`), `op` values too
/// (Entra sends `"Replace"`), unknown members of an operation (Entra's `"name":
/// "addMember"`) are ignored, and a body without `schemas` is accepted: the RFC requires
/// it and every IdP sends it, but `Operations` already says what the message is.
/// A `schemas` that is present without the PatchOp URN is refused, since then the client
/// meant some other message.
pub fn parse_request(kind: ResourceKind, body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax("the PATCH body must be a JSON object (RFC 7644 §3.5.2)"));
    };
    let is_patch_op = |v: &Value| v.as_str().is_some_and(|s| s.trim().eq_ignore_ascii_case(schema::PATCH_OP));
    match get_ci(obj, "schemas") {
        None => {}
        Some(Value::Array(a)) if a.iter().any(is_patch_op) => {}
        Some(v) if is_patch_op(v) => {}
        Some(_) => {
            return Err(ScimError::invalid_syntax(format!("schemas must contain \"{}\"", schema::PATCH_OP)));
        }
    }
    let ops = match get_ci(obj, "Operations") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ScimError::invalid_syntax("Operations must be an array of operations")),
        None => return Err(ScimError::invalid_syntax("the PATCH body has no Operations")),
    };
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax("Operations must contain at least one operation"));
    }
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::too_many(format!(
            "{} operations in one PATCH; at most {MAX_OPERATIONS} are accepted",
            ops.len()
        )));
    }
    ops.iter().enumerate().map(|(i, op)| parse_op(kind, op).map_err(|e| at_op(i, e))).collect()
}

fn parse_op(kind: ResourceKind, v: &Value) -> Result<PatchOp, ScimError> {
    let Value::Object(obj) = v else {
        return Err(ScimError::invalid_syntax("an operation must be a JSON object"));
    };
    let op = match get_ci(obj, "op") {
        Some(Value::String(s)) => PatchOpKind::parse(s)
            .ok_or_else(|| ScimError::invalid_syntax(format!("op {s:?} is not \"add\", \"remove\" or \"replace\"")))?,
        _ => {
            return Err(ScimError::invalid_syntax("op must be \"add\", \"remove\" or \"replace\""));
        }
    };
    let path = match get_ci(obj, "path") {
        None | Some(Value::Null) => None,
        // An empty path is no path: for remove that is noTarget below, for add/replace the
        // value then names the attributes.
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(parse_path(kind, s)?),
        Some(_) => return Err(ScimError::invalid_path("path must be a string")),
    };
    let value = get_ci(obj, "value").cloned();
    match op {
        // RFC 7644 §3.5.2.2: "If "path" is unspecified, the operation fails with HTTP status
        // code 400 and a "scimType" error code of "noTarget"."
        PatchOpKind::Remove if path.is_none() => {
            return Err(ScimError::no_target("remove needs a path naming what to remove"));
        }
        PatchOpKind::Remove => {}
        // RFC 7644 §3.5.2.1/§3.5.2.3: add and replace MUST carry a value; a value that is
        // missing is a value problem (invalidValue), not a syntax one.
        PatchOpKind::Add | PatchOpKind::Replace => match &value {
            None => return Err(ScimError::invalid_value(format!("{} needs a value", op.as_str()))),
            Some(Value::Object(_)) => {}
            Some(_) if path.is_none() => {
                return Err(ScimError::invalid_value(format!(
                    "{} without a path needs an object of attributes as its value",
                    op.as_str()
                )));
            }
            Some(_) => {}
        },
    }
    Ok(PatchOp { op, path, value })
}

/// Parse and resolve one attribute path: an operation's `path`, or a key of a path-less
/// value (`"name.givenName"`, `"urn:...:enterprise:2.0:User:department"`,
/// `"emails[type eq \"work\"].value"`, or a bare extension URN).
fn parse_path(kind: ResourceKind, text: &str) -> Result<PatchPath, ScimError> {
    let text = text.trim();
    if let Some(urn) = extension_urn(kind, text) {
        let attr = AttrPath { urn: Some(urn.to_string()), ..AttrPath::default() };
        return Ok(PatchPath { attr, filter: None, filter_sub: None });
    }
    let mut path = filter::parse_path(text).map_err(|e| e.into_path_error())?;
    // Before the schema: `id` and `meta` may not be schema attributes there, and the client
    // must hear "read-only" (RFC 7644 §3.5.2: mutability), not "unknown".
    check_server_owned(kind, &path.attr)?;
    schema::resolve_path(kind, &mut path)?;
    classify(kind, &path)?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------
// Applying operations
// ---------------------------------------------------------------------------------------

/// Apply `ops` (from [`parse_request`]) in order to `attrs` and compose the member changes.
///
/// Atomic (RFC 7644 §3.5.2: "If any operation fails, the entire request fails"): on error
/// `attrs` is untouched. `members` is the group's current member list if the caller has it;
/// without it, member filters other than `value eq` ones make this return
/// [`PatchError::NeedsMemberList`], and the caller loads the list and calls again.
///
/// Values are not type-checked: the caller must validate and normalise the whole resource
/// afterwards (coercing `"False"`, a bare-string `manager`, required attributes, ...).
pub fn apply(
    kind: ResourceKind,
    attrs: &mut Map<String, Value>,
    ops: &[PatchOp],
    members: Option<&[Member]>,
) -> Result<PatchEffect, PatchError> {
    let mut work = attrs.clone();
    let mut state = MemberState::new(members);
    for (i, op) in ops.iter().enumerate() {
        apply_op(kind, &mut work, &mut state, op).map_err(|e| match e {
            PatchError::Scim(s) => PatchError::Scim(at_op(i, s)),
            other => other,
        })?;
    }
    // RFC 7643 §2.5: null, an empty list and an empty complex value are "unassigned"; drop
    // them so a removal leaves no `"emails": []` or empty extension object behind.
    work.retain(|_, v| prune(v));
    let attrs_changed = work != *attrs;
    *attrs = work;
    Ok(PatchEffect { members: state.into_delta(), attrs_changed })
}

fn apply_op(
    kind: ResourceKind,
    work: &mut Map<String, Value>,
    state: &mut MemberState,
    op: &PatchOp,
) -> Result<(), PatchError> {
    let Some(path) = &op.path else {
        if op.op == PatchOpKind::Remove {
            return Err(ScimError::no_target("remove needs a path naming what to remove").into());
        }
        // RFC 7644 §3.5.2.1/§3.5.2.3 without a path: the value is a set of attributes, each
        // applied as if it were the path. Keys may themselves be paths (Entra's
        // aadOptscim062020 sends "name.givenName" and "urn:...:User:department").
        let Some(Value::Object(obj)) = &op.value else {
            return Err(ScimError::invalid_value(format!(
                "{} without a path needs an object of attributes as its value",
                op.op.as_str()
            ))
            .into());
        };
        for (key, value) in obj {
            // Okta puts the resource's `id` in here; the server owns these, and saying so
            // with an error would break Okta's group renames.
            if is_server_key(key) {
                continue;
            }
            let path = parse_path(kind, key).map_err(|e| in_key(key, e))?;
            apply_path(kind, work, state, op.op, &path, Some(value)).map_err(|e| match e {
                PatchError::Scim(s) => PatchError::Scim(in_key(key, s)),
                other => other,
            })?;
        }
        return Ok(());
    };
    apply_path(kind, work, state, op.op, path, op.value.as_ref())
}

/// What a resolved path points at.
enum Target<'p> {
    /// A whole schema extension object, `attrs[urn]`.
    Extension(&'static str),
    /// A group's `members`, which live in the store.
    Members(Option<&'p Filter>),
    /// An attribute kept in `attrs` (or in an extension object).
    Attr(AttrTarget<'p>),
}

struct AttrTarget<'p> {
    /// The extension whose object holds the attribute; `None` for core attributes.
    ext: Option<&'static str>,
    def: &'static AttributeDef,
    /// The sub-attribute: `name.givenName`, or `.value` after a filter.
    sub: Option<&'static AttributeDef>,
    filter: Option<&'p Filter>,
}

/// Map a resolved path to its target, refusing what no operation may touch.
fn classify(kind: ResourceKind, path: &PatchPath) -> Result<Target<'_>, ScimError> {
    let attr = &path.attr;
    if attr.name.is_empty() {
        return match attr.urn.as_deref().and_then(|u| extension_urn(kind, u)) {
            Some(urn) if attr.sub.is_none() && path.filter.is_none() && path.filter_sub.is_none() => {
                Ok(Target::Extension(urn))
            }
            _ => Err(ScimError::invalid_path("the path names no attribute")),
        };
    }
    check_server_owned(kind, attr)?;
    let ext = match attr.urn.as_deref() {
        None => None,
        Some(u) if u.eq_ignore_ascii_case(schema::core_urn(kind)) => None,
        Some(u) => Some(extension_urn(kind, u).ok_or_else(|| ScimError::invalid_path(format!("unknown schema {u}")))?),
    };
    let (_, def) = schema::find_attr(kind, ext, &attr.name)
        .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute {}", display_path(path))))?;
    // RFC 7644 §3.5.2: "a client MUST NOT modify an attribute that has mutability readOnly".
    // For users that is `groups`: memberships change through the group.
    if def.mutability == Mutability::ReadOnly {
        return Err(ScimError::mutability(format!("{} is read-only", def.name)));
    }
    if attr.sub.is_some() && path.filter.is_some() {
        return Err(ScimError::invalid_path(format!("{}: a sub-attribute goes after the filter", display_path(path))));
    }
    if path.filter_sub.is_some() && path.filter.is_none() {
        return Err(ScimError::invalid_path(format!("{}: sub-attribute without a filter", display_path(path))));
    }
    let sub_name = path.filter_sub.as_deref().or(attr.sub.as_deref());
    if kind == ResourceKind::Group && ext.is_none() && def.name.eq_ignore_ascii_case("members") {
        // A member is its id and type; `display` and `$ref` are derived on read. There is
        // nothing to patch below a member, so say so rather than silently doing nothing.
        if let Some(s) = sub_name {
            return Err(ScimError::invalid_path(format!(
                "members.{s} cannot be patched; add or remove the member instead"
            )));
        }
        return Ok(Target::Members(path.filter.as_ref()));
    }
    if path.filter.is_some() && !def.multi_valued {
        return Err(ScimError::invalid_path(format!("{}: {} is not multi-valued", display_path(path), def.name)));
    }
    let sub = match sub_name {
        None => None,
        Some(s) => {
            let sd = def
                .sub(s)
                .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute {}", display_path(path))))?;
            if sd.mutability == Mutability::ReadOnly {
                return Err(ScimError::mutability(format!("{}.{} is read-only", def.name, sd.name)));
            }
            Some(sd)
        }
    };
    Ok(Target::Attr(AttrTarget { ext, def, sub, filter: path.filter.as_ref() }))
}

fn apply_path(
    kind: ResourceKind,
    work: &mut Map<String, Value>,
    state: &mut MemberState,
    op: PatchOpKind,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), PatchError> {
    match classify(kind, path)? {
        Target::Extension(urn) => apply_extension(kind, work, op, urn, value).map_err(Into::into),
        Target::Members(filter) => state.apply(op, filter, value),
        Target::Attr(t) => apply_attr(work, op, &t, value).map_err(Into::into),
    }
}

/// A whole extension as the target: its value is an object of the extension's attributes,
/// each applied like a path of its own (so `replace` leaves unnamed ones alone, as
/// RFC 7644 §3.5.2.3 asks of complex attributes).
fn apply_extension(
    kind: ResourceKind,
    work: &mut Map<String, Value>,
    op: PatchOpKind,
    urn: &'static str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if op == PatchOpKind::Remove {
        work.shift_remove(urn);
        return Ok(());
    }
    match value {
        None | Some(Value::Null) => {
            work.shift_remove(urn);
            Ok(())
        }
        Some(Value::Object(obj)) => {
            for (key, v) in obj {
                // Clients copy the extension object of a GET, `schemas` and all.
                if is_server_key(key) {
                    continue;
                }
                let (_, def) = schema::find_attr(kind, Some(urn), key)
                    .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute {urn}:{key}")))?;
                if def.mutability == Mutability::ReadOnly {
                    return Err(ScimError::mutability(format!("{urn}:{} is read-only", def.name)));
                }
                apply_attr(work, op, &AttrTarget { ext: Some(urn), def, sub: None, filter: None }, Some(v))?;
            }
            Ok(())
        }
        Some(_) => Err(ScimError::invalid_value(format!("the value for {urn} must be an object"))),
    }
}

fn apply_attr(
    work: &mut Map<String, Value>,
    op: PatchOpKind,
    t: &AttrTarget<'_>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(urn) = t.ext else {
        return apply_in(work, op, t, value);
    };
    match work.get_mut(urn) {
        Some(Value::Object(obj)) => apply_in(obj, op, t, value),
        // Nothing there: removing is done already; adding starts the extension object.
        _ if op == PatchOpKind::Remove => Ok(()),
        _ => {
            let mut obj = Map::new();
            apply_in(&mut obj, op, t, value)?;
            work.insert(urn.to_string(), Value::Object(obj));
            Ok(())
        }
    }
}

/// Apply one operation to attribute `t.def` of `container` (the resource or an extension
/// object), then check the result against the attribute's mutability.
fn apply_in(
    container: &mut Map<String, Value>,
    op: PatchOpKind,
    t: &AttrTarget<'_>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let def = t.def;
    let key = def.name.to_string();
    canonicalize_key(container, &key);
    let before = container.get(&key).cloned();
    match (t.filter, t.sub) {
        (None, None) => apply_whole(container, &key, def, op, value)?,
        (None, Some(sub)) => apply_sub(container, &key, def, sub, op, value)?,
        (Some(f), sub) => apply_filtered(container, &key, def, f, sub, op, value)?,
    }
    check_mutability(def, before.as_ref(), container.get(&key))
}

/// The attribute itself (`path: "emails"`, `"name"`, `"title"`, or a path-less key).
fn apply_whole(
    m: &mut Map<String, Value>,
    key: &str,
    def: &AttributeDef,
    op: PatchOpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if op == PatchOpKind::Remove {
        match value {
            // Entra removes listed values of a multi-valued attribute this way.
            Some(v) if def.multi_valued && !v.is_null() => remove_values(m, key, def, v),
            // RFC 7644 §3.5.2.2: the attribute and all its values are removed. A value sent
            // with a single-valued attribute is ignored: either way the client wants it gone.
            _ => {
                m.shift_remove(key);
            }
        }
        return Ok(());
    }
    let v = need_value(op, value)?;
    if v.is_null() {
        // RFC 7643 §2.5: null is unassigned. Adding "nothing" to a list is a no-op.
        if !(def.multi_valued && op == PatchOpKind::Add) {
            m.shift_remove(key);
        }
        return Ok(());
    }
    if def.multi_valued {
        let mut items = canonical_items(def, v);
        match op {
            // RFC 7644 §3.5.2.1: "a new value is added to the attribute".
            PatchOpKind::Add => append_items(m, key, def, items),
            // RFC 7644 §3.5.2.3: "the attribute and all values are replaced".
            _ => {
                fix_primary(&mut items, &[]);
                m.insert(key.to_string(), Value::Array(items));
            }
        }
    } else if let (AttrType::Complex, Value::Object(obj)) = (def.ty, v) {
        // RFC 7644 §3.5.2.3: sub-attributes "not specified in the value parameter are left
        // unchanged"; add (§3.5.2.1) does the same for a complex attribute.
        if let Some(target) = object_mut(m, key) {
            merge_map(target, &canonical_element(def, obj));
        }
    } else {
        // Simple, or a complex attribute given as a scalar (Entra's bare-string `manager`):
        // stored as given, the caller's normalisation coerces or refuses it.
        m.insert(key.to_string(), v.clone());
    }
    Ok(())
}

/// `attr.sub` without a filter: `name.givenName`, `manager.value`; on a multi-valued
/// attribute (`emails.value`) every element is addressed.
fn apply_sub(
    m: &mut Map<String, Value>,
    key: &str,
    def: &AttributeDef,
    sub: &AttributeDef,
    op: PatchOpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let sub_key = sub.name.to_string();
    if op == PatchOpKind::Remove {
        match m.get_mut(key) {
            Some(Value::Object(o)) => {
                o.shift_remove(&sub_key);
            }
            // `emails.value`: every element loses its value, so every element goes.
            Some(Value::Array(a)) if is_value_sub(def, sub) => a.clear(),
            Some(Value::Array(a)) => {
                for e in a.iter_mut() {
                    if let Value::Object(o) = e {
                        o.shift_remove(&sub_key);
                    }
                }
            }
            _ => {}
        }
        return Ok(());
    }
    let v = need_value(op, value)?;
    if def.multi_valued {
        let Some(arr) = array_mut(m, key) else { return Ok(()) };
        if arr.is_empty() {
            if !v.is_null() {
                let mut elem = Map::new();
                elem.insert(sub_key, v.clone());
                arr.push(Value::Object(elem));
            }
        } else {
            for e in arr.iter_mut() {
                if let Value::Object(o) = e {
                    set_or_clear(o, &sub_key, v);
                }
            }
        }
        fix_primary(arr, &[]);
    } else if let Some(o) = object_mut(m, key) {
        set_or_clear(o, &sub_key, v);
    }
    Ok(())
}

/// `attr[filter]` and `attr[filter].sub` (RFC 7644 §3.5.2.2, §3.5.2.3).
fn apply_filtered(
    m: &mut Map<String, Value>,
    key: &str,
    def: &AttributeDef,
    f: &Filter,
    sub: Option<&AttributeDef>,
    op: PatchOpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if op == PatchOpKind::Remove {
        let Some(Value::Array(arr)) = m.get_mut(key) else {
            return Ok(());
        };
        // No match is a no-op, not noTarget: §3.5.2.2 (unlike §3.5.2.3) does not ask for an
        // error, the end state the client wants already holds, and IdPs retry removals.
        match sub {
            None => arr.retain(|e| !filter::matches(f, e)),
            // An element is its `value` (RFC 7643 §2.4): removing `emails[type eq "work"].value`,
            // as Entra does when the mail is cleared, removes that email rather than leaving
            // `{"type": "work", "primary": true}` behind.
            Some(s) if is_value_sub(def, s) => arr.retain(|e| !filter::matches(f, e)),
            Some(s) => {
                for e in arr.iter_mut() {
                    if filter::matches(f, e)
                        && let Value::Object(o) = e
                    {
                        o.shift_remove(s.name.as_str());
                    }
                }
            }
        }
        return Ok(());
    }
    let v = need_value(op, value)?;
    let Some(arr) = array_mut(m, key) else { return Ok(()) };
    let hits: Vec<usize> = arr.iter().enumerate().filter(|(_, e)| filter::matches(f, e)).map(|(i, _)| i).collect();
    let touched = if hits.is_empty() {
        // RFC 7644 §3.5.2.3: no match is noTarget. But Entra and Okta address a typed slot
        // that may not exist yet (`phoneNumbers[type eq "mobile"].value`) and mean "set
        // it", so a filter that pins `type` describes the element to create.
        let Some(mut elem) = element_from_filter(def, f) else {
            return Err(ScimError::no_target(format!("the filter on {} matched no value", def.name)));
        };
        write_element(&mut elem, def, sub, v)?;
        arr.push(Value::Object(elem));
        vec![arr.len() - 1]
    } else {
        for &i in &hits {
            if let Some(Value::Object(o)) = arr.get_mut(i) {
                write_element(o, def, sub, v)?;
            }
        }
        hits
    };
    fix_primary(arr, &touched);
    Ok(())
}

/// Write `v` into one element: into its sub-attribute, or (no sub-attribute) merged into
/// it. Merging rather than replacing the element keeps what the client did not mention,
/// which is what Entra's partial values expect.
fn write_element(
    elem: &mut Map<String, Value>,
    def: &AttributeDef,
    sub: Option<&AttributeDef>,
    v: &Value,
) -> Result<(), ScimError> {
    match (sub, v) {
        (Some(s), _) => set_or_clear(elem, s.name.as_str(), v),
        (None, Value::Object(obj)) => merge_map(elem, &canonical_element(def, obj)),
        (None, _) => {
            return Err(ScimError::invalid_value(format!(
                "the value for a filtered {} path must be an object of sub-attributes",
                def.name
            )));
        }
    }
    Ok(())
}

/// A new element from a filter of `eq` terms that includes `type eq "..."`, e.g.
/// `type eq "work" and primary eq true` gives `{"type": "work", "primary": true}`.
fn element_from_filter(def: &AttributeDef, f: &Filter) -> Option<Map<String, Value>> {
    fn terms<'f>(f: &'f Filter, out: &mut Vec<(&'f str, &'f Literal)>) -> bool {
        match f {
            Filter::And(a, b) => terms(a, out) && terms(b, out),
            Filter::Compare(p, CompareOp::Eq, lit) if p.urn.is_none() && p.sub.is_none() => {
                out.push((p.name.as_str(), lit));
                true
            }
            _ => false,
        }
    }
    let mut found = Vec::new();
    if !terms(f, &mut found) || !found.iter().any(|(n, _)| n.eq_ignore_ascii_case("type")) {
        return None;
    }
    let mut elem = Map::new();
    for (name, lit) in found {
        let name = def.sub(name).map(|s| s.name.to_string()).unwrap_or_else(|| name.to_string());
        elem.insert(name, literal_value(lit));
    }
    Some(elem)
}

/// `sub` is the `value` sub-attribute of multi-valued `def` (emails, phoneNumbers, ...).
fn is_value_sub(def: &AttributeDef, sub: &AttributeDef) -> bool {
    def.multi_valued && sub.name.eq_ignore_ascii_case("value") && def.sub("value").is_some()
}

fn literal_value(lit: &Literal) -> Value {
    match lit {
        Literal::Null => Value::Null,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Number(n) => Value::Number(n.clone()),
        Literal::String(s) => Value::String(s.clone()),
    }
}

/// RFC 7644 §3.5.2.1 on a multi-valued attribute: append each item, except that an item
/// equal to an existing element (see [`same_element`]) is merged into it, so adding twice
/// is adding once.
fn append_items(m: &mut Map<String, Value>, key: &str, def: &AttributeDef, items: Vec<Value>) {
    let Some(arr) = array_mut(m, key) else { return };
    let mut touched = Vec::with_capacity(items.len());
    for item in items {
        match arr.iter().position(|e| same_element(def, e, &item)) {
            Some(i) => {
                if let (Some(Value::Object(existing)), Value::Object(new)) = (arr.get_mut(i), &item) {
                    // The value is the same one; keep it as stored rather than re-spell it.
                    for (k, v) in new.iter().filter(|(k, _)| k.as_str() != "value") {
                        set_or_clear(existing, k, v);
                    }
                }
                touched.push(i);
            }
            None => {
                arr.push(item);
                touched.push(arr.len() - 1);
            }
        }
    }
    fix_primary(arr, &touched);
}

/// Remove the listed values from a multi-valued attribute (`{"op": "remove", "path":
/// "emails", "value": [{"value": "x@y"}]}`): an object item matches by its `value`, or by
/// all the sub-attributes it gives; a scalar matches a scalar element or an element's
/// `value`.
fn remove_values(m: &mut Map<String, Value>, key: &str, def: &AttributeDef, v: &Value) {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if let Some(Value::Array(arr)) = m.get_mut(key) {
        arr.retain(|e| !items.iter().any(|it| value_matches(def, e, it)));
    }
}

fn value_matches(def: &AttributeDef, elem: &Value, item: &Value) -> bool {
    let value_exact = value_case_exact(def);
    match item {
        Value::Object(it) => {
            let Value::Object(el) = elem else { return false };
            if let Some(want) = get_ci(it, "value") {
                return get_ci(el, "value").is_some_and(|have| scalar_eq(value_exact, have, want));
            }
            let given: Vec<_> = it.iter().filter(|(_, v)| !v.is_null()).collect();
            !given.is_empty()
                && given.iter().all(|(k, want)| get_ci(el, k).is_some_and(|have| scalar_eq(false, have, want)))
        }
        Value::Null => false,
        scalar => match elem {
            Value::Object(el) => get_ci(el, "value").is_some_and(|have| scalar_eq(value_exact, have, scalar)),
            other => scalar_eq(def.case_exact, other, scalar),
        },
    }
}

/// Two elements of a multi-valued attribute are "the same value" (RFC 7644 §3.5.2.1: "If
/// the target location already contains the value specified, no changes SHOULD be made")
/// when their `value` sub-attributes are equal (case-insensitively unless `caseExact`),
/// or, for elements without one (addresses), when they are equal JSON.
fn same_element(def: &AttributeDef, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => match (x.get("value"), y.get("value")) {
            (Some(va), Some(vb)) => scalar_eq(value_case_exact(def), va, vb),
            (None, None) => x == y,
            _ => false,
        },
        _ => scalar_eq(def.case_exact, a, b),
    }
}

fn value_case_exact(def: &AttributeDef) -> bool {
    def.sub("value").is_some_and(|s| s.case_exact)
}

fn scalar_eq(case_exact: bool, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if !case_exact => x.to_lowercase() == y.to_lowercase(),
        _ => a == b,
    }
}

/// RFC 7643 §2.4: at most one element may have `primary: true`. The winner is the last
/// element this operation wrote with it (the client's latest word), else the first.
fn fix_primary(arr: &mut [Value], touched: &[usize]) {
    fn is_primary(v: &Value) -> bool {
        match v.get("primary") {
            Some(Value::Bool(b)) => *b,
            // Entra sends booleans as strings; the caller coerces them later.
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }
    let winner = touched
        .iter()
        .rev()
        .copied()
        .find(|&i| arr.get(i).is_some_and(is_primary))
        .or_else(|| arr.iter().position(is_primary));
    let Some(winner) = winner else { return };
    for (i, e) in arr.iter_mut().enumerate() {
        if i != winner
            && is_primary(e)
            && let Value::Object(o) = e
        {
            o.insert("primary".into(), Value::Bool(false));
        }
    }
}

/// The items of a value for a multi-valued attribute (a list, or one element where IdPs
/// send one), nulls dropped and sub-attribute names canonical.
fn canonical_items(def: &AttributeDef, v: &Value) -> Vec<Value> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .filter(|x| !x.is_null())
        .map(|x| match x {
            Value::Object(o) if def.ty == AttrType::Complex => Value::Object(canonical_element(def, o)),
            other => other.clone(),
        })
        .collect()
}

/// Sub-attribute names in schema spelling. Read-only sub-attributes (`manager.displayName`)
/// are dropped like read-only attributes of a POST (RFC 7644 §3.3); unknown ones too, as
/// the caller's normalisation would. Nulls stay: merged, they clear the sub-attribute.
fn canonical_element(def: &AttributeDef, obj: &Map<String, Value>) -> Map<String, Value> {
    if def.sub_attributes.is_empty() {
        return obj.clone();
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match def.sub(k) {
            Some(s) if s.mutability != Mutability::ReadOnly => {
                out.insert(s.name.to_string(), v.clone());
            }
            _ => {}
        }
    }
    out
}

fn merge_map(target: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        set_or_clear(target, k, v);
    }
}

fn set_or_clear(o: &mut Map<String, Value>, key: &str, v: &Value) {
    if v.is_null() {
        o.shift_remove(key);
    } else {
        o.insert(key.to_string(), v.clone());
    }
}

/// RFC 7644 §3.5.2: immutable attributes may be set when they had no value (or to the value
/// they have); required attributes may not become unassigned (§3.5.2.2, last paragraph).
/// Checked on the attribute and, for a single-valued complex one, its sub-attributes.
fn check_mutability(def: &AttributeDef, before: Option<&Value>, after: Option<&Value>) -> Result<(), ScimError> {
    if def.mutability == Mutability::Immutable && assigned(before) && !same_value(def.case_exact, before, after) {
        return Err(ScimError::mutability(format!("{} is immutable and already has a value", def.name)));
    }
    if def.required && assigned(before) && !assigned(after) {
        return Err(ScimError::mutability(format!("{} is required and cannot be removed", def.name)));
    }
    if !def.multi_valued && def.ty == AttrType::Complex {
        for s in &def.sub_attributes {
            let b = before.and_then(|v| v.get(s.name.as_str()));
            let a = after.and_then(|v| v.get(s.name.as_str()));
            if s.mutability == Mutability::Immutable && assigned(b) && !same_value(s.case_exact, b, a) {
                return Err(ScimError::mutability(format!(
                    "{}.{} is immutable and already has a value",
                    def.name, s.name
                )));
            }
        }
    }
    Ok(())
}

fn assigned(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn same_value(case_exact: bool, a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => scalar_eq(case_exact, x, y),
        (x, y) => !assigned(x) && !assigned(y),
    }
}

/// Drop unassigned values (null, `[]`, `{}`) recursively; false when `v` itself is one.
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => {
            a.retain_mut(prune);
            !a.is_empty()
        }
        Value::Object(o) => {
            o.retain(|_, x| prune(x));
            !o.is_empty()
        }
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------
// Group members
// ---------------------------------------------------------------------------------------

/// Member changes so far. Without the member list the operations are composed into a
/// delta; with it, the list is edited and diffed at the end (needed to evaluate filters).
enum MemberState {
    Delta(MemberDelta),
    Full { original: Vec<MemberRef>, current: Vec<MemberRef>, display: Vec<(String, String)> },
}

impl MemberState {
    fn new(members: Option<&[Member]>) -> Self {
        match members {
            None => MemberState::Delta(MemberDelta::default()),
            Some(ms) => {
                // `display` stays `None`: the stored one is derived on read, not sent by the IdP.
                let original: Vec<MemberRef> =
                    ms.iter().map(|m| MemberRef { id: m.id.clone(), kind: Some(m.kind), display: None }).collect();
                let display = ms.iter().filter_map(|m| Some((m.id.clone(), m.display.clone()?))).collect();
                MemberState::Full { current: original.clone(), original, display }
            }
        }
    }

    fn apply(&mut self, op: PatchOpKind, filter: Option<&Filter>, value: Option<&Value>) -> Result<(), PatchError> {
        match (op, filter) {
            (PatchOpKind::Add, None) => {
                if let Some(v) = value {
                    self.add(parse_members(v)?);
                }
            }
            (PatchOpKind::Replace, None) => {
                let list = match value {
                    Some(v) => parse_members(v)?,
                    None => Vec::new(),
                };
                self.replace(list);
            }
            (PatchOpKind::Remove, None) => match value {
                // RFC 7644 §3.5.2.2: "path": "members" removes them all.
                None | Some(Value::Null) => self.replace(Vec::new()),
                // Entra: `{"op": "Remove", "path": "members", "value": [{"value": id}]}`.
                Some(v) => {
                    let ids = parse_members(v)?.into_iter().map(|m| m.id).collect();
                    self.remove(ids);
                }
            },
            (PatchOpKind::Remove, Some(f)) => {
                // Okta and the RFC: `members[value eq "id"]`; no list needed, and no match
                // is a no-op (removing a non-member is what the store does anyway).
                if let Some(ids) = value_eq_ids(f) {
                    self.remove(ids);
                    return Ok(());
                }
                let MemberState::Full { current, display, .. } = self else {
                    return Err(PatchError::NeedsMemberList);
                };
                let ids = current
                    .iter()
                    .filter(|m| filter::matches(f, &member_json(m, display)))
                    .map(|m| m.id.clone())
                    .collect();
                self.remove(ids);
            }
            (PatchOpKind::Add | PatchOpKind::Replace, Some(f)) => {
                // Rare: edit the materialised list with the generic filtered write, which
                // needs to know which members match (and whether any do: noTarget).
                let MemberState::Full { current, display, .. } = self else {
                    return Err(PatchError::NeedsMemberList);
                };
                let Some((_, def)) = schema::find_attr(ResourceKind::Group, None, "members") else {
                    return Err(ScimError::invalid_path("members is not in the Group schema").into());
                };
                let mut tmp = Map::new();
                tmp.insert("members".into(), Value::Array(current.iter().map(|m| member_json(m, display)).collect()));
                apply_filtered(&mut tmp, "members", def, f, None, op, value)?;
                let mut edited = match tmp.get("members") {
                    Some(v) => parse_members(v)?,
                    None => Vec::new(),
                };
                // The displays in there are the list's derived ones (a written `display`
                // is dropped as read-only), not something the IdP sent.
                for m in &mut edited {
                    m.display = None;
                }
                *current = dedup_members(edited);
            }
        }
        Ok(())
    }

    fn add(&mut self, list: Vec<MemberRef>) {
        for m in list {
            match self {
                MemberState::Delta(d) => match &mut d.replace {
                    // After a replace, adds edit the replacement list.
                    Some(rep) => push_member(rep, m),
                    None => {
                        // remove x, then add x: x ends up a member, so only the add stays.
                        d.remove.retain(|id| *id != m.id);
                        push_member(&mut d.add, m);
                    }
                },
                MemberState::Full { current, .. } => push_member(current, m),
            }
        }
    }

    fn remove(&mut self, ids: Vec<String>) {
        match self {
            MemberState::Delta(d) => match &mut d.replace {
                Some(rep) => rep.retain(|m| !ids.contains(&m.id)),
                None => {
                    // add x, then remove x: the store removes after adding, but keeping x
                    // out of `add` also spares it validating a member that goes anyway.
                    d.add.retain(|m| !ids.contains(&m.id));
                    for id in ids {
                        if !d.remove.contains(&id) {
                            d.remove.push(id);
                        }
                    }
                }
            },
            MemberState::Full { current, .. } => current.retain(|m| !ids.contains(&m.id)),
        }
    }

    fn replace(&mut self, list: Vec<MemberRef>) {
        let list = dedup_members(list);
        match self {
            MemberState::Delta(d) => *d = MemberDelta { replace: Some(list), add: Vec::new(), remove: Vec::new() },
            MemberState::Full { current, .. } => *current = list,
        }
    }

    fn into_delta(self) -> MemberDelta {
        match self {
            MemberState::Delta(d) => d,
            MemberState::Full { original, current, .. } => {
                let now: HashSet<&str> = current.iter().map(|m| m.id.as_str()).collect();
                let was: HashSet<&str> = original.iter().map(|m| m.id.as_str()).collect();
                MemberDelta {
                    replace: None,
                    add: current.iter().filter(|m| !was.contains(m.id.as_str())).cloned().collect(),
                    remove: original.iter().filter(|m| !now.contains(m.id.as_str())).map(|m| m.id.clone()).collect(),
                }
            }
        }
    }
}

fn push_member(list: &mut Vec<MemberRef>, m: MemberRef) {
    match list.iter_mut().find(|x| x.id == m.id) {
        // One entry per id; what a later mention says fills in or updates the earlier one.
        Some(existing) => {
            if m.kind.is_some() {
                existing.kind = m.kind;
            }
            if m.display.is_some() {
                existing.display = m.display;
            }
        }
        None => list.push(m),
    }
}

fn dedup_members(list: Vec<MemberRef>) -> Vec<MemberRef> {
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        push_member(&mut out, m);
    }
    out
}

/// A member as a filter sees it (RFC 7643 §4.2: `value`, `type`, `display`).
fn member_json(m: &MemberRef, display: &[(String, String)]) -> Value {
    let mut o = Map::new();
    o.insert("value".into(), Value::String(m.id.clone()));
    if let Some(k) = m.kind {
        o.insert("type".into(), Value::String(k.as_str().into()));
    }
    if let Some((_, d)) = display.iter().find(|(id, _)| *id == m.id) {
        o.insert("display".into(), Value::String(d.clone()));
    }
    Value::Object(o)
}

/// The ids of `value eq "a"` or `value eq "a" or value eq "b"`; `None` for anything else.
fn value_eq_ids(f: &Filter) -> Option<Vec<String>> {
    match f {
        Filter::Compare(p, CompareOp::Eq, Literal::String(id))
            if p.urn.is_none() && p.sub.is_none() && p.name.eq_ignore_ascii_case("value") =>
        {
            Some(vec![id.clone()])
        }
        Filter::Or(a, b) => {
            let mut ids = value_eq_ids(a)?;
            ids.extend(value_eq_ids(b)?);
            Some(ids)
        }
        _ => None,
    }
}

/// Members as IdPs send them: `[{"value": id, "type"?: "User"|"Group", "display"?, "$ref"?}]`
/// (one object alone is taken as a list of one). `$ref` (Entra sends `"$ref": null`) is
/// ignored: it is derived on read.
fn parse_members(v: &Value) -> Result<Vec<MemberRef>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => {
            return Err(ScimError::invalid_value("members must be a list of objects with a \"value\""));
        }
    };
    items
        .into_iter()
        .filter(|m| !m.is_null())
        .map(|m| {
            let Value::Object(obj) = m else {
                return Err(ScimError::invalid_value("each member must be an object with a \"value\""));
            };
            let id = match get_ci(obj, "value") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                _ => {
                    return Err(ScimError::invalid_value("each member needs a \"value\": the id of a user or group"));
                }
            };
            let kind = match get_ci(obj, "type") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(ResourceKind::parse(t.trim()).ok_or_else(|| {
                    ScimError::invalid_value(format!("member type {t:?} is not \"User\" or \"Group\""))
                })?),
                Some(_) => return Err(ScimError::invalid_value("member type must be \"User\" or \"Group\"")),
            };
            // Echoed back as the IdP sent it (the store keeps it); `$ref` is derived on read.
            let display = match get_ci(obj, "display") {
                Some(Value::String(d)) => Some(d.clone()),
                _ => None,
            };
            Ok(MemberRef { id, kind, display })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Look a key up case-insensitively (RFC 7643 §2.1: attribute names are case-insensitive),
/// preferring an exact match.
fn get_ci<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Rename a key stored in another spelling to the canonical one, so every later lookup can
/// be exact.
fn canonicalize_key(m: &mut Map<String, Value>, name: &str) {
    if m.contains_key(name) {
        return;
    }
    let Some(k) = m.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned() else {
        return;
    };
    if let Some(v) = m.shift_remove(&k) {
        m.insert(name.to_string(), v);
    }
}

/// The list at `key`, created when absent; a lone value found there becomes a list of one.
fn array_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Vec<Value>> {
    let slot = m.entry(key.to_string()).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        let old = slot.take();
        *slot = Value::Array(if old.is_null() { Vec::new() } else { vec![old] });
    }
    slot.as_array_mut()
}

/// The object at `key`, created when absent or not an object.
fn object_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = m.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

fn need_value(op: PatchOpKind, value: Option<&Value>) -> Result<&Value, ScimError> {
    value.ok_or_else(|| ScimError::invalid_value(format!("{} needs a value", op.as_str())))
}

/// The canonical spelling of `text` if it names one of `kind`'s schema extensions.
fn extension_urn(kind: ResourceKind, text: &str) -> Option<&'static str> {
    schema::extension_urns(kind).iter().find(|u| u.eq_ignore_ascii_case(text)).copied()
}

/// `id`, `meta` and `schemas` belong to the server (RFC 7643 §3.1).
fn is_server_key(key: &str) -> bool {
    ["id", "meta", "schemas"].iter().any(|k| key.eq_ignore_ascii_case(k))
}

fn check_server_owned(kind: ResourceKind, attr: &AttrPath) -> Result<(), ScimError> {
    let core = attr.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(schema::core_urn(kind)));
    if core && is_server_key(&attr.name) {
        return Err(ScimError::mutability(format!("{} is set by the server and cannot be patched", attr.name)));
    }
    Ok(())
}

fn display_path(p: &PatchPath) -> String {
    let mut s = String::new();
    if let Some(u) = &p.attr.urn {
        s.push_str(u);
        s.push(':');
    }
    s.push_str(&p.attr.name);
    if let Some(sub) = &p.attr.sub {
        s.push('.');
        s.push_str(sub);
    }
    if p.filter.is_some() {
        s.push_str("[...]");
    }
    if let Some(sub) = &p.filter_sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}

/// Name the operation in the error, so an operator can find it in a 50-operation request.
fn at_op(i: usize, e: ScimError) -> ScimError {
    ScimError { detail: format!("Operations[{i}]: {}", e.detail), ..e }
}

fn in_key(key: &str, e: ScimError) -> ScimError {
    ScimError { detail: format!("value key {key:?}: {}", e.detail), ..e }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::scim::ScimType;

    const EXT: &str = schema::ENTERPRISE_USER;
    const USER: ResourceKind = ResourceKind::User;
    const GROUP: ResourceKind = ResourceKind::Group;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn body(ops: Value) -> Value {
        json!({"schemas": [schema::PATCH_OP], "Operations": ops})
    }

    fn run(
        kind: ResourceKind,
        before: &Value,
        body: &Value,
        members: Option<&[Member]>,
    ) -> Result<(Value, PatchEffect), PatchError> {
        let ops = parse_request(kind, body)?;
        let mut attrs = obj(before.clone());
        let effect = apply(kind, &mut attrs, &ops, members)?;
        Ok((Value::Object(attrs), effect))
    }

    fn mref(id: &str, kind: Option<ResourceKind>) -> MemberRef {
        MemberRef { id: id.into(), kind, display: None }
    }

    fn member(id: &str, kind: ResourceKind) -> Member {
        Member { id: id.into(), kind, display: Some(format!("{id} name")) }
    }

    /// Entra removes a cleared mail with `Remove emails[type eq "work"].value` (and a value);
    /// the email goes, rather than staying as `{"type": "work", "primary": true}`. Removing any
    /// other sub-attribute keeps the element.
    #[test]
    fn removing_an_elements_value_removes_the_element() {
        let before = json!({"userName": "u",
            "emails": [{"value": "w@x", "type": "work", "primary": true}, {"value": "h@x", "type": "home"}],
            "addresses": [{"type": "work", "streetAddress": "1 St", "locality": "L"}]});
        let (after, _) = run(
            USER,
            &before,
            &body(json!([
                {"op": "Remove", "path": "emails[type eq \"work\"].value", "value": "stale@x"},
                {"op": "remove", "path": "addresses[type eq \"work\"].streetAddress"}
            ])),
            None,
        )
        .unwrap();
        assert_eq!(after["emails"], json!([{"value": "h@x", "type": "home"}]));
        assert_eq!(after["addresses"], json!([{"type": "work", "locality": "L"}]));
        let (after, _) = run(USER, &before, &body(json!([{"op": "remove", "path": "emails.value"}])), None).unwrap();
        assert!(after.get("emails").is_none(), "{after}");
    }

    /// Attribute edits: `before` + `ops` gives `after` (member-free).
    #[test]
    fn attribute_cases() {
        struct Case {
            name: &'static str,
            kind: ResourceKind,
            before: Value,
            ops: Value,
            after: Value,
        }
        let addr_work =
            json!({"type": "work", "streetAddress": "100 Old St", "locality": "Springfield", "primary": false});
        let addr_home = json!({"type": "home", "streetAddress": "1 Home Rd"});
        let cases = vec![
            // ----- RFC 7644 §3.5.2.1 -----
            Case {
                name: "rfc add without path (attribute names case-insensitive: nickname)",
                kind: USER,
                before: json!({"userName": "bjensen"}),
                ops: json!([{"op": "add", "value": {"emails": [{"value": "babs@jensen.org", "type": "home"}], "nickname": "Babs"}}]),
                after: json!({"userName": "bjensen", "emails": [{"value": "babs@jensen.org", "type": "home"}], "nickName": "Babs"}),
            },
            // ----- RFC 7644 §3.5.2.2 -----
            Case {
                name: "rfc remove emails matching a compound filter",
                kind: USER,
                before: json!({"userName": "u", "emails": [
                    {"value": "cto@example.com", "type": "work"},
                    {"value": "cto@example.org", "type": "work"},
                    {"value": "me@example.com", "type": "home"}]}),
                ops: json!([{"op": "remove", "path": "emails[type eq \"work\" and value ew \"example.com\"]"}]),
                after: json!({"userName": "u", "emails": [
                    {"value": "cto@example.org", "type": "work"},
                    {"value": "me@example.com", "type": "home"}]}),
            },
            // ----- RFC 7644 §3.5.2.3 -----
            Case {
                name: "rfc replace the work address",
                kind: USER,
                before: json!({"userName": "u", "addresses": [addr_work, addr_home]}),
                ops: json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": {
                    "type": "work", "streetAddress": "911 Universal City Plaza", "locality": "Hollywood",
                    "region": "CA", "postalCode": "91608", "country": "US",
                    "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US", "primary": true}}]),
                after: json!({"userName": "u", "addresses": [
                    {"type": "work", "streetAddress": "911 Universal City Plaza", "locality": "Hollywood", "primary": true,
                     "region": "CA", "postalCode": "91608", "country": "US",
                     "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US"},
                    addr_home]}),
            },
            Case {
                name: "rfc replace one sub-attribute of the work address",
                kind: USER,
                before: json!({"userName": "u", "addresses": [addr_work, addr_home]}),
                ops: json!([{"op": "replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1010 Broadway Ave"}]),
                after: json!({"userName": "u", "addresses": [
                    {"type": "work", "streetAddress": "1010 Broadway Ave", "locality": "Springfield", "primary": false},
                    addr_home]}),
            },
            Case {
                name: "rfc replace without path: emails list replaced, nickName set",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "old@example.com", "type": "work"}], "nickName": "B"}),
                ops: json!([{"op": "replace", "value": {
                    "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true},
                               {"value": "babs@jensen.org", "type": "home"}],
                    "nickname": "Babs"}}]),
                after: json!({"userName": "u", "emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"}], "nickName": "Babs"}),
            },
            Case {
                name: "replace on a missing work address creates it (type eq)",
                kind: USER,
                before: json!({"userName": "u"}),
                ops: json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": {"locality": "Hollywood"}}]),
                after: json!({"userName": "u", "addresses": [{"type": "work", "locality": "Hollywood"}]}),
            },
            // ----- Okta -----
            Case {
                name: "okta deactivate: replace without path",
                kind: USER,
                before: json!({"userName": "u", "active": true}),
                ops: json!([{"op": "replace", "value": {"active": false}}]),
                after: json!({"userName": "u", "active": false}),
            },
            Case {
                name: "okta replace value carrying id, schemas and meta: ignored",
                kind: USER,
                before: json!({"userName": "u", "title": "a"}),
                ops: json!([{"op": "replace", "value": {"id": "123", "schemas": ["x"], "meta": {}, "title": "b"}}]),
                after: json!({"userName": "u", "title": "b"}),
            },
            // ----- Entra -----
            Case {
                name: "entra capitalised Replace, boolean as a string (left for the caller)",
                kind: USER,
                before: json!({"userName": "u", "active": true}),
                ops: json!([{"op": "Replace", "path": "active", "value": "False"}]),
                after: json!({"userName": "u", "active": "False"}),
            },
            Case {
                name: "entra Add emails[type eq work].value on a user without emails",
                kind: USER,
                before: json!({"userName": "u"}),
                ops: json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "x@y.example"}]),
                after: json!({"userName": "u", "emails": [{"type": "work", "value": "x@y.example"}]}),
            },
            Case {
                name: "entra Replace emails[type eq work].value on an existing one",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"type": "work", "value": "a@x", "primary": true}, {"type": "home", "value": "h@x"}]}),
                ops: json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "b@x"}]),
                after: json!({"userName": "u", "emails": [{"type": "work", "value": "b@x", "primary": true}, {"type": "home", "value": "h@x"}]}),
            },
            Case {
                name: "entra Add phoneNumbers[type eq mobile].value next to a work phone",
                kind: USER,
                before: json!({"userName": "u", "phoneNumbers": [{"type": "work", "value": "1"}]}),
                ops: json!([{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "2"}]),
                after: json!({"userName": "u", "phoneNumbers": [{"type": "work", "value": "1"}, {"type": "mobile", "value": "2"}]}),
            },
            Case {
                name: "entra enterprise manager as a bare id is stored as given",
                kind: USER,
                before: json!({"userName": "u"}),
                ops: json!([{"op": "Add", "path": format!("{EXT}:manager"), "value": "managerId"}]),
                after: json!({"userName": "u", EXT: {"manager": "managerId"}}),
            },
            Case {
                name: "entra Replace name.familyName keeps givenName",
                kind: USER,
                before: json!({"userName": "u", "name": {"givenName": "Barbara", "familyName": "J"}}),
                ops: json!([{"op": "Replace", "path": "name.familyName", "value": "Jensen"}]),
                after: json!({"userName": "u", "name": {"givenName": "Barbara", "familyName": "Jensen"}}),
            },
            Case {
                name: "entra aadOptscim062020: path-less replace with dotted, filtered and URN keys",
                kind: USER,
                before: json!({"userName": "u", "active": true, "name": {"familyName": "K"}, "emails": [{"type": "work", "value": "old@x"}]}),
                ops: json!([{"op": "replace", "value": {
                    "active": false,
                    "name.givenName": "Pvlo",
                    "emails[type eq \"work\"].value": "new@x",
                    "phoneNumbers[type eq \"mobile\"].value": "555",
                    (format!("{EXT}:department")): "Eng",
                    (format!("{EXT}:manager")): "boss"}}]),
                after: json!({"userName": "u", "active": false, "name": {"familyName": "K", "givenName": "Pvlo"},
                    "emails": [{"type": "work", "value": "new@x"}],
                    "phoneNumbers": [{"type": "mobile", "value": "555"}],
                    EXT: {"department": "Eng", "manager": "boss"}}),
            },
            Case {
                name: "lowercase operations key, upper-case path",
                kind: USER,
                before: json!({"userName": "u"}),
                ops: json!([{"op": "REPLACE", "path": "DISPLAYNAME", "value": "Babs"}]),
                after: json!({"userName": "u", "displayName": "Babs"}),
            },
            // ----- extensions -----
            Case {
                name: "add a whole extension object copied from a GET (schemas inside ignored)",
                kind: USER,
                before: json!({"userName": "u"}),
                ops: json!([{"op": "add", "path": EXT, "value": {"schemas": [EXT], "employeeNumber": "7",
                    "Manager": {"value": "m1", "$ref": "https://x/Users/m1", "displayName": "ignored: read-only"}}}]),
                after: json!({"userName": "u", EXT: {"employeeNumber": "7", "manager": {"value": "m1", "$ref": "https://x/Users/m1"}}}),
            },
            Case {
                name: "replace a whole extension leaves unnamed attributes alone",
                kind: USER,
                before: json!({"userName": "u", EXT: {"employeeNumber": "7", "division": "D"}}),
                ops: json!([{"op": "replace", "path": EXT, "value": {"employeeNumber": "8"}}]),
                after: json!({"userName": "u", EXT: {"employeeNumber": "8", "division": "D"}}),
            },
            Case {
                name: "path-less add with an extension URN key merges into the extension",
                kind: USER,
                before: json!({"userName": "u", EXT: {"division": "D"}}),
                ops: json!([{"op": "add", "value": {EXT: {"department": "Eng"}}}]),
                after: json!({"userName": "u", EXT: {"division": "D", "department": "Eng"}}),
            },
            Case {
                name: "remove a whole extension",
                kind: USER,
                before: json!({"userName": "u", EXT: {"division": "D"}}),
                ops: json!([{"op": "remove", "path": EXT}]),
                after: json!({"userName": "u"}),
            },
            Case {
                name: "removing the last extension attribute removes the extension object",
                kind: USER,
                before: json!({"userName": "u", EXT: {"manager": {"value": "m"}}}),
                ops: json!([{"op": "remove", "path": format!("{EXT}:manager.value")}]),
                after: json!({"userName": "u"}),
            },
            // ----- multi-valued semantics -----
            Case {
                name: "add an existing email (other case) merges instead of duplicating",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "A@x", "type": "work"}]}),
                ops: json!([{"op": "add", "path": "emails", "value": [{"value": "a@X", "display": "A"}]}]),
                after: json!({"userName": "u", "emails": [{"value": "A@x", "type": "work", "display": "A"}]}),
            },
            Case {
                name: "add a primary email demotes the old primary; a single object is a list of one",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "a@x", "primary": true}]}),
                ops: json!([{"op": "add", "path": "emails", "value": {"value": "b@x", "primary": true}}]),
                after: json!({"userName": "u", "emails": [{"value": "a@x", "primary": false}, {"value": "b@x", "primary": true}]}),
            },
            Case {
                name: "replace a list keeps at most one primary (the first)",
                kind: USER,
                before: json!({"userName": "u"}),
                ops: json!([{"op": "replace", "path": "emails", "value": [{"value": "a@x", "primary": true}, {"value": "b@x", "primary": true}]}]),
                after: json!({"userName": "u", "emails": [{"value": "a@x", "primary": true}, {"value": "b@x", "primary": false}]}),
            },
            Case {
                name: "entra remove listed values of a multi-valued attribute",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "a@x"}, {"value": "b@x"}, {"value": "c@x"}]}),
                ops: json!([{"op": "Remove", "path": "emails", "value": [{"value": "A@x"}, {"value": "c@x", "type": "work"}]}]),
                after: json!({"userName": "u", "emails": [{"value": "b@x"}]}),
            },
            Case {
                name: "remove a sub-attribute of all matches",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "a@x", "type": "work", "display": "d"}, {"value": "b@x", "type": "home", "display": "e"}]}),
                ops: json!([{"op": "remove", "path": "emails[type eq \"work\"].display"}]),
                after: json!({"userName": "u", "emails": [{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home", "display": "e"}]}),
            },
            Case {
                name: "removing the last match removes the attribute",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "a@x", "type": "work"}]}),
                ops: json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
                after: json!({"userName": "u"}),
            },
            Case {
                name: "remove with a filter that matches nothing is a no-op",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "a@x", "type": "work"}]}),
                ops: json!([{"op": "remove", "path": "emails[type eq \"home\"]"}, {"op": "remove", "path": "ims[type eq \"aim\"]"}]),
                after: json!({"userName": "u", "emails": [{"value": "a@x", "type": "work"}]}),
            },
            Case {
                name: "sub-attribute of a multi-valued attribute without filter addresses every element",
                kind: USER,
                before: json!({"userName": "u", "emails": [{"value": "a@x"}, {"value": "b@x"}]}),
                ops: json!([{"op": "replace", "path": "emails.type", "value": "work"}]),
                after: json!({"userName": "u", "emails": [{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "work"}]}),
            },
            // ----- single-valued -----
            Case {
                name: "replace a complex attribute merges sub-attributes (§3.5.2.3)",
                kind: USER,
                before: json!({"userName": "u", "name": {"givenName": "B", "familyName": "J"}}),
                ops: json!([{"op": "replace", "path": "name", "value": {"familyName": "Jensen", "GIVENNAME": null}}]),
                after: json!({"userName": "u", "name": {"familyName": "Jensen"}}),
            },
            Case {
                name: "remove the last sub-attribute removes the complex attribute",
                kind: USER,
                before: json!({"userName": "u", "name": {"givenName": "B"}}),
                ops: json!([{"op": "remove", "path": "name.givenName"}]),
                after: json!({"userName": "u"}),
            },
            Case {
                name: "core-URN-qualified path, replace with null unassigns, password is writable",
                kind: USER,
                before: json!({"userName": "u", "title": "t"}),
                ops: json!([
                    {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:userName", "value": "v"},
                    {"op": "replace", "path": "title", "value": null},
                    {"op": "add", "path": "password", "value": "s3cret"}]),
                after: json!({"userName": "v", "password": "s3cret"}),
            },
            Case {
                name: "group: externalId and displayName",
                kind: GROUP,
                before: json!({"displayName": "g"}),
                ops: json!([{"op": "add", "path": "externalId", "value": "e1"}, {"op": "replace", "path": "displayName", "value": "h"}]),
                after: json!({"displayName": "h", "externalId": "e1"}),
            },
        ];
        for c in cases {
            let (after, effect) =
                run(c.kind, &c.before, &body(c.ops), None).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(after, c.after, "{}", c.name);
            assert!(effect.members.is_empty(), "{}", c.name);
            assert_eq!(effect.attrs_changed, c.before != c.after, "{}", c.name);
        }
    }

    #[test]
    fn no_op_patch_reports_no_change() {
        let before = json!({"userName": "u", "emails": [{"value": "a@x"}]});
        let ops =
            json!([{"op": "remove", "path": "title"}, {"op": "add", "path": "emails", "value": [{"value": "a@x"}]}]);
        let (after, effect) = run(USER, &before, &body(ops), None).unwrap();
        assert_eq!(after, before);
        assert!(!effect.attrs_changed);
    }

    /// Group member operations: the composed delta (and the group's attributes).
    #[test]
    fn member_cases() {
        struct Case {
            name: &'static str,
            ops: Value,
            after: Value,
            delta: MemberDelta,
        }
        let babs = "2819c223-7f76-453a-919d-413861904646";
        let james = "08e1d05d-121c-4561-8b96-473d93df9210";
        let rfc_members = json!([
            {"display": "Babs Jensen", "$ref": format!("https://example.com/v2/Users/{babs}"), "value": babs},
            {"display": "James Smith", "$ref": format!("https://example.com/v2/Users/{james}"), "value": james}]);
        let rfc_refs = vec![
            MemberRef { id: babs.into(), kind: None, display: Some("Babs Jensen".into()) },
            MemberRef { id: james.into(), kind: None, display: Some("James Smith".into()) },
        ];
        let g = json!({"displayName": "g"});
        let cases = vec![
            Case {
                name: "rfc add a member",
                ops: json!([{"op": "add", "path": "members", "value": [
                    {"display": "Babs Jensen", "$ref": format!("https://example.com/v2/Users/{babs}"), "value": babs}]}]),
                after: g.clone(),
                delta: MemberDelta { add: vec![rfc_refs[0].clone()], ..Default::default() },
            },
            Case {
                name: "rfc remove all members",
                ops: json!([{"op": "remove", "path": "members"}]),
                after: g.clone(),
                delta: MemberDelta { replace: Some(vec![]), ..Default::default() },
            },
            Case {
                name: "rfc remove one member by filter",
                ops: json!([{"op": "remove", "path": format!("members[value eq \"{babs}\"]")}]),
                after: g.clone(),
                delta: MemberDelta { remove: vec![babs.into()], ..Default::default() },
            },
            Case {
                name: "rfc remove all, then add two",
                ops: json!([{"op": "remove", "path": "members"}, {"op": "add", "path": "members", "value": rfc_members}]),
                after: g.clone(),
                delta: MemberDelta { replace: Some(rfc_refs.clone()), ..Default::default() },
            },
            Case {
                name: "rfc replace members",
                ops: json!([{"op": "replace", "path": "members", "value": rfc_members}]),
                after: g.clone(),
                delta: MemberDelta { replace: Some(rfc_refs.clone()), ..Default::default() },
            },
            Case {
                name: "okta rename: replace value with id and displayName",
                ops: json!([{"op": "replace", "value": {"id": "abf4dd94", "displayName": "Test SCIMv2"}}]),
                after: json!({"displayName": "Test SCIMv2"}),
                delta: MemberDelta::default(),
            },
            Case {
                name: "okta add members without type",
                ops: json!([{"op": "add", "path": "members", "value": [{"value": "u1", "display": "test.user@okta.local"}]}]),
                after: g.clone(),
                delta: MemberDelta {
                    add: vec![MemberRef { id: "u1".into(), kind: None, display: Some("test.user@okta.local".into()) }],
                    ..Default::default()
                },
            },
            Case {
                name: "okta remove members[value eq]",
                ops: json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]),
                after: g.clone(),
                delta: MemberDelta { remove: vec!["u1".into()], ..Default::default() },
            },
            Case {
                name: "entra Add members with $ref null and an op name",
                ops: json!([{"name": "addMember", "op": "Add", "path": "members", "value": [{"$ref": null, "value": "u1"}]}]),
                after: g.clone(),
                delta: MemberDelta { add: vec![mref("u1", None)], ..Default::default() },
            },
            Case {
                name: "entra Remove members by value list",
                ops: json!([{"name": "removeMembers", "op": "Remove", "path": "members", "value": [{"$ref": null, "value": "u1"}]}]),
                after: g.clone(),
                delta: MemberDelta { remove: vec!["u1".into()], ..Default::default() },
            },
            Case {
                name: "typed members",
                ops: json!([{"op": "add", "path": "members", "value": [{"value": "u1", "type": "user"}, {"value": "g2", "type": "Group"}]}]),
                after: g.clone(),
                delta: MemberDelta { add: vec![mref("u1", Some(USER)), mref("g2", Some(GROUP))], ..Default::default() },
            },
            Case {
                name: "add x then remove x: only the removal",
                ops: json!([{"op": "add", "path": "members", "value": [{"value": "x"}, {"value": "y"}]},
                            {"op": "remove", "path": "members[value eq \"x\"]"}]),
                after: g.clone(),
                delta: MemberDelta { add: vec![mref("y", None)], remove: vec!["x".into()], ..Default::default() },
            },
            Case {
                name: "remove x then add x: only the addition",
                ops: json!([{"op": "remove", "path": "members[value eq \"x\"]"},
                            {"op": "add", "path": "members", "value": [{"value": "x"}]}]),
                after: g.clone(),
                delta: MemberDelta { add: vec![mref("x", None)], ..Default::default() },
            },
            Case {
                name: "after a replace, adds and removes edit the replacement",
                ops: json!([{"op": "replace", "path": "members", "value": [{"value": "a"}, {"value": "a"}]},
                            {"op": "add", "path": "members", "value": [{"value": "b"}]},
                            {"op": "remove", "path": "members[value eq \"a\" or value eq \"c\"]"}]),
                after: g.clone(),
                delta: MemberDelta { replace: Some(vec![mref("b", None)]), ..Default::default() },
            },
            Case {
                name: "path-less replace with members and displayName",
                ops: json!([{"op": "replace", "value": {"displayName": "h", "members": [{"value": "a", "type": "User"}]}}]),
                after: json!({"displayName": "h"}),
                delta: MemberDelta { replace: Some(vec![mref("a", Some(USER))]), ..Default::default() },
            },
            Case {
                name: "path-less add with members",
                ops: json!([{"op": "add", "value": {"members": [{"value": "a"}]}}]),
                after: g.clone(),
                delta: MemberDelta { add: vec![mref("a", None)], ..Default::default() },
            },
        ];
        for c in cases {
            let (after, effect) = run(GROUP, &g, &body(c.ops), None).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(after, c.after, "{}", c.name);
            assert_eq!(effect.members, c.delta, "{}", c.name);
        }
    }

    #[test]
    fn member_filters_need_the_list() {
        let g = json!({"displayName": "g"});
        let b = body(json!([{"op": "remove", "path": "members[type eq \"Group\"]"}]));
        assert_eq!(run(GROUP, &g, &b, None).unwrap_err(), PatchError::NeedsMemberList);
        let list = [member("u1", USER), member("g1", GROUP), member("g2", GROUP)];
        let (_, effect) = run(GROUP, &g, &b, Some(&list)).unwrap();
        assert_eq!(effect.members, MemberDelta { remove: vec!["g1".into(), "g2".into()], ..Default::default() });

        // `display` is known to filters from the list.
        let b = body(json!([{"op": "remove", "path": "members[display sw \"u1\"]"}]));
        let (_, effect) = run(GROUP, &g, &b, Some(&list)).unwrap();
        assert_eq!(effect.members.remove, vec!["u1".to_string()]);

        // With the list, everything is diffed against it.
        let b = body(json!([{"op": "add", "path": "members", "value": [{"value": "u2"}, {"value": "u1"}]},
                            {"op": "remove", "path": "members[value eq \"g1\"]"}]));
        let (_, effect) = run(GROUP, &g, &b, Some(&list)).unwrap();
        assert_eq!(
            effect.members,
            MemberDelta { replace: None, add: vec![mref("u2", None)], remove: vec!["g1".into()] }
        );

        // A filtered replace needs the list, and then finds its target or says noTarget.
        let b = body(
            json!([{"op": "replace", "path": "members[value eq \"u1\"]", "value": {"value": "u9", "type": "User"}}]),
        );
        assert_eq!(run(GROUP, &g, &b, None).unwrap_err(), PatchError::NeedsMemberList);
        let (_, effect) = run(GROUP, &g, &b, Some(&list)).unwrap();
        assert_eq!(
            effect.members,
            MemberDelta { replace: None, add: vec![mref("u9", Some(USER))], remove: vec!["u1".into()] }
        );
        let b = body(json!([{"op": "replace", "path": "members[value eq \"nobody\"]", "value": {"value": "u9"}}]));
        let e = run(GROUP, &g, &b, Some(&list)).unwrap_err();
        assert!(matches!(e, PatchError::Scim(s) if s.scim_type == Some(ScimType::NoTarget)));
    }

    #[test]
    fn error_cases() {
        struct Case {
            name: &'static str,
            kind: ResourceKind,
            body: Value,
            ty: ScimType,
            detail: &'static str,
        }
        let user = json!({"userName": "u", "emails": [{"value": "a@x", "type": "work"}]});
        let group = json!({"displayName": "g"});
        let too_many: Vec<Value> = (0..=MAX_OPERATIONS).map(|_| json!({"op": "remove", "path": "title"})).collect();
        let cases = vec![
            Case {
                name: "body not an object",
                kind: USER,
                body: json!([]),
                ty: ScimType::InvalidSyntax,
                detail: "object",
            },
            Case {
                name: "schemas without PatchOp",
                kind: USER,
                body: json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "Operations": [{"op": "remove", "path": "title"}]}),
                ty: ScimType::InvalidSyntax,
                detail: "schemas",
            },
            Case {
                name: "no Operations",
                kind: USER,
                body: json!({"schemas": [schema::PATCH_OP]}),
                ty: ScimType::InvalidSyntax,
                detail: "Operations",
            },
            Case {
                name: "empty Operations",
                kind: USER,
                body: body(json!([])),
                ty: ScimType::InvalidSyntax,
                detail: "at least one",
            },
            Case {
                name: "Operations not a list",
                kind: USER,
                body: body(json!({"op": "add"})),
                ty: ScimType::InvalidSyntax,
                detail: "array",
            },
            Case {
                name: "unknown op, with its index",
                kind: USER,
                body: body(json!([{"op": "remove", "path": "title"}, {"op": "copy", "path": "title"}])),
                ty: ScimType::InvalidSyntax,
                detail: "Operations[1]",
            },
            Case {
                name: "op missing",
                kind: USER,
                body: body(json!([{"path": "title"}])),
                ty: ScimType::InvalidSyntax,
                detail: "op",
            },
            Case {
                name: "operation not an object",
                kind: USER,
                body: body(json!(["add"])),
                ty: ScimType::InvalidSyntax,
                detail: "Operations[0]",
            },
            Case {
                name: "bad path syntax",
                kind: USER,
                body: body(json!([{"op": "remove", "path": "emails[type eq"}])),
                ty: ScimType::InvalidPath,
                detail: "Operations[0]",
            },
            Case {
                name: "unknown attribute",
                kind: USER,
                body: body(json!([{"op": "add", "path": "foo", "value": 1}])),
                ty: ScimType::InvalidPath,
                detail: "foo",
            },
            Case {
                name: "path not a string",
                kind: USER,
                body: body(json!([{"op": "add", "path": 42, "value": 1}])),
                ty: ScimType::InvalidPath,
                detail: "string",
            },
            Case {
                name: "unknown key in a path-less value",
                kind: USER,
                body: body(json!([{"op": "replace", "value": {"title": "t", "foo": 1}}])),
                ty: ScimType::InvalidPath,
                detail: "\"foo\"",
            },
            Case {
                name: "filter on a single-valued attribute",
                kind: USER,
                body: body(json!([{"op": "replace", "path": "name[givenName eq \"x\"]", "value": {}}])),
                ty: ScimType::InvalidPath,
                detail: "Operations[0]",
            },
            Case {
                name: "member sub-attribute",
                kind: GROUP,
                body: body(json!([{"op": "replace", "path": "members[value eq \"x\"].display", "value": "d"}])),
                ty: ScimType::InvalidPath,
                detail: "members",
            },
            Case {
                name: "members on a user",
                kind: USER,
                body: body(json!([{"op": "add", "path": "members", "value": []}])),
                ty: ScimType::InvalidPath,
                detail: "members",
            },
            Case {
                name: "extension on a group",
                kind: GROUP,
                body: body(json!([{"op": "remove", "path": EXT}])),
                ty: ScimType::InvalidPath,
                detail: "Operations[0]",
            },
            Case {
                name: "add without value",
                kind: USER,
                body: body(json!([{"op": "add", "path": "title"}])),
                ty: ScimType::InvalidValue,
                detail: "value",
            },
            Case {
                name: "path-less replace with a scalar",
                kind: USER,
                body: body(json!([{"op": "replace", "value": "x"}])),
                ty: ScimType::InvalidValue,
                detail: "object",
            },
            Case {
                name: "filtered write of a scalar without sub-attribute",
                kind: USER,
                body: body(json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": "b@x"}])),
                ty: ScimType::InvalidValue,
                detail: "object",
            },
            Case {
                name: "member without value",
                kind: GROUP,
                body: body(json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}])),
                ty: ScimType::InvalidValue,
                detail: "Operations[0]",
            },
            Case {
                name: "member of an unknown type",
                kind: GROUP,
                body: body(json!([{"op": "add", "path": "members", "value": [{"value": "x", "type": "Robot"}]}])),
                ty: ScimType::InvalidValue,
                detail: "Robot",
            },
            Case {
                name: "remove without path",
                kind: USER,
                body: body(json!([{"op": "remove"}])),
                ty: ScimType::NoTarget,
                detail: "path",
            },
            Case {
                name: "remove with an empty path",
                kind: USER,
                body: body(json!([{"op": "Remove", "path": ""}])),
                ty: ScimType::NoTarget,
                detail: "path",
            },
            Case {
                name: "replace with a filter that matches nothing and pins no type",
                kind: USER,
                body: body(json!([{"op": "replace", "path": "emails[value eq \"nope@x\"].type", "value": "home"}])),
                ty: ScimType::NoTarget,
                detail: "emails",
            },
            Case {
                name: "id",
                kind: USER,
                body: body(json!([{"op": "replace", "path": "id", "value": "x"}])),
                ty: ScimType::Mutability,
                detail: "id",
            },
            Case {
                name: "meta sub-attribute",
                kind: GROUP,
                body: body(json!([{"op": "replace", "path": "meta.lastModified", "value": "x"}])),
                ty: ScimType::Mutability,
                detail: "meta",
            },
            Case {
                name: "schemas",
                kind: USER,
                body: body(json!([{"op": "remove", "path": "schemas"}])),
                ty: ScimType::Mutability,
                detail: "schemas",
            },
            Case {
                name: "groups of a user",
                kind: USER,
                body: body(json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}])),
                ty: ScimType::Mutability,
                detail: "groups",
            },
            Case {
                name: "groups in a path-less value",
                kind: USER,
                body: body(json!([{"op": "add", "value": {"groups": [{"value": "g"}]}}])),
                ty: ScimType::Mutability,
                detail: "groups",
            },
            Case {
                name: "read-only sub-attribute",
                kind: USER,
                body: body(json!([{"op": "replace", "path": format!("{EXT}:manager.displayName"), "value": "x"}])),
                ty: ScimType::Mutability,
                detail: "displayName",
            },
            Case {
                name: "remove userName (required)",
                kind: USER,
                body: body(json!([{"op": "remove", "path": "userName"}])),
                ty: ScimType::Mutability,
                detail: "required",
            },
            Case {
                name: "unassign a group's displayName (required)",
                kind: GROUP,
                body: body(json!([{"op": "replace", "path": "displayName", "value": null}])),
                ty: ScimType::Mutability,
                detail: "displayName",
            },
            Case {
                name: "too many operations",
                kind: USER,
                body: body(Value::Array(too_many)),
                ty: ScimType::TooMany,
                detail: "1001",
            },
        ];
        for c in cases {
            let before = if c.kind == USER { &user } else { &group };
            match run(c.kind, before, &c.body, None) {
                Err(PatchError::Scim(e)) => {
                    assert_eq!(e.status, 400, "{}", c.name);
                    assert_eq!(e.scim_type, Some(c.ty), "{}: {}", c.name, e.detail);
                    assert!(e.detail.contains(c.detail), "{}: {:?} lacks {:?}", c.name, e.detail, c.detail);
                }
                other => panic!("{}: expected {:?}, got {other:?}", c.name, c.ty),
            }
        }
    }

    #[test]
    fn schemas_may_be_absent_or_a_string() {
        let ops = json!([{"op": "add", "path": "title", "value": "t"}]);
        assert!(parse_request(USER, &json!({"Operations": ops})).is_ok());
        assert!(parse_request(USER, &json!({"schemas": schema::PATCH_OP, "operations": ops})).is_ok());
    }

    #[test]
    fn whole_extension_path_representation() {
        let ops = parse_request(USER, &body(json!([{"op": "remove", "path": EXT.to_lowercase()}]))).unwrap();
        let path = ops[0].path.as_ref().unwrap();
        assert_eq!(path.attr.urn.as_deref(), Some(EXT));
        assert!(path.attr.name.is_empty());
    }

    #[test]
    fn failure_leaves_attrs_untouched() {
        let before = obj(json!({"userName": "u", "title": "t"}));
        let ops = parse_request(
            USER,
            &body(json!([
            {"op": "replace", "path": "title", "value": "changed"},
            {"op": "add", "path": "emails", "value": [{"value": "a@x"}]},
            {"op": "remove", "path": "userName"}])),
        )
        .unwrap();
        let mut attrs = before.clone();
        assert!(apply(USER, &mut attrs, &ops, None).is_err());
        assert_eq!(attrs, before);
    }

    // ----- property tests -----

    fn email() -> impl Strategy<Value = Value> {
        ("[a-c]{1,3}@[xy]", prop::sample::select(vec!["work", "home", "other"]), any::<bool>())
            .prop_map(|(v, t, p)| json!({"value": v, "type": t, "primary": p}))
    }

    fn user_with_emails() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec(email(), 0..4).prop_map(|emails| {
            let mut m = obj(json!({"userName": "u", "title": "t"}));
            if !emails.is_empty() {
                m.insert("emails".into(), Value::Array(emails));
            }
            m
        })
    }

    fn good_op() -> impl Strategy<Value = Value> {
        let s = "[a-y]{1,8}";
        prop_oneof![
            s.prop_map(|s| json!({"op": "replace", "path": "title", "value": s})),
            email().prop_map(|e| json!({"op": "add", "path": "emails", "value": [e]})),
            Just(json!({"op": "remove", "path": "nickName"})),
            s.prop_map(|s| json!({"op": "add", "value": {"displayName": s}})),
            s.prop_map(|s| json!({"op": "replace", "path": "name.givenName", "value": s})),
            s.prop_map(|s| json!({"op": "add", "path": "phoneNumbers[type eq \"work\"].value", "value": s})),
            s.prop_map(|s| json!({"op": "replace", "path": format!("{EXT}:department"), "value": s})),
        ]
    }

    fn failing_op() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"op": "replace", "path": "emails[value eq \"zz@nomatch\"]", "value": {"display": "x"}})),
            Just(json!({"op": "remove", "path": "userName"})),
            Just(json!({"op": "add", "value": {"title": "x", "nosuchattr": 1}})),
            Just(json!({"op": "replace", "path": "emails[type eq \"work\"]", "value": 5})),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("value".to_string()),
            Just("type".to_string()),
            Just("primary".to_string()),
            Just("emails".to_string()),
            Just("members".to_string()),
            Just("name.givenName".to_string()),
            Just("emails[type eq \"work\"].value".to_string()),
            Just(EXT.to_string()),
            Just(format!("{EXT}:manager")),
            Just("id".to_string()),
            "[a-zA-Z.:\\[\\] \"$]{0,10}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[a-zA-Z0-9@ .\"]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn any_op() -> impl Strategy<Value = Value> {
        let op = prop_oneof![
            Just(json!("add")),
            Just(json!("Remove")),
            Just(json!("REPLACE")),
            Just(json!("move")),
            Just(json!(1))
        ];
        let path = prop_oneof![
            Just(None),
            Just(Some(json!("members"))),
            Just(Some(json!("members[value eq \"a\"]"))),
            Just(Some(json!("members[type eq \"User\"]"))),
            Just(Some(json!("members[value eq \"a\"].display"))),
            Just(Some(json!("emails"))),
            Just(Some(json!("emails[type eq \"work\"]"))),
            Just(Some(json!("emails[type eq \"work\"].value"))),
            Just(Some(json!("emails.value"))),
            Just(Some(json!("name"))),
            Just(Some(json!("name.givenName"))),
            Just(Some(json!("displayName"))),
            Just(Some(json!("userName"))),
            Just(Some(json!(EXT))),
            Just(Some(json!(format!("{EXT}:manager")))),
            Just(Some(json!(format!("{EXT}:manager.value")))),
            Just(Some(json!("addresses[type eq \"home\" and primary eq true].locality"))),
            "[a-zA-Z.:\\[\\] \"=]{0,16}".prop_map(|s| Some(Value::String(s))),
        ];
        (op, path, prop::option::of(json_value())).prop_map(|(op, path, value)| {
            let mut m = Map::new();
            m.insert("op".into(), op);
            if let Some(p) = path {
                m.insert("path".into(), p);
            }
            if let Some(v) = value {
                m.insert("value".into(), v);
            }
            Value::Object(m)
        })
    }

    proptest! {
        /// A request whose last operation fails leaves `attrs` exactly as they were.
        #[test]
        fn prop_atomic(before in user_with_emails(), good in prop::collection::vec(good_op(), 0..5), bad in failing_op()) {
            let mut ops = good;
            ops.push(bad);
            let parsed = parse_request(USER, &body(Value::Array(ops))).expect("every op parses");
            let mut attrs = before.clone();
            prop_assert!(apply(USER, &mut attrs, &parsed, None).is_err());
            prop_assert_eq!(attrs, before);
        }

        /// Adding the same multi-valued element twice is adding it once.
        #[test]
        fn prop_add_idempotent(before in user_with_emails(), e in email()) {
            let once = body(json!([{"op": "add", "path": "emails", "value": [e]}]));
            let twice = body(json!([{"op": "add", "path": "emails", "value": [e]}, {"op": "add", "path": "emails", "value": e}]));
            let (a, _) = run(USER, &Value::Object(before.clone()), &once, None).unwrap();
            let (b, _) = run(USER, &Value::Object(before), &twice, None).unwrap();
            let (c, _) = run(USER, &a, &once, None).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &c);
        }

        /// Arbitrary operation lists (and bodies) never panic, for either resource type, with
        /// or without a member list.
        #[test]
        fn prop_never_panics(ops in prop::collection::vec(any_op(), 0..5), raw in json_value(), before in user_with_emails()) {
            let list = [member("a", USER), member("b", GROUP)];
            for kind in [USER, GROUP] {
                let _ = parse_request(kind, &raw);
                let _ = parse_request(kind, &json!({"Operations": raw.clone()}));
                let start = if kind == GROUP { obj(json!({"displayName": "g"})) } else { before.clone() };
                // The whole list, and each operation alone (a list parses only if all do).
                let mut requests = vec![Value::Array(ops.clone())];
                requests.extend(ops.iter().map(|op| json!([op])));
                for r in requests {
                    if let Ok(parsed) = parse_request(kind, &body(r)) {
                        let _ = apply(kind, &mut start.clone(), &parsed, None);
                        let _ = apply(kind, &mut start.clone(), &parsed, Some(&list));
                    }
                }
            }
        }
    }
}
