//! A REST app for the webhook target's reconciliation tests: a real HTTP server on loopback
//! that keeps users and teams in memory, answers the daemon's mapped requests, and lists
//! its records in one of four paging styles (offset, page number, cursor, `Link` header),
//! as real REST APIs do. Tests edit its records directly, as an admin in its UI would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use warp::Filter;
use warp::http::{Method, StatusCode};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// `?offset=&limit=`
    Offset,
    /// `?page=&per_page=`
    Page,
    /// `?cursor=&limit=`, `next_cursor` in the body
    Cursor,
    /// `?limit=` then `Link: <...&after=ID>; rel="next"`
    Link,
}

/// Ways real APIs misbehave when listing, switched on by a test.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Quirk {
    #[default]
    None,
    /// Pages never hold more than this, whatever was asked (and say nothing about it).
    CapsPageAt(usize),
    /// Every list request returns everything: paging parameters are ignored.
    IgnoresPaging,
    /// Cursors go round in a circle (first page, second, a page after the first record,
    /// the second again...).
    CursorCycle,
    /// The `Link` to the next page names another origin.
    ForeignLink,
    /// List requests are redirected to another origin.
    RedirectsAway,
    /// The next list request is refused with 429 and `Retry-After: 1`, then all is well.
    RateLimitsOnce,
}

#[derive(Default)]
pub struct State {
    pub quirk: Quirk,
    next: u64,
    /// `users` / `teams` -> app id -> record.
    pub tables: BTreeMap<String, BTreeMap<String, Value>>,
}

pub struct RestApp {
    /// `http://127.0.0.1:PORT/api`
    pub base: String,
    pub state: Arc<Mutex<State>>,
    _server: crate::support::ServedApart,
}

fn reply(status: StatusCode, body: Value) -> warp::http::Response<String> {
    warp::http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(if body.is_null() { String::new() } else { body.to_string() })
        .unwrap()
}

impl RestApp {
    /// `teams_carry_members`: whether team lists include `members` (otherwise only the
    /// single read `GET /teams/{id}` does, as many APIs do to keep lists cheap).
    pub async fn start(style: Style, teams_carry_members: bool) -> RestApp {
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let route = warp::any()
            .and(warp::method())
            .and(warp::path::full())
            .and(warp::query::<BTreeMap<String, String>>().or(warp::any().map(BTreeMap::new)).unify())
            .and(warp::body::bytes())
            .map(move |method: Method, path: warp::path::FullPath, q: BTreeMap<String, String>, body: bytes::Bytes| {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let parts: Vec<&str> = path.as_str().trim_start_matches("/api/").split('/').collect();
                let mut s = st.lock().unwrap();
                match (method.as_str(), parts.as_slice()) {
                    ("POST", [table]) => {
                        s.next += 1;
                        let id = format!("{}{}", &table[..1], s.next);
                        let mut rec = body.as_object().cloned().unwrap_or_default();
                        rec.insert("id".into(), json!(id));
                        rec.insert("created_at".into(), json!("2026-11-23T00:00:00Z"));
                        if *table == "teams" {
                            rec.insert("members".into(), json!([]));
                        }
                        s.tables.entry(table.to_string()).or_default().insert(id, Value::Object(rec.clone()));
                        reply(StatusCode::CREATED, json!({ "data": rec }))
                    }
                    ("PUT", [table, id]) => {
                        let Some(rec) = s.tables.entry(table.to_string()).or_default().get_mut(*id) else {
                            return reply(StatusCode::NOT_FOUND, json!({"error": "no such record"}));
                        };
                        let keep: Map<String, Value> = rec
                            .as_object()
                            .unwrap()
                            .iter()
                            .filter(|(k, _)| ["id", "created_at", "members"].contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        let mut new = body.as_object().cloned().unwrap_or_default();
                        new.extend(keep);
                        *rec = Value::Object(new);
                        reply(StatusCode::OK, json!({ "data": rec }))
                    }
                    ("DELETE", [table, id]) => match s.tables.entry(table.to_string()).or_default().remove(*id) {
                        Some(_) => reply(StatusCode::NO_CONTENT, Value::Null),
                        None => reply(StatusCode::NOT_FOUND, json!({"error": "no such record"})),
                    },
                    ("POST", ["teams", id, "members", rest @ ..]) => {
                        let Some(team) = s.tables.entry("teams".into()).or_default().get_mut(*id) else {
                            return reply(StatusCode::NOT_FOUND, json!({"error": "no such team"}));
                        };
                        let members = team["members"].as_array_mut().unwrap();
                        for m in body["members"].as_array().cloned().unwrap_or_default() {
                            members.retain(|x| x != &m);
                            if rest.is_empty() {
                                members.push(m);
                            }
                        }
                        reply(StatusCode::OK, json!({ "data": team }))
                    }
                    ("GET", ["teams", id]) => match s.tables.entry("teams".into()).or_default().get(*id) {
                        Some(t) => reply(StatusCode::OK, json!({ "data": t })),
                        None => reply(StatusCode::NOT_FOUND, json!({"error": "no such team"})),
                    },
                    ("GET", [table]) => {
                        let all: Vec<Value> = s
                            .tables
                            .get(*table)
                            .map(|t| t.values().cloned().collect::<Vec<Value>>())
                            .unwrap_or_default()
                            .into_iter()
                            .map(|mut r| {
                                if *table == "teams" && !teams_carry_members {
                                    r.as_object_mut().unwrap().remove("members");
                                }
                                r
                            })
                            .collect();
                        let num = |k: &str, d: usize| q.get(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(d);
                        // Records in id order; a position is the index after a given id.
                        let after = |id: Option<&String>| {
                            id.map_or(0, |id| all.iter().position(|r| r["id"] == **id).map_or(all.len(), |p| p + 1))
                        };
                        let quirk = s.quirk;
                        if quirk == Quirk::RateLimitsOnce {
                            s.quirk = Quirk::None;
                            return warp::http::Response::builder()
                                .status(StatusCode::TOO_MANY_REQUESTS)
                                .header("retry-after", "1")
                                .body("{\"error\": \"slow down\"}".to_string())
                                .unwrap();
                        }
                        if quirk == Quirk::RedirectsAway {
                            return warp::http::Response::builder()
                                .status(StatusCode::FOUND)
                                .header("location", format!("http://localhost:1/api/{table}"))
                                .body(String::new())
                                .unwrap();
                        }
                        let (from, size) = match style {
                            Style::Offset => (num("offset", 0), num("limit", 50)),
                            Style::Page => {
                                let per = num("per_page", 50);
                                (num("page", 1).saturating_sub(1) * per, per)
                            }
                            Style::Cursor => (after(q.get("cursor")), num("limit", 50)),
                            Style::Link => (after(q.get("after")), num("limit", 50)),
                        };
                        let (from, size) = match quirk {
                            Quirk::IgnoresPaging => (0, all.len()),
                            Quirk::CapsPageAt(cap) => (from, size.min(cap)),
                            _ => (from, size),
                        };
                        let page: Vec<Value> = all.iter().skip(from).take(size).cloned().collect();
                        let more = from + page.len() < all.len();
                        let last_id = page.last().map(|r| r["id"].as_str().unwrap().to_string());
                        let mut body = json!({ "data": page, "total": all.len() });
                        let mut resp = warp::http::Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "application/json");
                        match (style, more, last_id) {
                            // First page -> third record, then back to the first, and so on.
                            (Style::Cursor, true, Some(_)) if quirk == Quirk::CursorCycle && from > 0 => {
                                let back = if from == 3 { &all[0]["id"] } else { &all[2]["id"] };
                                body["next_cursor"] = back.clone();
                            }
                            (Style::Cursor, true, Some(id)) => body["next_cursor"] = json!(id),
                            (Style::Cursor, _, _) => body["next_cursor"] = Value::Null,
                            (Style::Link, true, Some(id)) => {
                                // A relative link, and another relation before it, as APIs do.
                                let origin = if quirk == Quirk::ForeignLink { "http://localhost:1" } else { "" };
                                resp = resp.header(
                                    "link",
                                    format!(r#"</api/{table}?limit=1>; rel="first", <{origin}/api/{table}?limit={size}&after={id}>; rel="next""#),
                                );
                            }
                            _ => {}
                        }
                        resp.body(body.to_string()).unwrap()
                    }
                    _ => reply(StatusCode::NOT_FOUND, json!({"error": "no such route"})),
                }
            });
        let (port, server) =
            crate::support::serve_apart(
                move |listener| async move { warp::serve(route).incoming(listener).run().await },
            );
        RestApp { base: format!("http://127.0.0.1:{port}/api"), state, _server: server }
    }

    /// The records of a table, in id order.
    pub fn all(&self, table: &str) -> Vec<Value> {
        self.state.lock().unwrap().tables.get(table).map(|t| t.values().cloned().collect()).unwrap_or_default()
    }

    /// The app id of the record whose `field` is `value`.
    pub fn id_of(&self, table: &str, field: &str, value: &str) -> String {
        self.all(table)
            .iter()
            .find(|r| r[field] == value)
            .unwrap_or_else(|| panic!("no {table} with {field} = {value}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Change a record in place, as the app's admin UI would.
    pub fn edit(&self, table: &str, id: &str, f: impl FnOnce(&mut Map<String, Value>)) {
        let mut s = self.state.lock().unwrap();
        let rec = s.tables.get_mut(table).and_then(|t| t.get_mut(id)).expect("record to edit");
        f(rec.as_object_mut().unwrap());
    }

    pub fn remove(&self, table: &str, id: &str) {
        self.state.lock().unwrap().tables.get_mut(table).and_then(|t| t.remove(id)).expect("record to remove");
    }

    /// A record created in the app itself (by its UI, not through us).
    pub fn insert(&self, table: &str, mut rec: Map<String, Value>) -> String {
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        let id = format!("{}{}", &table[..1], s.next);
        rec.insert("id".into(), json!(id));
        s.tables.entry(table.to_string()).or_default().insert(id.clone(), Value::Object(rec));
        id
    }
}
