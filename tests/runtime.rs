//! The runtime serves the app as Spin does: routing and its headers, the
//! capability sandbox, variables and instance reuse — under either runtime
//! (`LVD_TEST_RUNTIME`). Graceful shutdown, watch mode and the `hostaddr`
//! check (stricter than Spin) are lvd-runtime's
//! own and always tested on it. How the host's interfaces behave case by
//! case is `parity.rs`.

use lvd_tests::*;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn exact_wildcard_and_parameter_routes_reach_their_component_with_spins_headers() {
    let app = spawn_fixtures().await;

    let (status, wild) = app.get_json("/allowed/deep/path?x=1").await;
    assert_eq!(status, 200);
    // Each header's values, in order; Spin sets each once.
    let h = &wild["headers"];
    assert_eq!(h["spin-path-info"], serde_json::json!(["/deep/path"]));
    assert_eq!(h["spin-matched-route"], serde_json::json!(["/allowed/..."]));
    assert_eq!(h["spin-raw-component-route"], serde_json::json!(["/allowed/..."]));
    assert_eq!(h["spin-component-route"], serde_json::json!(["/allowed"]));
    assert_eq!(h["spin-base-path"], serde_json::json!(["/"]));
    assert_eq!(h["spin-full-url"], serde_json::json!([format!("{}/allowed/deep/path?x=1", app.address)]));
    assert!(h["spin-client-addr"][0].as_str().unwrap().starts_with("127.0.0.1:"));

    let (status, param) = app.get_json("/items/abc-42/detail").await;
    assert_eq!(status, 200);
    assert_eq!(param["headers"]["spin-path-match-id"], serde_json::json!(["abc-42"]));
    assert_eq!(param["headers"]["spin-matched-route"], serde_json::json!(["/items/:id/detail"]));

    let (status, exact) = app.get_json("/exact").await;
    assert_eq!(status, 200);
    assert_eq!(exact["headers"]["spin-matched-route"], serde_json::json!(["/exact"]));
    assert_eq!(exact["headers"]["spin-path-info"], serde_json::json!([""]));
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
async fn the_address_a_connection_dials_must_be_allowed_not_only_its_host() {
    // lvd-runtime's own: Spin 4.0.2 checks `host` alone, and tokio-postgres
    // dials `hostaddr` when one is given.
    let app = spawn_with(AppOptions { runtime: Some(TestRuntime::local()), ..AppOptions::fixtures() }).await;
    let url = &app.db.url;
    let sep = if url.contains('?') { '&' } else { '?' };
    let allowed = app.get_json(&format!("/allowed/pg/open?address={}", encode(url))).await.1;
    assert_eq!(allowed, serde_json::json!({ "ok": 42 }), "the granted address itself works");
    let elsewhere = format!("{url}{sep}hostaddr=::1");
    let denied = app.get_json(&format!("/allowed/pg/open?address={}", encode(&elsewhere))).await.1;
    let error = denied["error"].as_str().unwrap_or_else(|| panic!("reached an address its manifest does not list: {denied}"));
    assert!(error.contains("postgres://[::1]:") && error.contains("is not permitted"), "{error}");
}

#[tokio::test]
async fn a_missing_required_variable_stops_the_runtime_naming_it() {
    let db = TestDb::create().await;
    let redis = TestRedis::start().await;
    let dir = TempDir::new();
    let mut opts = AppOptions::fixtures();
    opts.unset.push("SPIN_VARIABLE_REDIS_HOST".into());

    let err = start_runtime(&opts, &db, &redis, &dir).await.expect_err("runtime started without a required variable");

    assert!(err.contains("no provider resolved required variable") && err.contains("redis_host"), "{err}");
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
    for _ in 0..20 {
        served.push(app.get_json("/allowed/echo").await.1["served"].as_u64().unwrap());
    }
    // Which instance takes a request is the host's choice: one still
    // finishing its last response may not take the next, and another starts
    // (wasmtime-wasi-http's ProxyHandler, in Spin and here alike). Reuse
    // shows as an instance that has served more than one.
    assert!(served.iter().any(|&n| n > 1), "Spin 4.0.2 reuses wasi:http 0.3 instances (128 requests, 16 at once): {served:?}");
}

#[tokio::test]
async fn a_wasi_http_0_2_component_gets_spins_headers_and_a_fresh_instance_per_request() {
    let app = spawn_fixtures().await;
    let mut served = Vec::new();
    for _ in 0..20 {
        let (status, body) = app.get_json("/p2/deep/path?x=1").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["headers"]["spin-path-info"], serde_json::json!(["/deep/path"]), "{body}");
        assert_eq!(body["headers"]["spin-matched-route"], serde_json::json!(["/p2/..."]), "{body}");
        served.push(body["served"].as_u64().unwrap());
    }
    // Spin runs spin-sdk 5 (wasi:http/incoming-handler@0.2) components in a
    // new instance for every request, whatever the reuse flags say.
    assert!(served.iter().all(|&n| n == 1), "a 0.2 instance was reused: {served:?}");

    let upload = vec![b'x'; 3 << 20];
    let resp = reqwest::Client::new().post(app.url("/p2/upload")).body(upload).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["ok"], 3 << 20, "the whole body reached the guest");
}

#[tokio::test]
async fn a_wasi_http_0_2_component_reaches_spin_3_variables_and_stores_as_its_manifest_grants() {
    let app = spawn_fixtures().await;
    assert_eq!(app.get_json("/p2/var?name=greeting").await.1, serde_json::json!({ "ok": "hello from 0.2" }));
    let undefined = app.get_json("/p2/var?name=nope").await.1;
    assert!(undefined["error"].as_str().unwrap().contains("Undefined(\"no variable for \\\"p2\\\".\\\"nope\\\""), "{undefined}");
    let invalid = app.get_json("/p2/var?name=Bad").await.1;
    assert!(invalid["error"].as_str().unwrap().contains("InvalidName("), "{invalid}");

    assert_eq!(app.get_json("/p2/kv?label=default").await.1, serde_json::json!({ "ok": { "value": "v2", "exists": true } }));
    assert_eq!(app.get_json("/p2/kv?label=other").await.1, serde_json::json!({ "error": "Error::AccessDenied" }));
    // spin:postgres@4.0.0 is served by the 4.2.0 host through wasmtime's
    // semver matching, as in Spin 4.0.2.
    assert_eq!(app.get_json("/p2/pg").await.1, serde_json::json!({ "ok": 42 }));
    // ...whose synchronous `query` never returns in Spin 4.0.2 when no row
    // matches (spinframework/spin#3671); lvd-runtime fails it by name.
    let none = app.client.get(app.url("/p2/pg-none")).timeout(std::time::Duration::from_secs(5)).send().await;
    match (test_runtime(), none) {
        (TestRuntime::Spin(_), Err(e)) => assert!(e.is_timeout(), "{e}"),
        (TestRuntime::Local(_), Ok(resp)) => {
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].as_str().unwrap_or_default().contains("spinframework/spin#3671"), "{body}");
        }
        (runtime, outcome) => panic!("{runtime:?}: a query without rows was answered: {outcome:?}"),
    }
    assert_eq!(app.get_json("/p2/redis").await.1, serde_json::json!({ "ok": 1 }));
    assert_eq!(app.get_json("/p2/redis").await.1, serde_json::json!({ "ok": 2 }), "one Redis behind both calls");
    let elsewhere = app.get_json("/p2/redis?address=redis%3A%2F%2F192.0.2.1%3A6379").await.1;
    assert_eq!(elsewhere, serde_json::json!({ "error": "Error::InvalidAddress" }), "a host the manifest does not allow");
}

#[tokio::test]
async fn a_wasi_http_0_2_component_streams_a_body_larger_than_any_buffer() {
    // The guest blocks writing until the client reads; the client reads only
    // once the head has been forwarded. Spin awaits the head outside the
    // guest's task; a runtime that did not would hang here.
    let app = spawn_fixtures().await;
    let resp = tokio::time::timeout(Duration::from_secs(20), async {
        let resp = app.client.get(app.url("/p2/big?bytes=3000000")).send().await.unwrap();
        (resp.status(), resp.bytes().await.unwrap())
    })
    .await
    .expect("the body did not arrive within 20 s");
    assert_eq!(resp.0, 200);
    assert_eq!(resp.1.len(), 3_000_000);
    assert!(resp.1.iter().all(|&b| b == b'x'));
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    // lvd-runtime's own (Spin's `spin up` does not drain): always on it.
    let mut app = spawn_with(AppOptions { runtime: Some(TestRuntime::local()), ..AppOptions::fixtures() }).await;
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
    // lvd-runtime's own (`spin watch` restarts the app): always on it.
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
    let opts =
        AppOptions { manifest, extra_args: vec!["--watch".into()], runtime: Some(TestRuntime::local()), ..AppOptions::product() };
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
fn runtime_wit_matches_the_pinned_spin_sdks() {
    let metadata = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--filter-platform", "wasm32-wasip2"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(metadata.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&metadata.stderr));
    let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
    // The WIT directory of the spin-sdk `version` in the lock file.
    let sdk_wit = |version: &str| {
        let sdk = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "spin-sdk" && p["version"] == version)
            .unwrap_or_else(|| panic!("spin-sdk {version} is a dependency"));
        std::path::Path::new(sdk["manifest_path"].as_str().unwrap()).parent().unwrap().join("wit/deps")
    };
    // The components' spin-sdk is pinned in the workspace's Cargo.toml; the
    // 0.2 probe's in its own (Spin 3.x's fermyon:spin@2.0.0 interfaces).
    let pin = |manifest: &str| {
        let text = std::fs::read_to_string(repo_root().join(manifest)).unwrap();
        text.split("spin-sdk = { version = \"=").nth(1).and_then(|r| r.split('"').next()).expect("a pinned spin-sdk").to_owned()
    };
    let (p3, p2) = (pin("Cargo.toml"), pin("tests/fixtures/probe-p2/Cargo.toml"));
    let workspace = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let product_p2 = workspace.split("spin-sdk-p2 = { package = \"spin-sdk\", version = \"=").nth(1).and_then(|r| r.split('"').next());
    assert_eq!(product_p2, Some(p2.as_str()), "the product's 0.2 build and the 0.2 probe pin one spin-sdk");
    let ours = repo_root().join("runtime/wit/deps");

    let mut compared = 0;
    for pkg in std::fs::read_dir(&ours).unwrap() {
        let pkg = pkg.unwrap();
        // spin-sdk 5 names the fermyon:spin@2.0.0 directory `spin@2.0.0`.
        let (version, dir) = match pkg.file_name().to_str().unwrap() {
            "fermyon-spin@2.0.0" => (&p2, "spin@2.0.0".to_owned()),
            other => (&p3, other.to_owned()),
        };
        for file in std::fs::read_dir(pkg.path()).unwrap() {
            let file = file.unwrap();
            if file.file_name() == "package.wit" {
                continue; // ours alone: spin-sdk 5 declares the package in a world file that includes everything
            }
            let theirs = sdk_wit(version).join(&dir).join(file.file_name());
            let (a, b) = (std::fs::read_to_string(file.path()).unwrap(), std::fs::read_to_string(&theirs).unwrap_or_default());
            assert_eq!(a, b, "{} differs from spin-sdk {version}'s {}", file.path().display(), theirs.display());
            compared += 1;
        }
    }
    assert_eq!(compared, 7, "expected the four Spin 4 interfaces and the three Spin 3 ones the runtime hosts");
}

#[test]
fn spin_p2_toml_is_spin_toml_but_for_where_the_components_come_from() {
    // Everything a host reads (routes, variables, grants, stores) must be the
    // same in both builds' manifests; only each component's artifact and
    // build command differ, and those name the 0.2 build.
    let read = |name: &str| std::fs::read_to_string(repo_root().join(name)).unwrap();
    let (p3, p2) = (read("spin.toml"), read("spin-p2.toml"));
    let body = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("source = ") && !l.starts_with("command = "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(body(&p2), body(&p3), "spin-p2.toml differs from spin.toml beyond sources and build commands");
    let sources: Vec<&str> = p2.lines().filter(|l| l.starts_with("source = ")).collect();
    let commands: Vec<&str> = p2.lines().filter(|l| l.starts_with("command = ")).collect();
    let components = std::fs::read_dir(repo_root().join("components")).unwrap().count();
    assert_eq!(sources.len(), components, "one source per component: {sources:?}");
    assert_eq!(commands.len(), sources.len(), "{commands:?}");
    for (source, command) in sources.iter().zip(&commands) {
        assert!(source.starts_with("source = \"target/p2/wasm32-wasip2/release/"), "{source}");
        assert!(command.contains("--no-default-features --features p2 --target-dir target/p2"), "{command}");
    }
}
