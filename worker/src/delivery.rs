//! Sending the email queue's mail. [`execute`] handles one entry;
//! [`try_execute_task`] fetches a batch; [`run`] adds only waiting, bounded
//! concurrency and graceful shutdown.

use anyhow::Result;
use lvd::queues::EmailJob;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::mail::{Mailer, SendError};
use crate::metrics::Metrics;
use crate::queue::{Entry, Queue};

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

/// One round: due retries back onto the stream, then up to `max` entries —
/// first any abandoned by dead workers, then new ones (waiting up to `block`).
pub async fn try_execute_task(deps: &Deps, max: usize, block: Duration) -> Result<Vec<Entry>> {
    deps.queue.promote_due(now_ms()).await?;
    let mut entries = deps.queue.reclaim(deps.policy.reclaim_idle, max).await?;
    if entries.len() < max {
        entries.extend(deps.queue.read(max - entries.len(), block).await?);
    }
    Ok(entries)
}

/// Drains the queue until `shutdown` fires, with at most `concurrency` sends
/// in flight; then waits for those to finish (up to `drain`).
pub async fn run(deps: Arc<Deps>, concurrency: usize, mut shutdown: tokio::sync::watch::Receiver<bool>, drain: Duration) {
    let permits = Arc::new(Semaphore::new(concurrency));
    // Entries this worker is sending. A send slower than `reclaim_idle`
    // looks abandoned, and XAUTOCLAIM hands it back to its own worker: such
    // an entry must not be sent a second time. A std Mutex: held only to
    // insert, remove or test an id, never across an await.
    let in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
    let mut failures = 0u32;
    while !*shutdown.borrow() {
        let free = permits.available_permits();
        if free == 0 {
            let _ = permits.clone().acquire_owned().await.map(drop);
            continue;
        }
        let fetched = tokio::select! {
            r = try_execute_task(&deps, free, Duration::from_secs(1)) => r,
            _ = shutdown.changed() => break,
        };
        let entries = match fetched {
            Ok(e) => {
                failures = 0;
                e
            }
            Err(e) => {
                // Redis is down: back off, keep trying; nothing is lost meanwhile.
                // A Redis that restarted empty has lost the group: recreate it.
                failures += 1;
                let _ = deps.queue.ensure_group().await;
                let wait = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                tracing::warn!("queue unavailable, retrying in {wait:?}: {e:#}");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        for entry in entries {
            if !in_flight.lock().expect("never poisoned").insert(entry.id.clone()) {
                continue; // reclaimed from ourselves while still sending it
            }
            let permit = permits.clone().acquire_owned().await.expect("semaphore never closes");
            let (deps, in_flight) = (deps.clone(), in_flight.clone());
            tokio::spawn(async move {
                if let Err(e) = execute(&deps, &entry).await {
                    // The entry stays pending and will be reclaimed.
                    tracing::error!(entry = %entry.id, "could not settle entry: {e:#}");
                }
                in_flight.lock().expect("never poisoned").remove(&entry.id);
                drop(permit);
            });
        }
    }
    tracing::info!("shutting down: waiting for in-flight sends");
    let all = permits.acquire_many(concurrency as u32);
    if tokio::time::timeout(drain, all).await.is_err() {
        tracing::warn!("sends still in flight after {drain:?}; their entries will be reclaimed");
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
