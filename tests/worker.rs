//! The email worker under faults: killed mid-send, SMTP down, poison jobs.

use lvd::keys::{EMAIL_QUEUE, dead_letter, delayed};
use lvd_tests::*;
use serde_json::json;
use std::time::Duration;

/// Queues `n` verification emails straight onto the stream, as the auth
/// component does.
async fn queue_mails(app: &TestApp, n: usize) -> Vec<String> {
    let mut to = Vec::new();
    for i in 0..n {
        let address = format!("queued-{i}-{}@example.com", uuid::Uuid::new_v4().simple());
        let job = json!({ "kind": "verification_code", "to": address, "code": format!("{:06}", i) }).to_string();
        app.redis_cmd(&["XADD", EMAIL_QUEUE, "*", "job", &job]).await;
        to.push(address);
    }
    to
}

async fn stream_len(app: &TestApp, key: &str) -> i64 {
    match app.redis_cmd(&["XLEN", key]).await {
        redis::Value::Int(n) => n,
        other => panic!("XLEN gave {other:?}"),
    }
}

#[tokio::test]
async fn jobs_taken_by_a_worker_killed_mid_send_are_delivered_by_another() {
    let app = spawn_with(AppOptions::product()).await;
    let smtp = TestSmtp::start().await;
    // An SMTP server that accepts connections and never answers: the first
    // worker takes jobs and hangs in the middle of sending them.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_port = black_hole.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            held.push(s);
        }
    });
    let to = queue_mails(&app, 12).await;
    let mut first = TestWorker::start(&app.db, &app.redis, hole_port, &[("LVD_WORKER_CONCURRENCY", "4")]).await;
    eventually(Duration::from_secs(10), "the first worker to take jobs", || async {
        match app.redis_cmd(&["XPENDING", EMAIL_QUEUE, "workers"]).await {
            redis::Value::Array(v) if matches!(v.first(), Some(redis::Value::Int(n)) if *n > 0) => Some(()),
            _ => None,
        }
    })
    .await;

    first.kill().await;
    let _second = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[]).await;

    for address in &to {
        smtp.wait_for(address, 1, Duration::from_secs(30)).await;
    }
    eventually(Duration::from_secs(10), "the queue to drain", || async { (stream_len(&app, EMAIL_QUEUE).await == 0).then_some(()) }).await;
    let all = smtp.all().await;
    assert_eq!(all.len(), to.len(), "every job delivered exactly once");
}

#[tokio::test]
async fn mail_is_retried_while_smtp_is_down_and_delivered_when_it_returns() {
    let app = spawn_with(AppOptions::product()).await;
    let mut smtp = TestSmtp::start().await;
    smtp.stop().await;
    let worker = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[]).await;
    let to = queue_mails(&app, 3).await;

    eventually(Duration::from_secs(10), "a failed send to be retried", || async {
        let metrics = reqwest::get(format!("{}/metrics", worker.address)).await.ok()?.text().await.ok()?;
        metrics.lines().any(|l| l.starts_with("lvd_worker_jobs_total") && l.contains("outcome=\"retried\"")).then_some(())
    })
    .await;
    smtp.restart().await;

    for address in &to {
        smtp.wait_for(address, 1, Duration::from_secs(30)).await;
    }
    assert_eq!(stream_len(&app, &dead_letter(EMAIL_QUEUE)).await, 0);
}

#[tokio::test]
async fn a_job_that_can_never_succeed_is_parked_in_the_dead_letter_queue() {
    let app = spawn_with(AppOptions::product()).await;
    let smtp = TestSmtp::start().await;
    app.redis_cmd(&["XADD", EMAIL_QUEUE, "*", "job", "{not json"]).await;
    let good = queue_mails(&app, 1).await;

    let _worker = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[]).await;

    smtp.wait_for(&good[0], 1, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "the poison job to be parked", || async {
        (stream_len(&app, &dead_letter(EMAIL_QUEUE)).await == 1).then_some(())
    })
    .await;
    assert_eq!(stream_len(&app, EMAIL_QUEUE).await, 0);
}

#[tokio::test]
async fn a_job_failing_max_attempts_times_is_dead_lettered() {
    let app = spawn_with(AppOptions::product()).await;
    let mut smtp = TestSmtp::start().await;
    smtp.stop().await;
    queue_mails(&app, 1).await;

    let _worker = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[("LVD_WORKER_MAX_ATTEMPTS", "3")]).await;

    eventually(Duration::from_secs(20), "the job to be parked after 3 attempts", || async {
        (stream_len(&app, &dead_letter(EMAIL_QUEUE)).await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_worker_serves_health_and_metrics() {
    let app = spawn_with(AppOptions::product()).await;
    let smtp = TestSmtp::start().await;
    let worker = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[]).await;

    let health: serde_json::Value = reqwest::get(format!("{}/health", worker.address)).await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({ "status": "ok" }));
    let metrics = reqwest::get(format!("{}/metrics", worker.address)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("lvd_worker_send_seconds"), "{metrics}");
}

#[tokio::test]
async fn sigterm_stops_the_worker_cleanly_and_loses_nothing() {
    let app = spawn_with(AppOptions::product()).await;
    let smtp = TestSmtp::start().await;
    let to = queue_mails(&app, 20).await;
    let mut first = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[]).await;
    smtp.wait_for(&to[0], 1, Duration::from_secs(20)).await;

    let pid = nix::unistd::Pid::from_raw(first.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(35), first.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "worker exited with {status}");
    let _second = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[]).await;

    for address in &to {
        smtp.wait_for(address, 1, Duration::from_secs(30)).await;
    }
    eventually(Duration::from_secs(10), "the queue to drain", || async { (stream_len(&app, EMAIL_QUEUE).await == 0).then_some(()) }).await;
    assert_eq!(smtp.all().await.len(), to.len(), "every job delivered exactly once");
}

#[tokio::test]
async fn the_mail_inbox_that_shows_every_code_listens_on_loopback_only() {
    // TestSmtp starts MailDev exactly as script/server does.
    let smtp = TestSmtp::start().await;
    let listening = listeners(smtp.web_port);
    assert!(!listening.is_empty(), "nothing listens on the inbox's port {}", smtp.web_port);
    assert!(listening.iter().all(|ip| ip.is_loopback()), "the inbox is reachable from the network: {listening:?}");
}

/// The local addresses of the TCP sockets listening on `port`, read from
/// the kernel's tables.
fn listeners(port: u16) -> Vec<std::net::IpAddr> {
    let mut found = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some((addr, p)), Some(&"0A")) = (f[1].split_once(':'), f.get(3)) else { continue };
            if u16::from_str_radix(p, 16) != Ok(port) {
                continue;
            }
            // Each 32-bit word is in the host's (little-endian) byte order.
            let bytes: Vec<u8> = (0..addr.len() / 8)
                .flat_map(|w| u32::from_str_radix(&addr[w * 8..w * 8 + 8], 16).unwrap().to_le_bytes())
                .collect();
            found.push(if v6 {
                std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap())
            } else {
                std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap())
            });
        }
    }
    found
}

/// The `job` fields of the dead-letter stream's entries.
async fn dead_jobs(app: &TestApp) -> Vec<String> {
    let redis::Value::Array(entries) = app.redis_cmd(&["XRANGE", &dead_letter(EMAIL_QUEUE), "-", "+"]).await else {
        panic!("XRANGE gave no array");
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    let mut jobs = Vec::new();
    for entry in entries {
        let redis::Value::Array(parts) = entry else { continue };
        let Some(redis::Value::Array(fields)) = parts.get(1) else { continue };
        for pair in fields.chunks(2) {
            if text(&pair[0]) == "job" {
                jobs.push(text(&pair[1]));
            }
        }
    }
    jobs
}

#[tokio::test]
async fn a_dead_email_job_keeps_no_code() {
    let app = spawn_with(AppOptions::product()).await;
    let mut smtp = TestSmtp::start().await;
    smtp.stop().await;
    let to = format!("undeliverable-{}@example.com", uuid::Uuid::new_v4().simple());
    let job = json!({ "kind": "password_reset", "to": to, "code": "424242" }).to_string();
    app.redis_cmd(&["XADD", EMAIL_QUEUE, "*", "job", &job]).await;

    let _worker = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[("LVD_WORKER_MAX_ATTEMPTS", "2")]).await;
    eventually(Duration::from_secs(20), "the job to be parked", || async {
        (stream_len(&app, &dead_letter(EMAIL_QUEUE)).await == 1).then_some(())
    })
    .await;

    let dead = dead_jobs(&app).await;
    assert_eq!(dead.len(), 1);
    assert!(!dead[0].contains("424242"), "the code stayed in the dead-letter queue: {}", dead[0]);
    assert!(dead[0].contains(&to) && dead[0].contains("password_reset"), "what it was and for whom stay: {}", dead[0]);
    assert_eq!(app.redis_cmd(&["ZCARD", &delayed(EMAIL_QUEUE)]).await, redis::Value::Int(0), "no copy waits for a retry");
}

#[tokio::test]
async fn a_code_that_expired_in_the_queue_is_neither_sent_nor_kept() {
    let app = spawn_with(AppOptions::product()).await;
    let smtp = TestSmtp::start().await;
    let stale = format!("stale-{}@example.com", uuid::Uuid::new_v4().simple());
    let expired = chrono_now() - 1;
    let job = json!({ "kind": "verification_code", "to": stale, "code": "135790", "expires_at": expired }).to_string();
    app.redis_cmd(&["XADD", EMAIL_QUEUE, "*", "job", &job]).await;
    let fresh = queue_mails(&app, 1).await;

    let _worker = TestWorker::start(&app.db, &app.redis, smtp.smtp_port, &[]).await;
    smtp.wait_for(&fresh[0], 1, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "the stale job to be parked", || async {
        (stream_len(&app, &dead_letter(EMAIL_QUEUE)).await == 1).then_some(())
    })
    .await;

    assert!(smtp.to(&stale).await.is_empty(), "a dead code was mailed");
    assert!(!dead_jobs(&app).await[0].contains("135790"));
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The password hasher: only its key opens it, bounded bodies, only POST,
/// and what it hashes verifies in process (the component's fallback) and
/// back; with no key it is not there at all.
#[tokio::test]
async fn the_password_hasher_answers_only_its_key_and_bounds_its_work() {
    let app = spawn_with(AppOptions::product()).await;
    let key = hasher_key(&app.redis);
    let worker = TestWorker::start(&app.db, &app.redis, free_port(), &[("LVD_HASHER_KEY", &key)]).await;
    let client = reqwest::Client::new();
    let post = |path: &str, bearer: Option<&str>, body: String| {
        let mut req = client.post(format!("{}{path}", worker.address)).header("content-type", "application/json").body(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send()
    };
    let password = json!({ "password": "correct horse battery staple" }).to_string();

    let resp = post("/internal/password/hash", Some(&key), password.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let phc = resp.json::<serde_json::Value>().await.unwrap()["phc"].as_str().unwrap().to_owned();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let good = lvd::auth::password::Password::parse("correct horse battery staple".into()).unwrap();
    assert!(lvd::auth::password::verify(&good, &phc), "the worker's hash verifies in process");
    let local = lvd::auth::password::hash(&good);
    for (guess, ok) in [("correct horse battery staple", true), ("correct horse battery stapler", false)] {
        let resp = post("/internal/password/verify", Some(&key), json!({ "password": guess, "phc": local }).to_string()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), json!({ "ok": ok }), "{guess}");
    }

    for bearer in [None, Some("test-hasher-key-wrong-but-long-enough-000"), Some(&key[..key.len() - 1])] {
        let resp = post("/internal/password/hash", bearer, password.clone()).await.unwrap();
        assert_eq!(resp.status(), 401, "{bearer:?}");
    }
    let resp = post("/internal/password/hash", Some(&key), format!("{{\"password\":\"{}\"}}", "a".repeat(8000))).await.unwrap();
    assert_eq!(resp.status(), 413);
    let huge = "$argon2id$v=19$m=4194304,t=2,p=1$9y1rT0aBqUk3YXoA7KkYcg$8kJQpR9Zl3l1b2PzQ2v5m6uZ4mQwQ0f1i8e3Xx9m7Ck";
    let resp = post("/internal/password/verify", Some(&key), json!({ "password": "correct horse battery staple", "phc": huge }).to_string()).await.unwrap();
    assert_eq!(resp.status(), 422, "a 4 GiB hash is past the bound");
    let resp = client.get(format!("{}/internal/password/hash", worker.address)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    let metrics = client.get(format!("{}/metrics", worker.address)).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"lvd_worker_password_hashes_total{op="hash",outcome="ok"} 1"#,
        r#"lvd_worker_password_hashes_total{op="verify",outcome="ok"} 2"#,
        r#"lvd_worker_password_hashes_total{op="verify",outcome="refused"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    let keyless = TestWorker::start(&app.db, &app.redis, free_port(), &[("LVD_HASHER_KEY", "too-short-a-key")]).await;
    let resp = client.post(format!("{}/internal/password/hash", keyless.address)).bearer_auth("too-short-a-key").body(password).send().await.unwrap();
    assert_eq!(resp.status(), 404, "a key under 32 bytes leaves the hasher off");
}
