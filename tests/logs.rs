//! `/api/logs` against real PostgreSQL and Redis, with the worker draining
//! into PostgreSQL: batches, verdicts, dedup, keys, limits, the query and its
//! pagination, the live counters, and crashes of a runtime instance and of
//! the worker under load.

use lvd_tests::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A signed-in user with one app: `(token, app id, ingest key)`.
async fn owner(app: &TestApp) -> (String, String, String) {
    let token = app.signed_in("events@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    (token, id, key)
}

async fn logs(app: &TestApp, token: &str, query: &str) -> (u16, Value) {
    let resp = app.call(Method::GET, &format!("/api/logs?{query}"), token, None).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_batch_of_500_is_accepted_and_501_is_refused() {
    let app = spawn_app().await;
    let (_, _, key) = owner(&app).await;
    let batch = |n: usize| json!({ "batch": (0..n).map(|i| json!({"event": "tick", "properties": {"i": i}})).collect::<Vec<_>>() });

    let reply = app.ingest_ok(&key, &batch(500)).await;
    assert_eq!((reply["accepted"].as_u64(), reply["duplicates"].as_u64()), (Some(500), Some(0)));
    let results = reply["results"].as_array().unwrap();
    assert!(results.iter().enumerate().all(|(i, r)| r["index"] == i && r["status"] == "unplanned"));

    let resp = app.ingest(&key, &batch(501)).await;
    assert_eq!(resp.status(), 422);
    let p: Value = resp.json().await.unwrap();
    assert_eq!((p["code"].as_str(), p["errors"][0]["pointer"].as_str()), (Some("validation_failed"), Some("/batch")));
    assert_eq!(app.ingest(&key, &batch(0)).await.status(), 422);
    assert_eq!(app.wait_stored(500).await, 500, "the refused batch stored nothing");
}

#[tokio::test]
async fn a_time_postgresql_cannot_store_is_rejected_alone_and_its_neighbour_stored() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;

    let reply = app
        .ingest_ok(
            &key,
            &json!({"batch": [
                {"event": "a", "timestamp": "0000-01-01T00:00:00Z", "message_id": "y0-1"},
                {"event": "a", "message_id": "y0-2"},
            ]}),
        )
        .await;

    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["results"][0]["status"], "rejected");
    assert_eq!(reply["results"][0]["errors"][0]["pointer"], "/timestamp");
    assert_eq!(reply["results"][1]["status"], "unplanned");
    app.wait_stored(1).await;
    let (status, page) = logs(&app, &token, &format!("app={id}")).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|e| e["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["y0-2"]);
    let lone = app.ingest(&key, &json!({"event": "a", "timestamp": "0000-01-01T00:00:00Z"})).await;
    assert_eq!(lone.status(), 422);
}

#[tokio::test]
async fn a_mixed_batch_judges_each_event_and_rejects_only_the_malformed_ones() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;
    app.put_rule(&token, &id, "checkout", json!({"required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}}})).await;

    let reply = app
        .ingest_ok(
            &key,
            &json!({"batch": [
                {"event": "checkout", "properties": {"plan": "pro"}, "timestamp": "2026-11-27T08:00:00+01:00", "context": {"library": "ios-sdk/3.1"}},
                {"event": "checkout", "properties": {"plan": "gold"}},
                {"event": "signup"},
                {"properties": {}},
                "not an event",
                {"event": "checkout", "timestamp": "last tuesday", "message_id": ""},
            ]}),
        )
        .await;
    let statuses: Vec<&str> = reply["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["valid", "invalid", "unplanned", "rejected", "rejected", "rejected"]);
    assert_eq!(reply["accepted"], 3);
    assert_eq!(reply["results"][1]["errors"][0], json!({"pointer": "/plan", "keyword": "enum", "message": reply["results"][1]["errors"][0]["message"]}));
    assert_eq!(reply["results"][3]["errors"][0]["pointer"], "/event");
    assert_eq!(reply["results"][4]["errors"][0]["pointer"], "");
    let pointers: Vec<&str> = reply["results"][5]["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/timestamp", "/message_id"]);

    // A lone malformed event is the request's own error.
    let resp = app.ingest(&key, &json!({"event": ""})).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.json::<Value>().await.unwrap()["errors"][0]["pointer"], "/event");

    app.wait_stored(3).await;
    let (_, page) = logs(&app, &token, &format!("app={id}")).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let valid = items.iter().find(|e| e["status"] == "valid").unwrap();
    assert_eq!(valid["timestamp"], "2026-11-27T07:00:00.000000Z", "client time, in UTC");
    assert_eq!(valid["context"], json!({"library": "ios-sdk/3.1"}));
    assert_eq!(valid["rule_version"], 1);
    assert!(valid["received_at"].as_str().unwrap().ends_with('Z'));
    let unplanned = items.iter().find(|e| e["status"] == "unplanned").unwrap();
    assert_eq!((unplanned["properties"].clone(), unplanned["rule_version"].clone()), (json!({}), Value::Null));
}

#[tokio::test]
async fn duplicates_are_counted_and_stored_once_per_app() {
    let app = spawn_app().await;
    let (token, _, key) = owner(&app).await;
    let (_, other_key) = app.create_app(&token, "Other").await;
    let event = |m: &str| json!({"event": "signup", "message_id": m});

    let first = app.ingest_ok(&key, &json!({"batch": [event("a"), event("a"), event("b")]})).await;
    assert_eq!((first["accepted"].as_u64(), first["duplicates"].as_u64()), (Some(2), Some(1)));
    assert_eq!(first["results"][1]["status"], "duplicate");
    let again = app.ingest_ok(&key, &event("b")).await;
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(1)));
    let other = app.ingest_ok(&other_key, &event("a")).await;
    assert_eq!(other["accepted"], 1, "message ids are per app");

    app.wait_stored(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // nothing more may arrive
    let rows = app.db.client().await.query("SELECT message_id, count(*) FROM log_entries GROUP BY app_id, message_id", &[]).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.get::<_, i64>(1) == 1));
}

#[tokio::test]
async fn unicode_and_sql_looking_values_come_back_intact() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;
    let name = "'); DROP TABLE log_entries; -- Ünïcødé 🚀";
    let properties = json!({"quote": "it's \"fine\"", "tab\tkey": "a\tb\nc\\d", "emoji": "👩‍💻", "nested": {"sql": "1; DELETE FROM apps"}, "n": 1.5e10});
    let context = json!({"library": "web/\\\\1.0", "ua": "Mozilla/5.0 (Ω)"});
    app.ingest_ok(&key, &json!({"event": name, "properties": properties, "context": context, "message_id": "ïd-\\N-1"})).await;

    app.wait_stored(1).await;
    let (_, page) = logs(&app, &token, &format!("app={id}&event={}", encode(name))).await;
    let e = &page["items"][0];
    assert_eq!(e["event"], name);
    assert_eq!(e["properties"], properties);
    assert_eq!(e["context"], context);
    assert_eq!(e["message_id"], "ïd-\\N-1");
    let tables: i64 = app.db.client().await.query_one("SELECT count(*) FROM apps", &[]).await.unwrap().get(0);
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn bodies_over_1_mib_are_413_and_other_media_types_415() {
    let app = spawn_app().await;
    let (_, _, key) = owner(&app).await;
    let big = json!({"event": "big", "properties": {"blob": "x".repeat(1 << 20)}});
    let resp = app.ingest(&key, &big).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "payload_too_large");
    // Spin has no body limit, so the component enforces it; a client still
    // writing a far larger body must get the 413, not a reset connection,
    // every time (the component reads and drops up to 16 MiB first).
    for _ in 0..10 {
        let resp = app
            .client
            .post(app.url("/api/logs"))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(vec![b' '; 4 << 20])
            .send()
            .await
            .expect("the connection was reset before the reply");
        assert_eq!(resp.status(), 413);
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "payload_too_large");
    }
    let resp = app.client.post(app.url("/api/logs")).header("x-api-key", &key).body("{\"event\":\"a\"}").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    let resp = app.client.post(app.url("/api/logs")).header("x-api-key", &key).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn wrong_missing_and_rotated_keys_are_401() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;
    let event = json!({"event": "signup"});
    for bad in ["", "nope", "lvd_ingest_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let resp = app.ingest(bad, &event).await;
        assert_eq!(resp.status(), 401, "{bad:?}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "invalid_api_key");
    }
    // The key is cached by now; rotation must still kill it at once.
    app.ingest_ok(&key, &event).await;
    let rotated = app.call(Method::POST, &format!("/api/apps/{id}/keys/rotate"), &token, None).await;
    let new_key = rotated.json::<Value>().await.unwrap()["ingest_key"].as_str().unwrap().to_owned();
    assert_eq!(app.ingest(&key, &event).await.status(), 401);
    app.ingest_ok(&new_key, &event).await;
    assert_eq!(app.call(Method::DELETE, &format!("/api/apps/{id}"), &token, None).await.status(), 204);
    assert_eq!(app.ingest(&new_key, &event).await.status(), 401, "a deleted app's key");
}

#[tokio::test]
async fn the_per_key_limit_answers_429_with_its_headers() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_INGEST_PER_KEY".into(), "3".into()));
    let app = spawn_app_with(opts).await;
    let (_, _, key) = owner(&app).await;
    for remaining in ["2", "1", "0"] {
        let resp = app.ingest(&key, &json!({"event": "a"})).await;
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.headers()["ratelimit-limit"], "3");
        assert_eq!(resp.headers()["ratelimit-remaining"], remaining);
    }
    let resp = app.ingest(&key, &json!({"event": "a"})).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after") && resp.headers().contains_key("ratelimit-reset"));
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "rate_limited");
    assert_eq!(app.wait_stored(3).await, 3, "the refused request stored nothing");
}

#[tokio::test]
async fn live_counters_count_each_status_and_error_at_ingest() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;
    app.put_rule(&token, &id, "pay", json!({"required": ["amount"]})).await;
    let batch = json!({"batch": [{"event": "pay", "properties": {"amount": 1}}, {"event": "pay"}, {"event": "pay"}, {"event": "open"}]});
    app.ingest_ok(&key, &batch).await;

    let minute = chrono_minute();
    let counters = hgetall(&app, &lvd::keys::stats_bucket(id.parse().unwrap(), 'm', minute)).await;
    assert_eq!(counters.get(r#"["c","valid","pay"]"#), Some(&1));
    assert_eq!(counters.get(r#"["c","invalid","pay"]"#), Some(&2));
    assert_eq!(counters.get(r#"["c","unplanned","open"]"#), Some(&1));
    assert_eq!(counters.get(r#"["e","pay","/amount","required"]"#), Some(&2));
    let hours = hgetall(&app, &lvd::keys::stats_bucket(id.parse().unwrap(), 'h', minute / 60)).await;
    assert_eq!(hours, counters, "the hour bucket adds the same");
}

fn chrono_minute() -> i64 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60) as i64
}

async fn hgetall(app: &TestApp, key: &str) -> HashMap<String, i64> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/1", app.redis.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn the_query_filters_by_status_event_and_time_and_names_bad_parameters() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;
    app.put_rule(&token, &id, "a", json!({"required": ["x"]})).await;
    app.ingest_ok(&key, &json!({"batch": [{"event": "a", "properties": {"x": 1}}, {"event": "a"}, {"event": "b"}]})).await;
    app.wait_stored(3).await;
    let count = |q: String| {
        let (app, token) = (&app, &token);
        async move {
            let (status, page) = logs(app, token, &q).await;
            assert_eq!(status, 200, "{q}: {page}");
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count(format!("app={id}&status=invalid")).await, 1);
    assert_eq!(count(format!("app={id}&event=a")).await, 2);
    assert_eq!(count(format!("app={id}&event=a&status=valid")).await, 1);
    assert_eq!(count(format!("app={id}&since=2999-01-01T00:00:00Z")).await, 0);
    assert_eq!(count(format!("app={id}&until=2000-01-01T00:00:00Z")).await, 0);
    assert_eq!(count(format!("app={id}&since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z")).await, 3);

    let (status, p) = logs(&app, &token, &format!("app={id}&limit=501&status=nope&cursor=xyz")).await;
    assert_eq!((status, p["code"].as_str()), (422, Some("validation_failed")));
    let pointers: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/limit", "/status", "/cursor"]);
    assert_eq!(logs(&app, &token, "limit=5").await.0, 422, "app is required");
    assert_eq!(logs(&app, &token, &format!("app={}", uuid::Uuid::new_v4())).await.0, 404);
    let resp = app.client.get(app.url(&format!("/api/logs?app={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the query needs a user token");
}

#[tokio::test]
async fn a_year_postgresql_cannot_hold_in_since_until_or_cursor_is_422_not_500() {
    use chrono::TimeZone;
    let app = spawn_app().await;
    let (token, id, _) = owner(&app).await;
    let year_0 = chrono::Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap();
    let cursor = lvd::logs::query::encode_cursor(year_0, uuid::Uuid::nil());
    for (param, value) in [("since", "0000-01-01T00:00:00Z"), ("until", "0000-06-01T00:00:00Z"), ("cursor", cursor.as_str())] {
        let (status, p) = logs(&app, &token, &format!("app={id}&{param}={value}")).await;
        assert_eq!((status, p["errors"][0]["pointer"].as_str()), (422, Some(format!("/{param}").as_str())), "{p}");
    }
}

#[tokio::test]
async fn pagination_walks_every_event_exactly_once_while_new_ones_arrive() {
    let app = Arc::new(spawn_app().await);
    let (token, id, key) = owner(&app).await;
    let batch = |tag: &str| json!({"batch": (0..60).map(|i| json!({"event": tag, "properties": {"i": i}})).collect::<Vec<_>>()});
    app.ingest_ok(&key, &batch("before")).await;
    app.ingest_ok(&key, &batch("before")).await;
    app.wait_stored(120).await;
    let before: HashSet<String> = {
        let rows = app.db.client().await.query("SELECT id::text FROM log_entries", &[]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };

    let writer = {
        let (app, key) = (app.clone(), key.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                app.ingest_ok(&key, &batch("during")).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("app={id}&limit=7&cursor={c}"),
            None => format!("app={id}&limit=7"),
        };
        let (status, page) = logs(&app, &token, &q).await;
        assert_eq!(status, 200);
        seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.await.unwrap();

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event was served twice");
    assert!(before.iter().all(|id| unique.contains(id)), "every event stored before the walk was served");
}

/// Sends single events with unique message ids (`{tag}-{loop}-{n}`) from
/// `tasks` loops until `stop`; returns the message ids that got a 202.
fn load(tag: &'static str, address: String, key: String, tasks: usize, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (client, address, key, stop) = (client.clone(), address.clone(), key.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let mut accepted = Vec::new();
                let mut n = 0;
                while !*stop.borrow() {
                    n += 1;
                    let message_id = format!("{tag}-{t}-{n}");
                    let sent = client
                        .post(format!("{address}/api/logs"))
                        .header("x-api-key", &key)
                        .json(&json!({"event": "load", "message_id": message_id, "properties": {"n": n}}))
                        .send()
                        .await;
                    match sent {
                        // The status line goes out only after the commit, so
                        // a 202 whose body a kill cut off still counts.
                        Ok(r) if r.status() == 202 => {
                            if let Ok(reply) = r.json::<Value>().await {
                                assert_eq!(reply["accepted"], 1, "{reply}");
                            }
                            accepted.push(message_id);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                accepted
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    })
}

/// Every accepted message id is stored exactly once, and nothing else twice.
async fn assert_stored_exactly_once(app: &TestApp, accepted: &[String]) {
    assert!(accepted.len() > 50, "the load was too small to mean anything: {}", accepted.len());
    let client = app.db.client().await;
    let rows = eventually(Duration::from_secs(30), "every accepted event stored", || {
        let client = &client;
        async move {
            let rows = client.query("SELECT message_id, count(*) FROM log_entries GROUP BY message_id", &[]).await.unwrap();
            let stored: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            accepted.iter().all(|m| stored.contains_key(m)).then_some(stored)
        }
    })
    .await;
    eprintln!("{} events got a 202; {} distinct message ids stored", accepted.len(), rows.len());
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
}

#[tokio::test]
async fn killing_a_runtime_instance_under_load_loses_no_accepted_event() {
    let app = spawn_app().await;
    let (_, _, key) = owner(&app).await;
    let dir = TempDir::new();
    let (mut victim, victim_address) = start_runtime(&AppOptions::product(), &app.db, &app.redis, &dir).await.unwrap();

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let on_victim = load("victim", victim_address, key.clone(), 8, stop.clone());
    let on_survivor = load("survivor", app.address.clone(), key, 2, stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    victim.kill().await; // SIGKILL, mid-request for some of the 8 loops
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();

    let mut accepted = on_victim.await.unwrap();
    accepted.extend(on_survivor.await.unwrap());
    assert_stored_exactly_once(&app, &accepted).await;
}

#[tokio::test]
async fn killing_the_worker_mid_drain_loses_and_duplicates_nothing() {
    let mut app = spawn_app().await;
    let (_, _, key) = owner(&app).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let running = load("load", app.address.clone(), key, 8, stop);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        app.worker.as_mut().unwrap().kill().await; // SIGKILL: its pending entries stay unacknowledged
        let smtp_port = app.smtp().smtp_port;
        app.worker = Some(TestWorker::start(&app.db, &app.redis, smtp_port, &[]).await);
    }
    stop_tx.send(true).unwrap();
    let accepted = running.await.unwrap();
    assert_stored_exactly_once(&app, &accepted).await;
}

#[tokio::test]
async fn ingest_answers_503_while_redis_is_down_and_recovers() {
    let mut app = spawn_app().await;
    let (_, _, key) = owner(&app).await;
    app.ingest_ok(&key, &json!({"event": "a"})).await;
    app.redis.kill().await;
    // Within the component's deadlines; in the wasi:http 0.2 build, whose
    // key-value calls nothing can cut short, because the refused Redis
    // connection is met before the store is touched (`lvd_component::kv`).
    let resp = tokio::time::timeout(Duration::from_secs(10), app.ingest(&key, &json!({"event": "a"})))
        .await
        .expect("no answer within 10 s while Redis is down");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "unavailable");
    app.redis.restart().await;
    eventually(Duration::from_secs(10), "ingest is back", || {
        let (app, key) = (&app, &key);
        async move { (app.ingest(key, &json!({"event": "a"})).await.status() == 202).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn deleting_an_app_removes_its_events() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;
    app.ingest_ok(&key, &json!({"batch": [{"event": "a"}, {"event": "b"}]})).await;
    app.wait_stored(2).await;
    assert_eq!(app.call(Method::DELETE, &format!("/api/apps/{id}"), &token, None).await.status(), 204);
    let left: i64 = app.db.client().await.query_one("SELECT count(*) FROM log_entries", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_row_postgresql_refuses_is_quarantined_with_its_reason_and_its_neighbours_stored() {
    let app = spawn_app().await;
    let (token, id, _) = owner(&app).await;
    let app_id: uuid::Uuid = id.parse().unwrap();
    // One request's rows as the ingest script would queue them, the middle
    // one with a time PostgreSQL refuses (the edge never lets one through:
    // this stands for whatever it may yet miss).
    let row = |message_id: &str| {
        let event = lvd::logs::Incoming {
            event: lvd::logs::EventName::parse("a".into()).unwrap(),
            properties: json!({"k": message_id}),
            timestamp: None,
            message_id: Some(message_id.into()),
            context: None,
        };
        lvd::logs::rows::line(&lvd::logs::ingest::judge(event, None, chrono::Utc::now()), app_id)
    };
    let mut bad: Vec<String> = row("q-2").split('\t').map(str::to_owned).collect();
    bad[7] = "0000-01-01T00:00:00Z".into();
    let entry = format!("{}{}{}", row("q-1"), bad.join("\t"), row("q-3"));
    app.redis_cmd(&["XADD", lvd::keys::INGEST_STREAM, "*", lvd::keys::FIELD, &entry]).await;

    app.wait_stored(2).await;
    let quarantined = eventually(Duration::from_secs(10), "the refused row quarantined", || async {
        let resp = app.call(Method::GET, &format!("/api/apps/{id}/quarantine"), &token, None).await;
        let body: Value = resp.json().await.ok()?;
        (body["items"].as_array()?.len() == 1).then_some(body)
    })
    .await;

    let item = &quarantined["items"][0];
    assert_eq!(item["line"], 1);
    assert!(item["reason"].as_str().unwrap().contains("out of range"), "{item}");
    assert!(item["row"].as_str().unwrap().contains("q-2"), "{item}");
    assert_eq!(quarantined["next_cursor"], Value::Null);
    let (_, page) = logs(&app, &token, &format!("app={id}")).await;
    let mut stored: Vec<&str> = page["items"].as_array().unwrap().iter().map(|e| e["message_id"].as_str().unwrap()).collect();
    stored.sort();
    assert_eq!(stored, ["q-1", "q-3"]);
    let (_, ready) = app.get_json("/health/ready").await;
    assert_eq!(ready["quarantined_rows"], 1, "{ready}");
    assert_eq!(ready["dead_letters"]["ingest"], 0, "{ready}");
    // Another user sees none of it.
    let other = app.signed_in("other@example.com").await;
    let resp = app.call(Method::GET, &format!("/api/apps/{id}/quarantine"), &other, None).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn redis_killed_under_load_and_restarted_from_its_append_only_file_loses_nothing_accepted() {
    let mut app = spawn_app().await;
    let (_, _, key) = owner(&app).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let loads = load("redis-crash", app.address.clone(), key, 6, stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // SIGKILL: every write Redis acknowledged was already in its AOF (Redis
    // writes the file before it replies; `everysec` only delays the fsync,
    // which matters for a machine crash, not a process one).
    app.redis.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.redis.restart().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop_tx.send(true).unwrap();

    let accepted = loads.await.unwrap();
    assert_stored_exactly_once(&app, &accepted).await;
}

#[tokio::test]
async fn postgresql_locked_for_10_s_leaves_ingest_fast_then_the_backlog_drains_and_the_cap_answers_503() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_INGEST_MAX_BACKLOG".into(), "200".into()));
    let app = spawn_app_with(opts).await;
    let (_, _, key) = owner(&app).await;
    app.ingest_ok(&key, &json!({"event": "warm", "message_id": "warm"})).await;
    app.wait_stored(1).await;

    // Hold every write to log_entries for 10 s, as a long migration would.
    let locker = app.db.client().await;
    locker.batch_execute("BEGIN; LOCK TABLE log_entries IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let locked_at = std::time::Instant::now();
    let (mut accepted, mut refused, mut slowest) = (vec!["warm".to_owned()], 0, Duration::ZERO);
    let mut n = 0;
    while locked_at.elapsed() < Duration::from_secs(10) {
        n += 1;
        let started = std::time::Instant::now();
        let resp = app.ingest(&key, &json!({"event": "slow-db", "message_id": format!("slow-{n}")})).await;
        slowest = slowest.max(started.elapsed());
        match resp.status().as_u16() {
            202 => accepted.push(format!("slow-{n}")),
            503 => {
                assert!(resp.headers().contains_key("retry-after"), "503 without Retry-After");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("ingest answered {other} while PostgreSQL was locked"),
        }
    }
    locker.batch_execute("COMMIT").await.unwrap();
    let unlocked = std::time::Instant::now();

    assert!(slowest < Duration::from_secs(2), "an ingest waited on PostgreSQL: {slowest:?}");
    assert!(accepted.len() > 200 && refused > 0, "the backlog reached its cap: {} accepted, {refused} refused", accepted.len());
    eventually(Duration::from_secs(30), "the backlog drained", || async {
        matches!(app.redis_cmd(&["XLEN", lvd::keys::INGEST_STREAM]).await, redis::Value::Int(0)).then_some(())
    })
    .await;
    eprintln!(
        "while locked: {} accepted, {refused} refused with 503, slowest ingest {slowest:?}; drained {:?} after the lock",
        accepted.len(),
        unlocked.elapsed()
    );
    assert_stored_exactly_once(&app, &accepted).await;
}

#[tokio::test]
async fn postgresql_stopped_and_restarted_under_load_keeps_ingest_answering_and_loses_nothing() {
    let mut pg = TestPostgres::start().await;
    let app = spawn_app_with(AppOptions { postgres: Some(pg.base()), ..AppOptions::product() }).await;
    let (_, _, key) = owner(&app).await;
    // The key's app and its rules are cached: ingest then needs only Redis.
    app.ingest_ok(&key, &json!({"event": "warm", "message_id": "warm"})).await;
    let phase = |tag: &'static str, for_: Duration| {
        let (address, key) = (app.address.clone(), key.clone());
        async move {
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let handle = load(tag, address, key, 4, stop);
            tokio::time::sleep(for_).await;
            stop_tx.send(true).unwrap();
            handle.await.unwrap()
        }
    };

    let mut accepted = vec!["warm".to_owned()];
    accepted.extend(phase("pg-up", Duration::from_secs(1)).await);
    pg.stop().await;
    let while_down = phase("pg-down", Duration::from_secs(3)).await;
    pg.restart().await;
    let restarted = std::time::Instant::now();
    accepted.extend(phase("pg-back", Duration::from_secs(1)).await);

    assert!(while_down.len() > 50, "ingest kept answering 202 while PostgreSQL was down: {}", while_down.len());
    let down = while_down.len();
    accepted.extend(while_down);
    assert_stored_exactly_once(&app, &accepted).await;
    eprintln!("{down} events accepted while PostgreSQL was down; every accepted event stored {:?} after the restart", restarted.elapsed());
}

#[tokio::test]
async fn a_long_failing_value_is_cut_short_in_the_reply_and_the_stored_event() {
    let app = spawn_app().await;
    let (token, id, key) = owner(&app).await;
    app.put_rule(&token, &id, "pay", json!({"properties": {"note": {"type": "integer"}}})).await;
    let long = "x".repeat(50_000);

    let reply = app.ingest_ok(&key, &json!({"event": "pay", "properties": {"note": long}})).await;

    let error = &reply["results"][0]["errors"][0];
    assert_eq!((error["pointer"].as_str(), error["keyword"].as_str()), (Some("/note"), Some("type")));
    let message = error["message"].as_str().unwrap();
    assert!(message.chars().count() < 120 && message.contains('…'), "{message}");
    let stored = eventually(Duration::from_secs(10), "the event stored", || async {
        let (_, page) = logs(&app, &token, &format!("app={id}")).await;
        page["items"].as_array().filter(|i| !i.is_empty()).cloned()
    })
    .await;
    assert_eq!(stored[0]["errors"][0]["message"].as_str(), Some(message));
    assert_eq!(stored[0]["properties"]["note"].as_str().map(str::len), Some(50_000), "the value itself is kept whole");
}

#[tokio::test]
async fn an_ip_that_keeps_sending_unknown_ingest_keys_gets_429_while_known_keys_still_pass() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_INGEST_BAD_KEYS_PER_IP".into(), "3".into()));
    let app = spawn_app_with(opts).await;
    let (_, _, key) = owner(&app).await;
    let event = json!({"event": "signup"});
    app.ingest_ok(&key, &event).await;

    for bad in ["nope", "lvd_ingest_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "lvd_ingest_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"] {
        assert_eq!(app.ingest(bad, &event).await.status(), 401, "{bad}");
    }
    let resp = app.ingest("lvd_ingest_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", &event).await;

    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["ratelimit-limit"], "3");
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "rate_limited");
    // A sender on the same address with a key that works is not locked out.
    app.ingest_ok(&key, &event).await;
}
