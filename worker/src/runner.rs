//! Working one queue: what the email queue and the job queue share. A
//! [`Handler`] settles one entry (acknowledges it, schedules a retry, or
//! dead-letters it); [`run`] adds fetching (due retries first, then entries
//! abandoned by dead workers, then new ones), bounded concurrency, and
//! graceful shutdown.

use anyhow::Result;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::delivery::now_ms;
use crate::metrics::Metrics;
use crate::queue::{Entry, Queue};

pub trait Handler: Send + Sync + 'static {
    fn queue(&self) -> &Queue;
    /// A pending entry idle this long belonged to a worker that died.
    fn reclaim_idle(&self) -> Duration;
    /// Works one entry and settles it. An error leaves it pending, to be
    /// reclaimed.
    fn execute(&self, entry: &Entry) -> impl Future<Output = Result<()>> + Send;
}

/// One round: due retries back onto the stream, then up to `max` entries —
/// first any abandoned by dead workers, then new ones (waiting up to `block`).
pub async fn fetch(h: &impl Handler, max: usize, block: Duration) -> Result<Vec<Entry>> {
    let queue = h.queue();
    queue.promote_due(now_ms()).await?;
    let mut entries = queue.reclaim(h.reclaim_idle(), max).await?;
    if entries.len() < max {
        entries.extend(queue.read(max - entries.len(), block).await?);
    }
    Ok(entries)
}

/// Works the queue until `shutdown` fires, with at most `concurrency`
/// entries in flight; then waits for those to finish (up to `drain`). What
/// is still in flight after that stays pending in the consumer group, and
/// another worker reclaims it.
pub async fn run<H: Handler>(h: Arc<H>, concurrency: usize, mut shutdown: tokio::sync::watch::Receiver<bool>, drain: Duration, metrics: Metrics) {
    let name = lvd::keys::QUEUES.iter().find(|(_, key)| *key == h.queue().key).map_or(h.queue().key.as_str(), |(name, _)| *name);
    let busy = metrics.busy.with_label_values(&[name]);
    metrics.concurrency.with_label_values(&[name]).set(concurrency as i64);
    let permits = Arc::new(Semaphore::new(concurrency));
    // Entries this worker is working. One slower than `reclaim_idle` looks
    // abandoned, and XAUTOCLAIM hands it back to its own worker: such an
    // entry must not be started a second time. A std Mutex: held only to
    // insert, remove or test an id, never across an await.
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut failures = 0u32;
    while !*shutdown.borrow() {
        let free = permits.available_permits();
        if free == 0 {
            let _ = permits.clone().acquire_owned().await.map(drop);
            continue;
        }
        let fetched = tokio::select! {
            r = fetch(&*h, free, Duration::from_secs(1)) => r,
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
                let _ = h.queue().ensure_group().await;
                let wait = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                tracing::warn!(queue = h.queue().key, "queue unavailable, retrying in {wait:?}: {e:#}");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        for entry in entries {
            if !in_flight.lock().expect("never poisoned").insert(entry.id.clone()) {
                continue; // reclaimed from ourselves while still working it
            }
            let permit = permits.clone().acquire_owned().await.expect("semaphore never closes");
            let (h, in_flight, busy) = (h.clone(), in_flight.clone(), busy.clone());
            busy.inc();
            // Every line logged while working the entry names it, and the
            // request it came from.
            let span = tracing::info_span!("entry", queue = h.queue().key, entry = %entry.id, request_id = entry.request_id.as_deref());
            tokio::spawn(
                async move {
                    if let Err(e) = h.execute(&entry).await {
                        // The entry stays pending and will be reclaimed.
                        tracing::error!("could not settle entry: {e:#}");
                    }
                    in_flight.lock().expect("never poisoned").remove(&entry.id);
                    busy.dec();
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    tracing::info!(queue = h.queue().key, "shutting down: waiting for the entries in flight");
    metrics.draining.set(1);
    let all = permits.acquire_many(concurrency as u32);
    if tokio::time::timeout(drain, all).await.is_err() {
        metrics.drain_abandoned.inc_by(busy.get().max(0) as u64);
        tracing::warn!(queue = h.queue().key, "entries still in flight after {drain:?}; they will be reclaimed");
    }
}
