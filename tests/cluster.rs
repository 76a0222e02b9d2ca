//! Several runtime instances behind nginx (`deploy/nginx.conf`, as shipped),
//! sharing one PostgreSQL and one Redis, with two workers: an instance
//! that hangs and then dies under load loses no accepted event, and
//! events sent again (by clients, by nginx) are stored once; a rolling restart, one graceful drain at a time, fails
//! no request; and nginx hands the app the client's address, streams the
//! live view as it is written and answers oversized bodies as the app does.

use lvd_tests::cluster::TestCluster;
use lvd_tests::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A signed-in owner with one app: `(token, app id, ingest key)`.
async fn owner(app: &TestApp) -> (String, String, String) {
    let token = app.signed_in("cluster@example.com").await;
    let (id, key) = app.create_app(&token, "Shop").await;
    (token, id, key)
}

/// What the ingest clients saw.
#[derive(Default, Debug)]
struct Ingested {
    /// Message ids that got a 202, each once.
    accepted: Vec<String>,
    /// Replies other than 202, and requests that got no reply at all.
    failed: u64,
    /// Message ids sent more than once before their 202.
    retried: u64,
    /// 202s that reported the event as a duplicate: a retry whose first
    /// attempt had in fact been stored.
    duplicates: u64,
}

/// Counters the load updates as it goes, for the test to wait on.
#[derive(Default)]
struct Progress {
    accepted: AtomicU64,
    retried: AtomicU64,
}

/// `tasks` clients posting one event at a time through nginx, each with a
/// fresh `message_id`, until `stop`. A client whose request fails (any
/// reply but 202, or none within `timeout`) sends the same event again,
/// same id, until it is accepted, as an SDK does.
fn ingest_load(
    address: String,
    key: String,
    tasks: usize,
    timeout: Duration,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<Ingested> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (client, address, key, stop, progress) = (client.clone(), address.clone(), key.clone(), stop.clone(), progress.clone());
            handles.push(tokio::spawn(async move {
                let mut seen = Ingested::default();
                let mut n = 0;
                while !*stop.borrow() {
                    n += 1;
                    let message_id = format!("c-{t}-{n}");
                    let body = json!({"event": "load", "message_id": message_id, "properties": {"n": n}});
                    let given_up = Instant::now() + Duration::from_secs(20);
                    for attempt in 0.. {
                        assert!(Instant::now() < given_up, "{message_id} was not accepted within 20 s of retries");
                        if attempt == 1 {
                            seen.retried += 1;
                            progress.retried.fetch_add(1, Ordering::Relaxed);
                        }
                        let sent = client.post(format!("{address}/api/logs")).header("x-api-key", &key).json(&body).send().await;
                        match sent {
                            Ok(r) if r.status() == 202 => {
                                let reply: Value = r.json().await.unwrap_or_default();
                                if reply["duplicates"] == 1 {
                                    seen.duplicates += 1;
                                }
                                seen.accepted.push(message_id);
                                progress.accepted.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(r) => {
                                seen.failed += 1;
                                eprintln!("ingest {message_id}: {} {}", r.status(), r.text().await.unwrap_or_default());
                            }
                            Err(e) => {
                                seen.failed += 1;
                                eprintln!("ingest {message_id}: {e}");
                            }
                        }
                        // A client's backoff before it sends the event again.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                seen
            }));
        }
        let mut all = Ingested::default();
        for h in handles {
            let seen = h.await.unwrap();
            all.accepted.extend(seen.accepted);
            all.failed += seen.failed;
            all.retried += seen.retried;
            all.duplicates += seen.duplicates;
        }
        all
    })
}

/// `tasks` clients reading `GET /api/logs` through nginx until `stop`:
/// `(2xx replies, failed requests)`.
fn query_load(address: String, token: String, app_id: String, tasks: usize, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (client, url, token, stop) = (client.clone(), format!("{address}/api/logs?app={app_id}&limit=20"), token.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                while !*stop.borrow() {
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(_) => ok += 1,
                            Err(e) => {
                                failed += 1;
                                eprintln!("query: {e}");
                            }
                        },
                        Ok(r) => {
                            failed += 1;
                            eprintln!("query: {}", r.status());
                        }
                        Err(e) => {
                            failed += 1;
                            eprintln!("query: {e}");
                        }
                    }
                }
                (ok, failed)
            }));
        }
        let (mut ok, mut failed) = (0, 0);
        for h in handles {
            let (o, f) = h.await.unwrap();
            ok += o;
            failed += f;
        }
        (ok, failed)
    })
}

/// Waits until `counter` has grown by `more` from now.
async fn until_grown(counter: &AtomicU64, more: u64, what: &str) {
    let target = counter.load(Ordering::Relaxed) + more;
    eventually(Duration::from_secs(20), what, || async move { (counter.load(Ordering::Relaxed) >= target).then_some(()) }).await;
}

/// Rows in `log_entries` once the workers have drained every accepted
/// event: `(rows, distinct message ids)`; fails if any accepted id is
/// missing.
async fn stored(app: &TestApp, accepted: &[String]) -> (i64, i64) {
    let client = app.db.client().await;
    eventually(Duration::from_secs(30), "every accepted event stored", || {
        let client = &client;
        async move {
            let rows = client.query("SELECT message_id, count(*) FROM log_entries GROUP BY message_id", &[]).await.unwrap();
            let by_id: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            accepted
                .iter()
                .all(|m| by_id.contains_key(m))
                .then(|| (by_id.values().sum::<i64>(), by_id.len() as i64))
        }
    })
    .await
}

/// The requests nginx sent to more than one instance, by method and the
/// statuses it got (`"POST 502, 202"`), from its access log.
fn nginx_retries(cluster: &TestCluster) -> BTreeMap<String, u64> {
    let mut retries = BTreeMap::new();
    for line in cluster.nginx.access_log() {
        if line["upstream_addr"].as_str().unwrap_or_default().contains(',') {
            let what = format!("{} {}", line["method"].as_str().unwrap(), line["upstream_status"].as_str().unwrap());
            *retries.entry(what).or_default() += 1;
        }
    }
    retries
}

/// Why nginx gave up on an instance, by method, from its error log: a
/// refused connection (nothing was sent: any method may go to the next
/// instance), a connection closed or reset after the request was sent
/// (only GETs and ingest may; another POST would have failed), or every
/// instance held out after failures (the request fails).
fn nginx_failures(cluster: &TestCluster) -> BTreeMap<String, u64> {
    let mut failures = BTreeMap::new();
    for line in cluster.nginx.error_log().lines().filter(|l| l.contains("[error]")) {
        let method = line.split("request: \"").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("?");
        let why = match () {
            _ if line.contains("Connection refused") => "refused",
            _ if line.contains("prematurely closed") => "closed after sending",
            _ if line.contains("reset by peer") => "reset after sending",
            _ if line.contains("no live upstreams") => "no live instance",
            _ => "other",
        };
        *failures.entry(format!("{method} {why}")).or_default() += 1;
    }
    failures
}

#[tokio::test]
async fn an_instance_that_hangs_then_dies_under_load_loses_no_accepted_event_and_stores_retries_once() {
    let mut cluster = TestCluster::product(3).await;
    let (token, id, key) = owner(&cluster.app).await;
    let (stop_tx, stop) = watch::channel(false);
    let progress = Arc::new(Progress::default());
    // Clients give up on a request after 2 s and send the event again.
    let ingest = ingest_load(cluster.app.address.clone(), key, 12, Duration::from_secs(2), stop.clone(), progress.clone());
    let queries = query_load(cluster.app.address.clone(), token, id, 4, stop);
    until_grown(&progress.accepted, 300, "300 events accepted").await;

    // A wedged instance: connections open, nothing answers. Clients time
    // out and resend their events elsewhere; then it is SIGKILLed, and nginx
    // resends what it still had in flight there.
    cluster.instance(1).signal(nix::sys::signal::Signal::SIGSTOP);
    until_grown(&progress.retried, 3, "clients resending events the hung instance held").await;
    cluster.kill(1).await;
    until_grown(&progress.accepted, 600, "600 more events accepted with one instance dead").await;
    stop_tx.send(true).unwrap();

    let ingested = ingest.await.unwrap();
    let (queried, queries_failed) = queries.await.unwrap();
    let (rows, distinct) = stored(&cluster.app, &ingested.accepted).await;
    eprintln!(
        "accepted {} (distinct message ids), resent by clients {} after {} failed replies, 202s reporting a duplicate {}; \
         stored {rows} rows, {distinct} distinct message ids; queries {queried} ok, {queries_failed} failed; \
         nginx retried {:?} after {:?}",
        ingested.accepted.len(),
        ingested.retried,
        ingested.failed,
        ingested.duplicates,
        nginx_retries(&cluster),
        nginx_failures(&cluster),
    );
    assert_eq!(distinct, ingested.accepted.len() as i64, "stored message ids != accepted ones");
    assert_eq!(rows, distinct, "some event was stored twice");
}

#[tokio::test]
async fn a_rolling_restart_under_load_fails_no_request_and_stores_every_accepted_event() {
    // Draining on SIGTERM is lvd-runtime's (`spin up` does not drain).
    let mut cluster = TestCluster::start(3, TestRuntime::local()).await;
    let (token, id, key) = owner(&cluster.app).await;
    let (stop_tx, stop) = watch::channel(false);
    let progress = Arc::new(Progress::default());
    let ingest = ingest_load(cluster.app.address.clone(), key, 12, Duration::from_secs(10), stop.clone(), progress.clone());
    let queries = query_load(cluster.app.address.clone(), token, id, 4, stop);

    until_grown(&progress.accepted, 300, "300 events accepted before the roll").await;
    for i in 0..cluster.ports.len() {
        let away = cluster.restart(i).await;
        eprintln!("instance {i} (port {}) rolled in {away:.2?}", cluster.ports[i]);
        until_grown(&progress.accepted, 100, "100 events accepted after a restart").await;
    }
    stop_tx.send(true).unwrap();

    let ingested = ingest.await.unwrap();
    let (queried, queries_failed) = queries.await.unwrap();
    let (rows, distinct) = stored(&cluster.app, &ingested.accepted).await;
    eprintln!(
        "ingest: {} accepted, {} failed replies, {} retried by clients; queries: {queried} ok, {queries_failed} failed; \
         stored {rows} rows, {distinct} distinct message ids; nginx retried {:?} after {:?}",
        ingested.accepted.len(),
        ingested.failed,
        ingested.retried,
        nginx_retries(&cluster),
        nginx_failures(&cluster),
    );
    assert_eq!((ingested.failed, queries_failed), (0, 0), "requests failed during the rolling restart");
    assert_eq!(distinct, ingested.accepted.len() as i64, "stored message ids != accepted ones");
    assert_eq!(rows, distinct, "some event was stored twice");
}

#[tokio::test]
async fn the_app_sees_the_client_nginx_saw_and_never_a_forwarded_for_the_client_wrote() {
    let cluster = TestCluster::product(1).await;
    // From 127.0.0.2, so the address nginx saw differs from nginx's own.
    let client = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let resp = client.get(cluster.app.url("/api/apps")).header("x-forwarded-for", "6.6.6.6").send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let keys = cluster.app.redis_cmd(&["KEYS", "lvd:rl:*"]).await;
    let keys: Vec<String> = redis::from_redis_value(&keys).unwrap();
    assert!(keys.iter().any(|k| k.ends_with(":127.0.0.2")), "no per-IP counter for the client: {keys:?}");
    assert!(!keys.iter().any(|k| k.contains("6.6.6.6")), "the forged address was believed: {keys:?}");
}

#[tokio::test]
async fn the_live_stream_comes_through_nginx_as_it_is_written() {
    let cluster = TestCluster::product(1).await;
    let (token, id, _) = owner(&cluster.app).await;
    let mut resp = cluster.app.call(Method::GET, &format!("/api/apps/{id}/live"), &token, None).await;
    assert_eq!(resp.status(), 200);
    // A buffering proxy would hold these until the stream ends (45 s).
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !text.contains("event: stats") {
            let chunk = resp.chunk().await.unwrap().expect("the stream ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("no stats message through nginx within 5 s");
    assert!(text.starts_with("retry: 1000"), "{text}");
}

#[tokio::test]
async fn a_body_over_1_mib_is_refused_by_nginx_with_the_apps_problem_and_1_mib_passes() {
    let cluster = TestCluster::product(1).await;
    let (_, _, key) = owner(&cluster.app).await;
    let over = cluster.app.ingest(&key, &json!({"event": "big", "properties": {"blob": "x".repeat(1 << 20)}})).await;
    assert_eq!(over.status(), 413);
    assert_eq!(over.headers()["content-type"], "application/problem+json");
    let problem: Value = over.json().await.unwrap();
    assert_eq!((problem["status"].as_u64(), problem["code"].as_str()), (Some(413), Some("payload_too_large")));
    let nginx = &cluster.nginx;
    let refused = eventually(Duration::from_secs(5), "the 413 in nginx's access log", || async move {
        nginx.access_log().into_iter().find(|l| l["status"] == 413)
    })
    .await;
    assert_eq!(refused["upstream_addr"], "", "an instance was asked: {refused}");
    // A client still writing a far larger body gets the 413, not a reset
    // (nginx reads and drops the rest), every time.
    for _ in 0..10 {
        let resp = cluster
            .app
            .client
            .post(cluster.app.url("/api/logs"))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(vec![b' '; 4 << 20])
            .send()
            .await
            .expect("the connection was reset before the reply");
        assert_eq!(resp.status(), 413);
    }

    // Exactly 1 MiB is the app's to judge (and it takes it).
    let envelope = r#"{"event":"big","properties":{"blob":""}}"#.len();
    let body = format!(r#"{{"event":"big","properties":{{"blob":"{}"}}}}"#, "x".repeat((1 << 20) - envelope));
    assert_eq!(body.len(), 1 << 20);
    let at_limit = cluster
        .app
        .client
        .post(cluster.app.url("/api/logs"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), 202, "{}", at_limit.text().await.unwrap_or_default());
}

#[tokio::test]
async fn a_request_keeps_the_clients_id_or_gets_nginxs_and_the_reply_and_nginxs_log_agree() {
    let cluster = TestCluster::product(1).await;
    // /health/ready: nginx does not log /health.
    let theirs = cluster.app.client.get(cluster.app.url("/health/ready")).header("x-request-id", "trace/42:a+b=c").send().await.unwrap();
    assert_eq!(theirs.headers()["x-request-id"], "trace/42:a+b=c");
    let forged = cluster.app.client.get(cluster.app.url("/health/ready")).header("x-request-id", "no spaces\tallowed").send().await.unwrap();
    let made = forged.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()), "not nginx's $request_id: {made}");

    let nginx = &cluster.nginx;
    let logged: Vec<String> = eventually(Duration::from_secs(5), "both requests in nginx's access log", || async move {
        let ids: Vec<String> = nginx.access_log().iter().filter_map(|l| l["request_id"].as_str().map(str::to_owned)).collect();
        (ids.len() >= 2).then_some(ids)
    })
    .await;
    assert_eq!(logged, ["trace/42:a+b=c".to_owned(), made]);
}
