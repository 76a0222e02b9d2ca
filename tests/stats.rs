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

    // Each read is added to the figures (`lvd::metrics`) after its reply.
    let count = |outcome: &'static str| {
        let app = &app;
        async move {
            match app.redis_cmd(&["HGET", lvd::keys::metrics::CACHE, &format!("stats\t{outcome}")]).await {
                redis::Value::BulkString(b) => String::from_utf8(b).unwrap().parse::<u64>().unwrap(),
                _ => 0,
            }
        }
    };
    eventually(Duration::from_secs(5), "a hit and two misses of the stats cache counted", || async {
        (count("hit").await >= 1 && count("miss").await >= 2).then_some(())
    })
    .await;
}

/// A Server-Sent Events reader over a streaming reply.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(app: &TestApp, token: &str, id: &str, last_event_id: Option<&str>) -> Self {
        let mut req = app.client.get(app.url(&format!("/api/apps/{id}/live"))).bearer_auth(token);
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self { resp, buf: String::new() }
    }

    /// Reads until the server ends the stream; panics if it is still open
    /// after `within`.
    async fn ends_within(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| panic!("the stream is still open after {within:?}"));
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None) | Err(_)) => return,
                Err(_) => panic!("the stream is still open after {within:?}"),
            }
        }
    }

    /// The next event of `kind` within `within`: `(id, data)`.
    async fn next(&mut self, kind: &str, within: Duration) -> (String, Value) {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
                if field("event: ").as_deref() == Some(kind) {
                    return (field("id: ").unwrap(), serde_json::from_str(&field("data: ").unwrap()).unwrap());
                }
            }
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| panic!("no `{kind}` event in {within:?}"));
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(other) => panic!("the stream ended: {other:?}"),
                Err(_) => panic!("no `{kind}` event in {within:?}"),
            }
        }
    }
}

#[tokio::test]
async fn the_live_stream_sends_figures_and_each_invalid_event_and_resumes_after_last_event_id() {
    let app = spawn_app().await;
    let token = app.signed_in("live@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    app.put_rule(&token, &id, "pay", json!({"required": ["amount"]})).await;
    app.ingest_ok(&key, &json!({"event": "pay"})).await; // before the stream: not replayed

    let mut events = Events::open(&app, &token, &id, None).await;
    let (first_id, figures) = events.next("stats", Duration::from_secs(3)).await;
    assert_eq!(figures["totals"]["invalid"], 1);
    let (second_id, _) = events.next("stats", Duration::from_secs(3)).await;
    assert_eq!(first_id, second_id, "no invalid event arrived in between");

    let sent = Instant::now();
    let reply = app.ingest_ok(&key, &json!({"batch": [{"event": "pay", "properties": {"amount": 1}}, {"event": "pay", "properties": {"n": 1}}]})).await;
    let (invalid_id, invalid) = events.next("invalid", Duration::from_secs(3)).await;
    eprintln!("the invalid event arrived {} ms after its 202", sent.elapsed().as_millis());
    assert_eq!(invalid["id"], reply["results"][1]["id"]);
    assert_eq!(invalid["properties"], json!({"n": 1}));
    assert_eq!((invalid["errors"][0]["pointer"].as_str(), invalid["errors"][0]["keyword"].as_str()), (Some("/amount"), Some("required")));
    let (after_id, figures) = events.next("stats", Duration::from_secs(3)).await;
    assert_eq!(after_id, invalid_id, "stats carry the position of the last invalid event");
    assert_eq!(figures["totals"]["valid"], 1);
    drop(events);

    // Missed while disconnected: delivered on reconnect, nothing earlier.
    app.ingest_ok(&key, &json!({"event": "pay", "properties": {"missed": true}})).await;
    let mut resumed = Events::open(&app, &token, &id, Some(&invalid_id)).await;
    let (_, missed) = resumed.next("invalid", Duration::from_secs(3)).await;
    assert_eq!(missed["properties"], json!({"missed": true}));

    let mallory = app.signed_in("mallory@example.com").await;
    let resp = app.client.get(app.url(&format!("/api/apps/{id}/live"))).bearer_auth(&mallory).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn a_live_stream_ends_within_seconds_of_logout_or_of_its_apps_deletion() {
    // Streams last 45 s by default: each must end long before that.
    let app = spawn_app().await;
    let token = app.signed_in("leaver@example.com").await;
    let (id, _) = app.create_app(&token, "Shop").await;
    let mut events = Events::open(&app, &token, &id, None).await;
    events.next("stats", Duration::from_secs(3)).await;
    let logout = app.client.post(app.url("/auth/logout")).bearer_auth(&token).json(&json!({})).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    events.ends_within(Duration::from_secs(10)).await;

    let token = app.signed_in("deleter@example.com").await;
    let (id, _) = app.create_app(&token, "Doomed").await;
    let mut events = Events::open(&app, &token, &id, None).await;
    events.next("stats", Duration::from_secs(3)).await;
    assert_eq!(app.call(Method::DELETE, &format!("/api/apps/{id}"), &token, None).await.status(), 204);
    events.ends_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn event_names_past_a_buckets_cap_fold_into_an_other_row_and_redis_stays_bounded() {
    let app = spawn_app().await;
    let token = app.signed_in("many@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    let batch = |from: usize| json!({"batch": (from..from + 500).map(|i| json!({"event": format!("e{i}"), "message_id": format!("m{i}")})).collect::<Vec<_>>()});

    for from in [0, 500] {
        app.ingest_ok(&key, &batch(from)).await;
    }

    let (status, s) = stats(&app, &token, &id, "?window=15m").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["totals"]["unplanned"], 1000, "every event still counts");
    let rows = s["by_event"].as_array().unwrap();
    let other = rows.iter().find(|r| r["event"].is_null()).expect("an other row");
    assert_eq!(other["unplanned"].as_u64().unwrap() + rows.len() as u64 - 1, 1000);
    assert!(rows.len() <= 401, "{} rows", rows.len());
    let minute = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60) as i64;
    let app_id = id.parse().unwrap();
    for key in [lvd::keys::stats_bucket(app_id, 'm', minute), lvd::keys::stats_seen(app_id)] {
        let len = app.redis_cmd(&["HLEN", &key]).await;
        assert!(matches!(len, redis::Value::Int(n) if n <= 404), "{key}: {len:?}");
    }
    // A message id is remembered 7 days, not the app's 30 of retention.
    let ttl = app.redis_cmd(&["TTL", &format!("{}m1", lvd::keys::dedup_prefix(app_id))]).await;
    assert!(matches!(ttl, redis::Value::Int(t) if t > 0 && t <= 7 * 86_400), "{ttl:?}");
}
