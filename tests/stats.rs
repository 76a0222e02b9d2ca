//! `GET /api/apps/{app}/stats` against real Redis and PostgreSQL: the figures
//! equal what was sent, per window; errors group by event, pointer and
//! keyword; new events show within 2 s; the cache counts hits and misses.

use lvd_tests::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn stats(app: &TestApp, token: &str, id: &str, query: &str) -> (u16, Value) {
    let resp = app.call(Method::GET, &format!("/api/apps/{id}/stats{query}"), token, None).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn the_figures_count_what_was_sent_in_every_window() {
    let app = spawn_app().await;
    let token = app.signed_in("stats@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    app.put_rule(&token, &id, "pay", json!({"required": ["amount"], "properties": {"plan": {"enum": ["pro"]}}})).await;
    app.ingest_ok(
        &key,
        &json!({"batch": [
            {"event": "pay", "properties": {"amount": 1}},
            {"event": "pay", "properties": {"amount": 2, "plan": "pro"}},
            {"event": "pay", "properties": {}},
            {"event": "pay", "properties": {"plan": "gold"}},
            {"event": "pay", "properties": {"amount": 3, "plan": "gold"}},
            {"event": "open"},
            {"event": "pay", "message_id": "m1", "properties": {"amount": 1}},
            {"event": "pay", "message_id": "m1", "properties": {"amount": 1}},
        ]}),
    )
    .await;

    for (window, buckets) in [("15m", 15), ("1h", 60), ("24h", 24), ("7d", 168)] {
        let (status, s) = stats(&app, &token, &id, &format!("?window={window}")).await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["window"], window);
        assert_eq!(s["totals"], json!({"valid": 3, "invalid": 3, "unplanned": 1}), "{window}: the duplicate is not counted");
        let series = s["series"].as_array().unwrap();
        assert_eq!(series.len(), buckets, "{window}: every bucket, zeros included");
        assert_eq!(series.last().unwrap()["valid"], 3, "{window}: the current bucket is last");
        assert!(series.iter().take(buckets - 1).all(|b| b["valid"] == 0 && b["invalid"] == 0));
        assert!(series[0]["start"].as_str().unwrap() < series[1]["start"].as_str().unwrap(), "oldest first");

        assert_eq!(s["by_event"][0]["event"], "pay");
        assert_eq!((s["by_event"][0]["valid"].as_u64(), s["by_event"][0]["invalid"].as_u64()), (Some(3), Some(3)));
        assert!(s["by_event"][0]["last_seen"].as_str().unwrap().ends_with('Z'));
        assert_eq!(s["by_event"][1], json!({"event": "open", "valid": 0, "invalid": 0, "unplanned": 1, "last_seen": s["by_event"][1]["last_seen"]}));

        let top: Vec<(String, String, u64)> = s["top_errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["pointer"].as_str().unwrap().into(), e["keyword"].as_str().unwrap().into(), e["count"].as_u64().unwrap()))
            .collect();
        assert_eq!(top, [("/amount".into(), "required".into(), 2), ("/plan".into(), "enum".into(), 2)]);
        assert!(s["top_errors"].as_array().unwrap().iter().all(|e| e["event"] == "pay"));
    }
    assert_eq!(stats(&app, &token, &id, "").await.1["window"], "1h", "the default window");
}

#[tokio::test]
async fn bad_windows_are_422_and_other_users_apps_404() {
    let app = spawn_app().await;
    let alice = app.signed_in("alice@example.com").await;
    let mallory = app.signed_in("mallory@example.com").await;
    let (id, _) = app.create_app(&alice, "Alice's").await;
    let (status, p) = stats(&app, &alice, &id, "?window=2h").await;
    assert_eq!((status, p["errors"][0]["pointer"].as_str()), (422, Some("/window")));
    // Alice's figures are cached now; Mallory must still get 404.
    assert_eq!(stats(&app, &alice, &id, "").await.0, 200);
    assert_eq!(stats(&app, &mallory, &id, "").await.0, 404);
    assert_eq!(stats(&app, &mallory, "not-a-uuid", "").await.0, 404);
    let resp = app.client.get(app.url(&format!("/api/apps/{id}/stats"))).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn an_event_shows_within_2_seconds_and_the_cache_counts_hits_and_misses() {
    let app = spawn_app().await;
    let token = app.signed_in("fresh@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    assert_eq!(stats(&app, &token, &id, "").await.1["totals"]["unplanned"], 0);
    assert_eq!(stats(&app, &token, &id, "").await.1["totals"]["unplanned"], 0);

    app.ingest_ok(&key, &json!({"event": "open"})).await;
    let accepted = Instant::now();
    eventually(Duration::from_secs(2), "the event in the figures", || {
        let (app, token, id) = (&app, &token, &id);
        async move { (stats(app, token, id, "").await.1["totals"]["unplanned"] == 1).then_some(()) }
    })
    .await;
    eprintln!("the event showed {} ms after its 202", accepted.elapsed().as_millis());

    let count = |outcome: &'static str| {
        let app = &app;
        async move {
            match app.redis_cmd(&["GET", &format!("lvd:metrics:cache:stats:{outcome}")]).await {
                redis::Value::BulkString(b) => String::from_utf8(b).unwrap().parse::<u64>().unwrap(),
                other => panic!("no {outcome} counter: {other:?}"),
            }
        }
    };
    assert!(count("hit").await >= 1, "the second read within a second is a hit");
    assert!(count("miss").await >= 2);
}
