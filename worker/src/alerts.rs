//! Evaluating alerts and sending what their changes owe (`lvd::alerts`).
//!
//! Every tick (a quarter of the interval, at most a second) a worker:
//! 1. locks the enabled alerts that are due, skipping those another worker
//!    holds, judges each against its app's counters in Redis (one read per
//!    app), and records its figure, its state, when it is next due and —
//!    when the state changed — the change and its notifications, all in one
//!    transaction; then
//! 2. sends the pending notifications, each under its own row lock (mail
//!    and webhooks by separate tasks, webhooks by several at once): an email onto the email queue, a webhook through the
//!    guarded [`Sender`], every attempt recorded, retried with backoff until
//!    a 2xx or [`MAX_WEBHOOK_ATTEMPTS`].
//!
//! A change is recorded once whatever the number of workers (the row lock
//! and the state compared inside it), and its notifications outlive the
//! worker that decided it. What cannot be made exactly once is the step
//! between handing a notification over (the email queue, the receiver) and
//! marking it sent: a worker dying in that instant sends it again, so every
//! webhook carries `X-LVD-Delivery`, the notification's id, for the
//! receiver to drop a repeat.

use anyhow::{Context, Result};
use chrono::Utc;
use lvd::alerts::eval::{self, Figures};
use lvd::alerts::store::{self, Due, Pending};
use lvd::alerts::{Kind, MAX_WEBHOOK_ATTEMPTS, webhook_body};
use lvd::cause::chain;
use lvd::db::CopyIn;
use lvd::db::postgres::PgDb;
use lvd::queues::{EmailJob, enqueue_email};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

use crate::kv::WorkerRedis;
use crate::metrics::Metrics;
use crate::webhook::Sender;

/// Alerts locked and judged per transaction.
const BATCH: i64 = 50;
/// Notifications one sender sends per tick, at most.
const SENDS_PER_TICK: usize = 50;
/// Tasks sending webhooks at once (mail has its own).
const WEBHOOK_SENDERS: usize = 4;
/// Days of alert history kept.
const HISTORY_DAYS: i64 = 90;

pub struct Alerts {
    pub database_url: String,
    pub redis: WorkerRedis,
    /// How often each alert is evaluated.
    pub interval: Duration,
    pub metrics: Metrics,
    pub sender: Sender,
    /// The page's address, for the link in mail.
    pub public_url: String,
    /// Apps whose webhook a sender of this worker is waiting on: the other
    /// senders pass them over, so one app's slow receiver holds at most one
    /// sender.
    pub sending: std::sync::Mutex<HashSet<Uuid>>,
    /// Held by the sender choosing its next notification.
    pub picking: tokio::sync::Mutex<()>,
    /// Test hook (`LVD_WORKER_FAILPOINT=alert_decided`): the process aborts
    /// right after committing a change, before sending anything, as a
    /// crash there would.
    pub crash_after_deciding: bool,
}

/// Evaluates and notifies until `stop`: one task evaluates, one sends
/// mail, and [`WEBHOOK_SENDERS`] send webhooks, each with its own
/// connection; a sender passes over the apps another is waiting on, so a
/// receiver that takes its 5 s holds up no mail and no other app.
pub async fn run(alerts: Arc<Alerts>, stop: watch::Receiver<bool>) {
    let mut tasks = vec![tokio::spawn(every_tick(alerts.clone(), stop.clone(), async |a: &Alerts, db: &PgDb, rounds: u64| {
        while evaluate(a, db).await? == BATCH as usize {}
        if rounds.is_multiple_of(3600) {
            let pruned = store::prune(db, HISTORY_DAYS).await?;
            if pruned > 0 {
                tracing::info!(pruned, "alert history pruned");
            }
        }
        Ok(())
    }))];
    let channels = std::iter::once("email").chain(std::iter::repeat_n("webhook", WEBHOOK_SENDERS));
    for channel in channels {
        tasks.push(tokio::spawn(every_tick(alerts.clone(), stop.clone(), async move |a: &Alerts, db: &PgDb, _| {
            for _ in 0..SENDS_PER_TICK {
                if !send_next(a, db, channel).await? {
                    break;
                }
            }
            Ok(())
        })));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Runs `step` every tick (a quarter of the interval, at most a second) on
/// a connection of its own, until `stop`.
async fn every_tick(a: Arc<Alerts>, mut stop: watch::Receiver<bool>, mut step: impl AsyncFnMut(&Alerts, &PgDb, u64) -> Result<()>) {
    let tick = (a.interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut db: Option<PgDb> = None;
    let mut rounds: u64 = 0;
    while !*stop.borrow() {
        if db.as_ref().is_none_or(PgDb::is_closed) {
            db = PgDb::connect(&a.database_url).await.map_err(|e| tracing::warn!("alerts: no database: {}", chain(&e))).ok();
        }
        if let Some(conn) = &db
            && let Err(e) = step(&a, conn, rounds).await
        {
            tracing::warn!("alerts: {e:#}");
            // Whatever the transaction held is given back.
            let _ = conn.batch("ROLLBACK").await;
        }
        rounds += 1;
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Judges one batch of due alerts in one transaction; returns how many.
async fn evaluate(a: &Alerts, db: &PgDb) -> Result<usize> {
    db.batch("BEGIN").await?;
    let due = store::due(db, BATCH).await?;
    let now = Utc::now();
    let mut figures: HashMap<Uuid, Figures> = HashMap::new();
    let mut changes = Vec::new();
    for alert in &due {
        let f = match figures.entry(alert.app_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(eval::figures(&a.redis, alert.app_id, now).await.context("reading an app's counters")?),
        };
        let (holds, value, names) = judge(db, alert, f).await?;
        let changed = (holds != alert.firing).then_some(names.as_deref());
        if let Some(id) = store::record(db, alert, value, changed, a.interval.as_millis() as i64).await? {
            changes.push((id, alert.id, if holds { "firing" } else { "resolved" }));
        }
        a.metrics.alert_evaluations.with_label_values(&[if holds { "firing" } else { "ok" }]).inc();
    }
    db.batch("COMMIT").await?;
    for (change, alert, state) in &changes {
        a.metrics.alert_changes.with_label_values(&[state]).inc();
        tracing::info!(%alert, %change, state, "alert changed state");
    }
    if a.crash_after_deciding && !changes.is_empty() {
        tracing::error!("failpoint alert_decided: aborting before sending");
        std::process::abort();
    }
    Ok(due.len())
}

/// Whether the alert's condition holds, its figure, and for
/// `new_unplanned` the names that made it so.
async fn judge(db: &PgDb, alert: &Due, figures: &Figures) -> Result<(bool, f64, Option<Vec<String>>)> {
    if alert.settings.kind != Kind::NewUnplanned {
        let v = eval::judge(&alert.settings, alert.updated_at, figures);
        return Ok((v.holds, v.value, None));
    }
    let window = alert.settings.window.secs();
    if alert.fresh {
        // What the app sent before this alert watched is not new.
        store::remember_names(db, alert.app_id, &eval::seen_names(figures), false, true).await?;
    }
    store::remember_names(db, alert.app_id, &eval::names(figures, window, Some("unplanned")), true, false).await?;
    store::remember_names(db, alert.app_id, &eval::names(figures, window, None), false, false).await?;
    let new = store::new_unplanned(db, alert.app_id, window).await?;
    Ok((!new.is_empty(), new.len() as f64, Some(new)))
}

/// Sends the next due notification of `channel`, if any; returns whether
/// there was one.
async fn send_next(a: &Alerts, db: &PgDb, channel: &str) -> Result<bool> {
    db.batch("BEGIN").await?;
    // One sender picks at a time, so two cannot both take the same app
    // between reading the set and marking it.
    let turn = a.picking.lock().await;
    let skip: Vec<Uuid> = a.sending.lock().expect("never poisoned").iter().copied().collect();
    let Some(p) = store::next_notification(db, channel, &skip).await? else {
        drop(turn);
        db.batch("COMMIT").await?;
        return Ok(false);
    };
    let _waiting = (channel == "webhook").then(|| Waiting::on(&a.sending, p.app));
    drop(turn);
    let attempt = p.attempts + 1;
    let outcome = match p.channel.as_str() {
        "email" => match enqueue_email(&a.redis, &mail(a, &p)).await {
            Ok(()) => {
                store::sent(db, p.id, attempt, None).await?;
                "sent"
            }
            Err(e) => {
                store::retry(db, p.id, attempt, None, &format!("email queue: {}", chain(&e)), backoff_ms(attempt)).await?;
                "retried"
            }
        },
        _ => webhook(a, db, &p, attempt).await?,
    };
    db.batch("COMMIT").await?;
    a.metrics.alert_notifications.with_label_values(&[&p.channel, outcome]).inc();
    Ok(true)
}

/// An app marked as having a webhook in flight, until dropped.
struct Waiting<'a>(&'a std::sync::Mutex<HashSet<Uuid>>, Uuid);

impl<'a> Waiting<'a> {
    fn on(set: &'a std::sync::Mutex<HashSet<Uuid>>, app: Uuid) -> Self {
        set.lock().expect("never poisoned").insert(app);
        Self(set, app)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("never poisoned").remove(&self.1);
    }
}

/// One webhook delivery attempt, recorded; returns the outcome.
async fn webhook(a: &Alerts, db: &PgDb, p: &Pending, attempt: i32) -> Result<&'static str> {
    let (Some(url), Some(secret)) = (&p.webhook_url, &p.webhook_secret) else {
        store::failed(db, p.id, attempt, None, "the alert no longer has a webhook").await?;
        return Ok("failed");
    };
    let body = webhook_body(&p.change, p.alert, p.app, p.kind);
    let result = a.sender.post(url, secret.as_bytes(), &body, p.id).await;
    store::record_delivery(db, p.id, attempt, result.status, result.error.as_deref()).await?;
    let why = result.error.clone().unwrap_or_else(|| format!("status {}", result.status.unwrap_or_default()));
    Ok(if result.delivered() {
        store::sent(db, p.id, attempt, result.status).await?;
        "sent"
    } else if attempt >= MAX_WEBHOOK_ATTEMPTS {
        tracing::warn!(notification = %p.id, "webhook given up after {attempt} attempts: {why}");
        store::failed(db, p.id, attempt, result.status, &why).await?;
        "failed"
    } else {
        store::retry(db, p.id, attempt, result.status, &why, backoff_ms(attempt)).await?;
        "retried"
    })
}

/// 2, 4, 8, … seconds after attempt 1, 2, 3, …, at most 4 hours, with up
/// to a quarter more at random so receivers coming back are not stampeded.
fn backoff_ms(attempt: i32) -> i64 {
    let base = (2_000i64 << attempt.clamp(1, 20).saturating_sub(1)).min(4 * 3_600_000);
    base + rand::random_range(0..=base / 4)
}

fn mail(a: &Alerts, p: &Pending) -> EmailJob {
    let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
    EmailJob::AlertChanged {
        to: p.owner_email.clone(),
        app: p.app_name.clone(),
        alert_kind: p.kind.as_str().to_owned(),
        figure: p.kind.describe().to_owned(),
        event: p.event.clone(),
        state: p.change.state.clone(),
        value: round(p.change.value),
        threshold: round(p.change.threshold),
        window: p.window.as_str().to_owned(),
        events: p.change.events.clone().unwrap_or_default(),
        at: lvd::logs::rfc3339(p.change.at),
        link: format!("{}/dashboard#app={}", a.public_url.trim_end_matches('/'), p.app),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_up_to_four_hours() {
        for (attempt, base) in [(1, 2_000), (2, 4_000), (3, 8_000), (13, 8_192_000), (16, 14_400_000), (40, 14_400_000)] {
            let ms = backoff_ms(attempt);
            assert!((base..=base + base / 4).contains(&ms), "attempt {attempt}: {ms}");
        }
    }
}
