//! Draining the ingest stream into `log_entries`.
//!
//! Each stream entry is one request's events as lines of `COPY` text (see
//! `lvd::events::ingest`). A step reads up to `batch` entries and writes them
//! all with one `COPY`, one commit for many requests, then acknowledges them.
//! An entry is acknowledged only after its rows are committed, so a worker
//! killed at any point leaves its entries pending for another to reclaim.
//!
//! Exactly once: entries read fresh (`>`) were never written, so they take
//! the fast path, a plain `COPY`. Entries that may have been written before
//! (reclaimed from a dead worker), and any batch the fast path refuses (an
//! app deleted meanwhile, say), take the safe path: `COPY` into a staging
//! table, then `INSERT ... ON CONFLICT DO NOTHING` keyed by each row's id,
//! skipping rows of apps that no longer exist. An entry that fails even
//! alone is settled row by row: each row PostgreSQL still refuses goes to
//! `quarantined_rows` with the reason, and the rest of the entry is stored —
//! one bad value never takes its neighbours with it, and nothing that got a
//! 202 leaves the system silently. Only an entry whose rows cannot even be
//! quarantined is parked in the (bounded) dead-letter stream.

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::SinkExt;
use std::time::Duration;
use tokio_postgres::Client;

use lvd::events::ingest::COPY_COLUMNS;

use crate::metrics::Metrics;
use crate::queue::{Entry, Queue};

pub struct Drainer {
    pub queue: Queue,
    /// Opened on first use and again after the server closes it.
    pg: Option<Client>,
    database_url: String,
    pub metrics: Metrics,
    /// Entries per step: at most this many requests' events per commit.
    pub batch: usize,
    pub reclaim_idle: Duration,
}

/// How one step went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Drained {
    pub entries: usize,
    pub rows: u64,
    pub quarantined: u64,
    pub dead_lettered: usize,
}

impl Drainer {
    pub fn new(database_url: &str, queue: Queue, metrics: Metrics, batch: usize, reclaim_idle: Duration) -> Self {
        Self { queue, pg: None, database_url: database_url.to_owned(), metrics, batch, reclaim_idle }
    }

    /// The connection, opened (again) when there is none or it closed.
    async fn pg(&mut self) -> Result<&Client> {
        if self.pg.as_ref().is_none_or(Client::is_closed) {
            self.pg = Some(open(&self.database_url).await?);
        }
        Ok(self.pg.as_ref().expect("just opened"))
    }

    /// One step: entries abandoned by dead workers first, then new ones
    /// (waiting up to `block` for some).
    pub async fn try_drain(&mut self, block: Duration) -> Result<Drained> {
        self.pg().await?;
        let pg = self.pg.as_ref().expect("connected above");
        let reclaimed = self.queue.reclaim(self.reclaim_idle, self.batch).await?;
        if !reclaimed.is_empty() {
            tracing::info!(entries = reclaimed.len(), "reclaimed ingest entries from a worker that stopped");
            return self.settle(pg, &reclaimed, false).await;
        }
        let fresh = self.queue.read(self.batch, block).await?;
        if fresh.is_empty() {
            return Ok(Drained::default());
        }
        self.settle(pg, &fresh, true).await
    }

    /// Writes the entries' rows and acknowledges them.
    async fn settle(&self, pg: &Client, entries: &[Entry], fresh: bool) -> Result<Drained> {
        let mut drained = Drained { entries: entries.len(), ..Drained::default() };
        let written = if fresh { copy(pg, entries).await } else { Err(anyhow::anyhow!("reclaimed")) };
        match written {
            Ok(n) => drained.rows = n,
            Err(fast) => match merge(pg, entries).await {
                Ok(n) => {
                    if fresh {
                        tracing::warn!(error = %fast, "COPY refused a batch; merged it instead");
                    }
                    drained.rows = n;
                }
                Err(e) if is_connection_error(&e) => return Err(e),
                // Something in the batch is poison: settle entry by entry,
                // and a poison entry row by row.
                Err(_) => {
                    for entry in entries {
                        match merge(pg, std::slice::from_ref(entry)).await {
                            Ok(n) => drained.rows += n,
                            Err(e) if is_connection_error(&e) => return Err(e),
                            Err(_) => match settle_rows(pg, entry).await {
                                Ok((stored, quarantined)) => {
                                    tracing::error!(entry = %entry.id, stored, quarantined, "rows PostgreSQL refused were quarantined");
                                    drained.rows += stored;
                                    drained.quarantined += quarantined;
                                    self.metrics.quarantined.inc_by(quarantined);
                                }
                                Err(e) if is_connection_error(&e) => return Err(e),
                                Err(e) => {
                                    tracing::error!(entry = %entry.id, error = %format!("{e:#}"), "ingest entry cannot be stored nor quarantined; dead-lettered");
                                    self.queue.dead_letter(entry, &format!("{e:#}")).await?;
                                    drained.dead_lettered += 1;
                                    self.metrics.jobs.with_label_values(&["ingest", "dead_lettered"]).inc();
                                }
                            },
                        }
                    }
                }
            },
        }
        // Dead-lettered entries are already acknowledged; again is harmless.
        self.queue.ack_all(entries).await?;
        self.metrics.rows.inc_by(drained.rows);
        self.metrics.jobs.with_label_values(&["ingest", "stored"]).inc_by((entries.len() - drained.dead_lettered) as u64);
        Ok(drained)
    }
}

/// The fast path: one `COPY` straight into `log_entries`.
async fn copy(pg: &Client, entries: &[Entry]) -> Result<u64> {
    let sink = pg.copy_in(&format!("COPY log_entries ({COPY_COLUMNS}) FROM STDIN")).await?;
    write_all(sink, &entries.iter().map(|e| e.job.as_str()).collect::<Vec<_>>()).await
}

/// The safe path: stage, then insert what is not there yet.
async fn merge(pg: &Client, entries: &[Entry]) -> Result<u64> {
    merge_text(pg, &entries.iter().map(|e| e.job.as_str()).collect::<Vec<_>>()).await
}

/// [`merge`] of any COPY text: whole entries, or single rows of one.
async fn merge_text(pg: &Client, chunks: &[&str]) -> Result<u64> {
    pg.batch_execute("BEGIN").await?;
    let result = async {
        let sink = pg.copy_in(&format!("COPY log_staging ({COPY_COLUMNS}) FROM STDIN")).await?;
        write_all(sink, chunks).await?;
        Ok::<_, anyhow::Error>(pg.execute("EXECUTE lvd_merge", &[]).await?)
    }
    .await;
    match result {
        Ok(n) => {
            pg.batch_execute("COMMIT").await?;
            Ok(n)
        }
        Err(e) => {
            let _ = pg.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// A connection with the session's staging table and merge statement.
async fn open(database_url: &str) -> Result<Client> {
    let (pg, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await.context("failed to connect to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!(error = %e, "PostgreSQL connection closed");
        }
    });
    pg.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS log_staging (LIKE log_entries) ON COMMIT DELETE ROWS; \
         PREPARE lvd_merge AS INSERT INTO log_entries ({COPY_COLUMNS}) \
           SELECT {COPY_COLUMNS} FROM log_staging s WHERE EXISTS (SELECT 1 FROM apps a WHERE a.id = s.app_id) \
           ON CONFLICT DO NOTHING"
    ))
    .await
    .context("failed to prepare the staging table")?;
    Ok(pg)
}

async fn write_all(sink: tokio_postgres::CopyInSink<Bytes>, chunks: &[&str]) -> Result<u64> {
    let mut sink = std::pin::pin!(sink);
    for chunk in chunks {
        sink.send(Bytes::copy_from_slice(chunk.as_bytes())).await?;
    }
    Ok(sink.as_mut().finish().await?)
}

/// An entry that fails even alone, row by row: each row is merged on its
/// own, and one PostgreSQL still refuses is quarantined with the reason.
/// Returns `(stored, quarantined)`. Idempotent like `merge`: a reclaimed
/// entry settled again stores and quarantines nothing twice.
async fn settle_rows(pg: &Client, entry: &Entry) -> Result<(u64, u64)> {
    let (mut stored, mut quarantined) = (0, 0);
    for (line, row) in entry.job.split_inclusive('\n').enumerate() {
        match merge_text(pg, &[row]).await {
            Ok(n) => stored += n,
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => quarantined += quarantine(pg, &entry.id, line, row, &reason(&e)).await?,
        }
    }
    Ok((stored, quarantined))
}

/// Keeps a refused row with its reason; a row of an app deleted meanwhile
/// goes with its app, as its stored neighbours would.
async fn quarantine(pg: &Client, entry: &str, line: usize, row: &str, reason: &str) -> Result<u64> {
    let app = row.split('\t').nth(1).and_then(|a| uuid::Uuid::parse_str(a).ok());
    Ok(pg
        .execute(
            "INSERT INTO quarantined_rows (entry_id, line, app_id, row_text, reason) \
             SELECT $1, $2, $3, $4, $5 WHERE $3::uuid IS NULL OR EXISTS (SELECT 1 FROM apps WHERE id = $3) \
             ON CONFLICT DO NOTHING",
            &[&entry, &(line as i32), &app, &row.as_bytes(), &reason],
        )
        .await?)
}

/// PostgreSQL's own words for why it refused a row.
fn reason(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.as_db_error()) {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => format!("{e:#}"),
    }
}

fn is_connection_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>().is_some_and(|e| e.is_closed() || e.code().is_none() && e.as_db_error().is_none())
}

/// Drains until `shutdown` turns true, finishing the step in flight.
pub async fn run(mut drainer: Drainer, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut failures = 0u32;
    while !*shutdown.borrow() {
        match drainer.try_drain(Duration::from_millis(500)).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tracing::error!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "draining the ingest stream failed");
                tokio::select! { _ = tokio::time::sleep(wait) => {}, _ = shutdown.changed() => {} }
            }
        }
    }
}
