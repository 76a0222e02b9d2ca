//! The operator's routes per the contract, through the product's
//! spin.toml: `/health`, `/health/ready`, and `/metrics` checked against
//! the traffic each test sent; request ids.

use lvd_tests::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::test]
async fn health_is_ok() {
    let app = spawn_app().await;

    let (status, body) = app.get_json("/health").await;

    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "status": "ok" }));
}

#[tokio::test]
async fn ready_turns_503_when_redis_dies_and_200_when_it_returns() {
    let mut app = spawn_app().await;
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["postgres"], "ok");
    assert_eq!(body["redis"], "ok");
    assert_eq!(body["queue_depth"]["email"], 0);

    app.redis.kill().await;
    let started = Instant::now();
    let resp = app.get("/health/ready").await;
    let elapsed = started.elapsed();

    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(elapsed < Duration::from_secs(2), "readiness took {elapsed:?} with Redis down");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["postgres"], "ok");
    assert_ne!(body["redis"], "ok");

    app.redis.restart().await;
    eventually(Duration::from_secs(10), "readiness to recover", || async {
        (app.get("/health/ready").await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn ready_is_503_when_postgres_is_unreachable() {
    let db = TestDb::create().await;
    let redis = TestRedis::start().await;
    let dir = TempDir::new();
    let mut opts = AppOptions::product();
    // Nothing listens on port 1; the allow-list names it, so only the connection fails.
    opts.env.push(("SPIN_VARIABLE_DATABASE_URL".into(), "postgres://postgres@127.0.0.1:1/x?sslmode=disable".into()));
    opts.env.push(("SPIN_VARIABLE_DATABASE_HOST".into(), "127.0.0.1:1".into()));
    let (_runtime, address) = start_runtime(&opts, &db, &redis, &dir).await.unwrap();

    let resp = reqwest::get(format!("{address}/health/ready")).await.unwrap();

    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_ne!(body["postgres"], "ok");
    assert_eq!(body["redis"], "ok");
    assert!(!body.to_string().contains("127.0.0.1:1"), "driver detail leaked: {body}");
}

#[tokio::test]
async fn a_path_nothing_serves_is_a_404_problem_whatever_the_method() {
    let app = spawn_app().await;

    for (method, path) in [("GET", "/nowhere"), ("POST", "/api/nowhere"), ("DELETE", "/health/more"), ("GET", "/assets/none.js")] {
        let resp = app.client.request(method.parse().unwrap(), app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{method} {path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{method} {path}");
    }
}

/// The value of the sample `name` whose labels include every one of
/// `labels`, summed over the samples that match (Prometheus's text format).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, set) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = set
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

async fn metrics_text(app: &TestApp) -> String {
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_show_the_whole_deployments_figures_for_the_traffic_sent() {
    let app = spawn_app().await;
    let token = app.signed_in("ops@example.com").await;
    let (app_id, key) = app.create_app(&token, "Shop").await;
    let schema = serde_json::json!({ "type": "object", "required": ["plan"] });
    app.put_rule(&token, &app_id, "signup", schema).await;

    // 3 valid, 2 invalid, 1 unplanned, then a duplicate of the first.
    let events = [
        ("signup", serde_json::json!({ "plan": "pro" })),
        ("signup", serde_json::json!({ "plan": "free" })),
        ("signup", serde_json::json!({ "plan": "team" })),
        ("signup", serde_json::json!({})),
        ("signup", serde_json::json!({ "other": 1 })),
        ("page_view", serde_json::json!({})),
    ];
    for (i, (event, properties)) in events.iter().enumerate() {
        app.ingest_ok(&key, &serde_json::json!({ "event": event, "properties": properties, "message_id": format!("m{i}") })).await;
    }
    let dup = app.ingest_ok(&key, &serde_json::json!({ "event": "signup", "properties": { "plan": "pro" }, "message_id": "m0" })).await;
    assert_eq!(dup["duplicates"], 1);
    let ingests = events.len() as f64 + 1.0;
    app.wait_stored(events.len() as i64).await;

    // A path nothing serves, an export job, and two reads of the live figures.
    assert_eq!(app.get("/no/such/page").await.status(), 404);
    let export = serde_json::json!({ "from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "format": "csv" });
    let resp = app.call(reqwest::Method::POST, &format!("/api/apps/{app_id}/exports"), &token, Some(export)).await;
    assert_eq!(resp.status(), 202);
    for _ in 0..2 {
        assert_eq!(app.call(reqwest::Method::GET, &format!("/api/apps/{app_id}/stats"), &token, None).await.status(), 200);
    }

    // Figures are added after each reply: wait for the last request's.
    let stats_route = [("method", "GET"), ("route", "/api/apps/{app}/stats")];
    let text = eventually(Duration::from_secs(10), "the stats requests in /metrics", || async {
        let text = metrics_text(&app).await;
        (sample(&text, "lvd_http_requests_total", &stats_route) == Some(2.0)).then_some(text)
    })
    .await;

    let logs = [("method", "POST"), ("route", "/api/logs")];
    assert_eq!(sample(&text, "lvd_http_requests_total", &[logs[0], logs[1], ("status", "202")]), Some(ingests), "{text}");
    assert_eq!(sample(&text, "lvd_http_request_duration_seconds_count", &logs), Some(ingests), "{text}");
    assert_eq!(sample(&text, "lvd_http_request_duration_seconds_bucket", &[logs[0], logs[1], ("le", "+Inf")]), Some(ingests), "{text}");
    let sum = sample(&text, "lvd_http_request_duration_seconds_sum", &logs).unwrap();
    assert!(sum > 0.0 && sum < ingests * 5.0, "latency sum {sum} for {ingests} ingests");
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(sample(&text, "lvd_http_requests_total", &unmatched), Some(1.0), "{text}");
    let sign_in = [("method", "POST"), ("route", "/auth/login"), ("status", "200")];
    assert_eq!(sample(&text, "lvd_http_requests_total", &sign_in), Some(1.0), "{text}");

    for (status, n) in [("valid", 3.0), ("invalid", 2.0), ("unplanned", 1.0), ("duplicate", 1.0)] {
        assert_eq!(sample(&text, "lvd_events_accepted_total", &[("status", status)]), Some(n), "{status}: {text}");
    }
    // The ingest key's app is read from the cache by every ingest after the first.
    let app_cache = |outcome| sample(&text, "lvd_cache_lookups_total", &[("cache", "app"), ("outcome", outcome)]);
    assert_eq!(app_cache("miss"), Some(1.0), "{text}");
    assert_eq!(app_cache("hit"), Some(ingests - 1.0), "{text}");
    let stats_reads = sample(&text, "lvd_cache_lookups_total", &[("cache", "stats")]);
    assert_eq!(stats_reads, Some(2.0), "{text}");

    for queue in ["email", "ingest", "jobs"] {
        assert!(sample(&text, "lvd_queue_depth", &[("queue", queue)]).is_some(), "no depth for {queue}: {text}");
        assert!(sample(&text, "lvd_queue_oldest_seconds", &[("queue", queue)]).is_some_and(|s| s >= 0.0));
        assert_eq!(sample(&text, "lvd_queue_dead_letters", &[("queue", queue)]), Some(0.0));
    }
    assert_eq!(sample(&text, "lvd_jobs", &[("kind", "export")]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "lvd_quarantined_rows", &[]), Some(0.0));
    assert!(sample(&text, "lvd_postgres_connections", &[]).is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, "lvd_dependency_up", &[("dependency", "redis")]), Some(1.0));
    assert_eq!(sample(&text, "lvd_dependency_up", &[("dependency", "postgres")]), Some(1.0));

    // Prometheus asks for OpenMetrics and gets it.
    let resp = app.client.get(app.url("/metrics")).header("accept", "application/openmetrics-text;version=1.0.0").send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(resp.text().await.unwrap().ends_with("# EOF\n"));
}

#[tokio::test]
async fn rate_limited_replies_are_counted_by_route() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_INGEST_BAD_KEYS_PER_IP".into(), "2".into()));
    let app = spawn_app_with(opts).await;

    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(app.ingest("not-a-key", &serde_json::json!({ "event": "x" })).await.status().as_u16());
        }
        out
    };
    let limited = statuses.iter().filter(|s| **s == 429).count() as f64;
    assert!(limited >= 1.0, "no 429 in {statuses:?}");

    let text = eventually(Duration::from_secs(10), "the refused ingests in /metrics", || async {
        let text = metrics_text(&app).await;
        let counted = sample(&text, "lvd_http_requests_total", &[("route", "/api/logs")]);
        (counted == Some(statuses.len() as f64)).then_some(text)
    })
    .await;
    let route = [("method", "POST"), ("route", "/api/logs")];
    assert_eq!(sample(&text, "lvd_rate_limited_replies_total", &route), Some(limited), "{statuses:?}: {text}");
    assert_eq!(sample(&text, "lvd_http_requests_total", &[route[0], route[1], ("status", "429")]), Some(limited));
}

#[tokio::test]
async fn metrics_off_loopback_need_the_token() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_METRICS_TOKEN".into(), "a-metrics-token-for-the-test".into()));
    let app = spawn_app_with(opts).await;
    let via_proxy = |token: Option<&str>| {
        let req = app.client.get(app.url("/metrics")).header("x-forwarded-for", "203.0.113.7");
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    };

    let resp = via_proxy(None).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(via_proxy(Some("a-metrics-token-for-the-tesT")).send().await.unwrap().status(), 401);
    let resp = via_proxy(Some("a-metrics-token-for-the-test")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("lvd_dependency_up"));
    assert_eq!(app.get("/metrics").await.status(), 200, "loopback without a proxy needs no token");
}

#[tokio::test]
async fn with_request_metrics_off_no_request_is_counted() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_REQUEST_METRICS".into(), "off".into()));
    let app = spawn_app_with(opts).await;
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    // The scrape itself would be counted too: a second scrape sees the first.
    metrics_text(&app).await;
    let text = metrics_text(&app).await;
    assert_eq!(sample(&text, "lvd_http_requests_total", &[]), None, "{text}");
    assert!(text.contains("# TYPE lvd_http_requests_total counter"));
}

#[tokio::test]
async fn every_reply_carries_a_request_id_and_a_valid_incoming_one_is_kept() {
    let app = spawn_app().await;

    let kept = app.client.get(app.url("/health")).header("x-request-id", "trace-42.a:b").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-42.a:b");
    let mut seen = std::collections::HashSet::new();
    for bad in ["has space", "quote\"d", &"x".repeat(200)] {
        let resp = app.client.get(app.url("/api/apps")).header("x-request-id", bad).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7, "{id}");
        assert!(seen.insert(id), "ids repeat");
    }
    let none = app.get("/no/such/page").await;
    assert!(none.headers().contains_key("x-request-id"));
}

/// The value of a Prometheus instant query's first result.
async fn query(prometheus: &str, expr: &str) -> Option<f64> {
    let url = format!("{prometheus}/api/v1/query");
    let resp = reqwest::Client::new().get(url).query(&[("query", expr)]).send().await.ok()?;
    let body: serde_json::Value = resp.json().await.ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Runs a binary Debian's `prometheus` package installs (script/setup's
/// `ensure_prometheus`), failing the test with that advice when it is missing.
fn prometheus_tool(name: &str) -> std::process::Command {
    let found = std::process::Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{name} is not installed: run script/setup's ensure_prometheus (script/test does)");
    std::process::Command::new(name)
}

#[tokio::test]
async fn prometheus_scrapes_the_app_and_the_worker_with_the_shipped_config_and_rules() {
    let app = spawn_app().await;
    let (_, key) = {
        let token = app.signed_in("prom@example.com").await;
        app.create_app(&token, "Scraped").await
    };
    let sent = 5;
    for i in 0..sent {
        app.ingest_ok(&key, &serde_json::json!({ "event": "page_view", "message_id": format!("p{i}") })).await;
    }
    app.wait_stored(sent).await;

    // The shipped files, pointed at this test's app and worker and scraping every second.
    let dir = TempDir::new();
    let root = repo_root().join("deploy/prometheus");
    let app_target = app.address.trim_start_matches("http://").to_owned();
    let worker_target = app.worker.as_ref().unwrap().address.trim_start_matches("http://").to_owned();
    let config = std::fs::read_to_string(root.join("prometheus.yml"))
        .unwrap()
        .replace("15s", "1s")
        .replace(r#"["127.0.0.1:3000"]"#, &format!(r#"["{app_target}"]"#))
        .replace(r#"["127.0.0.1:9100", "127.0.0.1:9101"]"#, &format!(r#"["{worker_target}"]"#));
    assert!(config.contains(&app_target) && config.contains(&worker_target), "the shipped targets moved: {config}");
    std::fs::write(dir.path.join("prometheus.yml"), &config).unwrap();
    std::fs::copy(root.join("alerts.yml"), dir.path.join("alerts.yml")).unwrap();
    for check in [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]] {
        let out = prometheus_tool("promtool").args(check).current_dir(&dir.path).output().unwrap();
        assert!(out.status.success(), "promtool {check:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    let port = free_port();
    let mut prometheus = prometheus_tool("prometheus")
        .arg("--config.file=prometheus.yml")
        .arg(format!("--storage.tsdb.path={}", dir.path.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(&dir.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = format!("http://127.0.0.1:{port}");
    let ingests = r#"sum(lvd_http_requests_total{method="POST",route="/api/logs",status="202"})"#;
    let found = eventually(Duration::from_secs(30), "Prometheus to scrape the ingests", || async {
        (query(&server, ingests).await == Some(sent as f64)).then_some(())
    })
    .await;
    let figures = [
        ("app up", query(&server, r#"up{job="lvd-app"}"#).await),
        ("worker up", eventually(Duration::from_secs(10), "the worker's scrape", || async { query(&server, r#"up{job="lvd-worker"}"#).await }).await.into()),
        ("unplanned events", query(&server, r#"lvd_events_accepted_total{status="unplanned"}"#).await),
        ("events stored by the worker", query(&server, "lvd_worker_events_stored_total").await),
        ("ingest p99 (s)", query(&server, r#"histogram_quantile(0.99, sum by (le) (lvd_http_request_duration_seconds_bucket{route="/api/logs"}))"#).await),
        ("email concurrency", query(&server, r#"lvd_worker_concurrency{queue="email"}"#).await),
    ];
    prometheus.kill().unwrap();
    let _ = prometheus.wait();
    println!("Prometheus read back: ingests {sent}, {figures:?}");
    let _ = found;
    assert_eq!(figures[0].1, Some(1.0));
    assert_eq!(figures[1].1, Some(1.0));
    assert_eq!(figures[2].1, Some(sent as f64));
    assert_eq!(figures[3].1, Some(sent as f64));
    assert!(figures[4].1.is_some_and(|p| p > 0.0 && p <= 10.0), "{figures:?}");
    assert!(figures[5].1.is_some_and(|n| n >= 1.0), "{figures:?}");
}

#[tokio::test]
async fn a_request_id_names_the_workers_lines_about_what_the_request_queued_and_the_local_runtimes_access_line() {
    let app = spawn_app().await;
    let token = app.signed_in("trace@example.com").await;
    let (app_id, _) = app.create_app(&token, "Traced").await;

    let export = serde_json::json!({ "from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "format": "ndjson" });
    let resp = app
        .client
        .post(app.url(&format!("/api/apps/{app_id}/exports")))
        .bearer_auth(&token)
        .header("x-request-id", "trace-export-7")
        .json(&export)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-request-id"], "trace-export-7");

    let worker = app.worker.as_ref().unwrap();
    let lines = eventually(Duration::from_secs(20), "the worker's lines about the export", || async {
        let lines: Vec<serde_json::Value> = worker
            .log()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l.to_string().contains("trace-export-7"))
            .collect();
        lines.iter().any(|l| l["message"] == "done").then_some(lines)
    })
    .await;
    assert!(lines.iter().any(|l| l["message"] == "producing"), "{lines:?}");
    // The local runtime writes an access line per request; Spin writes none.
    if let TestRuntime::Local(_) = test_runtime() {
        let access = app.runtime.log();
        assert!(
            access.iter().any(|l| l.contains("\"request_id\":\"trace-export-7\"") && l.contains("/exports")),
            "no access line names the request: {access:?}"
        );
    }
}
