//! Producing reports and exports: the job queue's [`Handler`]. Each entry
//! carries a job id; the job is its `jobs` row, and all its SQL is in
//! `lvd::jobs` (`produce` says how a file is made once and whole).
//!
//! One entry, start to end:
//! 1. claim the job (`running`, one more start); a settled or deleted job's
//!    entry is only acknowledged;
//! 2. a job that cannot be read, or has been started `max_attempts` times
//!    (its workers kept dying), ends `failed` with a readable error;
//! 3. produce it, touching the entry meanwhile so no other worker takes it
//!    for abandoned; a worker that dies stops touching, and after
//!    `reclaim_idle` another produces the job from the start;
//! 4. settle: done → acknowledged; the database unavailable → the job goes
//!    back to `queued` and the entry waits out a backoff; anything else ends
//!    the job `failed` (it would fail the same way again);
//! 5. an owner who asked to be told gets a mail, through the email queue.
//!
//! [`upkeep`] puts back on the queue jobs whose entry was lost, and deletes
//! expired files.

use anyhow::Result;
use std::time::Duration;
use uuid::Uuid;

use lvd::cause::chain;
use lvd::db::DbError;
use lvd::db::postgres::PgDb;
use lvd::jobs::produce::{self, Claimed, Produced};
use lvd::queues::{EmailJob, enqueue_email};

use crate::delivery::{RetryPolicy, now_ms};
use crate::kv::WorkerRedis;
use crate::metrics::Metrics;
use crate::queue::{Entry, Queue};
use crate::runner::Handler;

pub struct Jobs {
    pub queue: Queue,
    pub redis: WorkerRedis,
    pub database_url: String,
    pub policy: RetryPolicy,
    pub metrics: Metrics,
    /// The page's address, for the link in notification mail.
    pub public_url: String,
}

/// How one entry ended, for tests and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Failed(String),
    /// Settled before, or gone: only acknowledged.
    Skipped,
    /// Another worker is producing it; the entry is left pending.
    Busy,
    Retrying,
}

impl Handler for Jobs {
    fn queue(&self) -> &Queue {
        &self.queue
    }

    fn reclaim_idle(&self) -> Duration {
        self.policy.reclaim_idle
    }

    async fn execute(&self, entry: &Entry) -> Result<()> {
        let outcome = execute(self, entry).await?;
        let label = match &outcome {
            Outcome::Done => "done",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Busy => "busy",
            Outcome::Retrying => "retried",
        };
        self.metrics.jobs.with_label_values(&["jobs", label]).inc();
        Ok(())
    }
}

pub async fn execute(jobs: &Jobs, entry: &Entry) -> Result<Outcome> {
    let Some(id) = lvd::jobs::queued_id(&entry.job) else {
        jobs.queue.dead_letter(entry, "unreadable job entry").await?;
        return Ok(Outcome::Failed("unreadable job entry".into()));
    };
    // Keep the entry ours while we work on it.
    let heartbeat = {
        let every = (jobs.policy.reclaim_idle / 3).max(Duration::from_millis(100));
        let (queue, entry) = (jobs.queue.clone(), entry.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = queue.touch(&entry).await {
                    tracing::warn!(entry = %entry.id, "could not touch the job's entry: {e:#}");
                }
            }
        })
    };
    let outcome = run(jobs, entry, id).await;
    heartbeat.abort();
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(e) if produce::transient(&e) => {
            tracing::warn!(job = %id, "database unavailable, will retry: {}", chain(&e));
            let after = jobs.policy.delay(entry.attempts + 1);
            jobs.queue.retry_at(entry, now_ms() + after.as_millis() as i64).await?;
            Ok(Outcome::Retrying)
        }
        Err(e) => Err(e.into()),
    }
}

/// Claims, produces and settles one job; a database error it cannot
/// settle is returned (the caller retries).
async fn run(jobs: &Jobs, entry: &Entry, id: Uuid) -> Result<Outcome, DbError> {
    let db = PgDb::connect(&jobs.database_url).await?;
    let Some(job) = produce::claim(&db, id).await? else {
        jobs.queue.ack(entry).await.map_err(redis_down)?;
        return Ok(Outcome::Skipped);
    };
    let spec = match &job.spec {
        Ok(spec) => spec.clone(),
        Err(why) => return fail(jobs, &db, entry, &job, &format!("the job cannot be produced: {why}")).await,
    };
    if job.attempts > i64::from(jobs.policy.max_attempts) {
        let why = format!("gave up after {} starts (its workers stopped before finishing)", job.attempts - 1);
        return fail(jobs, &db, entry, &job, &why).await;
    }
    tracing::info!(job = %id, kind = spec.kind.as_str(), attempt = job.attempts, "producing");
    let started = std::time::Instant::now();
    let reader = PgDb::connect(&jobs.database_url).await?;
    match produce::produce(&reader, &db, &job, &spec).await {
        Ok(Produced::Done { bytes, parts }) => {
            tracing::info!(job = %id, bytes, parts, seconds = started.elapsed().as_secs_f64(), "done");
            notify(jobs, &db, id, job.app_id).await?;
            jobs.queue.ack(entry).await.map_err(redis_down)?;
            Ok(Outcome::Done)
        }
        Ok(Produced::Busy) => {
            produce::unclaim(&db, id).await?;
            Ok(Outcome::Busy)
        }
        Ok(Produced::Settled) => {
            jobs.queue.ack(entry).await.map_err(redis_down)?;
            Ok(Outcome::Skipped)
        }
        Err(e) if produce::transient(&e) => {
            // Back to queued until the retry is due; if even that fails, the
            // stale-job sweep finds the job running and unlocked later.
            let after = jobs.policy.delay(entry.attempts + 1);
            let _ = produce::retry_later(&db, id, after.as_millis() as i64).await;
            Err(e)
        }
        Err(e) => {
            tracing::error!(job = %id, "producing failed: {}", chain(&e));
            fail(jobs, &db, entry, &job, &format!("the {} could not be produced: {}", kind(&job), produce::describe(&e))).await
        }
    }
}

fn kind(job: &Claimed) -> &'static str {
    job.spec.as_ref().map_or("job", |s| s.kind.as_str())
}

async fn fail(jobs: &Jobs, db: &PgDb, entry: &Entry, job: &Claimed, why: &str) -> Result<Outcome, DbError> {
    tracing::error!(job = %job.id, "failed: {why}");
    produce::fail(db, job.id, why).await?;
    notify(jobs, db, job.id, job.app_id).await?;
    jobs.queue.ack(entry).await.map_err(redis_down)?;
    Ok(Outcome::Failed(why.to_owned()))
}

/// Mails the owner when they asked to be told, once the mail is on the
/// email queue (at least once: a worker dying between the two sends it
/// again).
async fn notify(jobs: &Jobs, db: &PgDb, id: Uuid, app: Uuid) -> Result<(), DbError> {
    let Some(n) = produce::pending_notice(db, id).await? else { return Ok(()) };
    let mail = EmailJob::JobFinished {
        to: n.to,
        job_kind: n.kind,
        app: n.app_name,
        status: n.status,
        error: n.error,
        link: format!("{}/dashboard#app={app}", jobs.public_url.trim_end_matches('/')),
        download_path: format!("/api/jobs/{id}/download"),
    };
    enqueue_email(&jobs.redis, &mail).await.map_err(|e| DbError::Unavailable(Box::new(e)))?;
    produce::noticed(db, id).await
}

/// A Redis failure while settling: the entry stays pending and is retried
/// like a database outage.
fn redis_down(e: anyhow::Error) -> DbError {
    DbError::Unavailable(e.into())
}

/// Every `every`: jobs whose queue entry was lost go back on the queue,
/// and expired files are deleted. Runs on every worker; the statements
/// skip what another holds.
pub async fn upkeep(database_url: String, redis: WorkerRedis, stale_after: Duration, every: Duration) {
    loop {
        let round = async {
            let db = PgDb::connect(&database_url).await?;
            let requeued = lvd::jobs::store::requeue_stale(&db, stale_after.as_secs() as i64, 100).await?;
            for id in &requeued {
                lvd::jobs::enqueue(&redis, *id).await.map_err(|e| DbError::Unavailable(Box::new(e)))?;
            }
            let expired = lvd::jobs::store::expire_files(&db).await?;
            Ok::<_, DbError>((requeued.len(), expired))
        };
        match round.await {
            Ok((requeued, expired)) if requeued + expired as usize > 0 => tracing::info!(requeued, expired, "job upkeep"),
            Ok(_) => {}
            Err(e) => tracing::warn!("job upkeep failed: {}", chain(&e)),
        }
        tokio::time::sleep(every).await;
    }
}
