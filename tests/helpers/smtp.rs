//! A real SMTP server of the test's own (MailDev, from npm), read back over
//! its REST API. It can be stopped and started again on the same ports.

use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

use crate::{TempDir, free_port, repo_root};

pub struct TestSmtp {
    pub smtp_port: u16,
    pub web_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    /// The six-digit code in the message.
    pub fn code(&self) -> String {
        self.text
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .unwrap_or_else(|| panic!("no code in {:?}", self.text))
            .to_owned()
    }
}

impl TestSmtp {
    pub async fn start() -> Self {
        let mut s = Self { smtp_port: free_port(), web_port: free_port(), dir: TempDir::new(), child: None };
        s.restart().await;
        s
    }

    pub async fn restart(&mut self) {
        let bin = repo_root().join(".tools/node_modules/.bin/maildev");
        assert!(bin.exists(), "MailDev is missing: script/test installs it into .tools/");
        // Started exactly as script/server starts it (script/setup's exec_maildev).
        let child = Command::new("bash")
            .current_dir(repo_root())
            .args(["-c", r#"source script/setup && exec_maildev "$1" "$2" "$3""#, "maildev"])
            .args([self.smtp_port.to_string(), self.web_port.to_string()])
            .arg(&self.dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("failed to start MailDev");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::get(self.api()).await.is_ok_and(|r| r.status().is_success())
                && tokio::net::TcpStream::connect(("127.0.0.1", self.smtp_port)).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("MailDev did not come up");
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}/api/email", self.web_port)
    }

    pub async fn all(&self) -> Vec<Mail> {
        let list: Vec<Value> = reqwest::get(self.api()).await.unwrap().json().await.unwrap();
        list.iter()
            .map(|m| Mail {
                to: m["to"].as_array().into_iter().flatten().filter_map(|t| t["address"].as_str().map(str::to_owned)).collect(),
                subject: m["subject"].as_str().unwrap_or_default().to_owned(),
                text: m["text"].as_str().unwrap_or_default().to_owned(),
                html: m["html"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    pub async fn to(&self, address: &str) -> Vec<Mail> {
        self.all().await.into_iter().filter(|m| m.to.iter().any(|t| t == address)).collect()
    }

    /// Waits for the `n`-th message to `address` (1-based) and returns it.
    pub async fn wait_for(&self, address: &str, n: usize, within: Duration) -> Mail {
        let deadline = Instant::now() + within;
        loop {
            let mails = self.to(address).await;
            if mails.len() >= n {
                return mails[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "mail #{n} to {address} did not arrive within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
