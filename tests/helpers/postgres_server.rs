//! A PostgreSQL server of the test's own (Debian's binaries, `initdb` into a
//! temporary folder, on a free port), for tests that stop and start
//! PostgreSQL under load without disturbing every other test's server.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

use crate::{TempDir, free_port};

pub struct TestPostgres {
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

/// The newest installed PostgreSQL's `bin` folder.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL must be installed (script/test installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL binaries under /usr/lib/postgresql")
}

/// A command run as `postgres` when we are root (PostgreSQL refuses root).
fn as_server_user(program: PathBuf) -> Command {
    if nix::unistd::Uid::effective().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl TestPostgres {
    pub async fn start() -> Self {
        let dir = TempDir::new();
        if nix::unistd::Uid::effective().is_root() {
            let status = std::process::Command::new("chown").arg("postgres:postgres").arg(&dir.path).status().unwrap();
            assert!(status.success(), "chown of the test cluster's folder failed");
        }
        let bin = bin_dir();
        let status = as_server_user(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8", "-D"])
            .arg(dir.path.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("initdb could not run");
        assert!(status.success(), "initdb failed");
        let mut pg = Self { port: free_port(), bin, child: None, dir };
        pg.restart().await;
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>`, for [`crate::TestDb::migrated_on`].
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and data, waiting until it
    /// accepts connections.
    pub async fn restart(&mut self) {
        let child = as_server_user(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path.join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(&self.dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres could not start");
        self.child = Some(child);
        for _ in 0..400 {
            if tokio_postgres::connect(&format!("{}/postgres", self.base()), tokio_postgres::NoTls).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the test's PostgreSQL on port {} did not come up", self.port);
    }

    /// Stops the server as an operator would (`fast` shutdown: connections
    /// are cut, in-flight transactions roll back) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT);
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(c) = &self.child
            && let Some(pid) = c.id()
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGQUIT);
        }
    }
}
