//! Sorting (RFC 7644 §3.4.2.3): `sortBy`/`sortOrder` on GET lists and `.search`, by the
//! attribute's type and `caseExact`, missing values last when ascending (first when
//! descending), stable under pagination, and `400 invalidValue` for what cannot be sorted by.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn names(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["Resources"]
        .as_array()
        .expect("Resources")
        .iter()
        .map(|u| u["userName"].as_str().or(u["displayName"].as_str()).unwrap_or("?").to_string())
        .collect()
}

/// Users with varied case and a missing `name.familyName`; created in this order.
async fn seed(d: &Daemon) {
    for (user, family) in [
        ("carol", Some("Zeta")),
        ("Alice", Some("beta")),
        ("bob", None),
        ("dave", Some("Alpha")),
        ("Eve", Some("gamma")),
    ] {
        let mut body = json!({"schemas": [USER], "userName": user});
        if let Some(f) = family {
            body["name"] = json!({"familyName": f});
        }
        assert_eq!(d.post("/Users", body).await.status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn user_name_ascending_descending_case_insensitive() {
    let d = Daemon::start();
    seed(&d).await;
    // userName is caseExact=false: "Alice" < "bob" < "carol" < "dave" < "Eve".
    let asc = names(&d.get("/Users?sortBy=userName").await);
    assert_eq!(asc, ["Alice", "bob", "carol", "dave", "Eve"]);
    let asc2 = names(&d.get("/Users?sortBy=USERNAME&sortOrder=Ascending").await);
    assert_eq!(asc2, asc, "attribute names and sortOrder are case-insensitive");
    let desc = names(&d.get("/Users?sortBy=userName&sortOrder=DESCENDING").await);
    assert_eq!(desc, ["Eve", "dave", "carol", "bob", "Alice"]);
    // Without sortBy: creation order, whatever sortOrder says.
    let unsorted = names(&d.get("/Users?sortOrder=descending").await);
    assert_eq!(unsorted, ["carol", "Alice", "bob", "dave", "Eve"]);
}

#[tokio::test]
async fn sub_attribute_with_missing_values_last_ascending_first_descending() {
    let d = Daemon::start();
    seed(&d).await;
    let asc = names(&d.get("/Users?sortBy=name.familyName").await);
    assert_eq!(asc, ["dave", "Alice", "Eve", "carol", "bob"], "bob has no familyName: last");
    let desc = names(&d.get("/Users?sortBy=name.familyName&sortOrder=descending").await);
    assert_eq!(desc, ["bob", "carol", "Eve", "Alice", "dave"], "and first when descending");
}

#[tokio::test]
async fn multi_valued_sorts_by_primary_else_first_value() {
    let d = Daemon::start();
    let mk = |user: &str, emails: Value| json!({"schemas": [USER], "userName": user, "emails": emails});
    // u1's primary is "z@", its first "a@"; u2 has no primary, first "m@"; u3 has none.
    for body in [
        mk("u1", json!([{"value": "a@example.com"}, {"value": "z@example.com", "primary": true}])),
        mk("u2", json!([{"value": "M@example.com"}, {"value": "b@example.com"}])),
        mk("u3", json!(null)),
    ] {
        assert_eq!(d.post("/Users", body).await.status, StatusCode::CREATED);
    }
    assert_eq!(names(&d.get("/Users?sortBy=emails.value").await), ["u2", "u1", "u3"]);
    assert_eq!(names(&d.get("/Users?sortBy=emails").await), ["u2", "u1", "u3"], "emails means emails.value");
}

#[tokio::test]
async fn case_exact_and_typed_attributes() {
    let d = Daemon::start();
    // externalId is caseExact: code-point order puts "B" before "a".
    for (user, ext, active) in [("x", "a", true), ("y", "B", false), ("z", "c", true)] {
        let body = json!({"schemas": [USER], "userName": user, "externalId": ext, "active": active});
        assert_eq!(d.post("/Users", body).await.status, StatusCode::CREATED);
    }
    assert_eq!(names(&d.get("/Users?sortBy=externalId").await), ["y", "x", "z"]);
    // Booleans sort false before true; ties keep creation order.
    assert_eq!(names(&d.get("/Users?sortBy=active").await), ["y", "x", "z"]);
    // meta.lastModified: a change moves a user to the end.
    let r = d.get(&filter_q("/Users", "userName eq \"x\"")).await;
    let id = r.body["Resources"][0]["id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let r =
        d.patch(&format!("/Users/{id}"), patch_body(json!([{"op": "replace", "path": "title", "value": "t"}]))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(names(&d.get("/Users?sortBy=meta.lastModified").await), ["y", "z", "x"]);
    assert_eq!(names(&d.get("/Users?sortBy=meta.lastModified&sortOrder=descending").await), ["x", "z", "y"]);
}

#[tokio::test]
async fn combined_with_filter_and_pagination() {
    let d = Daemon::start();
    // 12 users whose sort key (title) has many ties, so pagination leans on the tie-breaker.
    for i in 0..12 {
        let title = ["b", "A", "c"][i % 3];
        let body = json!({"schemas": [USER], "userName": format!("p{i:02}"), "title": title});
        assert_eq!(d.post("/Users", body).await.status, StatusCode::CREATED);
    }
    assert_eq!(d.post("/Users", user_body("other@example.com")).await.status, StatusCode::CREATED);
    let filter = enc("userName sw \"p\"");
    let all = names(&d.get(&format!("/Users?filter={filter}&sortBy=title&count=100")).await);
    assert_eq!(all.len(), 12);
    assert_eq!(&all[..4], ["p01", "p04", "p07", "p10"], "'A' first (folded), ties in creation order");
    for order in ["ascending", "descending"] {
        let whole = names(&d.get(&format!("/Users?filter={filter}&sortBy=title&sortOrder={order}&count=100")).await);
        let mut paged = Vec::new();
        for start in [1, 6, 11] {
            let r = d
                .get(&format!("/Users?filter={filter}&sortBy=title&sortOrder={order}&startIndex={start}&count=5"))
                .await;
            assert_eq!(r.body["totalResults"], 12);
            paged.extend(names(&r));
        }
        assert_eq!(paged, whole, "pages of 5 ({order}) must tile the whole list");
    }
    let desc = names(&d.get(&format!("/Users?filter={filter}&sortBy=title&sortOrder=descending&count=100")).await);
    assert_eq!(desc, all.iter().rev().cloned().collect::<Vec<_>>(), "descending is the exact reverse");
}

#[tokio::test]
async fn search_endpoints_sort_too() {
    let d = Daemon::start();
    seed(&d).await;
    let r = d.post("/Users/.search", json!({"sortBy": "userName", "sortOrder": "descending", "count": 2})).await;
    assert_eq!(names(&r), ["Eve", "dave"]);
    d.create_group("Beta team", &[]).await;
    d.create_group("aardvarks", &[]).await;
    // At the root, displayName orders groups; users have none of their own here, so last.
    let r = d.post("/.search", json!({"sortBy": "displayName"})).await;
    assert_eq!(r.body["totalResults"], 7, "{}", r.body);
    assert_eq!(&names(&r)[..2], ["aardvarks", "Beta team"]);
    // userName exists only for users: groups have no value and come first descending
    // (tied, so in reverse creation order: descending is the exact reverse of ascending).
    let r = d.post("/.search", json!({"sortBy": "userName", "sortOrder": "descending"})).await;
    assert_eq!(&names(&r)[..3], ["aardvarks", "Beta team", "Eve"]);
    d.post("/.search", json!({"sortBy": "nope"})).await.assert_error(400, Some("invalidValue"));
}

#[tokio::test]
async fn what_cannot_be_sorted_by_is_invalid_value() {
    let d = Daemon::start();
    for q in [
        "sortBy=nope",
        "sortBy=name",
        "sortBy=password",
        "sortBy=name.nope",
        "sortBy=emails%5Btype%20eq%20%22work%22%5D",
        "sortBy=userName&sortOrder=sideways",
    ] {
        let r = d.get(&format!("/Users?{q}")).await;
        r.assert_error(400, Some("invalidValue"));
        assert!(r.body["detail"].as_str().unwrap().contains("sort"), "{q}: {}", r.body);
    }
    d.post("/Groups/.search", json!({"sortBy": "userName"})).await.assert_error(400, Some("invalidValue"));
}

#[tokio::test]
async fn groups_sort_by_display_name_and_members() {
    let d = Daemon::start();
    let a = d.create_user("a").await;
    let b = d.create_user("b").await;
    d.create_group("g-b", &[&b]).await;
    d.create_group("G-A", &[&a]).await;
    d.create_group("g-empty", &[]).await;
    assert_eq!(names(&d.get("/Groups?sortBy=displayName").await), ["G-A", "g-b", "g-empty"]);
    assert_eq!(names(&d.get("/Groups?sortBy=members.display").await), ["G-A", "g-b", "g-empty"]);
    assert_eq!(names(&d.get("/Groups?sortBy=members.display&sortOrder=descending").await), ["g-empty", "g-b", "G-A"]);
}
