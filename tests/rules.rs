//! Tracking-plan rules against real PostgreSQL and Redis: every schema
//! keyword family judged through ingest, versions, the dry run, invalid
//! schemas, tenancy, and a rule change seen at once by another instance.

use lvd_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

/// One keyword family: a rule, properties that pass, properties that fail
/// and where and why they fail.
struct Case {
    event: &'static str,
    schema: Value,
    pass: Value,
    fail: Value,
    pointer: &'static str,
    keyword: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case { event: "required", schema: json!({"type": "object", "required": ["plan"]}), pass: json!({"plan": "pro"}), fail: json!({}), pointer: "/plan", keyword: "required" },
        Case { event: "type", schema: json!({"properties": {"amount": {"type": "number"}}}), pass: json!({"amount": 49.0}), fail: json!({"amount": "49"}), pointer: "/amount", keyword: "type" },
        Case { event: "enum", schema: json!({"properties": {"plan": {"enum": ["free", "pro"]}}}), pass: json!({"plan": "free"}), fail: json!({"plan": "gold"}), pointer: "/plan", keyword: "enum" },
        Case { event: "pattern", schema: json!({"properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}}}), pass: json!({"sku": "ABC-12"}), fail: json!({"sku": "abc"}), pointer: "/sku", keyword: "pattern" },
        Case { event: "minimum", schema: json!({"properties": {"qty": {"minimum": 1}}}), pass: json!({"qty": 1}), fail: json!({"qty": 0}), pointer: "/qty", keyword: "minimum" },
        Case { event: "maximum", schema: json!({"properties": {"qty": {"maximum": 10}}}), pass: json!({"qty": 10}), fail: json!({"qty": 11}), pointer: "/qty", keyword: "maximum" },
        Case { event: "additional", schema: json!({"properties": {"a": {}}, "additionalProperties": false}), pass: json!({"a": 1}), fail: json!({"a": 1, "b": 2}), pointer: "/b", keyword: "additionalProperties" },
        Case {
            event: "nested_object",
            schema: json!({"properties": {"user": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}}}),
            pass: json!({"user": {"id": 7}}),
            fail: json!({"user": {"id": "7"}}),
            pointer: "/user/id",
            keyword: "type",
        },
        Case {
            event: "array_items",
            schema: json!({"properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "number", "minimum": 0}}}}}}),
            pass: json!({"items": [{"price": 1}, {"price": 0}]}),
            fail: json!({"items": [{"price": 1}, {"price": -5}]}),
            pointer: "/items/1/price",
            keyword: "minimum",
        },
    ]
}

#[tokio::test]
async fn each_keyword_family_passes_good_events_and_points_at_the_bad_ones() {
    let app = spawn_app().await;
    let token = app.signed_in("plan@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    for case in cases() {
        assert_eq!(app.put_rule(&token, &id, case.event, case.schema.clone()).await["version"], 1);
    }

    let batch: Vec<Value> = cases()
        .into_iter()
        .flat_map(|c| [json!({"event": c.event, "properties": c.pass}), json!({"event": c.event, "properties": c.fail})])
        .collect();
    let reply = app.ingest_ok(&key, &json!({ "batch": batch })).await;

    for (i, case) in cases().iter().enumerate() {
        let (pass, fail) = (&reply["results"][2 * i], &reply["results"][2 * i + 1]);
        assert_eq!(pass["status"], "valid", "{}: {pass}", case.event);
        assert_eq!(pass["errors"], json!([]));
        assert_eq!(fail["status"], "invalid", "{}: {fail}", case.event);
        assert_eq!(fail["errors"][0]["pointer"], case.pointer, "{}: {fail}", case.event);
        assert_eq!(fail["errors"][0]["keyword"], case.keyword, "{}: {fail}", case.event);
        assert!(!fail["errors"][0]["message"].as_str().unwrap().is_empty());
        assert_eq!(fail["rule_version"], 1);
    }
    assert_eq!(reply["accepted"], cases().len() * 2);

    // Stored with their verdicts, as GET /api/logs shows them.
    app.wait_stored(cases().len() as i64 * 2).await;
    let (status, page) = get(&app, &token, &format!("/api/logs?app={id}&status=invalid&limit=500")).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), cases().len());
    let stored_enum = page["items"].as_array().unwrap().iter().find(|e| e["event"] == "enum").unwrap();
    assert_eq!(stored_enum["errors"][0]["keyword"], "enum");
    assert_eq!(stored_enum["rule_version"], 1);
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let resp = app.call(Method::GET, path, token, None).await;
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_put_is_a_new_version_and_history_stays_readable() {
    let app = spawn_app().await;
    let token = app.signed_in("versions@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;

    let v1 = app.put_rule(&token, &id, "checkout", json!({"required": ["plan"]})).await;
    assert_eq!((v1["event"].as_str(), v1["version"].as_i64()), (Some("checkout"), Some(1)));
    assert!(v1["updated_at"].as_str().unwrap().ends_with('Z'));
    let v2 = app.put_rule(&token, &id, "checkout", json!({"required": ["plan", "amount"]})).await;
    assert_eq!(v2["version"], 2);

    let (_, latest) = get(&app, &token, &format!("/api/apps/{id}/rules/checkout")).await;
    assert_eq!(latest["version"], 2);
    let (_, first) = get(&app, &token, &format!("/api/apps/{id}/rules/checkout?version=1")).await;
    assert_eq!(first["schema"], json!({"required": ["plan"]}));
    let (status, _) = get(&app, &token, &format!("/api/apps/{id}/rules/checkout?version=9")).await;
    assert_eq!(status, 404);
    let (status, bad) = get(&app, &token, &format!("/api/apps/{id}/rules/checkout?version=zero")).await;
    assert_eq!((status, bad["errors"][0]["pointer"].as_str()), (422, Some("/version")));
    let (_, history) = get(&app, &token, &format!("/api/apps/{id}/rules/checkout/versions")).await;
    let versions: Vec<i64> = history["items"].as_array().unwrap().iter().map(|r| r["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [2, 1]);
    let (_, list) = get(&app, &token, &format!("/api/apps/{id}/rules")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["next_cursor"], Value::Null);

    let judged = app.ingest_ok(&key, &json!({"event": "checkout", "properties": {"plan": "pro"}})).await;
    assert_eq!((judged["results"][0]["status"].as_str(), judged["results"][0]["rule_version"].as_i64()), (Some("invalid"), Some(2)));

    // Deleted: events are unplanned; a new rule takes the next number.
    assert_eq!(app.call(Method::DELETE, &format!("/api/apps/{id}/rules/checkout"), &token, None).await.status(), 204);
    assert_eq!(app.call(Method::DELETE, &format!("/api/apps/{id}/rules/checkout"), &token, None).await.status(), 404);
    let judged = app.ingest_ok(&key, &json!({"event": "checkout"})).await;
    assert_eq!(judged["results"][0]["status"], "unplanned");
    assert_eq!(app.put_rule(&token, &id, "checkout", json!(true)).await["version"], 3);
}

#[tokio::test]
async fn a_schema_that_does_not_compile_or_reaches_out_is_refused_with_where() {
    let app = spawn_app().await;
    let token = app.signed_in("schemas@example.com").await;
    let (id, _) = app.create_app(&token, "Shop").await;
    let put = |schema: Value| {
        let (app, token, id) = (&app, &token, &id);
        async move {
            let resp = app.call(Method::PUT, &format!("/api/apps/{id}/rules/signup"), token, Some(json!({ "schema": schema }))).await;
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };

    let (status, p) = put(json!({"properties": {"age": {"type": "integer", "minimum": "ten"}}})).await;
    assert_eq!((status, p["code"].as_str()), (422, Some("invalid_schema")), "{p}");
    assert!(p["errors"][0]["pointer"].as_str().unwrap().starts_with("/schema/properties/age"), "{p}");

    let (status, p) = put(json!({"properties": {"a": {"$ref": "http://169.254.169.254/latest/meta-data"}}})).await;
    assert_eq!((status, p["code"].as_str()), (422, Some("invalid_schema")));
    assert_eq!(p["errors"][0]["pointer"], "/schema/properties/a/$ref");

    let (status, p) = put(json!("not a schema")).await;
    assert_eq!((status, p["code"].as_str()), (422, Some("invalid_schema")));
    let resp = app.call(Method::PUT, &format!("/api/apps/{id}/rules/signup"), &token, Some(json!({}))).await;
    let p: Value = resp.json().await.unwrap();
    assert_eq!((p["code"].as_str(), p["errors"][0]["pointer"].as_str()), (Some("validation_failed"), Some("/schema")));
    let (_, list) = get(&app, &token, &format!("/api/apps/{id}/rules")).await;
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn the_dry_run_judges_like_ingest_and_stores_nothing() {
    let app = spawn_app().await;
    let token = app.signed_in("dry@example.com").await;
    let (id, _) = app.create_app(&token, "Shop").await;
    app.put_rule(&token, &id, "signup", json!({"required": ["plan"]})).await;
    let test = |event: &'static str, properties: Value| {
        let (app, token, id) = (&app, &token, &id);
        async move {
            let resp = app.call(Method::POST, &format!("/api/apps/{id}/rules/{event}/test"), token, Some(json!({ "properties": properties }))).await;
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let bad = test("signup", json!({})).await;
    assert_eq!(bad["status"], "invalid");
    assert_eq!((bad["errors"][0]["pointer"].as_str(), bad["errors"][0]["keyword"].as_str()), (Some("/plan"), Some("required")));
    assert_eq!(test("signup", json!({"plan": 1})).await["status"], "valid");
    assert_eq!(test("other", json!({})).await["status"], "unplanned");
    let stored: i64 = app.db.client().await.query_one("SELECT count(*) FROM log_entries", &[]).await.unwrap().get(0);
    assert_eq!(stored, 0);
    let xlen = app.redis_cmd(&["XLEN", lvd::keys::INGEST_STREAM]).await;
    assert_eq!(xlen, redis::Value::Int(0));
}

#[tokio::test]
async fn another_users_rules_are_404_on_every_route() {
    let app = spawn_app().await;
    let alice = app.signed_in("alice@example.com").await;
    let mallory = app.signed_in("mallory@example.com").await;
    let (id, _) = app.create_app(&alice, "Alice's").await;
    app.put_rule(&alice, &id, "signup", json!({})).await;
    for (method, path, body) in [
        (Method::GET, format!("/api/apps/{id}/rules"), None),
        (Method::GET, format!("/api/apps/{id}/rules/signup"), None),
        (Method::GET, format!("/api/apps/{id}/rules/signup/versions"), None),
        (Method::PUT, format!("/api/apps/{id}/rules/signup"), Some(json!({"schema": {}}))),
        (Method::DELETE, format!("/api/apps/{id}/rules/signup"), None),
        (Method::POST, format!("/api/apps/{id}/rules/signup/test"), Some(json!({"properties": {}}))),
        (Method::GET, format!("/api/logs?app={id}"), None),
    ] {
        let resp = app.call(method.clone(), &path, &mallory, body).await;
        assert_eq!(resp.status(), 404, "{method} {path}");
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["code"], "not_found");
    }
    assert_eq!(get(&app, &alice, &format!("/api/apps/{id}/rules/signup")).await.1["version"], 1, "untouched");
}

#[tokio::test]
async fn event_names_travel_percent_encoded_in_paths() {
    let app = spawn_app().await;
    let token = app.signed_in("names@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    let name = "Order Completed/ü 🚀";
    assert_eq!(app.put_rule(&token, &id, name, json!({"required": ["x"]})).await["event"], name);
    let reply = app.ingest_ok(&key, &json!({"event": name})).await;
    assert_eq!(reply["results"][0]["status"], "invalid");
    let (status, rule) = get(&app, &token, &format!("/api/apps/{id}/rules/{}", encode(name))).await;
    assert_eq!((status, rule["event"].as_str()), (200, Some(name)));
}

#[tokio::test]
async fn a_rule_change_on_one_instance_applies_to_the_next_event_on_another() {
    let app = spawn_app().await;
    let dir = TempDir::new();
    let (_other, other_address) = start_runtime(&AppOptions::product(), &app.db, &app.redis, &dir).await.unwrap();
    let token = app.signed_in("fleet@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    let send_to_other = || {
        let (client, url, key) = (&app.client, format!("{other_address}/api/logs"), &key);
        async move {
            let resp = client.post(url).header("x-api-key", key).json(&json!({"event": "signup", "properties": {}})).send().await.unwrap();
            assert_eq!(resp.status(), 202);
            let body: Value = resp.json().await.unwrap();
            body["results"][0]["status"].as_str().unwrap().to_owned()
        }
    };

    // The other instance reads (and caches) "no rule", then a rule arrives
    // through this one.
    assert_eq!(send_to_other().await, "unplanned");
    app.put_rule(&token, &id, "signup", json!({"required": ["plan"]})).await;
    assert_eq!(send_to_other().await, "invalid");
    app.put_rule(&token, &id, "signup", json!({})).await;
    assert_eq!(send_to_other().await, "valid");
    assert_eq!(app.call(Method::DELETE, &format!("/api/apps/{id}/rules/signup"), &token, None).await.status(), 204);
    assert_eq!(send_to_other().await, "unplanned");
}

#[tokio::test]
async fn extreme_numbers_in_a_schema_and_in_events_read_back_exactly() {
    // jsonb writes 1.7976931348623157e308 back as a 309-digit integer, which
    // Spin 4.0.2's host (serde_json 1.0.132) refused to parse: every read of
    // the rule, and of an event holding it, was a 500 under spin up.
    let app = spawn_app().await;
    let token = app.signed_in("numbers@example.com").await;
    let (id, key) = app.create_app(&token, "Numbers").await;
    let schema = json!({"properties": {"n": {"maximum": f64::MAX, "minimum": -f64::MAX, "multipleOf": 5e-324}}});
    app.put_rule(&token, &id, "big", schema.clone()).await;

    let (status, versions) = get(&app, &token, &format!("/api/apps/{id}/rules/big/versions")).await;
    assert_eq!(status, 200, "{versions}");
    assert_eq!(versions["items"][0]["schema"], schema);
    let properties = json!({"max": f64::MAX, "tiny": 5e-324, "big": u64::MAX});
    app.ingest_ok(&key, &json!({"event": "other", "properties": properties})).await;
    app.wait_stored(1).await;
    let (status, page) = get(&app, &token, &format!("/api/logs?app={id}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["properties"], properties);
}

/// `levels` `$defs`, each using the next twice: the work per event doubles
/// with every level.
fn doubling_chain(levels: usize) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..levels {
        let next = format!("#/$defs/d{}", i + 1);
        defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": next}, {"$ref": next}]}));
    }
    defs.insert(format!("d{levels}"), json!({"type": "object", "required": ["x"]}));
    json!({"$defs": defs, "$ref": "#/$defs/d0"})
}

#[tokio::test]
async fn a_schema_whose_references_blow_up_is_refused_with_a_pointer_and_a_bounded_one_is_kept() {
    let app = spawn_app().await;
    let token = app.signed_in("costly@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;

    let resp = app.call(Method::PUT, &format!("/api/apps/{id}/rules/signup"), &token, Some(json!({"schema": doubling_chain(22)}))).await;
    let (status, p) = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());

    assert_eq!((status, p["code"].as_str()), (422, Some("invalid_schema")), "{p}");
    let pointer = p["errors"][0]["pointer"].as_str().unwrap();
    assert!(pointer.starts_with("/schema/$defs/d") && pointer.ends_with("/allOf"), "{p}");
    let (_, list) = get(&app, &token, &format!("/api/apps/{id}/rules")).await;
    assert_eq!(list["items"], json!([]), "nothing was stored");

    // Eleven levels stay under the bound and judge as before.
    assert_eq!(app.put_rule(&token, &id, "signup", doubling_chain(11)).await["version"], 1);
    let batch: Vec<Value> = (0..500).map(|i| json!({"event": "signup", "properties": if i % 2 == 0 { json!({"x": 1}) } else { json!({}) }})).collect();
    let reply = app.ingest_ok(&key, &json!({"batch": batch})).await;
    assert_eq!(reply["results"][0]["status"], "valid");
    assert_eq!(reply["results"][1]["status"], "invalid");
    assert_eq!(reply["results"][1]["errors"].as_array().unwrap().len(), 1, "a schema this costly reports the first error only");
}
