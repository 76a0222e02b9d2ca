//! `/health` and `/health/ready` per the contract, through the product's spin.toml.

use lvd_tests::*;
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
