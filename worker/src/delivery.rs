//! Sending the email queue's mail. [`execute`] handles one entry; the
//! queue is worked by [`crate::runner::run`] (bounded concurrency, reclaim,
//! graceful shutdown).

use anyhow::Result;
use lvd::queues::EmailJob;
use std::time::Duration;

use crate::mail::{Mailer, SendError};
use crate::metrics::Metrics;
use crate::queue::{Entry, Queue};
use crate::runner::Handler;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts before a job is dead-lettered.
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
    /// A pending entry idle this long belonged to a worker that died.
    pub reclaim_idle: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter in its upper half.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = self.base.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)));
        let capped = exp.min(self.max);
        capped.mul_f64(rand::random_range(0.5..=1.0))
    }
}

pub struct Deps {
    pub queue: Queue,
    pub mailer: Mailer,
    pub policy: RetryPolicy,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent,
    Retrying { after: Duration },
    DeadLettered,
}

/// Sends one entry's email and settles the entry: acknowledged when sent,
/// scheduled again on a transient failure, dead-lettered when it can never
/// succeed, has failed `max_attempts` times, or its code died (or would die
/// before the retry is due). A code is kept in the clear only while it can
/// still be delivered: a dead-lettered job loses it.
pub async fn execute(deps: &Deps, entry: &Entry) -> Result<Outcome> {
    let job: EmailJob = match serde_json::from_str(&entry.job) {
        Ok(j) => j,
        Err(e) => return park(deps, entry, &format!("unreadable job: {e}")).await,
    };
    if job.expired(now_ms() / 1000) {
        return park(deps, entry, "the code expired before it could be sent").await;
    }
    let started = std::time::Instant::now();
    let result = deps.mailer.send(&job).await;
    deps.metrics.send_seconds.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            deps.queue.ack(entry).await?;
            deps.metrics.jobs.with_label_values(&["email", "sent"]).inc();
            Ok(Outcome::Sent)
        }
        Err(SendError::Permanent(reason)) => park(deps, entry, &reason).await,
        Err(SendError::Transient(reason)) if entry.attempts + 1 >= deps.policy.max_attempts => park(deps, entry, &reason).await,
        Err(SendError::Transient(reason)) => {
            let after = deps.policy.delay(entry.attempts + 1);
            if job.expired((now_ms() + after.as_millis() as i64) / 1000) {
                return park(deps, entry, &format!("the code expires before the next attempt: {reason}")).await;
            }
            tracing::warn!(entry = %entry.id, attempt = entry.attempts + 1, ?after, "send failed, will retry: {reason}");
            deps.queue.retry_at(entry, now_ms() + after.as_millis() as i64).await?;
            deps.metrics.jobs.with_label_values(&["email", "retried"]).inc();
            Ok(Outcome::Retrying { after })
        }
    }
}

/// Dead-letters the entry without its code: a job that will never be sent
/// has no use for it, and the dead-letter stream keeps entries until they
/// are read or trimmed away (`DEAD_LETTER_CAP`).
async fn park(deps: &Deps, entry: &Entry, reason: &str) -> Result<Outcome> {
    tracing::error!(entry = %entry.id, "parking job in the dead-letter queue: {reason}");
    let redacted = Entry { job: EmailJob::redact(&entry.job), ..entry.clone() };
    deps.queue.dead_letter(&redacted, reason).await?;
    deps.metrics.jobs.with_label_values(&["email", "dead_lettered"]).inc();
    Ok(Outcome::DeadLettered)
}

impl Handler for Deps {
    fn queue(&self) -> &Queue {
        &self.queue
    }

    fn reclaim_idle(&self) -> Duration {
        self.policy.reclaim_idle
    }

    async fn execute(&self, entry: &Entry) -> Result<()> {
        execute(self, entry).await.map(drop)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let p = RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reclaim_idle: Duration::from_secs(30),
        };
        for (failures, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)] {
            let d = p.delay(failures).as_secs_f64();
            assert!(d >= full / 2.0 && d <= full, "failure {failures}: {d}s not in [{}, {full}]", full / 2.0);
        }
    }
}
