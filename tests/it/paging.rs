//! Paging (issue 19): RFC 9865 cursor pagination over HTTP beside index paging (RFC 7644
//! §3.4.2.4), and unfiltered index pages that seek instead of walking the offset.

use serde_json::{Value, json};

use crate::support::*;

fn ids(v: &Value) -> Vec<String> {
    v["Resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_walk_by_cursor_returns_every_user_once_while_others_come_and_go() {
    let d = Daemon::start();
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(d.create_user(&format!("p{i:02}@example.com")).await);
    }
    // Discovery advertises both methods, index by default.
    let spc = d.get("/ServiceProviderConfig").await.body;
    assert_eq!(spc["pagination"]["cursor"], true, "{spc}");
    assert_eq!(spc["pagination"]["index"], true);
    assert_eq!(spc["pagination"]["defaultPaginationMethod"], "index");
    assert!(spc["pagination"]["cursorTimeout"].as_u64().unwrap() > 0);

    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    let mut deleted = Vec::new();
    loop {
        let r = d.get(&format!("/Users?count=5&cursor={}", enc(&cursor))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.get("startIndex").is_none(), "no startIndex in a cursor page: {}", r.body);
        assert_eq!(r.body["itemsPerPage"], r.body["Resources"].as_array().unwrap().len());
        seen.extend(ids(&r.body));
        pages += 1;
        // While the walk goes on: a create, and a delete of a user not seen yet.
        d.create_user(&format!("late{pages}@example.com")).await;
        if let Some(victim) = created.iter().rev().find(|id| !seen.contains(id) && !deleted.contains(*id)).cloned() {
            assert_eq!(d.delete(&format!("/Users/{victim}")).await.status, 204);
            deleted.push(victim);
        }
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        assert!(pages < 50, "the walk does not end");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "nothing twice: {seen:?}");
    for id in created.iter().filter(|id| !deleted.contains(id)) {
        assert!(seen.contains(id), "{id} existed for the whole walk but was not returned");
    }

    // The same through POST /Users/.search, with a filter the cursor is bound to.
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                      "filter": "userName sw \"p\"", "count": 4, "cursor": ""});
    let r = d.post("/Users/.search", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let next = r.body["nextCursor"].as_str().expect("more pages").to_string();
    let total = r.body["totalResults"].as_u64().unwrap();
    assert_eq!(total, (23 - deleted.len()) as u64, "an exact total with cursors too");
    // A cursor of one query does not page another.
    let r = d.get(&format!("/Users?cursor={next}&filter={}", enc("userName sw \"q\""))).await;
    r.assert_error(400, Some("invalidCursor"));
    let r = d.get(&format!("/Groups?cursor={next}")).await;
    r.assert_error(400, Some("invalidCursor"));
}

#[tokio::test]
async fn cursor_errors_are_scim_errors() {
    let d = Daemon::start();
    d.create_user("c@example.com").await;
    d.get("/Users?cursor=nonsense").await.assert_error(400, Some("invalidCursor"));
    d.get("/Users?cursor=00").await.assert_error(400, Some("invalidCursor"));
    d.get("/Users?cursor=&startIndex=2").await.assert_error(400, Some("invalidValue"));
    d.get("/Users?cursor=&sortBy=userName").await.assert_error(400, Some("invalidValue"));
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "cursor": 7});
    d.post("/Users/.search", search).await.assert_error(400, Some("invalidCursor"));
    let root = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "cursor": ""});
    d.post("/.search", root).await.assert_error(400, Some("invalidValue"));
    // Index paging is unchanged.
    let r = d.get("/Users?startIndex=1&count=1").await;
    assert_eq!((r.body["startIndex"].as_u64(), r.body["totalResults"].as_u64()), (Some(1), Some(1)), "{}", r.body);
    assert!(r.body.get("nextCursor").is_none());
}

/// Index pages of an unfiltered list (served by seeking, with a kept total) agree with the
/// same pages of a filter that matches everyone (served by OFFSET and a count), after deletes.
#[tokio::test]
async fn unfiltered_index_pages_agree_with_the_filtered_path() {
    let d = Daemon::start();
    let mut ids_created = Vec::new();
    for i in 0..40 {
        ids_created.push(d.create_user(&format!("s{i:02}@example.com")).await);
    }
    for id in ids_created.iter().step_by(3) {
        assert_eq!(d.delete(&format!("/Users/{id}")).await.status, 204);
    }
    for start in [1, 2, 7, 13, 26, 27, 30] {
        let plain = d.get(&format!("/Users?startIndex={start}&count=6")).await.body;
        let filtered = d.get(&format!("/Users?startIndex={start}&count=6&filter={}", enc("userName pr"))).await.body;
        assert_eq!(plain["totalResults"], filtered["totalResults"], "start {start}");
        assert_eq!(ids(&plain), ids(&filtered), "start {start}");
        assert_eq!(plain["totalResults"], 26);
    }
}
