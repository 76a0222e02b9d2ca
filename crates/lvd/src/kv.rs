//! The seam between domain logic and Redis (outbound Redis: queues, counters,
//! rate limits, deny-lists). Components implement [`Redis`] over
//! `spin_sdk::redis` (`lvd-component`). The worker's queues use the `redis`
//! crate directly (streams, consumer groups), with every key from
//! `crate::keys`.
//!
//! Replies are flattened exactly as Spin's `execute` flattens them: nested
//! arrays become one list, so commands used here must return flat replies.

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Nil,
    Status(String),
    Int(i64),
    Bytes(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
#[error("redis unavailable")]
pub struct RedisError(#[source] pub crate::cause::Cause);

/// An argument of a Redis command.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(i64),
    Bytes(Vec<u8>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Bytes(v.as_bytes().to_vec())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Bytes(v.into_bytes())
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::Int(v as i64)
    }
}

/// A Lua script, sent by its SHA-1 (`EVALSHA`) so Redis neither receives
/// nor hashes its text on every call; its text goes only when Redis does not
/// know it yet (after a restart or `SCRIPT FLUSH`).
pub struct Script {
    text: &'static str,
    sha1: std::sync::OnceLock<String>,
}

impl Script {
    pub const fn new(text: &'static str) -> Self {
        Self { text, sha1: std::sync::OnceLock::new() }
    }

    pub fn text(&self) -> &'static str {
        self.text
    }

    /// The SHA-1 Redis knows the script by, in hex.
    pub fn sha1(&self) -> &str {
        self.sha1.get_or_init(|| {
            use sha1::Digest;
            sha1::Sha1::digest(self.text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
        })
    }
}

/// Whether a command's error is Redis saying it does not know a script.
pub fn is_noscript(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("noscript") || e.contains("no matching script")
}

#[allow(async_fn_in_trait)]
pub trait Redis {
    async fn execute(&self, command: &str, args: Vec<Arg>) -> Result<Vec<Reply>, RedisError>;
    /// Runs `script` with `args` (the key count, the keys, then the
    /// arguments). By default with its text (`EVAL`); adapters that can tell
    /// Redis's NOSCRIPT apart send its SHA-1 first (`EVALSHA`).
    async fn eval(&self, script: &Script, args: Vec<Arg>) -> Result<Vec<Reply>, RedisError> {
        let mut with_text = Vec::with_capacity(args.len() + 1);
        with_text.push(Arg::from(script.text()));
        with_text.extend(args);
        self.execute("EVAL", with_text).await
    }
    /// The id of the request this handle serves, if it serves one: queue
    /// entries carry it, so the worker's log lines name the request.
    fn request_id(&self) -> Option<&str> {
        None
    }
    /// The request this handle serves, for a script that counts it itself
    /// (`crate::metrics::Pending`); `None` when none should.
    fn pending(&self) -> Option<&dyn crate::metrics::Pending> {
        None
    }
}

impl Reply {
    /// The reply as text: a bulk string that is UTF-8, a status, or a number.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Bytes(b) => String::from_utf8(b.clone()).ok(),
            Reply::Status(s) => Some(s.clone()),
            Reply::Int(n) => Some(n.to_string()),
            Reply::Nil => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            Reply::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_known_by_the_sha1_of_its_text() {
        static S: Script = Script::new("return 1");
        assert_eq!(S.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
