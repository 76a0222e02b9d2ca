//! The SQL of jobs that components and the worker share. Every statement a
//! user's request runs takes the owner, so another user's job is simply not
//! found.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Format, Kind, Spec, file_name};
use crate::db::{Db, DbError, Param, Row};
use crate::logs::rfc3339;

/// A job as its owner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub app_id: Uuid,
    pub kind: Kind,
    pub format: Format,
    pub status: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub file_bytes: Option<i64>,
    pub file_parts: Option<i64>,
    /// Done, and its file not yet expired.
    pub downloadable: bool,
}

const COLUMNS: &str = concat!(
    "id, app_id, kind, format, status, error, ",
    crate::utc!("created_at"),
    ", ",
    crate::utc!("finished_at"),
    ", ",
    crate::utc!("expires_at"),
    ", file_bytes, file_parts, (status = 'done' AND file_parts IS NOT NULL AND expires_at > now())"
);

fn job(r: &Row) -> Result<Job, DbError> {
    let kind = r.text(2)?;
    let format = r.text(3)?;
    Ok(Job {
        id: r.uuid(0)?,
        app_id: r.uuid(1)?,
        kind: Kind::parse(&kind).ok_or_else(|| DbError::Decode(format!("job kind {kind:?}")))?,
        format: Format::parse(&format).ok_or_else(|| DbError::Decode(format!("job format {format:?}")))?,
        status: r.text(4)?,
        error: r.opt_text(5)?,
        created_at: r.timestamp(6)?,
        finished_at: r.opt_timestamp(7)?,
        expires_at: r.opt_timestamp(8)?,
        file_bytes: r.opt_i64(9)?,
        file_parts: r.opt_i64(10)?,
        downloadable: r.bool(11)?,
    })
}

impl Job {
    /// `GET /api/jobs/{job}`'s body.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "app_id": self.app_id,
            "kind": self.kind.as_str(),
            "format": self.format.as_str(),
            "status": self.status,
            "error": self.error,
            "created_at": rfc3339(self.created_at),
            "finished_at": self.finished_at.map(rfc3339),
            "expires_at": self.expires_at.map(rfc3339),
            "size": self.file_bytes,
            "download_url": self.downloadable.then(|| format!("/api/jobs/{}/download", self.id)),
        })
    }

    pub fn file_name(&self) -> String {
        file_name(self.kind, self.format, self.id)
    }
}

/// Why a job could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The user already has `max_unfinished` jobs queued or running.
    #[error("too many unfinished jobs")]
    AtCap,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Records a queued job of `owner` on `app` (which the caller has checked
/// is theirs). The job takes the lowest free of the user's `max_unfinished`
/// slots; the partial unique index on `(user_id, slot)` refuses a second job
/// in a slot, so two concurrent requests cannot both take the last one (the
/// loser looks again).
pub async fn create(db: &impl Db, owner: Uuid, app: Uuid, spec: &Spec, max_unfinished: u64, keep_days: u64) -> Result<Job, CreateError> {
    let id = Uuid::now_v7();
    for _ in 0..4 {
        let result = db
            .query(
                &format!(
                    "INSERT INTO jobs (id, user_id, app_id, kind, format, params, slot, keep_days) \
                     SELECT $1, $2, $3, $4, $5, $6::text::jsonb, s.slot, $8::bigint::int \
                     FROM (SELECT g AS slot FROM generate_series(0, $7::bigint::int - 1) AS g \
                           WHERE NOT EXISTS (SELECT FROM jobs j WHERE j.user_id = $2 AND j.slot = g \
                                                                  AND j.status IN ('queued', 'running')) \
                           ORDER BY g LIMIT 1) AS s \
                     RETURNING {COLUMNS}"
                ),
                &[
                    id.into(),
                    owner.into(),
                    app.into(),
                    spec.kind.as_str().into(),
                    spec.format.as_str().into(),
                    spec.params().to_string().into(),
                    Param::I64(max_unfinished.min(1000) as i64),
                    Param::I64(keep_days.clamp(1, 365) as i64),
                ],
            )
            .await;
        match result {
            Ok(rows) => return rows.first().map(job).transpose()?.ok_or(CreateError::AtCap),
            Err(DbError::UniqueViolation(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CreateError::AtCap)
}

/// The owner's job, or `None` (another user's, or no such job).
pub async fn get(db: &impl Db, owner: Uuid, id: Uuid) -> Result<Option<Job>, DbError> {
    let rows = db.query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1 AND user_id = $2"), &[id.into(), owner.into()]).await?;
    rows.first().map(job).transpose()
}

/// A page of the owner's jobs of one app, newest first, after the job
/// `before` (ids are UUIDv7, ordered by creation: the keyset). Returns up
/// to `limit` jobs and whether more follow.
pub async fn list(db: &impl Db, owner: Uuid, app: Uuid, before: Option<Uuid>, limit: i64) -> Result<(Vec<Job>, bool), DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM jobs WHERE user_id = $1 AND app_id = $2 AND ($3::uuid IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4"
            ),
            &[owner.into(), app.into(), before.map_or(Param::Null, Param::Uuid), Param::I64(limit + 1)],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let jobs = rows.iter().take(limit as usize).map(job).collect::<Result<_, _>>()?;
    Ok((jobs, more))
}

/// One part of a job's file (`None` once it has expired and been deleted).
pub async fn part(db: &impl Db, id: Uuid, part: i64) -> Result<Option<Vec<u8>>, DbError> {
    let rows = db.query("SELECT data FROM job_files WHERE job_id = $1 AND part = $2::bigint", &[id.into(), Param::I64(part)]).await?;
    rows.first().map(|r| r.bytes(0)).transpose()
}

/// Jobs no worker holds that should be on the queue and may not be: queued
/// more than `secs` ago (their entry was lost: a crash between the insert
/// and the enqueue, or Redis restarted empty), or started more than `secs`
/// ago by a worker that no longer holds their lock (it died, and its entry
/// went with Redis). A job a worker is producing is locked, and skipped.
/// Marks them queued as of now and returns them, for the caller to
/// enqueue; at most `limit` at a time. A job queued twice is produced once
/// (`produce`).
pub async fn requeue_stale(db: &impl Db, secs: i64, limit: i64) -> Result<Vec<Uuid>, DbError> {
    let rows = db
        .query(
            "UPDATE jobs SET enqueued_at = now(), status = 'queued' WHERE id IN ( \
               SELECT id FROM jobs \
               WHERE (status = 'queued' AND enqueued_at < now() - make_interval(secs => $1::bigint::double precision)) \
                  OR (status = 'running' AND started_at < now() - make_interval(secs => $1::bigint::double precision)) \
               ORDER BY enqueued_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
            &[Param::I64(secs), Param::I64(limit)],
        )
        .await?;
    rows.iter().map(|r| r.uuid(0)).collect()
}

/// Deletes the files of jobs whose time is up; returns how many jobs lost
/// theirs. The job rows stay, so their owners see them as expired.
pub async fn expire_files(db: &impl Db) -> Result<u64, DbError> {
    let rows = db
        .query(
            "WITH gone AS (UPDATE jobs SET file_parts = NULL \
                           WHERE expires_at <= now() AND file_parts IS NOT NULL RETURNING id), \
                  parts AS (DELETE FROM job_files WHERE job_id IN (SELECT id FROM gone)) \
             SELECT count(*) FROM gone",
            &[],
        )
        .await?;
    rows.first().map_or(Ok(0), |r| r.i64(0).map(|n| n as u64))
}
