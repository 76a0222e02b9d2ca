//! The Redis streams that carry background work from the components to the
//! worker, and the jobs they carry. Both sides read these definitions from
//! here so they cannot drift.
//!
//! Delivery is at least once: a job stays pending in the stream's consumer
//! group until a worker acknowledges it, and a worker that dies mid-job leaves
//! it for another to reclaim.

use serde::{Deserialize, Serialize};

use crate::kv::{Redis, RedisError};

pub const EMAIL: &str = "lvd:queue:email";
pub const JOBS: &str = "lvd:queue:jobs";

/// Every queue with its Redis key: `(name shown in /health/ready, stream key)`.
pub const ALL: &[(&str, &str)] = &[("email", EMAIL), ("jobs", JOBS), ("ingest", crate::events::ingest::STREAM)];

/// The consumer group every worker joins.
pub const GROUP: &str = "workers";

/// Dead-letter stream of a queue: where jobs go after too many failures.
pub fn dead_letter(queue: &str) -> String {
    format!("{queue}:dead")
}

/// Sorted set of jobs waiting out a retry backoff, scored by due time (ms).
pub fn delayed(queue: &str) -> String {
    format!("{queue}:delayed")
}

/// An email to send. The code is in the clear only here, in transit to the
/// worker; the database keeps only its keyed hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EmailJob {
    VerificationCode { to: String, code: String },
    PasswordReset { to: String, code: String },
}

impl EmailJob {
    pub fn to(&self) -> &str {
        match self {
            EmailJob::VerificationCode { to, .. } | EmailJob::PasswordReset { to, .. } => to,
        }
    }
}

/// The stream field that holds a job's JSON.
pub const FIELD: &str = "job";

/// Emails the queue holds at most (`MAXLEN ~`): far above what the per-IP
/// limits on `/auth` let through, so only a flood the limits missed trims
/// it, and then the oldest mail goes first (its code expires in 10 minutes
/// anyway) rather than Redis running out of memory.
pub const EMAIL_QUEUE_MAX: i64 = 100_000;

pub async fn enqueue_email(redis: &impl Redis, job: &EmailJob) -> Result<(), RedisError> {
    let json = serde_json::to_string(job).expect("a job serializes");
    let args = vec![EMAIL.into(), "MAXLEN".into(), "~".into(), crate::kv::Arg::Int(EMAIL_QUEUE_MAX), "*".into(), FIELD.into(), json.into()];
    redis.execute("XADD", args).await.map(drop)
}
