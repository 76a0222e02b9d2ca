//! The worker's side of a job (native only): claim it, produce its file,
//! settle it. The statements the worker runs for jobs are all here.
//!
//! A job is produced inside one transaction on the writer connection, which
//! takes the job's row lock first (`FOR UPDATE SKIP LOCKED`), writes every
//! part of the file and marks the job done, then commits. So:
//! - a worker that dies (or loses PostgreSQL) mid-job rolls back: no part
//!   of its file remains, the job is still `running` with its queue entry
//!   pending, and whoever reclaims the entry produces it from the start;
//! - a second worker that reaches a job while the first still produces it
//!   finds the row locked and leaves the entry for later ([`Produced::Busy`]);
//!   one that reaches it after the commit finds it done. A file is never
//!   produced twice, and never half.
//!
//! The rows come from a second connection as a stream ([`PgDb::text_rows`]),
//! formatted into a buffer that goes to `job_files` each time it reaches
//! [`PART_BYTES`]: memory stays flat whatever the range.

use futures_util::StreamExt;
use uuid::Uuid;

use super::{Format, Kind, PART_BYTES, Spec, cells, report};
use crate::db::postgres::PgDb;
use crate::db::{CopyIn, Db, DbError, Param};
use crate::logs::rfc3339;

/// A job a worker has started: what to produce, and for which app.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub app_id: Uuid,
    pub app_name: String,
    pub retention_days: i64,
    /// Starts so far, this one included.
    pub attempts: i64,
    /// The stored spec, or why it cannot be read (the job then fails).
    pub spec: Result<Spec, String>,
}

/// Marks a queued (or abandoned running) job running and counts the start.
/// `None` when it is settled already (done, failed) or gone (its app was
/// deleted): the queue entry is then only acknowledged.
pub async fn claim(db: &impl Db, id: Uuid) -> Result<Option<Claimed>, DbError> {
    let rows = db
        .query(
            "UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, started_at = now() \
             FROM apps a \
             WHERE j.id = $1 AND j.status IN ('queued', 'running') AND a.id = j.app_id \
             RETURNING j.kind, j.format, j.params::text, j.attempts, j.app_id, a.name, a.retention_days",
            &[id.into()],
        )
        .await?;
    let Some(r) = rows.first() else { return Ok(None) };
    let spec = Spec::stored(&r.text(0)?, &r.text(1)?, &r.json(2)?);
    Ok(Some(Claimed { id, attempts: r.i64(3)?, app_id: r.uuid(4)?, app_name: r.text(5)?, retention_days: r.i64(6)?, spec }))
}

/// Takes back the start [`claim`] counted, when another worker turned out
/// to be producing the job ([`Produced::Busy`]): only real starts count
/// towards giving up.
pub async fn unclaim(db: &impl Db, id: Uuid) -> Result<(), DbError> {
    db.execute("UPDATE jobs SET attempts = attempts - 1 WHERE id = $1 AND attempts > 0", &[id.into()]).await.map(drop)
}

/// Ends an unfinished job as failed with `error` (words for its owner).
/// Returns whether this call settled it.
pub async fn fail(db: &impl Db, id: Uuid, error: &str) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE jobs SET status = 'failed', slot = NULL, error = $2, finished_at = now() \
             WHERE id = $1 AND status IN ('queued', 'running')",
            &[id.into(), error.into()],
        )
        .await?;
    Ok(n == 1)
}

/// Puts a job that failed for now back to `queued`, due again in
/// `after_ms` (so the stale-job sweep leaves it alone meanwhile).
pub async fn retry_later(db: &impl Db, id: Uuid, after_ms: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE jobs SET status = 'queued', enqueued_at = now() + make_interval(secs => $2::bigint / 1000.0) \
         WHERE id = $1 AND status = 'running'",
        &[id.into(), Param::I64(after_ms)],
    )
    .await
    .map(drop)
}

/// How producing went.
#[derive(Debug, Clone, PartialEq)]
pub enum Produced {
    /// The file is stored and the job done.
    Done { bytes: u64, parts: u32 },
    /// Another worker holds the job (it is producing it now).
    Busy,
    /// The job was settled (or deleted) before this worker got its lock.
    Settled,
}

/// Produces `job`'s file: rows read on `reader`, file and verdict written
/// on `writer` in one transaction (module docs). On an error the
/// transaction is rolled back and nothing of this attempt remains.
pub async fn produce(reader: &PgDb, writer: &PgDb, job: &Claimed, spec: &Spec) -> Result<Produced, DbError> {
    writer.batch("BEGIN").await?;
    let result = locked(reader, writer, job, spec).await;
    let end = match &result {
        Ok(Produced::Done { .. }) => "COMMIT",
        _ => "ROLLBACK",
    };
    match writer.batch(end).await {
        Ok(()) => result,
        // A failed COMMIT keeps nothing: the attempt failed.
        Err(e) => result.and(Err(e)),
    }
}

async fn locked(reader: &PgDb, writer: &PgDb, job: &Claimed, spec: &Spec) -> Result<Produced, DbError> {
    let rows = writer.query("SELECT status FROM jobs WHERE id = $1 FOR UPDATE SKIP LOCKED", &[job.id.into()]).await?;
    let Some(row) = rows.first() else {
        // Locked by a worker producing it, or deleted: either way not ours.
        let exists = !writer.query("SELECT FROM jobs WHERE id = $1", &[job.id.into()]).await?.is_empty();
        return Ok(if exists { Produced::Busy } else { Produced::Settled });
    };
    if !matches!(row.text(0)?.as_str(), "queued" | "running") {
        return Ok(Produced::Settled);
    }
    let mut file = Parts { writer, job: job.id, buf: Vec::with_capacity(PART_BYTES + (64 << 10)), part: 0, bytes: 0 };
    match spec.kind {
        Kind::Export => export(reader, job, spec, &mut file).await?,
        Kind::Report => {
            let data = report::gather(reader, job, spec).await?;
            file.buf = match spec.format {
                Format::Json => report::json(&data),
                Format::Csv => report::csv(&data),
                _ => report::html(&data),
            };
            file.flush_full().await?;
        }
    }
    let (bytes, parts) = file.finish().await?;
    writer
        .execute(
            // clock_timestamp(): now() is when the transaction began.
            "UPDATE jobs SET status = 'done', slot = NULL, error = NULL, finished_at = c.t, \
               file_bytes = $2, file_parts = $3::bigint::int, expires_at = c.t + make_interval(days => keep_days) \
             FROM (SELECT clock_timestamp() AS t) AS c WHERE id = $1",
            &[job.id.into(), Param::I64(bytes as i64), Param::I64(i64::from(parts))],
        )
        .await?;
    Ok(Produced::Done { bytes, parts })
}

/// A job's file as it is written: parts of [`PART_BYTES`] go to
/// `job_files` as the buffer fills.
struct Parts<'a> {
    writer: &'a PgDb,
    job: Uuid,
    buf: Vec<u8>,
    part: u32,
    bytes: u64,
}

impl Parts<'_> {
    /// Stores every whole part the buffer holds.
    async fn flush_full(&mut self) -> Result<(), DbError> {
        while self.buf.len() >= PART_BYTES {
            let rest = self.buf.split_off(PART_BYTES);
            let part = std::mem::replace(&mut self.buf, rest);
            self.store(part).await?;
        }
        Ok(())
    }

    async fn store(&mut self, data: Vec<u8>) -> Result<(), DbError> {
        self.bytes += data.len() as u64;
        self.writer
            .execute("INSERT INTO job_files (job_id, part, data) VALUES ($1, $2::bigint::int, $3)", &[self.job.into(), Param::I64(i64::from(self.part)), data.into()])
            .await?;
        self.part += 1;
        Ok(())
    }

    /// Stores what is left; the file's size and number of parts (an empty
    /// file has one empty part, so every done job has a part 0).
    async fn finish(mut self) -> Result<(u64, u32), DbError> {
        self.flush_full().await?;
        if !self.buf.is_empty() || self.part == 0 {
            let last = std::mem::take(&mut self.buf);
            self.store(last).await?;
        }
        Ok((self.bytes, self.part))
    }
}

/// RFC 3339 in UTC with microseconds, as [`rfc3339`] writes it, in SQL.
macro_rules! rfc3339_sql {
    ($column:literal) => {
        concat!("to_char(", $column, " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    };
}

/// The rows of an export, oldest first, within the app's retention (as
/// `GET /api/logs` shows them). `$1` app, `$2` from, `$3` to, `$4`
/// status, `$5` event, `$6` retention days.
const EXPORT_WHERE: &str = "FROM log_entries \
     WHERE app_id = $1 \
       AND received_at >= greatest($2::text::timestamptz, now() - make_interval(days => $6::bigint::int)) \
       AND received_at < $3::text::timestamptz \
       AND ($4::text IS NULL OR status = $4) \
       AND ($5::text IS NULL OR event = $5) \
     ORDER BY received_at, id";

/// One event per line, as `GET /api/logs` shows it.
const NDJSON_SELECT: &str = concat!(
    "SELECT jsonb_build_object('id', id, 'event', event, 'status', status, 'errors', errors, ",
    "'properties', properties, 'context', context, 'timestamp', ",
    rfc3339_sql!("\"timestamp\""),
    ", 'received_at', ",
    rfc3339_sql!("received_at"),
    ", 'rule_version', rule_version, 'message_id', message_id)::text "
);

/// The contract's CSV columns, in order, each as text.
const CSV_SELECT: &str = concat!(
    "SELECT id::text, ",
    rfc3339_sql!("received_at"),
    ", ",
    rfc3339_sql!("\"timestamp\""),
    ", event, status, rule_version::text, message_id, errors::text, properties::text, context::text "
);

/// The CSV header row.
pub const CSV_COLUMNS: [&str; 10] =
    ["id", "received_at", "timestamp", "event", "status", "rule_version", "message_id", "errors", "properties", "context"];

async fn export(reader: &PgDb, job: &Claimed, spec: &Spec, file: &mut Parts<'_>) -> Result<(), DbError> {
    let select = if spec.format == Format::Csv { CSV_SELECT } else { NDJSON_SELECT };
    let params = [
        job.app_id.into(),
        rfc3339(spec.from).into(),
        rfc3339(spec.to).into(),
        spec.status.into(),
        spec.event.as_ref().map(|e| e.as_str()).into(),
        Param::I64(job.retention_days),
    ];
    let rows = reader.text_rows(&format!("{select}{EXPORT_WHERE}"), &params).await?;
    let mut rows = std::pin::pin!(rows);
    let broken = |e: std::io::Error| DbError::Decode(format!("could not write the file: {e}"));
    if spec.format == Format::Csv {
        // The CSV writer writes into `out`, which this loop drains into the
        // file's parts as it fills.
        let out = Shared::default();
        let mut csv = cells::writer(out.clone());
        csv.write_record(CSV_COLUMNS).map_err(|e| broken(e.into()))?;
        while let Some(row) = rows.next().await {
            let row = row?;
            for i in 0..CSV_COLUMNS.len() {
                csv.write_field(cells::neutralise(row.get(i)?.unwrap_or("")).as_bytes()).map_err(|e| broken(e.into()))?;
            }
            csv.write_record(None::<&[u8]>).map_err(|e| broken(e.into()))?;
            if out.len() >= PART_BYTES {
                file.buf.append(&mut out.take());
                file.flush_full().await?;
            }
        }
        csv.flush().map_err(broken)?;
        file.buf.append(&mut out.take());
    } else {
        while let Some(row) = rows.next().await {
            let row = row?;
            file.buf.extend_from_slice(row.get(0)?.unwrap_or("null").as_bytes());
            file.buf.push(b'\n');
            if file.buf.len() >= PART_BYTES {
                file.flush_full().await?;
            }
        }
    }
    Ok(())
}

/// A buffer the CSV writer owns a handle of while the export drains it.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Shared {
    fn len(&self) -> usize {
        self.0.lock().expect("never poisoned").len()
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("never poisoned"))
    }
}

impl std::io::Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("never poisoned").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Who to tell that a job finished, when its owner asked to be told and has
/// not been yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub to: String,
    pub app_name: String,
    pub kind: String,
    pub status: String,
    pub error: Option<String>,
}

pub async fn pending_notice(db: &impl Db, id: Uuid) -> Result<Option<Notice>, DbError> {
    let rows = db
        .query(
            "SELECT u.email, a.name, j.kind, j.status, j.error FROM jobs j \
             JOIN users u ON u.id = j.user_id JOIN apps a ON a.id = j.app_id \
             WHERE j.id = $1 AND j.status IN ('done', 'failed') AND j.notified_at IS NULL \
               AND coalesce((j.params->>'notify')::boolean, false)",
            &[id.into()],
        )
        .await?;
    let Some(r) = rows.first() else { return Ok(None) };
    Ok(Some(Notice { to: r.text(0)?, app_name: r.text(1)?, kind: r.text(2)?, status: r.text(3)?, error: r.opt_text(4)? }))
}

/// Records that the owner was told (their mail is on the email queue).
pub async fn noticed(db: &impl Db, id: Uuid) -> Result<(), DbError> {
    db.execute("UPDATE jobs SET notified_at = now() WHERE id = $1", &[id.into()]).await.map(drop)
}

/// When producing failed, whether trying again can help: the database was
/// unreachable. Anything else (a statement refused, a row that does not
/// decode) will fail the same way next time.
pub fn transient(e: &DbError) -> bool {
    matches!(e, DbError::Unavailable(_))
}

/// Words for the owner about a failure (never SQL or a driver's message).
pub fn describe(e: &DbError) -> &'static str {
    match e {
        DbError::Unavailable(_) => "the database was unavailable",
        _ => "the data could not be read",
    }
}
