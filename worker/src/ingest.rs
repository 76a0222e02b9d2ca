//! The ingest writer: takes the ingest stream's entries into `log_entries`.
//!
//! Each stream entry is one request's events as lines of `COPY` text
//! (`lvd::logs::rows`). A step reads up to `batch` entries and writes them
//! all at once, one commit for many requests, then acknowledges them. An
//! entry is acknowledged only after its rows are committed, so a worker
//! killed at any point leaves its entries pending for another to reclaim.
//!
//! Exactly once: entries read fresh (`>`) were never written, so they take
//! the fast path (`rows::copy`). Entries that may have been written before
//! (reclaimed from a dead worker), and any batch the fast path refuses (an
//! app deleted meanwhile, say), take the safe path (`rows::merge`). An
//! entry that fails even alone is settled row by row: each row PostgreSQL
//! still refuses is quarantined with the reason, and the rest of the entry
//! is stored — one bad value never takes its neighbours with it, and
//! nothing that got a 202 leaves the system silently. Only an entry whose
//! rows cannot even be quarantined is parked in the (bounded) dead-letter
//! stream.

use anyhow::Result;
use std::time::Duration;

use lvd::cause::chain;
use lvd::db::DbError;
use lvd::db::postgres::PgDb;
use lvd::logs::{quarantine, rows};

use crate::metrics::Metrics;
use crate::queue::{Entry, Queue};

pub struct Writer {
    pub queue: Queue,
    /// Opened (and prepared) on first use and again after the server closes it.
    pg: Option<PgDb>,
    database_url: String,
    pub metrics: Metrics,
    /// Entries per step: at most this many requests' events per commit.
    pub batch: usize,
    pub reclaim_idle: Duration,
}

/// How one step went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Written {
    pub entries: usize,
    pub rows: u64,
    pub quarantined: u64,
    pub dead_lettered: usize,
}

impl Writer {
    pub fn new(database_url: &str, queue: Queue, metrics: Metrics, batch: usize, reclaim_idle: Duration) -> Self {
        Self { queue, pg: None, database_url: database_url.to_owned(), metrics, batch, reclaim_idle }
    }

    /// The connection, opened and prepared (again) when there is none or it closed.
    async fn pg(&mut self) -> Result<&PgDb, DbError> {
        if self.pg.as_ref().is_none_or(PgDb::is_closed) {
            let pg = PgDb::connect(&self.database_url).await?;
            rows::prepare(&pg).await?;
            self.pg = Some(pg);
        }
        Ok(self.pg.as_ref().expect("just opened"))
    }

    /// One step: entries abandoned by dead workers first, then new ones
    /// (waiting up to `block` for some).
    pub async fn step(&mut self, block: Duration) -> Result<Written> {
        self.pg().await?;
        let pg = self.pg.as_ref().expect("connected above");
        let reclaimed = self.queue.reclaim(self.reclaim_idle, self.batch).await?;
        if !reclaimed.is_empty() {
            tracing::info!(entries = reclaimed.len(), "reclaimed ingest entries from a worker that stopped");
            return self.settle(pg, &reclaimed, false).await;
        }
        let fresh = self.queue.read(self.batch, block).await?;
        if fresh.is_empty() {
            return Ok(Written::default());
        }
        self.settle(pg, &fresh, true).await
    }

    /// Writes the entries' rows and acknowledges them.
    async fn settle(&self, pg: &PgDb, entries: &[Entry], fresh: bool) -> Result<Written> {
        let mut written = Written { entries: entries.len(), ..Written::default() };
        let lines: Vec<&str> = entries.iter().map(|e| e.job.as_str()).collect();
        let fast = if fresh { Some(rows::copy(pg, &lines).await) } else { None };
        match fast {
            Some(Ok(n)) => written.rows = n,
            fast => match rows::merge(pg, &lines).await {
                Ok(n) => {
                    if let Some(Err(e)) = fast {
                        tracing::warn!(error = %chain(&e), "the fast path refused a batch; merged it instead");
                    }
                    written.rows = n;
                }
                Err(e @ DbError::Unavailable(_)) => return Err(e.into()),
                // Something in the batch is poison: settle entry by entry,
                // and a poison entry row by row.
                Err(_) => {
                    for entry in entries {
                        self.settle_alone(pg, entry, &mut written).await?;
                    }
                }
            },
        }
        // Dead-lettered entries are already acknowledged; again is harmless.
        self.queue.ack_all(entries).await?;
        self.metrics.rows.inc_by(written.rows);
        self.metrics.jobs.with_label_values(&["ingest", "stored"]).inc_by((entries.len() - written.dead_lettered) as u64);
        Ok(written)
    }

    /// One entry of a batch that failed: merged alone, else row by row,
    /// else dead-lettered.
    async fn settle_alone(&self, pg: &PgDb, entry: &Entry, written: &mut Written) -> Result<()> {
        match rows::merge(pg, &[entry.job.as_str()]).await {
            Ok(n) => written.rows += n,
            Err(e @ DbError::Unavailable(_)) => return Err(e.into()),
            Err(_) => match settle_rows(pg, entry).await {
                Ok((stored, quarantined)) => {
                    tracing::error!(entry = %entry.id, stored, quarantined, "rows PostgreSQL refused were quarantined");
                    written.rows += stored;
                    written.quarantined += quarantined;
                    self.metrics.quarantined.inc_by(quarantined);
                }
                Err(e @ DbError::Unavailable(_)) => return Err(e.into()),
                Err(e) => {
                    let reason = chain(&e);
                    tracing::error!(entry = %entry.id, error = %reason, "ingest entry cannot be stored nor quarantined; dead-lettered");
                    self.queue.dead_letter(entry, &reason).await?;
                    written.dead_lettered += 1;
                    self.metrics.jobs.with_label_values(&["ingest", "dead_lettered"]).inc();
                }
            },
        }
        Ok(())
    }
}

/// An entry that fails even alone, row by row: each row is merged on its
/// own, and one PostgreSQL still refuses is quarantined with the reason.
/// Returns `(stored, quarantined)`. Idempotent like `merge`: a reclaimed
/// entry settled again stores and quarantines nothing twice.
async fn settle_rows(pg: &PgDb, entry: &Entry) -> Result<(u64, u64), DbError> {
    let (mut stored, mut quarantined) = (0, 0);
    for (line, row) in entry.job.split_inclusive('\n').enumerate() {
        match rows::merge(pg, &[row]).await {
            Ok(n) => stored += n,
            Err(e @ DbError::Unavailable(_)) => return Err(e),
            Err(e) => quarantined += quarantine::keep(pg, &entry.id, line, row, &reason(&e)).await?,
        }
    }
    Ok((stored, quarantined))
}

/// PostgreSQL's own words for why it refused a row.
fn reason(e: &DbError) -> String {
    e.server().map_or_else(|| chain(e), ToString::to_string)
}

/// Writes until `shutdown` turns true, finishing the step in flight.
pub async fn run(mut writer: Writer, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut failures = 0u32;
    while !*shutdown.borrow() {
        match writer.step(Duration::from_millis(500)).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tracing::error!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "writing the ingest stream failed");
                tokio::select! { _ = tokio::time::sleep(wait) => {}, _ = shutdown.changed() => {} }
            }
        }
    }
}
