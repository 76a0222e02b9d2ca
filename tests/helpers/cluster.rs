//! Several runtime instances of one app behind nginx, as production runs
//! them (deploy/nginx.md): N instances on ports of their own sharing the
//! test's database and Redis, two workers, and nginx in front running the
//! shipped `deploy/nginx.conf` (rendered for these ports by script/setup's
//! `render_nginx_conf`, the same code script/server uses, so a test never
//! runs a copy of the configuration).
//!
//! An instance keeps its port for life: a rolling restart stops it and
//! starts its successor on the same port, as `script/roll` does, which is
//! why instances are started here and not through `start_runtime` (port 0).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{
    AppOptions, RuntimeLog, RuntimeProcess, TempDir, TestApp, TestDb, TestRedis, TestRuntime, TestWorker, app_env,
    free_port, repo_root, test_runtime,
};

/// Debian's nginx (`/usr/sbin`, which a PATH may lack). Fails, never skips,
/// when it is missing: script/test installs it.
pub fn nginx_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"));
    on_path
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .expect("nginx is missing: run script/setup (script/test installs it through ensure_nginx)")
}

/// nginx running `deploy/nginx.conf` in a prefix folder of its own (pid,
/// temporary files, `access.log`, `error.log`), in a process group of its
/// own so that dropping it stops its workers too.
pub struct TestNginx {
    pub address: String,
    child: Child,
    pub prefix: TempDir,
}

impl TestNginx {
    /// Renders the shipped configuration for `instances` (`host:port`) on a
    /// free port, starts nginx and waits until it accepts connections.
    pub async fn start(instances: &[String]) -> Self {
        let bin = nginx_bin();
        let prefix = TempDir::new();
        let port = free_port();
        let conf = prefix.path.join("nginx.conf");
        let rendered = Command::new("bash")
            .current_dir(repo_root())
            .args(["-c", "source script/setup && render_nginx_conf \"$@\"", "render"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(&conf)
            .args(instances)
            .status()
            .await
            .expect("bash could not run");
        assert!(rendered.success(), "render_nginx_conf failed");
        let mut prefix_arg = prefix.path.clone().into_os_string();
        prefix_arg.push("/");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(prefix_arg)
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("failed to start nginx");
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("[nginx] {l}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited with {status}; see its error.log in {}", prefix.path.display());
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port} within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { address: format!("http://127.0.0.1:{port}"), child, prefix }
    }

    /// The access log so far, one JSON object per request.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.access_log_from(0).0
    }

    /// The access log's lines past byte `offset`, and the offset of its end.
    pub fn access_log_from(&self, offset: u64) -> (Vec<serde_json::Value>, u64) {
        use std::io::{Read, Seek};
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.prefix.path.join("access.log")) {
            file.seek(std::io::SeekFrom::Start(offset)).unwrap();
            file.read_to_string(&mut text).unwrap();
        }
        // Only whole lines: nginx may be writing the last one.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        let lines = text[..whole]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line {l:?}: {e}")))
            .collect();
        (lines, offset + whole as u64)
    }

    /// Waits until nginx has sent a request to `instance` (`host:port`)
    /// that it answered 2xx, past byte `offset` of the access log.
    pub async fn wait_serving(&self, instance: &str, offset: u64) {
        let mut offset = offset;
        crate::eventually(Duration::from_secs(20), &format!("nginx sending requests to {instance} again"), || {
            let (lines, end) = self.access_log_from(offset);
            offset = end;
            let served = lines.iter().any(|l| {
                let last = |k: &str| l[k].as_str().unwrap_or_default().rsplit(", ").next().unwrap_or_default().to_owned();
                last("upstream_addr") == instance && last("upstream_status").starts_with('2')
            });
            async move { served.then_some(()) }
        })
        .await;
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path.join("error.log")).unwrap_or_default()
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// What an instance is started from; cloned for each start.
#[derive(Clone)]
struct InstanceSpec {
    bin: PathBuf,
    manifest: PathBuf,
    runtime_config: PathBuf,
    env: Vec<(String, String)>,
}

/// The app behind nginx: `app.address` is nginx's, so every `TestApp`
/// helper goes through it; `app.runtime` is instance 0 and `others` the
/// rest. Fields drop in order: nginx, the instances and workers, then the
/// database and Redis (inside `app`).
pub struct TestCluster {
    pub nginx: TestNginx,
    others: Vec<RuntimeProcess>,
    /// Each instance's port, by index.
    pub ports: Vec<u16>,
    pub second_worker: TestWorker,
    pub app: TestApp,
    spec: InstanceSpec,
    /// Each instance's state directory, kept across its restarts.
    dirs: Vec<TempDir>,
}

impl TestCluster {
    /// `n` instances of the product (on `runtime`), two workers and nginx.
    /// The abuse limits are raised (one loopback client makes the whole
    /// load) and nginx (127.0.0.1) is the trusted proxy.
    pub async fn start(n: usize, runtime: TestRuntime) -> Self {
        nginx_bin(); // fail first, and plainly, without nginx
        let mut opts = AppOptions::product();
        for (k, v) in [
            ("RATE_LIMIT_API_PER_IP", "1000000000"),
            ("RATE_LIMIT_API_PER_USER", "1000000000"),
            ("RATE_LIMIT_AUTH_PER_IP", "1000000000"),
            ("RATE_LIMIT_INGEST_PER_KEY", "1000000000"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ] {
            opts.env.push((format!("SPIN_VARIABLE_{k}"), v.into()));
        }
        let db = TestDb::migrated().await;
        let redis = TestRedis::start().await;
        let shared = TempDir::new();
        let runtime_config = shared.path.join("runtime-config.toml");
        std::fs::write(
            &runtime_config,
            format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n", redis.port),
        )
        .unwrap();
        let bin = match runtime {
            TestRuntime::Local(bin) | TestRuntime::Spin(bin) => bin,
        };
        let mut env = app_env(&db, &redis);
        env.extend(opts.env.iter().cloned());
        // Each instance's access log would drown the test's output; nginx
        // keeps one of every request (`TestNginx::access_log`).
        env.push(("RUST_LOG".into(), "info,access=warn".into()));
        let spec = InstanceSpec { bin, manifest: opts.manifest.clone(), runtime_config, env };

        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let dirs: Vec<TempDir> = (0..n).map(|_| TempDir::new()).collect();
        let starting: Vec<_> = ports
            .iter()
            .zip(&dirs)
            .map(|(&port, dir)| tokio::spawn(start_instance(spec.clone(), dir.path.join("state"), port)))
            .collect();
        let mut instances = Vec::new();
        for s in starting {
            instances.push(s.await.unwrap());
        }
        // No test here sends mail: the workers get an SMTP port nothing
        // listens on, and the email queue stays empty.
        let smtp_port = free_port();
        let worker = TestWorker::start(&db, &redis, smtp_port, &[]).await;
        let second_worker = TestWorker::start(&db, &redis, smtp_port, &[]).await;
        let nginx = TestNginx::start(&ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>()).await;

        let mut instances = instances.into_iter();
        let app = TestApp {
            address: nginx.address.clone(),
            client: reqwest::Client::builder().cookie_store(true).build().unwrap(),
            runtime: instances.next().expect("at least one instance"),
            worker: Some(worker),
            smtp: None,
            db,
            redis,
            _dir: shared,
        };
        Self { nginx, others: instances.collect(), ports, second_worker, app, spec, dirs }
    }

    /// The product on the runtime `LVD_TEST_RUNTIME` names.
    pub async fn product(n: usize) -> Self {
        Self::start(n, test_runtime()).await
    }

    pub fn instance(&mut self, i: usize) -> &mut RuntimeProcess {
        if i == 0 { &mut self.app.runtime } else { &mut self.others[i - 1] }
    }

    /// SIGKILL to instance `i`, as a crash would; it stays down.
    pub async fn kill(&mut self, i: usize) {
        self.instance(i).kill().await;
    }

    /// One step of a rolling restart, as `script/roll` does it: SIGTERM
    /// (the runtime stops accepting and lets in-flight requests finish),
    /// wait for the exit, start the successor on the same port, wait until
    /// it answers `/health/ready`, then until nginx sends it requests again
    /// (the refused connections of the restart make nginx hold it out for
    /// `fail_timeout`; rolling the next instance before would leave nginx
    /// none it believes in). The load must be running. Returns how long
    /// the instance was out of rotation.
    pub async fn restart(&mut self, i: usize) -> Duration {
        let started = Instant::now();
        let old = self.instance(i);
        old.signal(nix::sys::signal::Signal::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(35), old.wait())
            .await
            .unwrap_or_else(|_| panic!("instance {i} still running 35 s after SIGTERM"))
            .unwrap();
        assert!(status.success(), "instance {i} exited with {status} after SIGTERM");
        let port = self.ports[i];
        *self.instance(i) = start_instance(self.spec.clone(), self.dirs[i].path.join("state"), port).await;
        wait_ready(port).await;
        let offset = std::fs::metadata(self.nginx.prefix.path.join("access.log")).map_or(0, |m| m.len());
        self.nginx.wait_serving(&format!("127.0.0.1:{port}"), offset).await;
        started.elapsed()
    }
}

/// Starts an instance listening on `port` and waits for its "Serving" line.
async fn start_instance(spec: InstanceSpec, state_dir: PathBuf, port: u16) -> RuntimeProcess {
    let mut child = Command::new(&spec.bin)
        .arg("up")
        .arg("--from")
        .arg(&spec.manifest)
        .arg("--runtime-config-file")
        .arg(&spec.runtime_config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state_dir)
        .envs(spec.env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("failed to start the runtime");
    let stderr = child.stderr.take().unwrap();
    let log = RuntimeLog::default();
    let kept = log.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("[runtime :{port}] {l}");
            kept.lock().expect("never poisoned").push(l);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.trim().starts_with("Serving ") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(serving, Ok(true)), "the runtime on port {port} did not start (its log is above)");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    RuntimeProcess(child, log)
}

/// Polls an instance's `/health/ready` until it answers 200.
pub async fn wait_ready(port: u16) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let url = format!("http://127.0.0.1:{port}/health/ready");
    crate::eventually(Duration::from_secs(60), &format!("the instance on {port} ready"), || {
        let (client, url) = (&client, &url);
        async move { client.get(url).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}
