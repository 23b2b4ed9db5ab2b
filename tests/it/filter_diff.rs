//! Differential test of filters (issue #13): random filters from the whole RFC 7644
//! §3.4.2.2 grammar (and, or, not, parentheses, every operator, `pr`, value paths, Entra's
//! `attr[...].sub op v`, sub-attributes, URN-qualified core and extension attributes, values
//! of every JSON type: odd strings, numbers with signs and exponents, booleans, null,
//! timestamps in several spellings) against every attribute type, sent to the real daemon
//! holding random users and groups, whose answer goes through the SQL translation; and
//! evaluated by the pure oracle of `filter_oracle.rs` over the same resources as the daemon
//! returns them. Both must refuse (400 `invalidFilter`), or both return the same ids.
//!
//! Bounded: `FILTER_DIFF_CASES` filters (default [`DEFAULT_CASES`]) from a seed
//! (`FILTER_DIFF_SEED`, default: from the clock, printed). A disagreement is shrunk to
//! a smaller filter that still disagrees and kept as one JSON line in
//! `tests/fixtures/filters/found.jsonl` (seed, resource type, filter text and the oracle's
//! tree); `replay_found_filters` replays every kept line against the resources of its seed
//! (ids and timestamps are new in each run, the rest is the same), so commit the file with
//! the fix.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::filter_oracle::{
    CORE_GROUP, CORE_USER, Def, ENTERPRISE, F, Lit, OPS, Op, P, Style, Ty, attributes, check_filter, eval, print,
};
use crate::support::*;

/// Filters per run of `random_filters_agree_with_the_oracle`: each is one HTTP request.
pub const DEFAULT_CASES: u32 = 3000;

/// SplitMix64: small, seedable, good enough to pick from lists.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n.max(1))) as u32
    }
    fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u32) as usize]
    }
}

/// Strings values and literals are drawn from, so that comparisons hit: case variants,
/// Unicode whose lower-casing is not ASCII's, SQL LIKE wildcards, JSON escapes, digits,
/// booleans and timestamps as strings, whitespace.
const STRINGS: &[&str] = &[
    "",
    "a",
    "A",
    "ab",
    "aB",
    "ba",
    "b",
    "z",
    "é",
    "É",
    "Élodie",
    "élodie",
    "ß",
    "SS",
    "Σ",
    "σ",
    "ΣΑΣ",
    "İ",
    "ǅ",
    "ﬃ",
    "😀",
    "x%_y",
    "%",
    "_",
    "100",
    "99",
    "1e3",
    "true",
    "True",
    "FALSE",
    "2026-01-02T03:04:05Z",
    "a\"b",
    "a\\b",
    " ",
    " a ",
    "\t",
    "work",
    "Work",
    "home",
    "a@b.example",
    "A@B.example",
    "x@b.example",
    "AA==",
    "QUJD",
];
const NUMBERS: &[&str] = &["0", "-1", "42", "1.5", "-1.5e10", "1E3", "2e-3", "100", "-0"];

fn any_string(rng: &mut Rng) -> String {
    let s = rng.pick(STRINGS).to_string();
    if rng.chance(15) { format!("{s}{}", rng.pick(STRINGS)) } else { s }
}

/// A random user or group body; `users`: ids already created, for members.
fn random_resource(rng: &mut Rng, user: bool, i: usize, members: &[(String, &str)]) -> Value {
    let mut o = serde_json::Map::new();
    fn opt(rng: &mut Rng, o: &mut serde_json::Map<String, Value>, key: &str, v: impl FnOnce(&mut Rng) -> Value) {
        if rng.chance(60) {
            let v = v(rng);
            o.insert(key.into(), v);
        }
    }
    if user {
        opt(rng, &mut o, "externalId", |rng| json!(any_string(rng)));
        opt(rng, &mut o, "displayName", |rng| json!(any_string(rng)));
        opt(rng, &mut o, "nickName", |rng| json!(any_string(rng)));
        opt(rng, &mut o, "title", |rng| json!(any_string(rng)));
        opt(rng, &mut o, "userType", |rng| json!(any_string(rng)));
        opt(rng, &mut o, "locale", |rng| json!(any_string(rng)));
        opt(rng, &mut o, "profileUrl", |rng| json!(format!("https://example.com/{}", rng.pick(&["a", "A", "b"]))));
        opt(rng, &mut o, "active", |rng| json!(rng.chance(50)));
        opt(rng, &mut o, "name", |rng| json!({"givenName": any_string(rng), "familyName": any_string(rng)}));
        let multi = |rng: &mut Rng, max: u32, value: &dyn Fn(&mut Rng) -> String| -> Value {
            let n = rng.below(max + 1);
            let mut primary_left = true;
            Value::Array(
                (0..n)
                    .map(|_| {
                        let mut e = serde_json::Map::new();
                        if rng.chance(90) {
                            e.insert("value".into(), json!(value(rng)));
                        }
                        if rng.chance(70) {
                            e.insert("type".into(), json!(rng.pick(&["work", "Work", "home", "other", ""])));
                        }
                        if primary_left && rng.chance(30) {
                            e.insert("primary".into(), json!(true));
                            primary_left = false;
                        }
                        if rng.chance(20) {
                            e.insert("display".into(), json!(any_string(rng)));
                        }
                        Value::Object(e)
                    })
                    .collect(),
            )
        };
        let emails =
            multi(rng, 3, &|rng| rng.pick(&["a@b.example", "A@B.example", "x@b.example", "É@b.example"]).to_string());
        let phones = multi(rng, 2, &|rng| any_string(rng));
        let roles = multi(rng, 2, &|rng| any_string(rng));
        let certs = multi(rng, 1, &|rng| rng.pick(&["AA==", "QUJD", "YWJj"]).to_string());
        opt(rng, &mut o, "emails", |_| emails);
        opt(rng, &mut o, "phoneNumbers", |_| phones);
        opt(rng, &mut o, "roles", |_| roles);
        opt(rng, &mut o, "x509Certificates", |_| certs);
        let mut ent = serde_json::Map::new();
        for k in ["employeeNumber", "department", "costCenter"] {
            if rng.chance(50) {
                ent.insert(k.into(), json!(any_string(rng)));
            }
        }
        if rng.chance(30) {
            ent.insert("manager".into(), json!({"value": any_string(rng)}));
        }
        let mut schemas = vec![json!(CORE_USER)];
        if !ent.is_empty() {
            o.insert(ENTERPRISE.into(), Value::Object(ent));
            schemas.push(json!(ENTERPRISE));
        }
        o.insert("schemas".into(), Value::Array(schemas));
        o.insert("userName".into(), json!(format!("{}{i}", any_string(rng).trim())));
    } else {
        o.insert("schemas".into(), json!([CORE_GROUP]));
        o.insert("displayName".into(), json!(format!("{}{i}", any_string(rng).trim())));
        opt(rng, &mut o, "externalId", |rng| json!(any_string(rng)));
        let mut ms = Vec::new();
        for (id, kind) in members {
            if rng.chance(30) {
                let mut m = json!({"value": id, "type": kind});
                if rng.chance(30) {
                    m["display"] = json!(any_string(rng));
                }
                ms.push(m);
            }
        }
        o.insert("members".into(), Value::Array(ms));
    }
    Value::Object(o)
}

/// The daemon's resources for `seed`: created, then read back as the daemon returns them.
struct World {
    users: Vec<Value>,
    groups: Vec<Value>,
    /// Timestamps the resources carry, for dateTime literals that hit.
    times: Vec<String>,
}

async fn build_world(d: &Daemon, seed: u64) -> World {
    let mut rng = Rng(seed);
    let mut made: Vec<(String, &str)> = Vec::new();
    for i in 0..24 {
        let body = random_resource(&mut rng, true, i, &[]);
        let r = d.post("/Users", body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "POST /Users {body}: {}", r.body);
        made.push((r.body["id"].as_str().unwrap().to_string(), "User"));
    }
    for i in 0..6 {
        let body = random_resource(&mut rng, false, i, &made);
        let r = d.post("/Groups", body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "POST /Groups {body}: {}", r.body);
        made.push((r.body["id"].as_str().unwrap().to_string(), "Group"));
    }
    let list = |r: Resp| -> Vec<Value> {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["Resources"].as_array().unwrap().clone()
    };
    let users = list(d.get("/Users?count=1000").await);
    let groups = list(d.get("/Groups?count=1000").await);
    assert_eq!((users.len(), groups.len()), (24, 6));
    let mut times = Vec::new();
    for r in users.iter().chain(&groups) {
        for k in ["created", "lastModified"] {
            if let Some(t) = r["meta"][k].as_str() {
                times.push(t.to_string());
            }
        }
    }
    World { users, groups, times }
}

/// Other spellings of a timestamp: another offset, a millisecond later, fractional digits.
fn time_variants(t: &str) -> Vec<String> {
    use time::format_description::well_known::Rfc3339;
    let Ok(x) = time::OffsetDateTime::parse(t, &Rfc3339) else { return vec![t.to_string()] };
    let mut v = vec![t.to_string()];
    for off in [time::UtcOffset::from_hms(1, 0, 0).unwrap(), time::UtcOffset::from_hms(-5, -30, 0).unwrap()] {
        v.push(x.to_offset(off).format(&Rfc3339).unwrap());
    }
    for d in [time::Duration::milliseconds(1), time::Duration::milliseconds(-1), time::Duration::microseconds(1)] {
        v.push((x + d).format(&Rfc3339).unwrap());
    }
    v
}

struct Gen<'a> {
    rng: Rng,
    world: &'a World,
}

impl Gen<'_> {
    fn lit(&mut self) -> Lit {
        match self.rng.below(20) {
            0 => Lit::Null,
            1 => Lit::Bool(true),
            2 => Lit::Bool(false),
            3 | 4 => Lit::Num(self.rng.pick(NUMBERS).to_string()),
            5 | 6 => {
                let t = self.rng.pick(&self.world.times).clone();
                Lit::Str(self.rng.pick(&time_variants(&t)).clone())
            }
            7 => {
                // An id or a value the resources hold, in another case now and then.
                let all: Vec<&Value> = self.world.users.iter().chain(&self.world.groups).collect();
                let r = *self.rng.pick(&all);
                let id = r["id"].as_str().unwrap().to_string();
                Lit::Str(if self.rng.chance(30) { id.to_uppercase() } else { id })
            }
            _ => Lit::Str(any_string(&mut self.rng)),
        }
    }

    fn op(&mut self) -> Op {
        *self.rng.pick(&OPS)
    }

    fn cased(&mut self, s: &str) -> String {
        match self.rng.below(6) {
            0 => s.to_uppercase(),
            1 => s.to_lowercase(),
            _ => s.to_string(),
        }
    }

    /// A top-level attribute path (sometimes unknown or never returned).
    fn path(&mut self, user: bool) -> P {
        if self.rng.chance(2) {
            return P { urn: None, name: self.rng.pick(&["nope", "password"]).to_string(), sub: None };
        }
        let attrs = attributes(user);
        let (schema, name, def) = *self.rng.pick(&attrs);
        let urn = if schema == ENTERPRISE {
            Some(self.cased(ENTERPRISE))
        } else if !schema.is_empty() && self.rng.chance(10) {
            Some(self.cased(schema))
        } else {
            None
        };
        let sub = if def.ty == Ty::Complex && (def.subs.iter().all(|s| s.0 != "value") || self.rng.chance(80)) {
            let sub = self.rng.pick(def.subs).0;
            Some(self.cased(sub))
        } else {
            None
        };
        P { urn, name: self.cased(name), sub }
    }

    fn leaf(&mut self, user: bool, element: Option<&Def>) -> F {
        let p = match element {
            Some(def) => {
                let sub = self.rng.pick(def.subs).0;
                P { urn: None, name: self.cased(sub), sub: None }
            }
            None => self.path(user),
        };
        if self.rng.chance(15) {
            F::Pr(p)
        } else {
            let (op, lit) = (self.op(), self.lit());
            F::Cmp(p, op, lit)
        }
    }

    fn filter(&mut self, user: bool, depth: u32, element: Option<&Def>) -> F {
        let roll = if depth == 0 { 99 } else { self.rng.below(100) };
        match roll {
            0..=14 => {
                F::And(Box::new(self.filter(user, depth - 1, element)), Box::new(self.filter(user, depth - 1, element)))
            }
            15..=27 => {
                F::Or(Box::new(self.filter(user, depth - 1, element)), Box::new(self.filter(user, depth - 1, element)))
            }
            28..=35 => F::Not(Box::new(self.filter(user, depth - 1, element))),
            36..=49 if element.is_none() => {
                // Mostly multi-valued attributes, which value filters are for; now and then a
                // single-valued complex one (`name[...]`, the enterprise `manager[...]`).
                let attrs: Vec<_> = attributes(user)
                    .into_iter()
                    .filter(|(_, _, d)| d.ty == Ty::Complex && (d.multi || self.rng.chance(10)))
                    .collect();
                let (schema, name, def) = *self.rng.pick(&attrs);
                let inner = self.filter(user, depth.min(2) - 1, Some(&def));
                let tail = self.rng.chance(35).then(|| Box::new(self.leaf(user, Some(&def))));
                let attr = match schema {
                    ENTERPRISE => format!("{}:{}", self.cased(ENTERPRISE), self.cased(name)),
                    _ => self.cased(name),
                };
                F::Vp(attr, Box::new(inner), tail)
            }
            _ => self.leaf(user, element),
        }
    }
}

fn ids_of(resources: &[Value], keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    resources.iter().filter(|r| keep(r)).map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// What the oracle and the daemon said about one filter, when they disagree.
async fn disagreement(d: &Daemon, world: &World, user: bool, text: &str, f: &F) -> Option<String> {
    let (endpoint, resources) = if user { ("/Users", &world.users) } else { ("/Groups", &world.groups) };
    let r = d.get(&format!("{}&count=1000", filter_q(endpoint, text))).await;
    let oracle = check_filter(user, f).map(|c| ids_of(resources, |res| eval(&c, res)));
    match (&oracle, r.status) {
        (Err(_), StatusCode::BAD_REQUEST) if r.body["scimType"] == "invalidFilter" => None,
        (Ok(want), StatusCode::OK) => {
            let got: BTreeSet<String> = r.body["Resources"]
                .as_array()
                .map(|a| a.iter().map(|x| x["id"].as_str().unwrap_or("").to_string()).collect())
                .unwrap_or_default();
            (got != *want || r.body["totalResults"] != json!(got.len())).then(|| {
                let only_daemon: Vec<_> = got.difference(want).collect();
                let only_oracle: Vec<_> = want.difference(&got).collect();
                format!("ids only the daemon returned {only_daemon:?}, only the oracle {only_oracle:?}")
            })
        }
        _ => Some(format!("oracle {oracle:?}, daemon {} {}", r.status, r.body)),
    }
}

/// Smaller filters than `f` to try when it disagrees: its parts.
fn smaller(f: &F) -> Vec<F> {
    match f {
        F::And(a, b) | F::Or(a, b) => {
            let mut v = vec![(**a).clone(), (**b).clone()];
            for s in smaller(a) {
                v.push(match f {
                    F::And(..) => F::And(Box::new(s), b.clone()),
                    _ => F::Or(Box::new(s), b.clone()),
                });
            }
            for s in smaller(b) {
                v.push(match f {
                    F::And(..) => F::And(a.clone(), Box::new(s)),
                    _ => F::Or(a.clone(), Box::new(s)),
                });
            }
            v
        }
        F::Not(a) => {
            let mut v = vec![(**a).clone()];
            v.extend(smaller(a).into_iter().map(|s| F::Not(Box::new(s))));
            v
        }
        F::Vp(attr, inner, tail) => {
            let mut v = Vec::new();
            if tail.is_some() {
                v.push(F::Vp(attr.clone(), inner.clone(), None));
            }
            v.extend(smaller(inner).into_iter().map(|s| F::Vp(attr.clone(), Box::new(s), tail.clone())));
            v
        }
        _ => Vec::new(),
    }
}

fn plain(f: &F) -> String {
    let mut first = |_n: u32| 0;
    print(f, &mut Style { pick: &mut first })
}

fn found_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filters/found.jsonl")
}

#[tokio::test]
async fn random_filters_agree_with_the_oracle() {
    let cases: u32 = std::env::var("FILTER_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("FILTER_DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007
    });
    eprintln!("filter differential: seed {seed} (FILTER_DIFF_SEED), {cases} filters (FILTER_DIFF_CASES)");
    let d = Daemon::start();
    let world = build_world(&d, seed).await;
    let mut g = Gen { rng: Rng(seed ^ 0x5eed), world: &world };
    let (mut refused, mut matched_some) = (0, 0);
    for n in 0..cases {
        let user = g.rng.chance(75);
        let depth = g.rng.below(4);
        let f = g.filter(user, depth, None);
        let text = {
            let rng = &mut g.rng;
            let mut pick = |k: u32| rng.below(k);
            print(&f, &mut Style { pick: &mut pick })
        };
        match check_filter(user, &f) {
            Err(_) => refused += 1,
            Ok(c) => {
                let rs = if user { &world.users } else { &world.groups };
                if rs.iter().any(|r| eval(&c, r)) {
                    matched_some += 1;
                }
            }
        }
        if let Some(why) = disagreement(&d, &world, user, &text, &f).await {
            // Shrink: keep taking a smaller part that still disagrees.
            let (mut f, mut why) = (f, why);
            'shrink: loop {
                for s in smaller(&f) {
                    if let Some(w) = disagreement(&d, &world, user, &plain(&s), &s).await {
                        (f, why) = (s, w);
                        continue 'shrink;
                    }
                }
                break;
            }
            let kind = if user { "User" } else { "Group" };
            let line = format!("{}\n", json!({"seed": seed, "kind": kind, "filter": plain(&f), "tree": f}));
            let file = found_file();
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            let mut kept = std::fs::read_to_string(&file).unwrap_or_default();
            kept.push_str(&line);
            std::fs::write(&file, kept).unwrap();
            panic!(
                "filter {n} of seed {seed} disagrees (kept in {}): {}\n  original: {text}\n  {why}",
                file.display(),
                plain(&f)
            );
        }
    }
    eprintln!(
        "filter differential: {cases} filters agreed; {refused} refused by both, {matched_some} matched something"
    );
    // A generator that only makes refusals or empty answers tests nothing.
    assert!(refused > cases / 20 && matched_some > cases / 5, "refused {refused}, matched {matched_some} of {cases}");
}

/// Every filter `random_filters_agree_with_the_oracle` found and kept, against the resources
/// of the seed it was found with.
#[tokio::test]
async fn replay_found_filters() {
    let text = std::fs::read_to_string(found_file()).expect("tests/fixtures/filters/found.jsonl");
    let mut by_seed: std::collections::BTreeMap<u64, Vec<(String, bool, F)>> = Default::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("found.jsonl: {e}: {line}"));
        let f: F = serde_json::from_value(v["tree"].clone()).unwrap_or_else(|e| panic!("found.jsonl: {e}: {line}"));
        let seed = v["seed"].as_u64().expect("seed");
        by_seed.entry(seed).or_default().push((v["filter"].as_str().expect("filter").into(), v["kind"] == "User", f));
    }
    assert!(!by_seed.is_empty(), "found.jsonl holds no filters");
    for (seed, filters) in by_seed {
        let d = Daemon::start();
        let world = build_world(&d, seed).await;
        for (text, user, f) in filters {
            assert_eq!(plain(&f), text, "found.jsonl: the text is the tree's");
            if let Some(why) = disagreement(&d, &world, user, &text, &f).await {
                panic!("seed {seed}: {text}: {why}");
            }
        }
    }
}
