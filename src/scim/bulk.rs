//! Bulk requests (RFC 7644 §3.7), the pure parts: parsing and validating a `BulkRequest`,
//! the order operations run in and how `bulkId` references resolve (§3.7.1, §3.7.2), and
//! building the `BulkResponse` (§3.7.3).
//!
//! Owns: the bulk message format and its rules. Must not touch: executing operations (the
//! service runs each one as its own committed change: SCIM bulk is not atomic), HTTP, I/O.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ScimError;
use super::schema::{BULK_REQUEST, BULK_RESPONSE};
use crate::model::ResourceKind;

/// The prefix of a reference to the resource another operation of the same request
/// creates (RFC 7644 §3.7.2): `"bulkId:qwerty"`.
pub const BULK_ID_PREFIX: &str = "bulkId:";

/// The methods a bulk operation may use (RFC 7644 §3.7: "POST, PUT, PATCH, or DELETE").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    fn parse(s: &str) -> Option<Method> {
        [Method::Post, Method::Put, Method::Patch, Method::Delete]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// The status a successful operation reports (RFC 7644 §3.7.3 examples: POST "201",
    /// PUT and PATCH "200", DELETE "204").
    pub fn success_status(self) -> u16 {
        match self {
            Method::Post => 201,
            Method::Put | Method::Patch => 200,
            Method::Delete => 204,
        }
    }
}

/// One operation that passed validation. Its `path` and `data` may still hold `bulkId:`
/// references; [`Operation::resolved`] substitutes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub method: Method,
    /// `"/Users"` or `"/Groups"` for POST; `"/Users/{id}"` for the others (§3.7).
    pub path: String,
    /// The resource (POST, PUT) or PatchOp message (PATCH); `None` for DELETE.
    pub data: Option<Value>,
    /// `version` (§3.7): the ETag the resource must still have, like `If-Match`.
    pub version: Option<String>,
}

/// Where an operation applies, once its path has no references left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: ResourceKind,
    /// `None` for POST, the resource id otherwise.
    pub id: Option<String>,
}

/// One entry of `Operations`, as far as it could be read: what to echo back (`method`,
/// `bulkId`) and either the operation or why it is invalid. An invalid operation fails
/// alone, like any other failing operation (§3.7: "continue performing as many changes as
/// possible").
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The method as sent (echoed in the response even when it is not one we accept).
    pub method: Option<String>,
    pub bulk_id: Option<String>,
    pub op: Result<Operation, ScimError>,
}

/// A validated `BulkRequest`.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRequest {
    /// `failOnErrors` (§3.7): stop after this many failed operations; `None`: never stop.
    pub fail_on_errors: Option<u32>,
    pub entries: Vec<Entry>,
}

fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// The 413 of RFC 7644 §3.7.4 for too many operations: "If either limit is exceeded, the
/// service provider MUST return HTTP response code 413 (Request Entity Too Large). The
/// returned response MUST specify the limit exceeded in the body of the error response."
/// The RFC's example error has no `scimType` (table 9's `tooMany` is a 400 about filters).
pub fn too_many_operations(count: usize, max_operations: u32) -> ScimError {
    ScimError::new(413, None, format!("the bulk request has {count} operations; maxOperations is {max_operations}"))
}

/// The 413 of RFC 7644 §3.7.4 for a payload over `maxPayloadSize`.
pub fn payload_too_large(max_payload_bytes: u64) -> ScimError {
    ScimError::new(
        413,
        None,
        format!("the size of the bulk request exceeds maxPayloadSize ({max_payload_bytes} bytes)"),
    )
}

/// Parse a `BulkRequest` body (RFC 7644 §3.7). Errors that make the whole message
/// unusable (not an object, no `Operations`, a bad `failOnErrors`, more than
/// `max_operations` operations) fail the request; a bad operation only fails itself.
///
/// Lenient like the PATCH parser: keys match case-insensitively and `schemas` may be left
/// out, but a `schemas` without the BulkRequest URN is refused (another message was meant).
pub fn parse_request(body: &Value, max_operations: u32) -> Result<BulkRequest, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax("the bulk request must be a JSON object (RFC 7644 §3.7)"));
    };
    let is_bulk = |v: &Value| v.as_str().is_some_and(|s| s.trim().eq_ignore_ascii_case(BULK_REQUEST));
    match get_ci(obj, "schemas") {
        None => {}
        Some(Value::Array(a)) if a.iter().any(is_bulk) => {}
        Some(v) if is_bulk(v) => {}
        Some(_) => return Err(ScimError::invalid_syntax(format!("schemas must contain \"{BULK_REQUEST}\""))),
    }
    let fail_on_errors = match get_ci(obj, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= 1 => Some(v.min(u32::MAX as i64) as u32),
            _ => {
                return Err(ScimError::invalid_value(format!(
                    "failOnErrors must be a positive integer (the number of errors to accept), got {n}"
                )));
            }
        },
        Some(v) => return Err(ScimError::invalid_syntax(format!("failOnErrors must be an integer, got {v}"))),
    };
    let ops = match get_ci(obj, "Operations") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ScimError::invalid_syntax("Operations must be an array of operations")),
        None => return Err(ScimError::invalid_syntax("the bulk request has no Operations")),
    };
    if ops.len() > max_operations as usize {
        return Err(too_many_operations(ops.len(), max_operations));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut entries = Vec::with_capacity(ops.len());
    for (i, v) in ops.iter().enumerate() {
        let mut entry = parse_entry(v);
        // "bulkId ... unique within a bulk request" (§3.7): a repeated one would make every
        // reference to it ambiguous, so the later operation fails.
        if let (Some(b), Ok(op)) = (&entry.bulk_id, &entry.op)
            && op.method == Method::Post
        {
            if let Some(first) = seen.get(b) {
                entry.op = Err(ScimError::invalid_value(format!(
                    "Operations[{i}]: bulkId {b:?} is already used by Operations[{first}]"
                )));
            } else {
                seen.insert(b.clone(), i);
            }
        }
        entry.op = entry.op.map_err(|e| ScimError { detail: prefix_detail(i, &e.detail), ..e });
        entries.push(entry);
    }
    Ok(BulkRequest { fail_on_errors, entries })
}

fn prefix_detail(i: usize, detail: &str) -> String {
    if detail.starts_with("Operations[") { detail.to_string() } else { format!("Operations[{i}]: {detail}") }
}

fn parse_entry(v: &Value) -> Entry {
    let Value::Object(o) = v else {
        return Entry {
            method: None,
            bulk_id: None,
            op: Err(ScimError::invalid_syntax("an operation must be an object")),
        };
    };
    let text = |k: &str| get_ci(o, k).and_then(Value::as_str).map(str::to_string);
    let method = text("method");
    let bulk_id = text("bulkId");
    let op = parse_op(o, method.as_deref(), bulk_id.as_deref());
    Entry { method, bulk_id, op }
}

fn parse_op(o: &Map<String, Value>, method: Option<&str>, bulk_id: Option<&str>) -> Result<Operation, ScimError> {
    let method = match method {
        Some(m) => Method::parse(m.trim())
            .ok_or_else(|| ScimError::invalid_syntax(format!("method {m:?} is not one of POST, PUT, PATCH, DELETE")))?,
        None => return Err(ScimError::invalid_syntax("method is required (POST, PUT, PATCH or DELETE)")),
    };
    if get_ci(o, "bulkId").is_some_and(|v| !v.is_string()) {
        return Err(ScimError::invalid_syntax("bulkId must be a string"));
    }
    if bulk_id.is_some_and(|b| b.is_empty() || b.starts_with(BULK_ID_PREFIX)) {
        return Err(ScimError::invalid_value("bulkId must be a non-empty identifier without the \"bulkId:\" prefix"));
    }
    // "bulkId ... REQUIRED when "method" is "POST"" (§3.7): without it the client could
    // not tell which new resource is which.
    if method == Method::Post && bulk_id.is_none() {
        return Err(ScimError::invalid_syntax("bulkId is required when method is POST (RFC 7644 §3.7)"));
    }
    let path = match get_ci(o, "path") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.trim().to_string(),
        _ => return Err(ScimError::invalid_syntax("path is required, e.g. \"/Users\" or \"/Users/{id}\"")),
    };
    let version = match get_ci(o, "version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ScimError::invalid_syntax("version must be a string (an ETag)")),
    };
    let data = match (method, get_ci(o, "data")) {
        (Method::Delete, _) => None,
        (_, Some(d @ Value::Object(_))) => Some(d.clone()),
        (_, Some(_)) => return Err(ScimError::invalid_syntax("data must be a JSON object")),
        (m, None) => return Err(ScimError::invalid_syntax(format!("data is required when method is {}", m.as_str()))),
    };
    let op = Operation { method, path, data, version };
    // Check the path's shape now (with references standing in for ids) so that a bad one
    // fails before anything runs.
    op.target_of(&op.path)?;
    Ok(op)
}

impl Operation {
    /// The bulkIds this operation refers to, in its path and anywhere in its data, in
    /// order of appearance, without repeats.
    pub fn references(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |s: &str| {
            if let Some(id) = s.strip_prefix(BULK_ID_PREFIX)
                && !out.iter().any(|x: &String| x == id)
            {
                out.push(id.to_string());
            }
        };
        self.path.split('/').for_each(&mut push);
        if let Some(d) = &self.data {
            walk_strings(d, &mut push);
        }
        out
    }

    /// This operation with every `bulkId:x` in its path and data replaced by the id
    /// `resolve(x)` gives (RFC 7644 §3.7.2). References `resolve` does not know are left
    /// as they are; callers run an operation only once its references are resolved.
    pub fn resolved(&self, resolve: impl Fn(&str) -> Option<String>) -> Operation {
        let sub = |s: &str| s.strip_prefix(BULK_ID_PREFIX).and_then(&resolve);
        let path = self.path.split('/').map(|seg| sub(seg).unwrap_or_else(|| seg.to_string())).collect::<Vec<_>>();
        let mut data = self.data.clone();
        if let Some(d) = &mut data {
            replace_strings(d, &sub);
        }
        Operation { path: path.join("/"), data, ..self.clone() }
    }

    /// The resource type and id the path names.
    pub fn target(&self) -> Result<Target, ScimError> {
        self.target_of(&self.path)
    }

    fn target_of(&self, path: &str) -> Result<Target, ScimError> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let kind_of = ResourceKind::from_segment;
        let unknown =
            || ScimError::invalid_value(format!("path {path:?} names no resource endpoint; use /Users or /Groups"));
        match (self.method, segs.as_slice()) {
            (Method::Post, [t]) => Ok(Target { kind: kind_of(t).ok_or_else(unknown)?, id: None }),
            (Method::Post, _) => Err(ScimError::invalid_value(format!(
                "POST needs a resource type endpoint such as \"/Users\", not {path:?}"
            ))),
            (_, [t, id]) => Ok(Target { kind: kind_of(t).ok_or_else(unknown)?, id: Some((*id).to_string()) }),
            (m, _) => Err(ScimError::invalid_value(format!(
                "{} needs the path of one resource such as \"/Users/{{id}}\", not {path:?}",
                m.as_str()
            ))),
        }
    }
}

fn walk_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

fn replace_strings(v: &mut Value, f: &impl Fn(&str) -> Option<String>) {
    match v {
        Value::String(s) => {
            if let Some(r) = f(s) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| replace_strings(x, f)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_strings(x, f)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Order of execution and reference resolution.

/// What became of a POST that declared a bulkId.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Created {
    Id(String),
    Failed,
}

/// Decides which operation runs next and resolves `bulkId` references.
///
/// Operations run in request order, except that an operation referring to a bulkId whose
/// POST comes later waits for it: the client's intent is kept (§3.7: "the service
/// provider MUST ensure that the client's intent is preserved"), and a member can be
/// created after the group that names it. A reference to a bulkId no operation declares
/// fails with 400 `invalidValue`; to a POST that failed, with 409 (the resource it names
/// does not exist). When every remaining operation waits on another (a cycle, §3.7.1),
/// the first of them fails with 409 Conflict, as §3.7.1 allows ("MAY stop after a failed
/// attempt and instead return HTTP status code 409 (Conflict)"), which in turn fails the
/// ones that needed it.
pub struct Scheduler {
    refs: Vec<Vec<String>>,
    /// bulkId -> the index of the POST declaring it.
    declared: HashMap<String, usize>,
    created: HashMap<String, Created>,
    pending: Vec<bool>,
}

/// The next operation to run, or the error that fails it without running.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Run(usize),
    Fail(usize, ScimError),
}

impl Scheduler {
    pub fn new(req: &BulkRequest) -> Scheduler {
        let mut declared = HashMap::new();
        let mut refs = Vec::with_capacity(req.entries.len());
        for (i, e) in req.entries.iter().enumerate() {
            // A POST declares its bulkId even when it is invalid (it will fail, and
            // references to it then fail with 409 rather than "unknown").
            let is_post = e.method.as_deref().is_some_and(|m| m.trim().eq_ignore_ascii_case("POST"));
            if let (true, Some(b)) = (is_post, &e.bulk_id) {
                declared.entry(b.clone()).or_insert(i);
            }
            refs.push(e.op.as_ref().map(Operation::references).unwrap_or_default());
        }
        Scheduler { refs, declared, created: HashMap::new(), pending: vec![true; req.entries.len()] }
    }

    /// The id a finished POST created for `bulk_id`.
    pub fn resolve(&self, bulk_id: &str) -> Option<String> {
        match self.created.get(bulk_id) {
            Some(Created::Id(id)) => Some(id.clone()),
            _ => None,
        }
    }

    /// Record how operation `i` ended: `Some(id)` when it was a POST that created `id`.
    pub fn finished(&mut self, req: &BulkRequest, i: usize, created: Option<String>) {
        if let Some(b) = &req.entries[i].bulk_id
            && self.declared.get(b) == Some(&i)
        {
            self.created.insert(b.clone(), created.map_or(Created::Failed, Created::Id));
        }
    }

    /// The next step, or `None` when every operation has had its turn. The operation it
    /// names is no longer pending.
    pub fn next_step(&mut self) -> Option<Step> {
        let first_pending = self.pending.iter().position(|p| *p)?;
        let mut step = None;
        for i in first_pending..self.pending.len() {
            if !self.pending[i] {
                continue;
            }
            match self.check(i) {
                Ok(true) => step = Some(Step::Run(i)),
                Ok(false) => continue,
                Err(e) => step = Some(Step::Fail(i, e)),
            }
            break;
        }
        let step = step.unwrap_or_else(|| {
            let i = first_pending;
            let waits_for = self.refs[i].iter().find(|b| !self.created.contains_key(*b)).cloned().unwrap_or_default();
            Step::Fail(
                i,
                ScimError::new(
                    409,
                    None,
                    format!(
                        "Operations[{i}]: circular bulkId references (via \"bulkId:{waits_for}\") cannot be resolved; \
                         create the resources first and link them in later operations"
                    ),
                ),
            )
        });
        let (Step::Run(i) | Step::Fail(i, _)) = &step;
        self.pending[*i] = false;
        Some(step)
    }

    /// Ok(true): ready; Ok(false): waits for a POST still to run; Err: fails now.
    fn check(&self, i: usize) -> Result<bool, ScimError> {
        for b in &self.refs[i] {
            match (self.declared.get(b), self.created.get(b)) {
                (None, _) => {
                    return Err(ScimError::invalid_value(format!(
                        "Operations[{i}]: \"bulkId:{b}\" refers to no POST operation of this request"
                    )));
                }
                (Some(_), Some(Created::Id(_))) => {}
                (Some(j), Some(Created::Failed)) => {
                    return Err(ScimError::new(
                        409,
                        None,
                        format!("Operations[{i}]: \"bulkId:{b}\" refers to Operations[{j}], which failed"),
                    ));
                }
                (Some(j), None) if *j == i => {
                    return Err(ScimError::new(
                        409,
                        None,
                        format!("Operations[{i}]: the operation refers to its own bulkId {b:?}"),
                    ));
                }
                (Some(_), None) => return Ok(false),
            }
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------
// The response.

/// How one operation ended, for the response.
#[derive(Debug, Clone, PartialEq)]
pub struct OpResult<E> {
    /// Index in the request's `Operations`.
    pub index: usize,
    pub method: Option<String>,
    pub bulk_id: Option<String>,
    /// The resource the operation applied to (or created), when known.
    pub target: Option<(ResourceKind, String)>,
    /// Success: the status and the resource's new version (none after DELETE).
    pub outcome: Result<(u16, Option<u64>), E>,
}

impl<E> OpResult<E> {
    pub fn map_err<F>(self, f: impl FnOnce(E) -> F) -> OpResult<F> {
        OpResult {
            index: self.index,
            method: self.method,
            bulk_id: self.bulk_id,
            target: self.target,
            outcome: self.outcome.map_err(f),
        }
    }
}

/// The `BulkResponse` (RFC 7644 §3.7.3) for the operations that ran, in request order.
/// Each has `method`, `bulkId` when one was sent, `location` (except for a POST that
/// failed), `version` after a create or update, `status` as a string ("201"), and, for a
/// failure, `response` holding the §3.12 error body ("When indicating an error, the
/// "response" attribute MUST contain the detail error response").
pub fn response(base_url: &str, mut results: Vec<OpResult<ScimError>>) -> Value {
    results.sort_by_key(|r| r.index);
    let base = base_url.trim_end_matches('/');
    let ops: Vec<Value> = results
        .into_iter()
        .map(|r| {
            let mut o = Map::new();
            let method = r.method.map(|m| m.trim().to_ascii_uppercase()).unwrap_or_default();
            if !method.is_empty() {
                o.insert("method".into(), json!(method));
            }
            if let Some(b) = r.bulk_id {
                o.insert("bulkId".into(), json!(b));
            }
            let failed_post = r.outcome.is_err() && method == "POST";
            if let (Some((kind, id)), false) = (&r.target, failed_post) {
                o.insert("location".into(), json!(format!("{base}{}/{id}", kind.endpoint())));
            }
            match r.outcome {
                Ok((status, version)) => {
                    if let Some(v) = version {
                        o.insert("version".into(), json!(super::resource::etag(v)));
                    }
                    o.insert("status".into(), json!(status.to_string()));
                }
                Err(e) => {
                    o.insert("status".into(), json!(e.status.to_string()));
                    o.insert("response".into(), e.to_json());
                }
            }
            Value::Object(o)
        })
        .collect();
    json!({ "schemas": [BULK_RESPONSE], "Operations": ops })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::ScimType;

    fn req(ops: Value) -> BulkRequest {
        parse_request(&json!({"schemas": [BULK_REQUEST], "Operations": ops}), 100).unwrap()
    }

    fn user_post(bulk_id: &str) -> Value {
        json!({"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": {"userName": bulk_id}})
    }

    #[test]
    fn parses_the_rfc_example_shapes() {
        let r = parse_request(
            &json!({
                "schemas": [BULK_REQUEST],
                "failOnErrors": 1,
                "Operations": [
                    user_post("qwerty"),
                    {"method": "PUT", "path": "/Users/b7c1", "version": "W/\"3\"", "data": {"userName": "x"}},
                    {"method": "patch", "path": "/Groups/g1", "data": {"Operations": []}},
                    {"method": "DELETE", "path": "/Users/e9e3", "version": "W/\"0\""}
                ]
            }),
            10,
        )
        .unwrap();
        assert_eq!(r.fail_on_errors, Some(1));
        let methods: Vec<Method> = r.entries.iter().map(|e| e.op.as_ref().unwrap().method).collect();
        assert_eq!(methods, [Method::Post, Method::Put, Method::Patch, Method::Delete]);
        let t = r.entries[3].op.as_ref().unwrap().target().unwrap();
        assert_eq!(t, Target { kind: ResourceKind::User, id: Some("e9e3".into()) });
        assert_eq!(r.entries[1].op.as_ref().unwrap().version.as_deref(), Some("W/\"3\""));
    }

    #[test]
    fn whole_request_errors() {
        let e = parse_request(&json!([]), 10).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        let e = parse_request(&json!({"schemas": ["urn:x"], "Operations": []}), 10).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        assert!(parse_request(&json!({"Operations": {}}), 10).is_err());
        let e = parse_request(&json!({"Operations": [], "failOnErrors": 0}), 10).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let ops: Vec<Value> = (0..3).map(|i| user_post(&format!("u{i}"))).collect();
        let e = parse_request(&json!({"Operations": ops}), 2).unwrap_err();
        assert_eq!((e.status, e.scim_type), (413, None));
        assert!(e.detail.contains("maxOperations is 2"), "{e}");
    }

    #[test]
    fn invalid_operations_fail_alone() {
        let r = req(json!([
            {"method": "GET", "path": "/Users"},
            {"method": "POST", "path": "/Users", "data": {}},
            {"method": "POST", "path": "/Users/x", "bulkId": "a", "data": {}},
            {"method": "PUT", "path": "/Users", "data": {}},
            {"method": "PATCH", "path": "/Users/x"},
            {"method": "DELETE", "path": "/Things/x"},
            user_post("dup"),
            user_post("dup"),
            "not an object",
            {"method": "DELETE", "path": "/Groups/ok"}
        ]));
        for (i, e) in r.entries.iter().enumerate().take(9).filter(|(i, _)| *i != 6) {
            let err = e.op.as_ref().expect_err(&format!("entry {i} should be invalid"));
            assert_eq!(err.status, 400, "{i}: {err}");
            assert!(err.detail.starts_with(&format!("Operations[{i}]")), "{err}");
        }
        assert!(r.entries[6].op.is_ok(), "the first use of a bulkId is fine");
        assert!(r.entries[9].op.is_ok());
        assert_eq!(r.entries[0].method.as_deref(), Some("GET"));
    }

    #[test]
    fn references_are_found_and_substituted() {
        let op = Operation {
            method: Method::Patch,
            path: "/Groups/bulkId:g".into(),
            data: Some(json!({"Operations": [{"op": "add", "path": "members",
                "value": [{"value": "bulkId:u1"}, {"value": "bulkId:u2"}, {"value": "bulkId:u1"}, {"value": "plain"}]}]})),
            version: None,
        };
        assert_eq!(op.references(), ["g", "u1", "u2"]);
        let ids: HashMap<&str, &str> = [("g", "G-ID"), ("u1", "U1-ID")].into_iter().collect();
        let r = op.resolved(|b| ids.get(b).map(|s| s.to_string()));
        assert_eq!(r.path, "/Groups/G-ID");
        let v = &r.data.clone().unwrap()["Operations"][0]["value"];
        assert_eq!(v, &json!([{"value": "U1-ID"}, {"value": "bulkId:u2"}, {"value": "U1-ID"}, {"value": "plain"}]));
        assert_eq!(r.target().unwrap().id.as_deref(), Some("G-ID"));
    }

    fn drive(r: &BulkRequest, fail_posts: &[usize]) -> Vec<(usize, Option<u16>)> {
        let mut s = Scheduler::new(r);
        let mut order = Vec::new();
        while let Some(step) = s.next_step() {
            match step {
                Step::Run(i) => {
                    let ok = !fail_posts.contains(&i);
                    s.finished(r, i, ok.then(|| format!("id{i}")));
                    order.push((i, if ok { None } else { Some(400) }));
                }
                Step::Fail(i, e) => {
                    s.finished(r, i, None);
                    order.push((i, Some(e.status)));
                }
            }
        }
        order
    }

    #[test]
    fn forward_references_wait_for_their_post() {
        let group = json!({"method": "POST", "path": "/Groups", "bulkId": "g",
            "data": {"displayName": "G", "members": [{"value": "bulkId:u"}]}});
        let r = req(json!([group, user_post("u")]));
        assert_eq!(drive(&r, &[]), [(1, None), (0, None)]);
    }

    #[test]
    fn unknown_failed_and_circular_references() {
        let refers = |b: &str, to: &str| {
            json!({"method": "POST", "path": "/Groups", "bulkId": b,
                   "data": {"displayName": b, "members": [{"value": format!("bulkId:{to}")}]}})
        };
        // Unknown bulkId: 400; a reference to a failed POST: 409.
        let r = req(json!([refers("a", "nobody"), user_post("u"), refers("b", "u")]));
        assert_eq!(drive(&r, &[1]), [(0, Some(400)), (1, Some(400)), (2, Some(409))]);
        // A cycle a -> b -> a: the first fails with 409, and so does the one needing it.
        let r = req(json!([refers("a", "b"), refers("b", "a"), user_post("u")]));
        assert_eq!(drive(&r, &[]), [(2, None), (0, Some(409)), (1, Some(409))]);
        // Self-reference.
        let r = req(json!([refers("s", "s")]));
        assert_eq!(drive(&r, &[]), [(0, Some(409))]);
    }

    #[test]
    fn response_follows_the_rfc_figures() {
        let results = vec![
            OpResult {
                index: 1,
                method: Some("delete".into()),
                bulk_id: None,
                target: Some((ResourceKind::User, "u2".into())),
                outcome: Ok((204, None)),
            },
            OpResult {
                index: 0,
                method: Some("POST".into()),
                bulk_id: Some("qwerty".into()),
                target: Some((ResourceKind::User, "u1".into())),
                outcome: Ok((201, Some(1))),
            },
            OpResult {
                index: 2,
                method: Some("POST".into()),
                bulk_id: Some("x".into()),
                target: None,
                outcome: Err(ScimError::invalid_syntax("bad")),
            },
        ];
        let v = response("https://h/scim/v2/", results);
        assert_eq!(v["schemas"], json!([BULK_RESPONSE]));
        assert_eq!(
            v["Operations"][0],
            json!({"method": "POST", "bulkId": "qwerty", "location": "https://h/scim/v2/Users/u1",
                   "version": "W/\"1\"", "status": "201"})
        );
        assert_eq!(
            v["Operations"][1],
            json!({"method": "DELETE", "location": "https://h/scim/v2/Users/u2", "status": "204"})
        );
        let failed = &v["Operations"][2];
        assert_eq!(failed["status"], "400");
        assert!(failed.get("location").is_none(), "no location for a failed POST");
        assert_eq!(failed["response"]["scimType"], "invalidSyntax");
        assert_eq!(failed["response"]["status"], "400");
    }
}
