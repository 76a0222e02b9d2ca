//! `/api/apps` against real PostgreSQL and Redis: ownership, keys, validation, limits.

use lvd_tests::*;
use serde_json::{Value, json};

async fn call(app: &TestApp, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let resp = call(app, reqwest::Method::POST, "/api/apps", token, Some(body)).await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn an_app_is_created_listed_read_and_deleted_and_its_key_shown_once() {
    let app = spawn_with(AppOptions::product()).await;
    let token = app.signed_in("owner@example.com").await;

    let created = create(&app, &token, json!({ "name": "  Shop iOS  " })).await;
    assert_eq!(created["name"], "Shop iOS");
    assert_eq!(created["retention_days"], 30);
    let key = created["ingest_key"].as_str().unwrap();
    assert!(key.starts_with("lvd_ingest_") && key.len() > 50, "{key}");
    let id = created["id"].as_str().unwrap();

    let list: Value = call(&app, reqwest::Method::GET, "/api/apps", &token, None).await.json().await.unwrap();
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("ingest_key").is_none(), "keys are shown once");
    let one: Value = call(&app, reqwest::Method::GET, &format!("/api/apps/{id}"), &token, None).await.json().await.unwrap();
    assert_eq!(one["id"], id);
    assert!(one.get("ingest_key").is_none());
    let stored: Vec<u8> = app.db.client().await.query_one("SELECT ingest_key_hash FROM apps", &[]).await.unwrap().get(0);
    assert_ne!(stored, key.as_bytes(), "only a hash of the key is stored");

    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/api/apps/{id}"), &token, None).await.status(), 204);
    assert_eq!(call(&app, reqwest::Method::GET, &format!("/api/apps/{id}"), &token, None).await.status(), 404);
    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/api/apps/{id}"), &token, None).await.status(), 404);
}

#[tokio::test]
async fn another_users_app_is_404_on_every_route() {
    let app = spawn_with(AppOptions::product()).await;
    let alice = app.signed_in("alice@example.com").await;
    let mallory = app.signed_in("mallory@example.com").await;
    let id = create(&app, &alice, json!({ "name": "Alice's" })).await["id"].as_str().unwrap().to_owned();

    for (method, path) in [
        (reqwest::Method::GET, format!("/api/apps/{id}")),
        (reqwest::Method::DELETE, format!("/api/apps/{id}")),
        (reqwest::Method::POST, format!("/api/apps/{id}/keys/rotate")),
    ] {
        let resp = call(&app, method.clone(), &path, &mallory, None).await;
        assert_eq!(resp.status(), 404, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
    let listed: Value = call(&app, reqwest::Method::GET, "/api/apps", &mallory, None).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    assert_eq!(call(&app, reqwest::Method::GET, &format!("/api/apps/{id}"), &alice, None).await.status(), 200, "still there");
    assert_eq!(call(&app, reqwest::Method::GET, "/api/apps/not-a-uuid", &alice, None).await.status(), 404);
}

#[tokio::test]
async fn rotating_the_key_replaces_it() {
    let app = spawn_with(AppOptions::product()).await;
    let token = app.signed_in("owner@example.com").await;
    let created = create(&app, &token, json!({ "name": "Web", "retention_days": 7 })).await;
    let hash_before: Vec<u8> = app.db.client().await.query_one("SELECT ingest_key_hash FROM apps", &[]).await.unwrap().get(0);

    let resp = call(&app, reqwest::Method::POST, &format!("/api/apps/{}/keys/rotate", created["id"].as_str().unwrap()), &token, None).await;

    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    assert_ne!(rotated["ingest_key"], created["ingest_key"]);
    let hash_after: Vec<u8> = app.db.client().await.query_one("SELECT ingest_key_hash FROM apps", &[]).await.unwrap().get(0);
    assert_ne!(hash_before, hash_after);
}

#[tokio::test]
async fn bad_app_input_is_422_with_pointers() {
    let app = spawn_with(AppOptions::product()).await;
    let token = app.signed_in("owner@example.com").await;

    for (body, pointer) in [
        (json!({ "name": "" }), "/name"),
        (json!({ "name": "x".repeat(101) }), "/name"),
        (json!({}), "/name"),
        (json!({ "name": "ok", "retention_days": 0 }), "/retention_days"),
        (json!({ "name": "ok", "retention_days": 366 }), "/retention_days"),
        (json!({ "name": "ok", "retention_days": "30" }), "/retention_days"),
        (json!({ "name": "ok", "retention_days": 1.5 }), "/retention_days"),
    ] {
        let resp = call(&app, reqwest::Method::POST, "/api/apps", &token, Some(body.clone())).await;
        assert_eq!(resp.status(), 422, "{body}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{body}");
    }
    assert_eq!(create(&app, &token, json!({ "name": "ü".repeat(100), "retention_days": 365 })).await["retention_days"], 365);
}

#[tokio::test]
async fn the_api_refuses_missing_forged_and_revoked_tokens() {
    let app = spawn_with(AppOptions::product()).await;
    let token = app.signed_in("owner@example.com").await;

    let none = app.client.get(app.url("/api/apps")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    // Change the signature's first character: all six of its bits count.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let swap = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{swap}{}", &signature[1..]);
    assert_eq!(call(&app, reqwest::Method::GET, "/api/apps", &forged, None).await.status(), 401);
    assert_eq!(call(&app, reqwest::Method::GET, "/api/apps", &token, None).await.status(), 200);
    app.client.post(app.url("/auth/logout")).bearer_auth(&token).send().await.unwrap();
    let revoked = call(&app, reqwest::Method::GET, "/api/apps", &token, None).await;
    assert_eq!(revoked.status(), 401);
    let body: Value = revoked.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token");
}

#[tokio::test]
async fn the_per_user_limit_holds_across_instances_and_spares_other_users() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_API_PER_USER".into(), "3".into()));
    let app = spawn_with(opts).await;
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_API_PER_USER".into(), "3".into()));
    let dir = TempDir::new();
    let (_second, second) = start_runtime(&opts, &app.db, &app.redis, &dir).await.unwrap();
    let alice = app.signed_in("alice@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let client = reqwest::Client::new();

    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..4 {
        let base = if i % 2 == 0 { &app.address } else { &second };
        let resp = client.get(format!("{base}/api/apps")).bearer_auth(&alice).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        last = Some(resp);
    }
    let bobs = client.get(format!("{second}/api/apps")).bearer_auth(&bob).send().await.unwrap();

    assert_eq!(statuses, [200, 200, 200, 429]);
    let resp = last.unwrap();
    assert_eq!(resp.headers()["ratelimit-limit"], "3");
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(bobs.status(), 200, "another user has their own budget");
    assert_eq!(bobs.headers()["ratelimit-remaining"], "2");
}
