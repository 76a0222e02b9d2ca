//! Readiness: what `/health/ready` reports about the app's dependencies.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::keys;
use crate::kv::{Redis, RedisError, Reply};

/// Seconds a client should wait before asking again when a dependency is down.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The body of `GET /health/ready`.
///
/// Each dependency is `"ok"` or a short, client-safe description of the fault
/// (never a driver message, which may carry addresses or credentials).
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub postgres: String,
    pub redis: String,
    /// Pending entries per background queue; empty when Redis is unreachable.
    pub queue_depth: BTreeMap<String, u64>,
    /// Entries parked per queue's dead-letter stream (bounded, about 10,000
    /// each); empty when Redis is unreachable.
    pub dead_letters: BTreeMap<String, u64>,
    /// Rows of accepted events PostgreSQL refused, kept with the reason
    /// (every app's; each owner sees its own at `/api/apps/{app}/quarantine`).
    /// `null` when PostgreSQL is unreachable.
    pub quarantined_rows: Option<u64>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.postgres == "ok" && self.redis == "ok"
    }

    pub fn status(&self) -> u16 {
        if self.is_ready() { 200 } else { 503 }
    }
}

/// Outcome of probing one dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ok,
    Unreachable,
    TimedOut,
}

impl Probe {
    pub fn describe(self) -> String {
        match self {
            Probe::Ok => "ok",
            Probe::Unreachable => "unreachable",
            Probe::TimedOut => "timed out",
        }
        .to_owned()
    }
}

/// Each queue's length and its dead-letter stream's, by the name readiness
/// shows (`keys::QUEUES`).
pub async fn queue_lengths(redis: &impl Redis) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>), RedisError> {
    let xlen = async |key: &str| -> Result<u64, RedisError> {
        let reply = redis.execute("XLEN", vec![key.into()]).await?;
        Ok(reply.first().and_then(Reply::int).unwrap_or(0).max(0) as u64)
    };
    let (mut depths, mut dead) = (BTreeMap::new(), BTreeMap::new());
    for (name, key) in keys::QUEUES {
        depths.insert((*name).to_owned(), xlen(key).await?);
        dead.insert((*name).to_owned(), xlen(&keys::dead_letter(key)).await?);
    }
    Ok((depths, dead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_both_dependencies_answer() {
        let mut r = Readiness {
            postgres: Probe::Ok.describe(),
            redis: Probe::Ok.describe(),
            queue_depth: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            quarantined_rows: Some(0),
        };
        assert_eq!(r.status(), 200);
        r.redis = Probe::TimedOut.describe();
        assert_eq!(r.status(), 503);
    }
}
