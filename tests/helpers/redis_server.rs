//! A Redis server of the test's own (Debian's `redis-server`, on a free port),
//! so each test has an isolated keyspace and can kill and restart its Redis.
//! It persists as the README tells production to (`appendonly yes`,
//! `appendfsync everysec`) in a folder of its own, so a SIGKILL and restart
//! is a crash and recovery, not a new empty server.

use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

use crate::free_port;

pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
    dir: crate::TempDir,
}


impl TestRedis {
    pub async fn start() -> Self {
        let mut r = Self { port: free_port(), child: None, dir: crate::TempDir::new() };
        r.restart().await;
        r
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&self.dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (script/test installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    /// SIGKILLs the server, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
            c.wait().await.unwrap();
        }
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n"
    }
}
