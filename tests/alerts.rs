//! Alerts against real PostgreSQL, Redis, SMTP, the worker and a webhook
//! receiver on loopback (allowed by the operator variable): the routes of
//! the contract, each kind driven across its threshold and back with the
//! firing and the resolution read from SMTP and from the receiver (the
//! signature verified), two workers sending one notification, a worker
//! killed between deciding and sending, and webhooks to addresses that are
//! not allowed refused at creation and never contacted.
//!
//! The worker evaluates every second here (`LVD_ALERT_INTERVAL_MS`): the
//! interval is shortened, not the logic. Where a condition depends on time
//! passing (a day of usual volume, an event last seen long ago, a name first
//! seen a window ago), the test writes the counters or the known names as
//! that time would have left them.

use lvd_tests::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The receiver listens on 127.0.0.1, which the operator allows; 127.0.0.2
/// is loopback too, and not allowed.
const ALLOWED: &str = "127.0.0.1";

fn worker_env() -> Vec<(&'static str, &'static str)> {
    vec![("LVD_ALERT_INTERVAL_MS", "1000"), ("LVD_ALERT_WEBHOOK_ALLOW_HOSTS", ALLOWED)]
}

/// The product with the operator's allow list and no worker yet.
async fn product() -> (TestApp, TestSmtp) {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_ALERT_WEBHOOK_ALLOW_HOSTS".into(), ALLOWED.into()));
    (spawn_with(opts).await, TestSmtp::start().await)
}

async fn worker(app: &TestApp, smtp: &TestSmtp, extra: &[(&str, &str)]) -> TestWorker {
    let mut env = worker_env();
    env.extend_from_slice(extra);
    TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &env).await
}

async fn create_alert(app: &TestApp, token: &str, app_id: &str, body: Value) -> Value {
    let resp = app.call(Method::POST, &format!("/api/apps/{app_id}/alerts"), token, Some(body)).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

async fn alert_state(app: &TestApp, token: &str, app_id: &str, id: &str) -> Value {
    let resp = app.call(Method::GET, &format!("/api/apps/{app_id}/alerts/{id}"), token, None).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn history(app: &TestApp, token: &str, app_id: &str, id: &str) -> Vec<Value> {
    let resp = app.call(Method::GET, &format!("/api/apps/{app_id}/alerts/{id}/history"), token, None).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

/// Waits until the worker has evaluated the alert at least once.
async fn evaluated(app: &TestApp, token: &str, app_id: &str, id: &str) -> Value {
    eventually(Duration::from_secs(30), "the alert's first evaluation", || async {
        let a = alert_state(app, token, app_id, id).await;
        a["evaluated_at"].is_string().then_some(a)
    })
    .await
}

/// The webhook deliveries (answered 2xx) for `alert` the receiver got,
/// each checked: its signature with `secret`, its delivery id, and the
/// contract's fields.
fn webhooks(receiver: &TestReceiver, alert: &str, secret: &str) -> Vec<Value> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.json()["alert"] == alert && (200..300).contains(&r.status))
        .map(|r| {
            let signature = r.header("x-lvd-signature").expect("a signature header");
            assert!(lvd::webhook::verify(secret.as_bytes(), &r.body, signature), "the signature does not verify: {signature}");
            assert!(r.header("x-lvd-delivery").is_some_and(|d| d.parse::<uuid::Uuid>().is_ok()));
            assert_eq!(r.header("content-type"), Some("application/json"));
            let body = r.json();
            for field in ["alert", "app", "kind", "state", "at", "value", "threshold"] {
                assert!(body.get(field).is_some(), "{field} missing from {body}");
            }
            body
        })
        .collect()
}

/// Waits for the `n`th webhook delivery of `alert` and the `mail`th mail to
/// `owner`; both must come within 60 s of `since` (the crossing). Returns
/// the webhook body and the mail, and prints how long each took.
async fn notified(app_smtp: &TestSmtp, receiver: &TestReceiver, owner: &str, alert: &Value, (n, mail): (usize, usize), since: Instant) -> (Value, Mail) {
    let (id, secret) = (alert["id"].as_str().unwrap(), alert["webhook_secret"].as_str().unwrap());
    let hook = eventually(Duration::from_secs(60), &format!("webhook #{n} of {id}"), || async {
        let got = webhooks(receiver, id, secret);
        (got.len() >= n).then(|| got[n - 1].clone())
    })
    .await;
    let hook_secs = since.elapsed().as_secs_f64();
    let mail = app_smtp.wait_for(owner, mail, Duration::from_secs(60).saturating_sub(since.elapsed())).await;
    eprintln!("alert {} {}: webhook after {hook_secs:.2} s, mail after {:.2} s", alert["kind"], hook["state"], since.elapsed().as_secs_f64());
    (hook, mail)
}

async fn ingest_many(app: &TestApp, key: &str, event: &str, properties: Value, n: usize) {
    let batch: Vec<Value> = (0..n).map(|_| json!({"event": event, "properties": properties})).collect();
    for chunk in batch.chunks(100) {
        app.ingest_ok(key, &json!({ "batch": chunk })).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_routes_follow_the_contract() {
    let (app, _smtp) = product().await;
    let token = app.signed_in("owner@alerts.example").await;
    let (app_id, _) = app.create_app(&token, "Shop").await;
    let path = format!("/api/apps/{app_id}/alerts");

    // Defaults, Location, and no secret without a webhook.
    let resp = app.call(Method::POST, &path, &token, Some(json!({"kind": "violation_rate"}))).await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let a: Value = resp.json().await.unwrap();
    assert_eq!(location, format!("{path}/{}", a["id"].as_str().unwrap()));
    assert_eq!((&a["threshold"], &a["window"], &a["min_events"], &a["email"], &a["enabled"], &a["state"]), (&json!(0.1), &json!("15m"), &json!(10), &json!(true), &json!(true), &json!("ok")));
    assert!(a.get("webhook_secret").is_none());

    // A webhook's secret is shown once, at creation, and never read back.
    let receiver = TestReceiver::start(ALLOWED).await;
    let b = create_alert(&app, &token, &app_id, json!({"kind": "event_missing", "event": "heartbeat", "window": "5m", "webhook_url": format!("{}/hook", receiver.url)})).await;
    let secret = b["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() == 6 + 64, "{secret}");
    assert_eq!(b["threshold"], 300.0, "event_missing's threshold is its window");
    let b_path = format!("{path}/{}", b["id"].as_str().unwrap());
    let read = alert_state(&app, &token, &app_id, b["id"].as_str().unwrap()).await;
    assert!(read.get("webhook_secret").is_none() && !read.to_string().contains(&secret));

    // The list: newest first, paged.
    let resp = app.call(Method::GET, &format!("{path}?limit=1"), &token, None).await;
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], b["id"]);
    let cursor = page["next_cursor"].as_str().expect("a second page").to_owned();
    let resp = app.call(Method::GET, &format!("{path}?limit=1&cursor={cursor}"), &token, None).await;
    let page: Value = resp.json().await.unwrap();
    assert_eq!((page["items"][0]["id"].clone(), page["next_cursor"].clone()), (a["id"].clone(), Value::Null));

    // PATCH: what it names changes; a new webhook URL gets a new secret.
    let resp = app.call(Method::PATCH, &b_path, &token, Some(json!({"enabled": false, "window": "1h"}))).await;
    assert_eq!(resp.status(), 200);
    let patched: Value = resp.json().await.unwrap();
    assert_eq!((&patched["enabled"], &patched["window"], &patched["threshold"], &patched["event"]), (&json!(false), &json!("1h"), &json!(3600.0), &json!("heartbeat")));
    assert!(patched.get("webhook_secret").is_none(), "the same URL keeps its secret");
    let resp = app.call(Method::PATCH, &b_path, &token, Some(json!({"webhook_url": format!("{}/other", receiver.url)}))).await;
    let patched: Value = resp.json().await.unwrap();
    assert!(patched["webhook_secret"].as_str().is_some_and(|s| s != secret), "{patched}");

    // 422 with a pointer for each bad field.
    for (body, pointers) in [
        (json!({}), vec!["/kind"]),
        (json!({"kind": "often"}), vec!["/kind"]),
        (json!({"kind": "violation_rate", "threshold": 2, "window": "2h", "min_events": -1, "email": "yes"}), vec!["/threshold", "/window", "/min_events", "/email"]),
        (json!({"kind": "event_missing"}), vec!["/event"]),
        (json!({"kind": "new_unplanned", "threshold": 0.5}), vec!["/threshold"]),
        (json!({"kind": "volume_drop", "webhook_url": "ftp://example.com/x"}), vec!["/webhook_url"]),
    ] {
        let resp = app.call(Method::POST, &path, &token, Some(body.clone())).await;
        assert_eq!(resp.status(), 422, "{body}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        let mut got: Vec<&str> = problem["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
        got.sort_unstable();
        let mut want = pointers.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{body}: {problem}");
    }
    let resp = app.client.post(app.url(&path)).bearer_auth(&token).header("content-type", "application/json").body("{nope").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = app.call(Method::PATCH, &b_path, &token, Some(json!({"kind": "violation_rate", "threshold": -0.5}))).await;
    assert_eq!(resp.status(), 422);

    // Another user's app and alert are 404 on every route, as if missing.
    let other = app.signed_in("other@alerts.example").await;
    let (other_app, _) = app.create_app(&other, "Theirs").await;
    for (method, p) in [
        (Method::GET, b_path.clone()),
        (Method::PATCH, b_path.clone()),
        (Method::DELETE, b_path.clone()),
        (Method::GET, format!("{b_path}/history")),
        (Method::GET, path.clone()),
        (Method::POST, path.clone()),
        (Method::GET, format!("/api/apps/{other_app}/alerts/{}", b["id"].as_str().unwrap())),
    ] {
        let resp = app.call(method.clone(), &p, &other, Some(json!({"kind": "violation_rate"}))).await;
        assert_eq!(resp.status(), 404, "{method} {p}");
    }
    assert_eq!(app.call(Method::GET, &format!("{path}/not-a-uuid"), &token, None).await.status(), 404);

    assert!(history(&app, &token, &app_id, b["id"].as_str().unwrap()).await.is_empty());
    assert_eq!(app.call(Method::DELETE, &b_path, &token, None).await.status(), 204);
    assert_eq!(app.call(Method::GET, &b_path, &token, None).await.status(), 404);
    assert_eq!(app.call(Method::DELETE, &b_path, &token, None).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_to_addresses_not_allowed_are_refused_at_creation_and_never_contacted() {
    let (app, smtp) = product().await;
    let _worker = worker(&app, &smtp, &[]).await;
    let token = app.signed_in("owner@alerts.example").await;
    let (app_id, _) = app.create_app(&token, "Shop").await;
    // Loopback, but not the allowed address.
    let receiver = TestReceiver::start("127.0.0.2").await;
    let port = receiver.url.rsplit(':').next().unwrap().to_owned();
    for url in [
        receiver.url.clone(),
        format!("https://127.0.0.2:{port}/hook"),
        format!("https://localhost:{port}/hook"),
        "https://10.0.0.7/hook".to_owned(),
        "https://192.168.1.1/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/hook".to_owned(),
        "https://[fd00:ec2::254]/hook".to_owned(),
        "http://example.com/hook".to_owned(),
        "https://user:pass@example.com/hook".to_owned(),
    ] {
        let resp = app.call(Method::POST, &format!("/api/apps/{app_id}/alerts"), &token, Some(json!({"kind": "new_unplanned", "webhook_url": url}))).await;
        assert_eq!(resp.status(), 422, "{url}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["errors"][0]["pointer"], "/webhook_url", "{url}: {problem}");
    }
    // Nor through PATCH.
    let a = create_alert(&app, &token, &app_id, json!({"kind": "new_unplanned"})).await;
    let resp = app
        .call(Method::PATCH, &format!("/api/apps/{app_id}/alerts/{}", a["id"].as_str().unwrap()), &token, Some(json!({"webhook_url": format!("https://127.0.0.2:{port}/")})))
        .await;
    assert_eq!(resp.status(), 422);
    // The worker checks again when it sends: a stored URL whose address is
    // not allowed (the allow list changed, say) is refused, recorded, and
    // never contacted.
    let (shop, key) = app.create_app(&token, "Guarded").await;
    app.put_rule(&token, &shop, "pay", json!({"required": ["amount"]})).await;
    let guarded = create_alert(&app, &token, &shop, json!({"kind": "violation_rate", "min_events": 1, "email": false})).await;
    let db = app.db.client().await;
    db.execute(
        "UPDATE alerts SET webhook_url = $1, webhook_secret = 'whsec_x' WHERE id = $2",
        &[&format!("https://127.0.0.2:{port}/hook"), &guarded["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()],
    )
    .await
    .unwrap();
    ingest_many(&app, &key, "pay", json!({}), 2).await;
    let error: String = eventually(Duration::from_secs(30), "a refused delivery attempt", || async {
        db.query_opt("SELECT error FROM alert_deliveries", &[]).await.unwrap().map(|r| r.get(0))
    })
    .await;
    assert!(error.contains("127.0.0.2") || error.contains("not allowed") || error.contains("loopback"), "{error}");
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_fires_and_resolves_by_email_and_a_signed_webhook_within_a_minute() {
    let (app, smtp) = product().await;
    let _worker = worker(&app, &smtp, &[]).await;
    let owner = "owner@alerts.example";
    let token = app.signed_in(owner).await;
    let receiver = TestReceiver::start(ALLOWED).await;
    let hook = format!("{}/hook", receiver.url);
    let mut mails = 0;

    // violation_rate: 6 invalid of 10 judged is above 0.5; 6 of 20 is not.
    // The first delivery answers 500: it is retried, and both attempts are recorded.
    let (app_id, key) = app.create_app(&token, "Rates").await;
    app.put_rule(&token, &app_id, "pay", json!({"required": ["amount"]})).await;
    let alert = create_alert(&app, &token, &app_id, json!({"kind": "violation_rate", "threshold": 0.5, "min_events": 4, "window": "5m", "webhook_url": hook})).await;
    let id = alert["id"].as_str().unwrap();
    ingest_many(&app, &key, "pay", json!({"amount": 1}), 4).await;
    assert_eq!(evaluated(&app, &token, &app_id, id).await["state"], "ok");
    receiver.answer_with(&[500]);
    ingest_many(&app, &key, "pay", json!({}), 6).await;
    let crossed = Instant::now();
    let (body, mail) = notified(&smtp, &receiver, owner, &alert, (1, mails + 1), crossed).await;
    mails += 1;
    assert_eq!((&body["state"], &body["kind"], &body["value"], &body["threshold"]), (&json!("firing"), &json!("violation_rate"), &json!(0.6), &json!(0.5)));
    assert_eq!(body["app"], app_id);
    assert!(mail.subject.contains("FIRING") && mail.text.contains("0.6") && mail.text.contains(&format!("#app={app_id}")), "{}\n{}", mail.subject, mail.text);
    // The worker records the attempt the receiver just answered, then commits.
    let db = app.db.client().await;
    let deliveries: Vec<Option<i32>> = eventually(Duration::from_secs(10), "both attempts recorded", || async {
        let rows = db.query("SELECT http_status FROM alert_deliveries ORDER BY attempt", &[]).await.unwrap();
        (rows.len() >= 2).then(|| rows.iter().map(|r| r.get(0)).collect())
    })
    .await;
    assert_eq!(deliveries, [Some(500), Some(200)], "the failed attempt, then the retry");
    ingest_many(&app, &key, "pay", json!({"amount": 2}), 10).await;
    let (body, mail) = notified(&smtp, &receiver, owner, &alert, (2, mails + 1), Instant::now()).await;
    mails += 1;
    assert_eq!((&body["state"], &body["value"]), (&json!("resolved"), &json!(0.3)));
    assert!(mail.subject.contains("RESOLVED"));
    let h = history(&app, &token, &app_id, id).await;
    assert_eq!(h.iter().map(|c| c["state"].as_str().unwrap()).collect::<Vec<_>>(), ["resolved", "firing"], "newest first");
    assert_eq!((&h[1]["value"], &h[1]["threshold"]), (&json!(0.6), &json!(0.5)));

    // volume_drop: a day at 2,880 events an hour, then none in the window.
    let (app_id, key) = app.create_app(&token, "Volume").await;
    let hour = chrono::Utc::now().timestamp().div_euclid(3600);
    for h in hour - 24..hour {
        let bucket = format!("lvd:stats:{app_id}:h:{h}");
        app.redis_cmd(&["HINCRBY", &bucket, r#"["c","valid","pay"]"#, "2880"]).await;
        app.redis_cmd(&["EXPIRE", &bucket, "90000"]).await;
    }
    let alert = create_alert(&app, &token, &app_id, json!({"kind": "volume_drop", "window": "5m", "webhook_url": hook})).await;
    let (body, _) = notified(&smtp, &receiver, owner, &alert, (1, mails + 1), Instant::now()).await;
    mails += 1;
    assert_eq!((&body["state"], &body["value"], &body["threshold"]), (&json!("firing"), &json!(0.0), &json!(0.5)));
    // 0.8 a second over at most 300 s is at most 240 expected: 130 is over half.
    ingest_many(&app, &key, "pay", json!({}), 130).await;
    let (body, _) = notified(&smtp, &receiver, owner, &alert, (2, mails + 1), Instant::now()).await;
    mails += 1;
    assert_eq!(body["state"], "resolved");
    assert!(body["value"].as_f64().unwrap() >= 0.5, "{body}");

    // event_missing: last seen ten minutes ago, then it arrives.
    let (app_id, key) = app.create_app(&token, "Heartbeat").await;
    let ten_minutes_ago = (chrono::Utc::now().timestamp_millis() - 600_000).to_string();
    app.redis_cmd(&["HSET", &format!("lvd:stats:{app_id}:seen"), "heartbeat", &ten_minutes_ago]).await;
    let alert = create_alert(&app, &token, &app_id, json!({"kind": "event_missing", "event": "heartbeat", "window": "5m", "webhook_url": hook})).await;
    let (body, mail) = notified(&smtp, &receiver, owner, &alert, (1, mails + 1), Instant::now()).await;
    mails += 1;
    assert_eq!((&body["state"], &body["threshold"]), (&json!("firing"), &json!(300.0)));
    assert!(body["value"].as_f64().unwrap() >= 600.0, "{body}");
    assert!(mail.subject.contains("heartbeat"), "{}", mail.subject);
    ingest_many(&app, &key, "heartbeat", json!({}), 1).await;
    let (body, _) = notified(&smtp, &receiver, owner, &alert, (2, mails + 1), Instant::now()).await;
    mails += 1;
    assert_eq!(body["state"], "resolved");

    // new_unplanned: a name sent before the alert is not new; a new one fires.
    let (app_id, key) = app.create_app(&token, "Names").await;
    ingest_many(&app, &key, "known_thing", json!({}), 1).await;
    let alert = create_alert(&app, &token, &app_id, json!({"kind": "new_unplanned", "window": "5m", "webhook_url": hook})).await;
    let id = alert["id"].as_str().unwrap();
    evaluated(&app, &token, &app_id, id).await;
    ingest_many(&app, &key, "known_thing", json!({}), 3).await;
    ingest_many(&app, &key, "brand_new", json!({}), 1).await;
    let (body, mail) = notified(&smtp, &receiver, owner, &alert, (1, mails + 1), Instant::now()).await;
    mails += 1;
    assert_eq!((&body["state"], &body["value"], &body["events"]), (&json!("firing"), &json!(1.0), &json!(["brand_new"])));
    assert!(mail.text.contains("brand_new"));
    // A window later (the name's first sighting moved back by one), it resolves.
    app.db.client().await.execute("UPDATE app_event_names SET first_seen = first_seen - interval '5 minutes'", &[]).await.unwrap();
    let (body, _) = notified(&smtp, &receiver, owner, &alert, (2, mails + 1), Instant::now()).await;
    mails += 1;
    assert_eq!((&body["state"], &body["value"]), (&json!("resolved"), &json!(0.0)));

    assert_eq!(smtp.to(owner).await.len(), mails, "one mail per change");
}

/// An app whose every event breaks its rule, with a violation-rate alert
/// mailing its owner and posting to a receiver: it fires at its next
/// evaluation.
async fn breaking_shop(app: &TestApp, token: &str) -> (TestReceiver, Value) {
    let receiver = TestReceiver::start(ALLOWED).await;
    let (app_id, key) = app.create_app(token, "Shop").await;
    app.put_rule(token, &app_id, "pay", json!({"required": ["amount"]})).await;
    let alert = create_alert(app, token, &app_id, json!({"kind": "violation_rate", "threshold": 0.5, "min_events": 1, "webhook_url": format!("{}/hook", receiver.url)})).await;
    ingest_many(app, &key, "pay", json!({}), 3).await;
    (receiver, alert)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_send_one_notification_per_change() {
    let (app, smtp) = product().await;
    let workers = [worker(&app, &smtp, &[]).await, worker(&app, &smtp, &[]).await];
    let owner = "owner@alerts.example";
    let token = app.signed_in(owner).await;
    let (receiver, alert) = breaking_shop(&app, &token).await;
    notified(&smtp, &receiver, owner, &alert, (1, 1), Instant::now()).await;
    // Both workers go on evaluating it for a while: nothing more is sent.
    let evaluations = async || {
        let mut total = 0.0;
        for w in &workers {
            let text = reqwest::get(format!("{}/metrics", w.address)).await.unwrap().text().await.unwrap();
            total += text.lines().filter(|l| l.starts_with("lvd_worker_alert_evaluations_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>();
        }
        total
    };
    let before = evaluations().await;
    eventually(Duration::from_secs(30), "six more evaluations", || async { (evaluations().await >= before + 6.0).then_some(()) }).await;
    assert_eq!(smtp.to(owner).await.len(), 1);
    assert_eq!(receiver.received().len(), 1);
    let changes: i64 = app.db.client().await.query_one("SELECT count(*) FROM alert_changes", &[]).await.unwrap().get(0);
    assert_eq!(changes, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_between_deciding_and_sending_still_notifies_once() {
    let (app, smtp) = product().await;
    let mut doomed = worker(&app, &smtp, &[("LVD_WORKER_FAILPOINT", "alert_decided")]).await;
    let owner = "owner@alerts.example";
    let token = app.signed_in(owner).await;
    let (receiver, alert) = breaking_shop(&app, &token).await;
    let status = tokio::time::timeout(Duration::from_secs(30), doomed.child.wait()).await.expect("the worker aborts after deciding").unwrap();
    assert!(!status.success());
    let db = app.db.client().await;
    let pending: i64 = db.query_one("SELECT count(*) FROM alert_notifications WHERE status = 'pending'", &[]).await.unwrap().get(0);
    assert_eq!(pending, 2, "the decision committed with its email and webhook owed");
    assert_eq!((smtp.to(owner).await.len(), receiver.received().len()), (0, 0), "nothing was sent before the crash");

    let _next = worker(&app, &smtp, &[]).await;
    notified(&smtp, &receiver, owner, &alert, (1, 1), Instant::now()).await;
    // Marked sent once handed over, in the transaction that held it.
    eventually(Duration::from_secs(10), "both notifications marked sent", || async {
        let sent: i64 = db.query_one("SELECT count(*) FROM alert_notifications WHERE status = 'sent'", &[]).await.unwrap().get(0);
        (sent == 2).then_some(())
    })
    .await;
    let changes: i64 = db.query_one("SELECT count(*) FROM alert_changes", &[]).await.unwrap().get(0);
    assert_eq!(changes, 1, "the restarted evaluation did not decide it again");
    assert_eq!((smtp.to(owner).await.len(), receiver.received().len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_apps_silent_receiver_holds_up_no_other_apps_webhooks() {
    let (app, smtp) = product().await;
    let _worker = worker(&app, &smtp, &[]).await;
    let token = app.signed_in("owner@alerts.example").await;
    // Takes connections and never answers: each attempt costs a sender its 5 s.
    let silent = tokio::net::TcpListener::bind((ALLOWED, 0)).await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let held: std::sync::Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>> = Default::default();
    let holder = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            holder.lock().unwrap().push(stream);
        }
    });
    let (slow, key) = app.create_app(&token, "Slow").await;
    app.put_rule(&token, &slow, "pay", json!({"required": ["amount"]})).await;
    for _ in 0..5 {
        create_alert(&app, &token, &slow, json!({"kind": "violation_rate", "min_events": 1, "email": false, "webhook_url": silent_url})).await;
    }
    ingest_many(&app, &key, "pay", json!({}), 1).await;
    eventually(Duration::from_secs(30), "a sender waiting on the silent receiver", || async { (!held.lock().unwrap().is_empty()).then_some(()) }).await;

    // Another app's alert fires now: a free sender takes it at once.
    let (receiver, alert) = breaking_shop(&app, &token).await;
    let (id, secret) = (alert["id"].as_str().unwrap(), alert["webhook_secret"].as_str().unwrap());
    eventually(Duration::from_secs(30), "the other app's webhook", || async { (!webhooks(&receiver, id, secret).is_empty()).then_some(()) }).await;
    let timed_out: i64 = app.db.client().await.query_one("SELECT count(*) FROM alert_deliveries WHERE error IS NOT NULL", &[]).await.unwrap().get(0);
    assert_eq!(timed_out, 0, "the other app's webhook went out before any of the silent receiver's attempts ended");
    assert_eq!(held.lock().unwrap().len(), 1, "one sender at a time waits on the silent app; the other four notifications wait their turn");
}
