//! The native worker as a child process, pointed at a test's Redis and SMTP.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{TestDb, TestRedis, repo_root};

pub struct TestWorker {
    pub child: Child,
    pub address: String,
    /// Every line the worker wrote to stderr (its log) so far.
    log: Arc<Mutex<Vec<String>>>,
}

pub fn worker_bin() -> std::path::PathBuf {
    let bin = repo_root().join("target/release/lvd-worker");
    assert!(bin.exists(), "{} is missing: run script/test", bin.display());
    bin
}

impl TestWorker {
    /// Starts a worker with fast retries (100 ms base, 1 s cap) and a 2 s
    /// reclaim time, so fault tests finish quickly. `env` overrides.
    pub async fn start(db: &TestDb, redis: &TestRedis, smtp_port: u16, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(worker_bin())
            .arg("run")
            .env("LVD_DATABASE_URL", &db.url)
            .env("LVD_REDIS_URL", format!("redis://127.0.0.1:{}/1", redis.port))
            .env("LVD_SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env("LVD_WORKER_LISTEN", "127.0.0.1:0")
            .env("LVD_WORKER_BACKOFF_BASE_MS", "100")
            .env("LVD_WORKER_BACKOFF_MAX_MS", "1000")
            .env("LVD_WORKER_RECLAIM_IDLE_MS", "2000")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("failed to start the worker");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (mut errors, kept) = (BufReader::new(child.stderr.take().unwrap()).lines(), log.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                eprintln!("worker: {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    if let Some(a) = l.strip_prefix("Worker serving ") {
                        let address = a.trim().to_owned();
                        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                        break address;
                    }
                }
                _ => panic!("the worker did not start"),
            }
        };
        Self { child, address, log }
    }

    /// The worker's log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}
