//! The local runtime behaves like Spin for what the app uses: routing and its
//! headers, the capability sandbox, variables, instance isolation, limits,
//! graceful shutdown and watch mode.

use lvd_tests::*;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn exact_wildcard_and_parameter_routes_reach_their_component_with_spins_headers() {
    let app = spawn_fixtures().await;

    let (status, wild) = app.get_json("/allowed/deep/path?x=1").await;
    assert_eq!(status, 200);
    let h = &wild["headers"];
    assert_eq!(h["spin-path-info"], "/deep/path");
    assert_eq!(h["spin-matched-route"], "/allowed/...");
    assert_eq!(h["spin-raw-component-route"], "/allowed/...");
    assert_eq!(h["spin-component-route"], "/allowed");
    assert_eq!(h["spin-full-url"], format!("{}/allowed/deep/path?x=1", app.address));
    assert!(h["spin-client-addr"].as_str().unwrap().starts_with("127.0.0.1:"));

    let (status, param) = app.get_json("/items/abc-42/detail").await;
    assert_eq!(status, 200);
    assert_eq!(param["headers"]["spin-path-match-id"], "abc-42");
    assert_eq!(param["headers"]["spin-matched-route"], "/items/:id/detail");

    let (status, exact) = app.get_json("/exact").await;
    assert_eq!(status, 200);
    assert_eq!(exact["headers"]["spin-matched-route"], "/exact");
    assert_eq!(exact["headers"]["spin-path-info"], "");
}

#[tokio::test]
async fn an_unmatched_path_is_a_404_problem() {
    let app = spawn_fixtures().await;

    for path in ["/nowhere", "/exact/more", "/items/1"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
}

#[tokio::test]
async fn a_component_reaches_what_its_manifest_grants() {
    let app = spawn_fixtures().await;

    assert_eq!(app.get_json("/allowed/pg").await.1, serde_json::json!({ "ok": 42 }));
    assert_eq!(app.get_json("/allowed/redis").await.1, serde_json::json!({ "ok": 1 }));
    assert_eq!(app.get_json("/allowed/kv?label=default").await.1, serde_json::json!({ "ok": "v" }));
    assert_eq!(app.get_json("/allowed/var?name=greeting").await.1, serde_json::json!({ "ok": "hello" }));
}

#[tokio::test]
async fn a_component_is_denied_postgres_redis_and_stores_its_manifest_does_not_grant() {
    let app = spawn_fixtures().await;

    let pg = app.get_json("/denied/pg").await.1;
    assert!(pg["error"].as_str().unwrap().contains("not permitted"), "{pg}");
    let redis = app.get_json("/denied/redis").await.1;
    assert!(redis["error"].as_str().unwrap().contains("InvalidAddress"), "{redis}");
    let kv = app.get_json("/denied/kv?label=default").await.1;
    assert!(kv["error"].as_str().unwrap().contains("AccessDenied"), "{kv}");
    // Granted components still cannot open labels they do not list.
    let other = app.get_json("/allowed/kv?label=other").await.1;
    assert!(other["error"].as_str().unwrap().contains("AccessDenied"), "{other}");
    // Nor read variables their manifest entry does not declare.
    let var = app.get_json("/denied/var?name=greeting").await.1;
    assert!(var["error"].as_str().unwrap().contains("Undefined"), "{var}");
}

#[tokio::test]
async fn a_missing_required_variable_stops_the_runtime_naming_it() {
    let db = TestDb::create().await;
    let redis = TestRedis::start().await;
    let dir = TempDir::new();
    let mut opts = AppOptions::fixtures();
    opts.unset.push("SPIN_VARIABLE_REDIS_HOST".into());

    let err = start_runtime(&opts, &db, &redis, &dir).await.expect_err("runtime started without a required variable");

    assert!(err.contains("'redis_host'") && err.contains("SPIN_VARIABLE_REDIS_HOST"), "{err}");
}

#[tokio::test]
async fn with_reuse_off_concurrent_requests_get_separate_instances() {
    let mut opts = AppOptions::fixtures();
    opts.extra_args = ["--max-instance-reuse-count", "1", "--max-instance-concurrent-reuse-count", "1"].map(String::from).to_vec();
    let app = spawn_with(opts).await;

    let (a, b, c) = tokio::join!(
        app.get_json("/allowed/sleep?ms=400"),
        app.get_json("/allowed/sleep?ms=400"),
        app.get_json("/allowed/sleep?ms=400"),
    );
    let after = app.get_json("/allowed/echo").await;

    // Each instance counts the requests it served: always one.
    for (status, body) in [a, b, c, after] {
        assert_eq!(status, 200);
        assert_eq!(body["served"], 1, "an instance was reused: {body}");
    }
}

#[tokio::test]
async fn by_default_an_instance_serves_many_requests_as_spin_does() {
    let app = spawn_fixtures().await;
    let mut served = Vec::new();
    for _ in 0..3 {
        served.push(app.get_json("/allowed/echo").await.1["served"].as_u64().unwrap());
    }
    assert_eq!(served, [1, 2, 3], "Spin 4.0.2 reuses wasi:http 0.3 instances (128 requests, 16 at once)");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_before_the_component_runs() {
    let app = spawn_fixtures().await;

    // Several times over: a client still writing its body must get the 413,
    // not a reset connection (the runtime reads and drops the rest first).
    for _ in 0..10 {
        let resp = app.client.post(app.url("/allowed/echo")).body(vec![b'x'; 4 << 20]).send().await.unwrap();
        assert_eq!(resp.status(), 413);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "payload_too_large");
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let mut app = spawn_fixtures().await;
    let pid = nix::unistd::Pid::from_raw(app.runtime.id().unwrap() as i32);
    let slow = {
        let (client, url) = (app.client.clone(), app.url("/allowed/sleep?ms=1500"));
        tokio::spawn(async move { client.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();

    let resp = slow.await.unwrap().expect("the in-flight request was dropped");
    assert_eq!(resp.status(), 200);
    let status = tokio::time::timeout(Duration::from_secs(10), app.runtime.wait()).await.unwrap().unwrap();
    assert!(status.success(), "runtime exited with {status}");
    assert!(app.client.get(app.url("/exact")).send().await.is_err(), "still accepting after SIGTERM");
}

#[tokio::test]
async fn watch_mode_swaps_a_rebuilt_component_without_dropping_in_flight_requests() {
    // An app whose "build" copies one of two prebuilt components into place:
    // the probe first, then the health component.
    let dir = TempDir::new();
    let target = repo_root().join("target/wasm32-wasip2/release");
    std::fs::copy(target.join("probe.wasm"), dir.path.join("app.wasm")).unwrap();
    std::fs::write(dir.path.join("trigger.txt"), "0").unwrap();
    let manifest = dir.path.join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"spin_manifest_version = 2
[application]
name = "watch"
[[trigger.http]]
route = "/..."
component = "app"
[component.app]
source = "app.wasm"
[component.app.build]
command = "cp {} app.wasm"
watch = ["trigger.txt"]
"#,
            target.join("health.wasm").display()
        ),
    )
    .unwrap();
    let opts = AppOptions { manifest, env: vec![], unset: vec![], extra_args: vec!["--watch".into()] };
    let app = spawn_with(opts).await;
    assert_eq!(app.get_json("/health").await.1["served"], 1, "the probe answers first");
    let slow = {
        let (client, url) = (app.client.clone(), app.url("/sleep?ms=2500"));
        tokio::spawn(async move { client.get(url).send().await?.json::<Value>().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(dir.path.join("trigger.txt"), "1").unwrap();

    eventually(Duration::from_secs(30), "the rebuilt component to answer", || async {
        let (status, body) = app.get_json("/health").await;
        (status == 200 && body == serde_json::json!({ "status": "ok" })).then_some(())
    })
    .await;
    let in_flight = slow.await.unwrap().expect("the in-flight request was dropped by the swap");
    assert!(in_flight["served"].is_u64(), "the old component (the probe) finished it: {in_flight}");
}

#[test]
fn runtime_wit_matches_the_pinned_spin_sdk() {
    let metadata = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--filter-platform", "wasm32-wasip2"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(metadata.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&metadata.stderr));
    let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let sdk = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "spin-sdk")
        .expect("spin-sdk is a dependency");
    let sdk_wit = std::path::Path::new(sdk["manifest_path"].as_str().unwrap()).parent().unwrap().join("wit/deps");
    let ours = repo_root().join("runtime/wit/deps");

    let mut compared = 0;
    for pkg in std::fs::read_dir(&ours).unwrap() {
        let pkg = pkg.unwrap();
        for file in std::fs::read_dir(pkg.path()).unwrap() {
            let file = file.unwrap();
            let theirs = sdk_wit.join(pkg.file_name()).join(file.file_name());
            let (a, b) = (std::fs::read_to_string(file.path()).unwrap(), std::fs::read_to_string(&theirs).unwrap_or_default());
            assert_eq!(a, b, "{} differs from spin-sdk {}'s {}", file.path().display(), sdk["version"], theirs.display());
            compared += 1;
        }
    }
    assert_eq!(compared, 4, "expected the four Spin interfaces the runtime hosts");
}
