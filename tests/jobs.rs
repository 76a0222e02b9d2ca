//! Reports and exports against real PostgreSQL, Redis, SMTP and the worker:
//! every row of the contract's jobs section, exports equal to the events of
//! their range (read back with a real CSV reader), the notify mail, the
//! per-user cap, expiry, a lost queue entry, and a worker killed mid-export.

use lvd_tests::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The product without a worker: jobs stay queued until a test starts one.
async fn without_worker(env: &[(&str, &str)]) -> TestApp {
    let mut opts = AppOptions::product();
    opts.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    spawn_with(opts).await
}

async fn worker(app: &TestApp, smtp: &TestSmtp, env: &[(&str, &str)]) -> TestWorker {
    TestWorker::start(&app.db, &app.redis, smtp.smtp_port, env).await
}

/// A user with an app holding valid, invalid and unplanned events, stored.
async fn app_with_events(app: &TestApp, email: &str) -> (String, String, String) {
    let token = app.signed_in(email).await;
    let (id, key) = app.create_app(&token, "Shop").await;
    app.put_rule(&token, &id, "pay", json!({"required": ["amount"], "properties": {"plan": {"enum": ["pro"]}}})).await;
    let reply = app
        .ingest_ok(
            &key,
            &json!({"batch": [
                {"event": "pay", "properties": {"amount": 1, "plan": "pro"}, "message_id": "+1-formula"},
                {"event": "pay", "properties": {"plan": "gold"}, "context": {"library": "ios, \"quoted\"\nsdk"}},
                {"event": "pay", "properties": {}, "timestamp": "2026-11-27T08:00:00Z"},
                {"event": "=HYPERLINK(\"http://evil\")", "properties": {"note": "-2"}},
                {"event": "open", "properties": {"a": [1, 2, {"b": null}]}},
            ]}),
        )
        .await;
    assert_eq!(reply["accepted"], 5);
    app.wait_stored(5).await;
    (token, id, key)
}

fn range() -> Value {
    let now = chrono::Utc::now();
    json!({"from": (now - chrono::Duration::hours(1)).to_rfc3339(), "to": (now + chrono::Duration::hours(1)).to_rfc3339()})
}

fn with(mut base: Value, extra: Value) -> Value {
    base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    base
}

async fn create(app: &TestApp, token: &str, path: &str, body: Value) -> String {
    let resp = app.call(Method::POST, path, token, Some(body)).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    assert_eq!(resp.headers()["location"].to_str().unwrap().len(), "/api/jobs/".len() + 36);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    body["job_id"].as_str().unwrap().to_owned()
}

async fn job(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    let resp = app.call(Method::GET, &format!("/api/jobs/{id}"), token, None).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    eventually(Duration::from_secs(60), &format!("job {id} to finish"), || async {
        let (status, body) = job(app, token, id).await;
        assert_eq!(status, 200, "{body}");
        matches!(body["status"].as_str(), Some("done" | "failed")).then_some(body)
    })
    .await
}

/// The file of a done job: its bytes, after checking the download's head.
async fn download(app: &TestApp, token: &str, job: &Value) -> Vec<u8> {
    assert_eq!(job["status"], "done", "{job}");
    let url = job["download_url"].as_str().unwrap();
    assert_eq!(url, format!("/api/jobs/{}/download", job["id"].as_str().unwrap()), "a path");
    let resp = app.call(Method::GET, url, token, None).await;
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=\"lvd-"), "{disposition}");
    let length: usize = resp.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(bytes.len(), length);
    assert_eq!(job["size"].as_u64(), Some(length as u64));
    bytes
}

/// `GET /api/logs` over a range, every page: the export's oracle.
async fn logged(app: &TestApp, token: &str, app_id: &str, query: &str) -> BTreeMap<String, Value> {
    let (mut out, mut cursor) = (BTreeMap::new(), String::new());
    loop {
        let path = format!("/api/logs?app={app_id}&limit=500{query}&cursor={cursor}");
        let body: Value = app.call(Method::GET, &path, token, None).await.json().await.unwrap();
        for item in body["items"].as_array().unwrap() {
            out.insert(item["id"].as_str().unwrap().to_owned(), item.clone());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

fn encoded(v: &Value) -> String {
    percent_encoding::utf8_percent_encode(v.as_str().unwrap(), percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An export's CSV, read back with a real CSV reader, as `GET /api/logs` items.
fn csv_items(bytes: &[u8]) -> BTreeMap<String, Value> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, ["id", "received_at", "timestamp", "event", "status", "rule_version", "message_id", "errors", "properties", "context"]);
    let text = |s: &str| if s.is_empty() { Value::Null } else { json!(s.strip_prefix('\'').filter(|r| r.starts_with(['=', '+', '-', '@', '\t', '\r'])).unwrap_or(s)) };
    let mut out = BTreeMap::new();
    for record in reader.records() {
        let r = record.unwrap();
        let parsed = |s: &str| if s.is_empty() { Value::Null } else { serde_json::from_str(s).unwrap() };
        let item = json!({
            "id": r[0], "received_at": r[1], "timestamp": text(&r[2]), "event": text(&r[3]), "status": r[4],
            "rule_version": if r[5].is_empty() { Value::Null } else { json!(r[5].parse::<i64>().unwrap()) },
            "message_id": text(&r[6]), "errors": parsed(&r[7]), "properties": parsed(&r[8]), "context": parsed(&r[9]),
        });
        out.insert(r[0].to_owned(), item);
    }
    out
}

fn ndjson_items(bytes: &[u8]) -> BTreeMap<String, Value> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "every line ends");
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).map(|v| (v["id"].as_str().unwrap().to_owned(), v)).collect()
}

#[tokio::test]
async fn a_job_is_queued_then_done_and_its_file_downloads_only_for_its_owner() {
    let app = without_worker(&[]).await;
    let smtp = TestSmtp::start().await;
    let (token, id, _) = {
        // Events need the worker to be stored: one runs for this part only.
        let mut w = worker(&app, &smtp, &[]).await;
        let setup = app_with_events(&app, "owner@example.com").await;
        w.kill().await;
        setup
    };
    let other = app.signed_in("other@example.com").await;
    let (others_app, _) = app.create_app(&other, "Theirs").await;

    // Input errors, as on every route.
    let path = format!("/api/apps/{id}/reports");
    let resp = app.call(Method::POST, &path, &token, Some(json!({"from": "yesterday", "format": "pdf", "notify": 1}))).await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    let pointers: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/from", "/to", "/format", "/notify"]);
    let resp = app.client.post(app.url(&path)).bearer_auth(&token).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    let resp = app.client.post(app.url(&path)).bearer_auth(&token).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = app.call(Method::POST, &format!("/api/apps/{id}/exports"), &token, Some(with(range(), json!({"format": "html", "status": "bad"})))).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(app.call(Method::GET, &path, &token, None).await.status(), 405);
    assert_eq!(app.call(Method::POST, &path, "forged", Some(with(range(), json!({"format": "json"})))).await.status(), 401);

    // Another user's app is 404, like one that does not exist.
    for app_id in [others_app.as_str(), "8d1f2a4e-0000-4000-8000-000000000000", "not-a-uuid"] {
        let resp = app.call(Method::POST, &format!("/api/apps/{app_id}/reports"), &token, Some(with(range(), json!({"format": "json"})))).await;
        assert_eq!(resp.status(), 404, "{app_id}");
    }

    let report = create(&app, &token, &path, with(range(), json!({"format": "json"}))).await;
    let (status, queued) = job(&app, &token, &report).await;
    assert_eq!(status, 200);
    assert_eq!((queued["kind"].as_str(), queued["status"].as_str()), (Some("report"), Some("queued")));
    assert_eq!((queued["download_url"].clone(), queued["finished_at"].clone(), queued["error"].clone()), (Value::Null, Value::Null, Value::Null));
    let resp = app.call(Method::GET, &format!("/api/jobs/{report}/download"), &token, None).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "job_not_ready");

    // Another user: 404 for the job and its file, exactly as for none.
    for path in [format!("/api/jobs/{report}"), format!("/api/jobs/{report}/download"), "/api/jobs/8d1f2a4e-0000-4000-8000-000000000000".into()] {
        let resp = app.call(Method::GET, &path, &other, None).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "not_found");
    }

    let _worker = worker(&app, &smtp, &[]).await;
    let done = finished(&app, &token, &report).await;
    assert!(done["finished_at"].as_str().unwrap().ends_with('Z'));
    assert!(done["expires_at"].as_str().unwrap() > done["finished_at"].as_str().unwrap());
    let body: Value = serde_json::from_slice(&download(&app, &token, &done).await).unwrap();
    assert_eq!(body["totals"], json!({"valid": 1, "invalid": 2, "unplanned": 2, "total": 5}));
    assert_eq!(body["by_event"][0], json!({"event": "pay", "valid": 1, "invalid": 2, "unplanned": 0}));
    assert_eq!(body["rules"][0]["event"], "pay");
    assert_eq!(body["rules"][0]["version"], 1);
    let errors: Vec<(&str, &str, u64)> =
        body["top_errors"].as_array().unwrap().iter().map(|e| (e["pointer"].as_str().unwrap(), e["keyword"].as_str().unwrap(), e["count"].as_u64().unwrap())).collect();
    assert_eq!(errors, [("/amount", "required", 2), ("/plan", "enum", 1)]);
    let points = body["series"]["points"].as_array().unwrap();
    assert_eq!(body["series"]["bucket"], "hour");
    assert_eq!(points.iter().map(|p| p["valid"].as_u64().unwrap() + p["invalid"].as_u64().unwrap() + p["unplanned"].as_u64().unwrap()).sum::<u64>(), 5);
}

#[tokio::test]
async fn an_export_holds_exactly_the_events_of_its_range_and_filters() {
    let app = spawn_app().await;
    let (token, id, _) = app_with_events(&app, "export@example.com").await;
    let path = format!("/api/apps/{id}/exports");
    let r = range();
    let q = format!("&since={}&until={}", encoded(&r["from"]), encoded(&r["to"]));
    let all = logged(&app, &token, &id, &q).await;
    assert_eq!(all.len(), 5);

    for format in ["csv", "ndjson"] {
        let parse = if format == "csv" { csv_items } else { ndjson_items };
        for (filters, query) in [
            (json!({}), String::new()),
            // null filters are left out (openapi.yaml): every event.
            (json!({"status": null, "event": null}), String::new()),
            (json!({"status": "invalid"}), "&status=invalid".to_owned()),
            (json!({"event": "=HYPERLINK(\"http://evil\")"}), format!("&event={}", encode("=HYPERLINK(\"http://evil\")"))),
            (json!({"status": "valid", "event": "open"}), "&status=valid&event=open".to_owned()),
        ] {
            let job_id = create(&app, &token, &path, with(with(r.clone(), json!({"format": format})), filters.clone())).await;
            let done = finished(&app, &token, &job_id).await;
            let file = download(&app, &token, &done).await;
            let exported = parse(&file);
            let expected = logged(&app, &token, &id, &format!("{q}{query}")).await;
            assert_eq!(exported, expected, "{format} {filters}");
            if format == "csv" {
                let text = String::from_utf8(file).unwrap();
                assert!(text.contains("'=HYPERLINK") || expected.is_empty() || !filters.to_string().contains("HYPER"), "a formula is neutralised");
                assert!(!text.contains(",=HYPERLINK"), "no cell starts with a formula");
                assert!(text.ends_with("\r\n"), "records end with CRLF");
            }
        }
        // An empty range: the header alone, or nothing.
        let empty = json!({"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z", "format": format});
        let done = finished(&app, &token, &create(&app, &token, &path, empty).await).await;
        let file = download(&app, &token, &done).await;
        assert!(parse(&file).is_empty());
        let expected: &[u8] = if format == "csv" { b"id,received_at,timestamp,event,status,rule_version,message_id,errors,properties,context\r\n" } else { b"" };
        assert_eq!(file, expected);
    }
}

#[tokio::test]
async fn reports_come_as_csv_and_html_and_the_owner_is_mailed_when_asked() {
    let app = spawn_app().await;
    let (token, id, _) = app_with_events(&app, "report@example.com").await;
    let path = format!("/api/apps/{id}/reports");

    let csv_job = create(&app, &token, &path, with(range(), json!({"format": "csv"}))).await;
    let file = download(&app, &token, &finished(&app, &token, &csv_job).await).await;
    let mut reader = csv::Reader::from_reader(file.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let totals: Vec<(&str, &str)> = rows.iter().filter(|r| &r[0] == "totals").map(|r| (r.get(2).unwrap(), r.get(3).unwrap())).collect();
    assert_eq!(totals, [("valid", "1"), ("invalid", "2"), ("unplanned", "2")]);
    assert!(rows.iter().any(|r| &r[0] == "event" && &r[1] == "'=HYPERLINK(\"http://evil\")"), "formulas neutralised");

    let html_job = create(&app, &token, &path, with(range(), json!({"format": "html", "notify": true}))).await;
    let done = finished(&app, &token, &html_job).await;
    let resp = app.call(Method::GET, done["download_url"].as_str().unwrap(), &token, None).await;
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(resp.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));
    let page = resp.text().await.unwrap();
    assert!(page.contains("<svg") && page.contains("Top errors") && page.contains("/amount"));
    for external in [" src=", " href=", "url(", "@import"] {
        assert!(!page.contains(external), "self-contained: {external}");
    }
    assert!(!page.contains("=HYPERLINK(\"http"), "every value escaped");

    let mail = app.smtp().wait_for("report@example.com", 1, Duration::from_secs(30)).await;
    assert!(mail.subject.contains("report") && mail.subject.contains("ready"), "{}", mail.subject);
    assert!(mail.text.contains(&format!("/api/jobs/{html_job}/download")), "{}", mail.text);
    assert!(mail.text.contains("/dashboard"), "{}", mail.text);
    // Only the job that asked is mailed (the CSV one finished first).
    assert_eq!(app.smtp().to("report@example.com").await.len(), 1);
}

#[tokio::test]
async fn a_user_has_at_most_the_cap_of_unfinished_jobs_and_lost_entries_are_found() {
    let app = without_worker(&[("SPIN_VARIABLE_JOBS_MAX_UNFINISHED", "2")]).await;
    let token = app.signed_in("cap@example.com").await;
    let (id, _) = app.create_app(&token, "Shop").await;
    let path = format!("/api/apps/{id}/exports");
    let body = with(range(), json!({"format": "ndjson"}));
    let (a, b) = tokio::join!(create(&app, &token, &path, body.clone()), create(&app, &token, &path, body.clone()));
    let resp = app.call(Method::POST, &path, &token, Some(body.clone())).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(resp.headers().contains_key("ratelimit-remaining"));
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "rate_limited");

    // Both entries lost (Redis emptied of the queue): the worker finds the
    // jobs by their rows and produces them.
    app.redis_cmd(&["DEL", lvd::keys::JOB_QUEUE]).await;
    let smtp = TestSmtp::start().await;
    let _w = worker(&app, &smtp, &[("LVD_WORKER_JOB_STALE_SECS", "1"), ("LVD_WORKER_JOB_UPKEEP_MS", "200")]).await;
    for job_id in [a, b] {
        assert_eq!(finished(&app, &token, &job_id).await["status"], "done");
    }
    // Finished jobs leave the cap.
    create(&app, &token, &path, body).await;
}

#[tokio::test]
async fn an_expired_file_is_deleted_and_its_download_is_gone() {
    let app = without_worker(&[]).await;
    let smtp = TestSmtp::start().await;
    let _w = worker(&app, &smtp, &[("LVD_WORKER_JOB_UPKEEP_MS", "200")]).await;
    let token = app.signed_in("expiry@example.com").await;
    let (id, _) = app.create_app(&token, "Shop").await;
    let job_id = create(&app, &token, &format!("/api/apps/{id}/exports"), with(range(), json!({"format": "csv"}))).await;
    let done = finished(&app, &token, &job_id).await;
    let days = (chrono::DateTime::parse_from_rfc3339(done["expires_at"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(done["finished_at"].as_str().unwrap()).unwrap())
    .num_hours();
    assert_eq!(days, 7 * 24, "kept 7 days by default");

    let db = app.db.client().await;
    db.execute("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = $1::text::uuid", &[&job_id]).await.unwrap();
    eventually(Duration::from_secs(20), "the worker to delete the file", || async {
        let n: i64 = db.query_one("SELECT count(*) FROM job_files", &[]).await.unwrap().get(0);
        (n == 0).then_some(())
    })
    .await;
    let (_, gone) = job(&app, &token, &job_id).await;
    assert_eq!((gone["status"].as_str(), gone["download_url"].clone()), (Some("done"), Value::Null));
    let resp = app.call(Method::GET, &format!("/api/jobs/{job_id}/download"), &token, None).await;
    assert_eq!(resp.status(), 410);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "job_expired");
}

#[tokio::test]
async fn a_job_that_can_never_succeed_ends_failed_with_a_readable_error_and_the_owner_is_told() {
    let app = without_worker(&[]).await;
    let smtp = TestSmtp::start().await;
    let token = app.signed_in("poison@example.com").await;
    let (id, _) = app.create_app(&token, "Shop").await;
    let job_id = create(&app, &token, &format!("/api/apps/{id}/reports"), with(range(), json!({"format": "html", "notify": true}))).await;
    // A row this version cannot read (as if written by another): it can never be produced.
    let db = app.db.client().await;
    db.execute("UPDATE jobs SET params = params || '{\"from\": \"not a time\"}' WHERE id = $1::text::uuid", &[&job_id]).await.unwrap();

    let _w = worker(&app, &smtp, &[]).await;
    let failed = finished(&app, &token, &job_id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "the job cannot be produced: unreadable from");
    assert_eq!(failed["download_url"], Value::Null);
    let resp = app.call(Method::GET, &format!("/api/jobs/{job_id}/download"), &token, None).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "job_failed");
    let mail = smtp.wait_for("poison@example.com", 1, Duration::from_secs(30)).await;
    assert!(mail.subject.contains("failed") && mail.text.contains("unreadable from"), "{} / {}", mail.subject, mail.text);
    // Failed jobs leave the cap, and their queue entry is settled.
    eventually(Duration::from_secs(10), "the entry to be acknowledged", || async {
        match app.redis_cmd(&["XLEN", lvd::keys::JOB_QUEUE]).await {
            redis::Value::Int(0) => Some(()),
            _ => None,
        }
    })
    .await;
}

/// `n` events of `app` straight into `log_entries` (the minutes before now).
async fn many_events(app: &TestApp, app_id: &str, n: i64) {
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO log_entries (id, app_id, event, status, properties, received_at) \
             SELECT gen_random_uuid(), $1::text::uuid, 'page_view', 'unplanned', jsonb_build_object('n', n, 'path', '/some/page/' || n), \
                    now() - make_interval(secs => (n / 1000.0)::double precision) \
             FROM generate_series(1, $2::bigint) AS n",
            &[&app_id, &n],
        )
        .await
        .unwrap();
}

async fn running(app: &TestApp, token: &str, job_id: &str) {
    eventually(Duration::from_secs(20), "the worker to start the export", || async {
        (job(app, token, job_id).await.1["status"] == "running").then_some(())
    })
    .await;
}

/// The CSV's event ids, each once.
fn csv_ids(file: &[u8]) -> std::collections::HashSet<String> {
    let mut reader = csv::Reader::from_reader(file);
    let mut ids = std::collections::HashSet::new();
    for record in reader.records() {
        assert!(ids.insert(record.unwrap()[0].to_owned()), "each event once");
    }
    ids
}

#[tokio::test]
async fn a_worker_killed_mid_export_leaves_the_job_to_another_which_ends_it_done_once_and_whole() {
    const EVENTS: i64 = 400_000;
    let app = without_worker(&[]).await;
    let smtp = TestSmtp::start().await;
    let token = app.signed_in("kill@example.com").await;
    let (id, _) = app.create_app(&token, "Big").await;
    many_events(&app, &id, EVENTS).await;
    let db = app.db.client().await;
    let job_id = create(&app, &token, &format!("/api/apps/{id}/exports"), with(range(), json!({"format": "csv"}))).await;

    let mut first = worker(&app, &smtp, &[]).await;
    running(&app, &token, &job_id).await;
    first.kill().await;
    let (_, after_kill) = job(&app, &token, &job_id).await;
    assert_eq!(after_kill["status"], "running", "killed mid-export");
    let parts: i64 = db.query_one("SELECT count(*) FROM job_files", &[]).await.unwrap().get(0);
    assert_eq!(parts, 0, "nothing of the dead worker's file remains");

    let _second = worker(&app, &smtp, &[]).await;
    let done = eventually(Duration::from_secs(120), "the export to finish", || async {
        let (_, body) = job(&app, &token, &job_id).await;
        (body["status"] != "running" && body["status"] != "queued").then_some(body)
    })
    .await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(csv_ids(&download(&app, &token, &done).await).len() as i64, EVENTS, "every event");
    let row = db.query_one("SELECT attempts, file_parts FROM jobs WHERE id = $1::text::uuid", &[&job_id]).await.unwrap();
    let (attempts, file_parts): (i32, i32) = (row.get(0), row.get(1));
    assert_eq!(attempts, 2, "started twice, produced once");
    let stored: i64 = db.query_one("SELECT count(*) FROM job_files", &[]).await.unwrap().get(0);
    assert_eq!(stored, i64::from(file_parts));
}

#[tokio::test]
async fn sigterm_lets_the_export_in_flight_finish_before_the_worker_exits() {
    const EVENTS: i64 = 300_000;
    let app = without_worker(&[]).await;
    let smtp = TestSmtp::start().await;
    let token = app.signed_in("term@example.com").await;
    let (id, _) = app.create_app(&token, "Big").await;
    many_events(&app, &id, EVENTS).await;
    let job_id = create(&app, &token, &format!("/api/apps/{id}/exports"), with(range(), json!({"format": "ndjson"}))).await;

    let mut w = worker(&app, &smtp, &[]).await;
    running(&app, &token, &job_id).await;
    let pid = nix::unistd::Pid::from_raw(w.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), w.child.wait()).await.expect("the worker exits").unwrap();
    assert!(exit.success(), "{exit:?}");
    let (_, done) = job(&app, &token, &job_id).await;
    assert_eq!(done["status"], "done", "finished before exiting: {done}");
    assert_eq!(ndjson_items(&download(&app, &token, &done).await).len() as i64, EVENTS);
}
