//! Differential test of the PostgreSQL filter dialect: the same random users and groups go
//! into a SQLite store (the reference) and a PostgreSQL store, and random filters over every
//! kind of attribute (indexed columns, JSON paths, multi-valued attributes, value paths,
//! members and groups, extension attributes), every operator and every kind of literal must
//! select the same ids, in the same order, with the same totals. Strings include Unicode
//! whose case folding is not ASCII's (É, ẞ, Σ at the end of a word, İ), SQL wildcards and
//! timestamps. The seed is printed; `PG_DIFF_SEED` replays one.

use serde_json::{Map, Value, json};
use testpg::TestPg;

use super::*;
use crate::model::query::{AttrInfo, AttrPath, AttrType, CompareOp, Filter, Literal};
use crate::model::{MemberRef, ResourceKind};
use crate::store::face::ResourceStore;
use crate::store::{ListPart, Load, NewAudit, NewResource, Position, Store, Update};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

const STRINGS: &[&str] = &[
    "",
    "a",
    "A",
    "ab",
    "Ab",
    "b",
    "x",
    "X",
    "élodie",
    "Élodie",
    "ÉLODIE",
    "straße",
    "STRASSE",
    "ẞ",
    "σας",
    "ΣΑΣ",
    "İstanbul",
    "i̇stanbul",
    "a%b",
    "a_b",
    "a\\b",
    "5",
    "10",
    "1.5",
    "true",
    "True",
    "work",
    "WORK",
    "home",
    "2026-01-02T03:04:05Z",
    "2026-01-02T03:04:05.308Z",
    "2026-01-02T04:04:05+01:00",
    "2025-12-31T23:59:59Z",
    "z@example.com",
    "Z@Example.com",
    "日本",
    "ｆｕｌｌ",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn string(&mut self) -> String {
        self.pick(STRINGS).to_string()
    }
}

fn user(rng: &mut Rng, user_name: String) -> Map<String, Value> {
    let mut a = Map::new();
    a.insert("userName".into(), user_name.into());
    if rng.chance(70) {
        a.insert("displayName".into(), rng.string().into());
    }
    if rng.chance(60) {
        a.insert("name".into(), json!({"givenName": rng.string(), "familyName": rng.string()}));
    }
    if rng.chance(60) {
        a.insert("title".into(), rng.string().into());
    }
    if rng.chance(70) {
        a.insert("active".into(), rng.chance(60).into());
    }
    if rng.chance(50) {
        a.insert("externalId".into(), rng.string().into());
    }
    if rng.chance(70) {
        let emails: Vec<Value> = (0..rng.below(3) + 1)
            .map(|_| {
                let mut e = json!({"value": rng.string(), "type": *rng.pick(&["work", "home", "WORK", "other"])});
                if rng.chance(40) {
                    e["primary"] = rng.chance(50).into();
                }
                e
            })
            .collect();
        a.insert("emails".into(), emails.into());
    }
    if rng.chance(40) {
        a.insert(
            ENTERPRISE.into(),
            json!({"department": rng.string(), "employeeNumber": rng.string(), "manager": {"value": rng.string()}}),
        );
    }
    a
}

fn path(urn: Option<&str>, name: &str, sub: Option<&str>, ty: AttrType, case_exact: bool, multi: bool) -> AttrPath {
    AttrPath {
        urn: urn.map(str::to_string),
        name: name.into(),
        sub: sub.map(str::to_string),
        info: AttrInfo { resolved: true, ty, case_exact, multi_valued: multi },
    }
}

fn user_paths() -> Vec<AttrPath> {
    use AttrType::*;
    vec![
        path(None, "userName", None, String, false, false),
        path(None, "displayName", None, String, false, false),
        path(None, "externalId", None, String, true, false),
        path(None, "id", None, String, true, false),
        path(None, "name", Some("givenName"), String, false, false),
        path(None, "title", None, String, false, false),
        // A string attribute read as a dateTime: the translation's time rules on JSON values.
        path(None, "title", None, DateTime, false, false),
        path(None, "title", None, Integer, false, false),
        path(None, "active", None, Boolean, false, false),
        path(None, "emails", Some("value"), String, false, true),
        path(None, "emails", Some("type"), String, false, true),
        path(None, "emails", Some("primary"), Boolean, false, true),
        path(None, "emails", None, Complex, false, true),
        path(None, "groups", Some("display"), String, false, true),
        path(None, "groups", Some("value"), String, true, true),
        path(None, "schemas", None, Reference, false, true),
        path(None, "meta", Some("resourceType"), String, false, false),
        path(None, "meta", Some("version"), String, false, false),
        path(None, "name", None, Complex, false, false),
        path(Some(ENTERPRISE), "department", None, String, false, false),
        path(Some(ENTERPRISE), "manager", Some("value"), String, false, false),
    ]
}

fn group_paths() -> Vec<AttrPath> {
    use AttrType::*;
    vec![
        path(None, "displayName", None, String, false, false),
        path(None, "externalId", None, String, true, false),
        path(None, "id", None, String, true, false),
        path(None, "members", Some("value"), String, true, true),
        path(None, "members", Some("display"), String, false, true),
        path(None, "members", Some("type"), String, false, true),
        path(None, "members", None, Complex, false, true),
        path(None, "schemas", None, Reference, false, true),
    ]
}

const OPS: &[CompareOp] = &[
    CompareOp::Eq,
    CompareOp::Ne,
    CompareOp::Co,
    CompareOp::Sw,
    CompareOp::Ew,
    CompareOp::Gt,
    CompareOp::Ge,
    CompareOp::Lt,
    CompareOp::Le,
];

fn literal(rng: &mut Rng, known: &[String]) -> Literal {
    match rng.below(100) {
        0..5 => Literal::Null,
        5..15 => Literal::Bool(rng.chance(50)),
        15..25 => Literal::Number(
            rng.pick(&[json!(0), json!(1), json!(-1), json!(5), json!(1.5)]).as_number().unwrap().clone(),
        ),
        25..45 if !known.is_empty() => Literal::String(rng.pick(known).clone()),
        _ => Literal::String(rng.string()),
    }
}

fn leaf(rng: &mut Rng, paths: &[AttrPath], known: &[String]) -> Filter {
    let p = rng.pick(paths).clone();
    if p.info.ty == AttrType::Complex || rng.chance(12) {
        return match (p.name.as_str(), p.info.ty) {
            ("emails", AttrType::Complex) | ("members", AttrType::Complex) | ("name", AttrType::Complex) => {
                let subs: Vec<AttrPath> = match p.name.as_str() {
                    "emails" => vec![
                        path(None, "value", None, AttrType::String, false, false),
                        path(None, "type", None, AttrType::String, false, false),
                        path(None, "primary", None, AttrType::Boolean, false, false),
                    ],
                    "members" => vec![
                        path(None, "value", None, AttrType::String, true, false),
                        path(None, "display", None, AttrType::String, false, false),
                    ],
                    _ => vec![
                        path(None, "givenName", None, AttrType::String, false, false),
                        path(None, "familyName", None, AttrType::String, false, false),
                    ],
                };
                let inner = if rng.chance(40) {
                    Filter::And(Box::new(leaf(rng, &subs, known)), Box::new(leaf(rng, &subs, known)))
                } else {
                    leaf(rng, &subs, known)
                };
                Filter::ValuePath(p, Box::new(inner))
            }
            _ => Filter::Present(p),
        };
    }
    Filter::Compare(p, *rng.pick(OPS), literal(rng, known))
}

fn filter(rng: &mut Rng, paths: &[AttrPath], known: &[String], depth: u32) -> Filter {
    if depth == 0 || rng.chance(45) {
        return leaf(rng, paths, known);
    }
    match rng.below(3) {
        0 => {
            Filter::And(Box::new(filter(rng, paths, known, depth - 1)), Box::new(filter(rng, paths, known, depth - 1)))
        }
        1 => Filter::Or(Box::new(filter(rng, paths, known, depth - 1)), Box::new(filter(rng, paths, known, depth - 1))),
        _ => Filter::Not(Box::new(filter(rng, paths, known, depth - 1))),
    }
}

fn audit() -> NewAudit {
    NewAudit {
        actor: "test".into(),
        token_id: None,
        method: "POST".into(),
        resource_type: "User".into(),
        resource_id: None,
        request_id: None,
        summary: json!({}),
    }
}

type Listed = Result<(u64, Vec<String>), String>;

fn listed(r: Result<crate::store::Page, StoreError>) -> Listed {
    r.map(|p| (p.total, p.resources.into_iter().map(|r| r.id).collect())).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_filters_select_the_same_resources_as_on_sqlite() {
    let seed = std::env::var("PG_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("PG_DIFF_SEED={seed}");
    let mut rng = Rng(seed);

    let pg = TestPg::start().unwrap();
    // A database whose default collation is not C (ICU's English): the translation must not
    // depend on it (text order is code-point order on SQLite).
    let db = "diff_icu";
    pg.psql("postgres", &format!("CREATE DATABASE {db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"))
        .unwrap();
    let pgstore = super::fixture::open_pg(&pg, db, 4).await;
    let (_dir, sqlite) = super::fixture::open_sqlite();

    // The same resources, with the same ids, in the same order, in both.
    let mut known: Vec<String> = Vec::new();
    let mut user_ids = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for i in 0..60 {
        let name = if rng.chance(70) { rng.string() } else { format!("{}{i}", rng.string()) };
        if !taken.insert(crate::model::fold_case(&name)) {
            continue;
        }
        let attrs = user(&mut rng, name.clone());
        known.push(name);
        let id = format!("u-{i:03}");
        let new = NewResource { kind: ResourceKind::User, id: id.clone(), attrs, members: Vec::new() };
        let a = sqlite.resources().create(new.clone(), audit()).await.map(|r| r.id);
        let b = ResourceStore::create(&pgstore, new, audit(), None).await.map(|r| r.id);
        assert_eq!(a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()));
        known.push(id.clone());
        user_ids.push(id);
    }
    for i in 0..15 {
        let mut attrs = Map::new();
        attrs.insert("displayName".into(), rng.string().into());
        if rng.chance(40) {
            attrs.insert("externalId".into(), rng.string().into());
        }
        let members: Vec<MemberRef> = (0..rng.below(6))
            .map(|_| MemberRef { id: rng.pick(&user_ids).clone(), kind: None, display: None })
            .collect();
        let id = format!("g-{i:03}");
        let new = NewResource { kind: ResourceKind::Group, id: id.clone(), attrs, members };
        let a = sqlite.resources().create(new.clone(), audit()).await.map(|r| r.id);
        let b = ResourceStore::create(&pgstore, new, audit(), None).await.map(|r| r.id);
        assert_eq!(a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()));
        known.push(id);
    }

    let (upaths, gpaths) = (user_paths(), group_paths());
    let cases: u32 = std::env::var("PG_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let mut matched_some = 0;
    for case in 0..cases {
        let (kind, paths) = if rng.chance(70) { (ResourceKind::User, &upaths) } else { (ResourceKind::Group, &gpaths) };
        let f = if rng.chance(85) { Some(filter(&mut rng, paths, &known, 3)) } else { None };
        // Sorted by any attribute (ascending or descending), some pages not from the start.
        let sortable: Vec<&AttrPath> = paths.iter().filter(|p| p.info.ty != AttrType::Complex).collect();
        let (sort, descending) =
            if rng.chance(40) { (Some((*rng.pick(&sortable)).clone()), Some(rng.chance(50))) } else { (None, None) };
        let (offset, count) = if rng.chance(30) { (rng.below(20) as u64, rng.below(15) as u32) } else { (0, 1000) };
        let part = || vec![ListPart { kind, filter: f.clone(), sort_path: sort.clone() }];
        let want = listed(
            sqlite.resources().list_many(part(), descending, Position::Offset(offset), count, Load::default()).await,
        );
        let got = listed(
            ResourceStore::list(&pgstore, part(), descending, Position::Offset(offset), count, Load::default()).await,
        );
        assert_eq!(
            got, want,
            "case {case} (PG_DIFF_SEED={seed}): {kind:?} filter {f:#?} sorted by {sort:?} descending {descending:?}, \
             offset {offset} count {count}"
        );
        if want.is_ok_and(|(n, _)| n > 0) {
            matched_some += 1;
        }
    }
    // The filters are not vacuous: many select something, and not everything.
    assert!(matched_some > cases / 10, "only {matched_some} of {cases} lists found anything");

    // Unfiltered pages by offset (through rank_blocks) and over both types at once.
    for (offset, count) in [(0, 7), (5, 10), (50, 100), (100, 5)] {
        for parts in [
            vec![ListPart { kind: ResourceKind::User, filter: None, sort_path: None }],
            vec![
                ListPart { kind: ResourceKind::Group, filter: None, sort_path: None },
                ListPart { kind: ResourceKind::User, filter: None, sort_path: None },
            ],
        ] {
            let want = listed(
                sqlite
                    .resources()
                    .list_many(parts.clone(), None, Position::Offset(offset), count, Load::default())
                    .await,
            );
            let got = listed(
                ResourceStore::list(&pgstore, parts, None, Position::Offset(offset), count, Load::default()).await,
            );
            assert_eq!(got, want, "offset {offset} count {count}");
        }
    }
    // Both types at once, sorted by the same attribute (the root `/.search`).
    for (name, sub, ty) in [("displayName", None, AttrType::String), ("externalId", None, AttrType::String)] {
        for descending in [false, true] {
            let sort = path(None, name, sub, ty, name == "externalId", false);
            let parts = vec![
                ListPart { kind: ResourceKind::User, filter: None, sort_path: Some(sort.clone()) },
                ListPart { kind: ResourceKind::Group, filter: None, sort_path: Some(sort) },
            ];
            let want = listed(
                sqlite
                    .resources()
                    .list_many(parts.clone(), Some(descending), Position::Offset(3), 40, Load::default())
                    .await,
            );
            let got = listed(
                ResourceStore::list(&pgstore, parts, Some(descending), Position::Offset(3), 40, Load::default()).await,
            );
            assert_eq!(got, want, "both types sorted by {name} descending {descending}");
        }
    }
    // Cursor paging (RFC 9865): the same pages and cursors.
    let mut after = 0;
    loop {
        let part = vec![ListPart { kind: ResourceKind::User, filter: None, sort_path: None }];
        let a =
            sqlite.resources().list_many(part.clone(), None, Position::After(after), 7, Load::default()).await.unwrap();
        let b = ResourceStore::list(&pgstore, part, None, Position::After(after), 7, Load::default()).await.unwrap();
        let ids = |p: &crate::store::Page| p.resources.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!((ids(&b), b.next_after, b.total), (ids(&a), a.next_after, a.total), "after {after}");
        match a.next_after {
            Some(n) => after = n,
            None => break,
        }
    }
    // Reads with members and groups give the same resources.
    for id in known.iter().filter(|k| k.starts_with("g-") || k.starts_with("u-")) {
        let kind = if id.starts_with("g-") { ResourceKind::Group } else { ResourceKind::User };
        let load = Load { members: true, groups: true };
        let a = sqlite.resources().get(kind, id, load).await.unwrap().unwrap();
        let b = ResourceStore::get(&pgstore, kind, id, load).await.unwrap().unwrap();
        assert_eq!(
            (&a.attrs, &a.members, &a.groups, a.meta.version),
            (&b.attrs, &b.members, &b.groups, b.meta.version)
        );
    }
    sqlite.close();
}

async fn pg_outbox(store: &PgStore, id: &str) -> Vec<(String, u64, Value)> {
    let conn = store.conn().await.unwrap();
    conn.query("SELECT op, version, payload FROM outbox WHERE resource_id = $1 ORDER BY id", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2)))
        .collect()
}

async fn sqlite_outbox(store: &Store, id: &str) -> Vec<(String, u64, Value)> {
    store
        .outbox()
        .rows_of(id)
        .await
        .unwrap()
        .into_iter()
        .map(|(op, v, p)| (op, v, serde_json::from_str(&p).unwrap()))
        .collect()
}

/// What a write answered, comparable across the backends: id, version, attributes, member
/// ids; or the error's text.
type Outcome = Result<(String, u64, Value, Option<Vec<String>>), String>;

fn outcome(r: Result<crate::model::Resource, StoreError>) -> Outcome {
    r.map(|r| (r.id, r.meta.version, Value::Object(r.attrs), r.members.map(|m| m.into_iter().map(|m| m.id).collect())))
        .map_err(|e| e.to_string())
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn member(id: &str, kind: Option<ResourceKind>) -> MemberRef {
    MemberRef { id: id.into(), kind, display: None }
}

/// The same writes on both backends give the same answers (resources, versions, and the
/// errors `Unique`, `VersionMismatch`, `NotFound`, `UnknownMember`, word for word), and
/// leave the same outbox rows (op, version, payload), audit records and deleted accounts;
/// a failed write leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_and_record_the_same_as_on_sqlite() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let p = super::fixture::open_pg(&pg, &db, 8).await;
    let (_dir, s) = super::fixture::open_sqlite();
    let new = |kind, id: &str, a: Value, members: Vec<MemberRef>| NewResource {
        kind,
        id: id.into(),
        attrs: attrs(a),
        members,
    };
    let upd = |kind, id: &str, expected_version, a: Option<Value>, members: crate::model::MemberDelta| Update {
        kind,
        id: id.into(),
        expected_version,
        attrs: a.map(attrs),
        members,
    };
    use ResourceKind::{Group, User};
    let none = crate::model::MemberDelta::default;
    macro_rules! same {
        ($what:expr, $sqlite:expr, $pg:expr, $want_ok:expr) => {{
            let (a, b) = ($sqlite, $pg);
            assert_eq!(b, a, "{}", $what);
            assert_eq!(a.is_ok(), $want_ok, "{}: {a:?}", $what);
        }};
    }

    let a = json!({"userName": "Élodie", "emails": [{"value": "E@x.example", "type": "work"}], "active": true});
    for (id, body) in [("a", a.clone()), ("c", json!({"userName": "carol"})), ("d", json!({"userName": "dave"}))] {
        same!(
            format!("create {id}"),
            outcome(s.resources().create(new(User, id, body.clone(), vec![]), audit()).await),
            outcome(ResourceStore::create(&p, new(User, id, body, vec![]), audit(), None).await),
            true
        );
    }
    // userName is unique without case (RFC 7643 §4.1.1), in Unicode.
    same!(
        "duplicate userName",
        outcome(s.resources().create(new(User, "b", json!({"userName": "ÉLODIE"}), vec![]), audit()).await),
        outcome(ResourceStore::create(&p, new(User, "b", json!({"userName": "ÉLODIE"}), vec![]), audit(), None).await),
        false
    );
    same!(
        "group with a member",
        outcome(
            s.resources()
                .create(new(Group, "g", json!({"displayName": "Staff"}), vec![member("a", None)]), audit())
                .await
        ),
        outcome(
            ResourceStore::create(
                &p,
                new(Group, "g", json!({"displayName": "Staff"}), vec![member("a", None)]),
                audit(),
                None
            )
            .await
        ),
        true
    );
    for (what, members) in [
        ("unknown member", vec![member("a", None), member("nope", None)]),
        ("member of the wrong kind", vec![member("a", Some(Group))]),
    ] {
        same!(
            what,
            outcome(s.resources().create(new(Group, "h", json!({"displayName": "H"}), members.clone()), audit()).await),
            outcome(
                ResourceStore::create(&p, new(Group, "h", json!({"displayName": "H"}), members), audit(), None).await
            ),
            false
        );
    }
    same!(
        "failed create left nothing",
        s.resources().get(Group, "h", Load::default()).await.map(|r| r.is_none()).map_err(|e| e.to_string()),
        ResourceStore::get(&p, Group, "h", Load::default()).await.map(|r| r.is_none()).map_err(|e| e.to_string()),
        true
    );

    let deactivated = json!({"userName": "Élodie", "emails": [{"value": "e@x.example"}], "active": false});
    same!(
        "update with the right version",
        outcome(s.resources().update(upd(User, "a", Some(1), Some(deactivated.clone()), none()), audit()).await),
        outcome(
            ResourceStore::update(&p, upd(User, "a", Some(1), Some(deactivated.clone()), none()), audit(), None).await
        ),
        true
    );
    same!(
        "update with a stale version",
        outcome(s.resources().update(upd(User, "a", Some(1), Some(a.clone()), none()), audit()).await),
        outcome(ResourceStore::update(&p, upd(User, "a", Some(1), Some(a.clone()), none()), audit(), None).await),
        false
    );
    same!(
        "update changing nothing",
        outcome(s.resources().update(upd(User, "a", None, Some(deactivated.clone()), none()), audit()).await),
        outcome(ResourceStore::update(&p, upd(User, "a", None, Some(deactivated), none()), audit(), None).await),
        true
    );
    same!(
        "update of a missing resource",
        outcome(s.resources().update(upd(User, "zz", None, Some(a.clone()), none()), audit()).await),
        outcome(ResourceStore::update(&p, upd(User, "zz", None, Some(a.clone()), none()), audit(), None).await),
        false
    );
    same!(
        "rename onto a taken userName",
        outcome(s.resources().update(upd(User, "c", None, Some(json!({"userName": "élodie"})), none()), audit()).await),
        outcome(
            ResourceStore::update(&p, upd(User, "c", None, Some(json!({"userName": "élodie"})), none()), audit(), None)
                .await
        ),
        false
    );
    let delta = |replace: Option<Vec<MemberRef>>, add: Vec<MemberRef>, remove: Vec<String>| crate::model::MemberDelta {
        replace,
        add,
        remove,
    };
    for (what, d, ok) in [
        ("add and remove members", delta(None, vec![member("c", None), member("d", None)], vec!["a".into()]), true),
        ("replace members", delta(Some(vec![member("a", None), member("c", None)]), vec![], vec![]), true),
        ("a group in itself", delta(None, vec![member("g", None)], vec![]), false),
        ("add an unknown member", delta(None, vec![member("nope", None)], vec![]), false),
        ("remove a non-member", delta(None, vec![], vec!["d".into()]), true),
    ] {
        same!(
            what,
            outcome(s.resources().update(upd(Group, "g", None, None, d.clone()), audit()).await),
            outcome(ResourceStore::update(&p, upd(Group, "g", None, None, d), audit(), None).await),
            ok
        );
    }
    for (what, id, version, ok) in [
        ("delete with a stale version", "a", Some(1), false),
        ("delete", "a", None, true),
        ("delete again", "a", None, false),
    ] {
        same!(
            what,
            s.resources().delete(User, id, version, audit()).await.map_err(|e| e.to_string()),
            ResourceStore::delete(&p, User, id, version, audit(), None).await.map_err(|e| e.to_string()),
            ok
        );
    }
    // The group lost a member: its version moved, its member list shrank.
    let load = Load { members: true, groups: true };
    for id in ["g", "c", "d"] {
        let kind = if id == "g" { Group } else { User };
        same!(
            format!("get {id}"),
            outcome(s.resources().get(kind, id, load).await.map(Option::unwrap)),
            outcome(ResourceStore::get(&p, kind, id, load).await.map(Option::unwrap)),
            true
        );
    }
    for id in ["a", "b", "c", "d", "g", "h", "zz"] {
        assert_eq!(pg_outbox(&p, id).await, sqlite_outbox(&s, id).await, "outbox of {id}");
    }
    let audits: Vec<_> = s
        .audit()
        .list(crate::store::AuditQuery { limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.method, a.resource_type, a.resource_id, a.resource_name, a.version))
        .collect();
    let conn = p.conn().await.unwrap();
    let pg_audits: Vec<_> = conn
        .query("SELECT method, resource_type, resource_id, resource_name, version FROM audit_log ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get(2),
                r.get(3),
                r.get::<_, Option<i64>>(4).map(|v| v as u64),
            )
        })
        .collect();
    assert_eq!(pg_audits, audits);
    let deleted: Vec<(String, Option<String>)> = conn
        .query("SELECT resource_id, user_name_ci FROM deleted_accounts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(deleted, vec![("a".to_string(), Some("élodie".to_string()))]);
    s.close();
}

/// Concurrent writes to one resource on PostgreSQL run one after the other (the row lock):
/// no update is lost, and the resource's outbox rows have ids in commit order, one version
/// after another, as the worker delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_resource_queue_in_commit_order() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let p = super::fixture::open_pg(&pg, &db, 8).await;
    let user = NewResource {
        kind: ResourceKind::User,
        id: "u".into(),
        attrs: attrs(json!({"userName": "u"})),
        members: vec![],
    };
    ResourceStore::create(&p, user, audit(), None).await.unwrap();
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let upd = Update {
                    kind: ResourceKind::User,
                    id: "u".into(),
                    expected_version: None,
                    attrs: Some(attrs(json!({"userName": "u", "title": format!("t{i}")}))),
                    members: Default::default(),
                };
                ResourceStore::update(&p, upd, audit(), None).await.unwrap().meta.version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for w in writers {
        versions.push(w.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (2..=25).collect::<Vec<u64>>(), "every update got its own version");
    // Plain updates nobody tried to deliver yet are coalesced into the resource's newest row
    // (as on SQLite), so there are fewer rows than updates; in id order their versions still
    // only go up, and the last row carries the last version.
    let queued: Vec<u64> = pg_outbox(&p, "u").await.into_iter().map(|(_, v, _)| v).collect();
    assert!(queued.windows(2).all(|w| w[0] < w[1]), "outbox ids follow the versions: {queued:?}");
    assert_eq!((queued.first(), queued.last()), (Some(&1), Some(&25)), "{queued:?}");
}
