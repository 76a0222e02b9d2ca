//! Test helpers: start the app with its own freshly migrated PostgreSQL
//! database and its own Redis server, and talk to it over HTTP. Nothing is
//! shared between tests, so they run in any order, in parallel.
//!
//! The app runs under the local runtime (`lvd-runtime up`), or under real
//! Spin with `LVD_TEST_RUNTIME=spin` (the binary from `LVD_SPIN_BIN`, by
//! default `.tools/spin`): the same manifest, flags and environment, so the
//! whole suite proves the product under either. CI cannot build Spin and
//! uses the local runtime. `LVD_TEST_BUILD=p2` runs the product's wasi:http
//! 0.2 build (`spin-p2.toml`, built by `build_p2` in script/setup) instead
//! of the default 0.3 one (`spin.toml`). The binaries and the components must be built
//! first; `script/test` does that (it is what CI runs).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod cluster;
mod postgres_server;
mod receiver;
mod redis_server;
mod smtp;
mod worker;
pub use postgres_server::TestPostgres;
pub use receiver::{Received, TestReceiver};
pub use redis_server::TestRedis;
pub use smtp::{Mail, TestSmtp};
pub use worker::{TestWorker, worker_bin};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The runtime that serves the app under test.
#[derive(Debug, Clone, PartialEq)]
pub enum TestRuntime {
    /// `lvd-runtime`, this repository's (`LVD_RUNTIME_BIN` overrides the path).
    Local(PathBuf),
    /// Real Spin's `spin` CLI.
    Spin(PathBuf),
}

/// Which runtime `LVD_TEST_RUNTIME` asks for: `local` (the default) or `spin`.
pub fn test_runtime() -> TestRuntime {
    match std::env::var("LVD_TEST_RUNTIME").unwrap_or_default().as_str() {
        "" | "local" => TestRuntime::local(),
        "spin" => {
            let bin = std::env::var_os("LVD_SPIN_BIN").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools/spin"));
            assert!(bin.exists(), "{} is missing: LVD_TEST_RUNTIME=spin needs a Spin 4.0.2 binary (LVD_SPIN_BIN)", bin.display());
            TestRuntime::Spin(bin)
        }
        other => panic!("LVD_TEST_RUNTIME={other:?}: expected \"local\" or \"spin\""),
    }
}

impl TestRuntime {
    /// lvd-runtime, whatever `LVD_TEST_RUNTIME` says: for tests of its own
    /// features (watch mode, draining on SIGTERM), which Spin does not have.
    pub fn local() -> Self {
        let bin = std::env::var_os("LVD_RUNTIME_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/release/lvd-runtime"));
        assert!(bin.exists(), "{} is missing: run script/test, which builds it and the components", bin.display());
        TestRuntime::Local(bin)
    }
}

/// Base URL of the PostgreSQL server tests create their databases on.
fn pg_base() -> String {
    std::env::var("LVD_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database of its own, created and migrated for one test, dropped after.
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The server's base URL (`postgres://user@host:port`).
    base: String,
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_on(&pg_base()).await
    }

    /// A database on another server (a test's own [`TestPostgres`]).
    pub async fn create_on(base: &str) -> Self {
        let name = format!("lvd_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin(base).await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("failed to create test database");
        let url = format!("{base}/{name}?sslmode=disable");
        Self { name, url, base: base.to_owned() }
    }

    pub async fn migrated() -> Self {
        Self::migrated_on(&pg_base()).await
    }

    pub async fn migrated_on(base: &str) -> Self {
        let db = Self::create_on(base).await;
        lvd_worker::migrate::run(&db.url).await.expect("migrations failed");
        db
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// `host:port` of the server, as `allowed_outbound_hosts` wants it.
    pub fn host(&self) -> String {
        let rest = self.base.split_once('@').map(|(_, r)| r.to_owned()).unwrap_or_default();
        rest.trim_end_matches('/').to_owned()
    }
}

async fn admin(base: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&format!("{base}/postgres?sslmode=disable"), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL must be running (script/test starts it)");
    tokio::spawn(conn);
    client
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, base) = (self.name.clone(), self.base.clone());
        // Drop runs outside any async context we can rely on: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok((admin, conn)) =
                    tokio_postgres::connect(&format!("{base}/postgres?sslmode=disable"), tokio_postgres::NoTls).await
                else {
                    return; // a test's own server, already gone
                };
                tokio::spawn(conn);
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            });
        })
        .join();
    }
}

/// What to start: which manifest, with which environment.
pub struct AppOptions {
    pub manifest: PathBuf,
    /// Extra environment for the runtime (e.g. `SPIN_VARIABLE_*`).
    pub env: Vec<(String, String)>,
    /// Variables the helper would set but this test wants unset.
    pub unset: Vec<String>,
    pub extra_args: Vec<String>,
    /// The runtime config's text; by default, the `default` key-value store
    /// in the test's Redis, database 0.
    pub runtime_config: Option<String>,
    /// The runtime to use instead of `LVD_TEST_RUNTIME`'s.
    pub runtime: Option<TestRuntime>,
    /// The PostgreSQL server to create the test's database on, instead of
    /// the shared one (a test's own [`TestPostgres`], to stop and start).
    pub postgres: Option<String>,
}

/// The product's manifest for the build `LVD_TEST_BUILD` asks for: `p3`
/// (the default, `spin.toml`) or `p2` (`spin-p2.toml`).
pub fn product_manifest() -> PathBuf {
    let name = match std::env::var("LVD_TEST_BUILD").unwrap_or_default().as_str() {
        "" | "p3" => "spin.toml",
        "p2" => "spin-p2.toml",
        other => panic!("LVD_TEST_BUILD={other:?}: expected \"p3\" or \"p2\""),
    };
    repo_root().join(name)
}

impl AppOptions {
    pub fn product() -> Self {
        Self { manifest: product_manifest(), env: vec![], unset: vec![], extra_args: vec![], runtime_config: None, runtime: None, postgres: None }
    }

    pub fn fixtures() -> Self {
        Self { manifest: repo_root().join("tests/fixtures/spin.toml"), ..Self::product() }
    }
}

/// A running app and the services it owns.
/// Fields drop in order: the processes stop before their database goes.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub runtime: RuntimeProcess,
    /// The worker (product only) and the SMTP server it sends mail to.
    pub worker: Option<TestWorker>,
    pub smtp: Option<TestSmtp>,
    pub db: TestDb,
    pub redis: TestRedis,
    _dir: TempDir,
}

/// The product with everything it needs: its database and Redis, an SMTP
/// server and a worker.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::product()).await
}

/// The worker starts first, so the app can be pointed at its password
/// hasher (or, with `LVD_TEST_SIDECAR=down`, at an address nothing answers,
/// so every hash is the component's fallback).
pub async fn spawn_app_with(mut opts: AppOptions) -> TestApp {
    let (db, redis) = services(&opts).await;
    let smtp = TestSmtp::start().await;
    let key = hasher_key(&redis);
    let up = sidecar_up();
    let worker_env: &[(&str, &str)] = if up { &[("LVD_HASHER_KEY", &key)] } else { &[] };
    let worker = TestWorker::start(&db, &redis, smtp.smtp_port, worker_env).await;
    let hasher = if up { worker.address.trim_start_matches("http://").to_owned() } else { format!("127.0.0.1:{}", free_port()) };
    // First, so a test's own settings win.
    let env = [("HASHER_URL", format!("http://{hasher}")), ("HASHER_HOST", hasher), ("HASHER_KEY", key)];
    opts.env.splice(0..0, env.map(|(k, v)| (format!("SPIN_VARIABLE_{k}"), v)));
    let mut app = spawn_on(opts, db, redis).await;
    app.worker = Some(worker);
    app.smtp = Some(smtp);
    app
}

/// Whether the worker's password hasher is up for this run of the tests:
/// `LVD_TEST_SIDECAR=down` turns it off (script/test runs the auth tests
/// both ways).
pub fn sidecar_up() -> bool {
    match std::env::var("LVD_TEST_SIDECAR").unwrap_or_default().as_str() {
        "" | "up" => true,
        "down" => false,
        other => panic!("LVD_TEST_SIDECAR={other:?}: expected \"up\" or \"down\""),
    }
}

/// The password hasher's key of a test (40 bytes; the worker and the app
/// share it).
pub fn hasher_key(redis: &TestRedis) -> String {
    format!("test-hasher-key-{:0>24}", redis.port)
}

pub async fn spawn_fixtures() -> TestApp {
    spawn_with(AppOptions::fixtures()).await
}

async fn services(opts: &AppOptions) -> (TestDb, TestRedis) {
    let db = match &opts.postgres {
        Some(base) => TestDb::migrated_on(base).await,
        None => TestDb::migrated().await,
    };
    (db, TestRedis::start().await)
}

pub async fn spawn_with(opts: AppOptions) -> TestApp {
    let (db, redis) = services(&opts).await;
    spawn_on(opts, db, redis).await
}

async fn spawn_on(opts: AppOptions, db: TestDb, redis: TestRedis) -> TestApp {
    let dir = TempDir::new();
    let (runtime, address) = start_runtime(&opts, &db, &redis, &dir).await.unwrap_or_else(|e| panic!("{e}"));
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    TestApp { address, client, db, redis, runtime, smtp: None, worker: None, _dir: dir }
}

/// The environment that points an app at this test's database and Redis.
pub fn app_env(db: &TestDb, redis: &TestRedis) -> Vec<(String, String)> {
    vec![
        ("SPIN_VARIABLE_DATABASE_URL".into(), db.url.clone()),
        ("SPIN_VARIABLE_DATABASE_HOST".into(), db.host()),
        ("SPIN_VARIABLE_REDIS_URL".into(), format!("redis://127.0.0.1:{}/1", redis.port)),
        ("SPIN_VARIABLE_REDIS_HOST".into(), format!("127.0.0.1:{}", redis.port)),
        // 40 bytes each (the app refuses fewer than 32), the same for every
        // runtime of one test, so tokens hold across its instances.
        ("SPIN_VARIABLE_JWT_SECRET".into(), format!("test-jwt-secret-{:0>24}", redis.port)),
        ("SPIN_VARIABLE_OTP_KEY".into(), format!("test-otp-key-ab-{:0>24}", redis.port)),
    ]
}

/// A running runtime: `lvd-runtime`, or `spin up` and the trigger process
/// it starts, in a process group of their own. Dropping it kills the group.
#[derive(Debug)]
pub struct RuntimeProcess(Child, RuntimeLog);

/// Every line the runtime wrote to stderr so far (its components' logs
/// included). A std Mutex: held only to push or copy, never across an await.
type RuntimeLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl RuntimeProcess {
    /// The lines the runtime has written to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.1.lock().expect("never poisoned").clone()
    }

    pub fn id(&self) -> Option<u32> {
        self.0.id()
    }

    /// Sends `signal` to every process of the runtime.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.0.id() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILL to every process of the runtime, then waits for it.
    pub async fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait().await;
    }

    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait().await
    }
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The state directory a test's runtime is given (`--state-dir`).
pub fn state_dir(dir: &TempDir) -> PathBuf {
    dir.path.join("state")
}

/// Starts the runtime and waits for its "Serving http://..." line. On failure
/// returns what it wrote to stderr.
pub async fn start_runtime(
    opts: &AppOptions,
    db: &TestDb,
    redis: &TestRedis,
    dir: &TempDir,
) -> Result<(RuntimeProcess, String), String> {
    let rc = dir.path.join("runtime-config.toml");
    let rc_text = opts.runtime_config.clone().unwrap_or_else(|| {
        format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n", redis.port)
    });
    std::fs::write(&rc, rc_text).unwrap();
    // Both take `spin up`'s flags; each test has a state directory of its
    // own, so parallel tests share neither logs nor the SQLite store.
    let mut cmd = match opts.runtime.clone().unwrap_or_else(test_runtime) {
        TestRuntime::Local(bin) | TestRuntime::Spin(bin) => Command::new(bin),
    };
    cmd.arg("up")
        .arg("--from")
        .arg(&opts.manifest)
        .arg("--runtime-config-file")
        .arg(&rc)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state_dir(dir))
        .args(&opts.extra_args)
        .envs(app_env(db, redis))
        .envs(opts.env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // `spin up` runs its trigger as a child process: a group of its
        // own lets a test stop (or kill) both at once.
        .process_group(0)
        .kill_on_drop(true);
    for k in &opts.unset {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().expect("failed to start the runtime");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    // Forward stderr so a failing test shows the runtime's log, and keep a copy.
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let log = RuntimeLog::default();
    let kept = log.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("[runtime] {l}");
            kept.lock().expect("never poisoned").push(l.clone());
            let _ = err_tx.send(l);
        }
    });
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line()).await;
        match line {
            Ok(Ok(Some(l))) => {
                if let Some(addr) = l.trim().strip_prefix("Serving ") {
                    let addr = addr.trim().to_owned();
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return Ok((RuntimeProcess(child, log), addr));
                }
            }
            _ => {
                let mut runtime = RuntimeProcess(child, log);
                runtime.kill().await;
                // Its stdout can close before its last stderr lines are read:
                // read them to the end (the group is dead, so the end comes).
                let mut stderr = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(l) = err_rx.recv().await {
                        stderr.push(l);
                    }
                })
                .await;
                return Err(format!("the runtime did not start; it said:\n{}", stderr.join("\n")));
            }
        }
    }
}

impl TestApp {
    pub fn smtp(&self) -> &TestSmtp {
        self.smtp.as_ref().expect("spawn_app starts an SMTP server")
    }

    /// Runs a command on the app's queue/counter database (Redis db 1).
    pub async fn redis_cmd(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/1", self.redis.port)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// A verified user made straight in the database (no mail round trip),
    /// signed in through the API. Returns the access token.
    pub async fn signed_in(&self, email: &str) -> String {
        let password = "correct horse battery staple";
        let hash = lvd::auth::password::hash(&lvd::auth::password::Password::parse(password.into()).unwrap());
        self.db
            .client()
            .await
            .execute(
                "INSERT INTO users (id, email, password_hash, is_active) VALUES ($1, $2, $3, true)",
                &[&uuid::Uuid::new_v4(), &email, &hash],
            )
            .await
            .unwrap();
        let resp = self.post_json("/auth/login", &serde_json::json!({ "email": email, "password": password })).await;
        assert_eq!(resp.status(), 200, "sign-in failed");
        resp.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// A request with a Bearer token and an optional JSON body.
    pub async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<serde_json::Value>) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request failed")
    }

    /// A new app of the signed-in user: `(id, ingest key)`.
    pub async fn create_app(&self, token: &str, name: &str) -> (String, String) {
        let resp = self.call(reqwest::Method::POST, "/api/apps", token, Some(serde_json::json!({ "name": name }))).await;
        assert_eq!(resp.status(), 201, "creating an app failed");
        let body: serde_json::Value = resp.json().await.unwrap();
        (body["id"].as_str().unwrap().to_owned(), body["ingest_key"].as_str().unwrap().to_owned())
    }

    /// Sets an app's rule for `event`; returns the rule as the API shows it.
    pub async fn put_rule(&self, token: &str, app_id: &str, event: &str, schema: serde_json::Value) -> serde_json::Value {
        let path = format!("/api/apps/{app_id}/rules/{}", encode(event));
        let resp = self.call(reqwest::Method::PUT, &path, token, Some(serde_json::json!({ "schema": schema }))).await;
        assert_eq!(resp.status(), 200, "setting the rule failed");
        resp.json().await.unwrap()
    }

    /// `POST /api/logs` with an ingest key.
    pub async fn ingest(&self, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url("/api/logs")).header("x-api-key", key).json(body).send().await.expect("request failed")
    }

    /// `ingest`, asserting 202; the reply body.
    pub async fn ingest_ok(&self, key: &str, body: &serde_json::Value) -> serde_json::Value {
        let resp = self.ingest(key, body).await;
        assert_eq!(resp.status(), 202, "ingest refused: {}", resp.text().await.unwrap_or_default());
        resp.json().await.unwrap()
    }

    /// Rows in `log_entries`, waiting until the worker has stored `n`.
    pub async fn wait_stored(&self, n: i64) -> i64 {
        let client = self.db.client().await;
        eventually(Duration::from_secs(20), &format!("{n} events stored"), || {
            let client = &client;
            async move {
                let count: i64 = client.query_one("SELECT count(*) FROM log_entries", &[]).await.unwrap().get(0);
                (count >= n).then_some(count)
            }
        })
        .await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request failed")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request failed")
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("body is not JSON"))
    }
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(within: Duration, what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scratch directory removed when dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("lvd-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
