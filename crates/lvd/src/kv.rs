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

#[allow(async_fn_in_trait)]
pub trait Redis {
    async fn execute(&self, command: &str, args: Vec<Arg>) -> Result<Vec<Reply>, RedisError>;
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
