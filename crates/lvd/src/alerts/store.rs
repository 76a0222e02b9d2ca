//! The SQL of alerts. Every statement a user's request runs takes the owner
//! and the app, so another user's alert is simply not found. The worker's
//! statements ([`due`], [`record`], [`next_notification`] and the marks that
//! follow) run inside a transaction the worker holds, under row locks taken
//! with `SKIP LOCKED`, so two workers never evaluate one alert or send one
//! notification at once.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Kind, MAX_KNOWN_NAMES, MAX_PER_APP, Settings, Window};
use crate::db::{Db, DbError, Param, Row};
use crate::logs::{EventName, rfc3339};

/// An alert as its owner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: Uuid,
    pub app_id: Uuid,
    pub settings: Settings,
    /// `ok` or `firing`.
    pub state: String,
    pub value: Option<f64>,
    pub evaluated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When it took its current definition.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = concat!(
    "id, app_id, kind, event, threshold, window_secs, min_events, email, webhook_url, enabled, state, value, ",
    crate::utc!("evaluated_at"),
    ", ",
    crate::utc!("created_at"),
    ", ",
    crate::utc!("updated_at")
);

fn settings(r: &Row, at: usize) -> Result<Settings, DbError> {
    let kind = r.text(at)?;
    Ok(Settings {
        kind: Kind::parse(&kind).ok_or_else(|| DbError::Decode(format!("alert kind {kind:?}")))?,
        event: r.opt_text(at + 1)?.map(EventName::parse).transpose().map_err(|e| DbError::Decode(e.to_owned()))?,
        threshold: r.f64(at + 2)?,
        window: Window(r.i64(at + 3)?),
        min_events: r.i64(at + 4)?,
        email: r.bool(at + 5)?,
        webhook_url: r.opt_text(at + 6)?,
        enabled: r.bool(at + 7)?,
    })
}

fn alert(r: &Row) -> Result<Alert, DbError> {
    Ok(Alert {
        id: r.uuid(0)?,
        app_id: r.uuid(1)?,
        settings: settings(r, 2)?,
        state: r.text(10)?,
        value: r.opt_f64(11)?,
        evaluated_at: r.opt_timestamp(12)?,
        created_at: r.timestamp(13)?,
        updated_at: r.timestamp(14)?,
    })
}

impl Alert {
    /// The alert as the API shows it (never its webhook secret).
    pub fn view(&self) -> Value {
        let s = &self.settings;
        let uses = s.kind.default_threshold().is_some();
        json!({
            "id": self.id,
            "app_id": self.app_id,
            "kind": s.kind.as_str(),
            "event": s.event.as_ref().map(EventName::as_str),
            "threshold": s.threshold,
            "window": s.window.as_str(),
            "min_events": uses.then_some(s.min_events),
            "email": s.email,
            "webhook_url": s.webhook_url,
            "enabled": s.enabled,
            "state": self.state,
            "value": self.value,
            "evaluated_at": self.evaluated_at.map(rfc3339),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

fn params(s: &Settings) -> [Param; 8] {
    [
        s.kind.as_str().into(),
        s.event.as_ref().map_or(Param::Null, |e| e.as_str().into()),
        Param::F64(s.threshold),
        Param::I64(s.window.secs()),
        Param::I64(s.min_events),
        Param::Bool(s.email),
        s.webhook_url.clone().map_or(Param::Null, Param::Text),
        Param::Bool(s.enabled),
    ]
}

/// Why an alert could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the app has {MAX_PER_APP} alerts already")]
    AtCap,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Records a new alert of `owner` on `app` (which the caller has checked is
/// theirs), with `secret` when it has a webhook; refused past
/// [`MAX_PER_APP`] alerts (two requests racing for the last place may
/// both get it: the cap bounds work, it is not a quota).
pub async fn create(db: &impl Db, owner: Uuid, app: Uuid, s: &Settings, secret: Option<&str>) -> Result<Alert, CreateError> {
    let mut p = vec![Uuid::now_v7().into(), owner.into(), app.into(), secret.map_or(Param::Null, Param::from), Param::I64(MAX_PER_APP)];
    p.extend(params(s));
    let rows = db
        .query(
            &format!(
                "INSERT INTO alerts (id, user_id, app_id, webhook_secret, \
                                     kind, event, threshold, window_secs, min_events, email, webhook_url, enabled) \
                 SELECT $1, $2, $3, $4, $6, $7, $8, $9::bigint::int, $10, $11, $12, $13 \
                 WHERE (SELECT count(*) FROM alerts WHERE app_id = $3) < $5 \
                 RETURNING {COLUMNS}"
            ),
            &p,
        )
        .await?;
    rows.first().map(alert).transpose()?.ok_or(CreateError::AtCap)
}

/// The owner's alert on the app, or `None`.
pub async fn get(db: &impl Db, owner: Uuid, app: Uuid, id: Uuid) -> Result<Option<Alert>, DbError> {
    let rows = db
        .query(&format!("SELECT {COLUMNS} FROM alerts WHERE id = $1 AND app_id = $2 AND user_id = $3"), &[id.into(), app.into(), owner.into()])
        .await?;
    rows.first().map(alert).transpose()
}

/// A page of the app's alerts, newest first, after the alert `before` (ids
/// are UUIDv7: the keyset); up to `limit`, and whether more follow.
pub async fn list(db: &impl Db, owner: Uuid, app: Uuid, before: Option<Uuid>, limit: i64) -> Result<(Vec<Alert>, bool), DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM alerts WHERE app_id = $1 AND user_id = $2 AND ($3::uuid IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4"
            ),
            &[app.into(), owner.into(), before.map_or(Param::Null, Param::Uuid), Param::I64(limit + 1)],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    Ok((rows.iter().take(limit as usize).map(alert).collect::<Result<_, _>>()?, more))
}

/// What an update does to the webhook secret.
pub enum Secret {
    Keep,
    Set(String),
    Clear,
}

/// Replaces the alert's settings; it goes back to `ok` and is due at once
/// (see the module docs of `crate::alerts`). `None` when it is not the
/// owner's.
pub async fn update(db: &impl Db, owner: Uuid, app: Uuid, id: Uuid, s: &Settings, secret: Secret) -> Result<Option<Alert>, DbError> {
    let (set, value) = match secret {
        Secret::Keep => (false, Param::Null),
        Secret::Set(v) => (true, Param::Text(v)),
        Secret::Clear => (true, Param::Null),
    };
    let mut p = vec![id.into(), app.into(), owner.into(), Param::Bool(set), value];
    p.extend(params(s));
    let rows = db
        .query(
            &format!(
                "UPDATE alerts SET kind = $6, event = $7, threshold = $8, window_secs = $9::bigint::int, min_events = $10, \
                   email = $11, webhook_url = $12, enabled = $13, \
                   webhook_secret = CASE WHEN $4 THEN $5 ELSE webhook_secret END, \
                   state = 'ok', value = NULL, evaluated_at = NULL, due_at = now(), updated_at = now() \
                 WHERE id = $1 AND app_id = $2 AND user_id = $3 \
                 RETURNING {COLUMNS}"
            ),
            &p,
        )
        .await?;
    rows.first().map(alert).transpose()
}

/// Deletes the owner's alert, its history and pending notifications; false
/// when there was none.
pub async fn delete(db: &impl Db, owner: Uuid, app: Uuid, id: Uuid) -> Result<bool, DbError> {
    Ok(db.execute("DELETE FROM alerts WHERE id = $1 AND app_id = $2 AND user_id = $3", &[id.into(), app.into(), owner.into()]).await? > 0)
}

/// One change of an alert's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: Uuid,
    /// `firing` or `resolved`.
    pub state: String,
    pub at: DateTime<Utc>,
    pub value: f64,
    pub threshold: f64,
    /// `new_unplanned`: the names that arrived.
    pub events: Option<Vec<String>>,
}

const CHANGE_COLUMNS: &str = concat!("c.id, c.state, ", "c.at AT TIME ZONE 'UTC'", ", c.value, c.threshold, c.events::text");

fn change(r: &Row, at: usize) -> Result<Change, DbError> {
    let events = match r.opt_text(at + 5)? {
        None => None,
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| DbError::Decode(format!("alert change events: {e}")))?),
    };
    Ok(Change { id: r.uuid(at)?, state: r.text(at + 1)?, at: r.timestamp(at + 2)?, value: r.f64(at + 3)?, threshold: r.f64(at + 4)?, events })
}

impl Change {
    /// A history item.
    pub fn view(&self) -> Value {
        let mut v = json!({ "id": self.id, "state": self.state, "at": rfc3339(self.at), "value": self.value, "threshold": self.threshold });
        if let Some(events) = &self.events {
            v["events"] = json!(events);
        }
        v
    }
}

/// A page of the owner's alert's changes, newest first, after the change
/// `before`; `None` when the alert is not the owner's.
pub async fn history(db: &impl Db, owner: Uuid, app: Uuid, id: Uuid, before: Option<Uuid>, limit: i64) -> Result<Option<(Vec<Change>, bool)>, DbError> {
    if get(db, owner, app, id).await?.is_none() {
        return Ok(None);
    }
    let rows = db
        .query(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM alert_changes c WHERE c.alert_id = $1 AND ($2::uuid IS NULL OR c.id < $2) \
                 ORDER BY c.id DESC LIMIT $3"
            ),
            &[id.into(), before.map_or(Param::Null, Param::Uuid), Param::I64(limit + 1)],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    Ok(Some((rows.iter().take(limit as usize).map(|r| change(r, 0)).collect::<Result<_, _>>()?, more)))
}

/// An alert a worker is to evaluate, locked by it.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: Uuid,
    pub app_id: Uuid,
    pub settings: Settings,
    pub firing: bool,
    /// Never evaluated since it took its definition.
    pub fresh: bool,
    pub updated_at: DateTime<Utc>,
}

/// Locks up to `limit` enabled alerts whose time has come, skipping those
/// another worker holds. Run inside a transaction; the locks last until it
/// ends.
pub async fn due(db: &impl Db, limit: i64) -> Result<Vec<Due>, DbError> {
    let rows = db
        .query(
            concat!(
                "SELECT id, app_id, kind, event, threshold, window_secs, min_events, email, webhook_url, enabled, ",
                "state, evaluated_at IS NULL, ",
                crate::utc!("updated_at"),
                " FROM alerts WHERE enabled AND due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            &[Param::I64(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Due {
                id: r.uuid(0)?,
                app_id: r.uuid(1)?,
                settings: settings(r, 2)?,
                firing: r.text(10)? == "firing",
                fresh: r.bool(11)?,
                updated_at: r.timestamp(12)?,
            })
        })
        .collect()
}

/// Records an evaluation of a locked alert: its figure, its state, when it
/// is next due (`next_ms` from now), and, when its state changed, the
/// change and one pending notification per channel it has. Returns the
/// change's id when there was one.
pub async fn record(db: &impl Db, alert: &Due, value: f64, changed: Option<Option<&[String]>>, next_ms: i64) -> Result<Option<Uuid>, DbError> {
    let firing = alert.firing != changed.is_some();
    db.execute(
        "UPDATE alerts SET state = $2, value = $3, evaluated_at = now(), \
           due_at = now() + make_interval(secs => $4::bigint::double precision / 1000) WHERE id = $1",
        &[alert.id.into(), if firing { "firing" } else { "ok" }.into(), Param::F64(value), Param::I64(next_ms)],
    )
    .await?;
    let Some(events) = changed else { return Ok(None) };
    let id = Uuid::now_v7();
    db.execute(
        "INSERT INTO alert_changes (id, alert_id, state, value, threshold, events) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)",
        &[
            id.into(),
            alert.id.into(),
            if firing { "firing" } else { "resolved" }.into(),
            Param::F64(value),
            Param::F64(alert.settings.threshold),
            events.map_or(Param::Null, |e| Param::Text(json!(e).to_string())),
        ],
    )
    .await?;
    let channels: Vec<&str> =
        [alert.settings.email.then_some("email"), alert.settings.webhook_url.as_ref().map(|_| "webhook")].into_iter().flatten().collect();
    for channel in channels {
        db.execute("INSERT INTO alert_notifications (id, change_id, channel) VALUES ($1, $2, $3)", &[Uuid::now_v7().into(), id.into(), channel.into()])
            .await?;
    }
    Ok(Some(id))
}

/// Adds the names `app` sent to its known names (at most
/// [`MAX_KNOWN_NAMES`]); `seed` marks them as known from before any alert
/// watched (they never fire).
pub async fn remember_names(db: &impl Db, app: Uuid, names: &[String], unplanned: bool, seed: bool) -> Result<(), DbError> {
    if names.is_empty() {
        return Ok(());
    }
    db.execute(
        "INSERT INTO app_event_names (app_id, name, unplanned, first_seen) \
         SELECT $1, n, $3, CASE WHEN $4 THEN '-infinity'::timestamptz ELSE now() END \
         FROM unnest(string_to_array($2, chr(10))) AS n \
         WHERE (SELECT count(*) FROM app_event_names WHERE app_id = $1) < $5 \
         ON CONFLICT (app_id, name) DO NOTHING",
        &[app.into(), names.join("\n").into(), Param::Bool(unplanned), Param::Bool(seed), Param::I64(MAX_KNOWN_NAMES)],
    )
    .await
    .map(drop)
}

/// The unplanned names `app` sent for the first time in the last `secs`.
pub async fn new_unplanned(db: &impl Db, app: Uuid, secs: i64) -> Result<Vec<String>, DbError> {
    let rows = db
        .query(
            "SELECT name FROM app_event_names WHERE app_id = $1 AND unplanned \
               AND first_seen > now() - make_interval(secs => $2::bigint::double precision) ORDER BY name LIMIT 20",
            &[app.into(), Param::I64(secs)],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}

/// A notification a worker is to send, locked by it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: Uuid,
    /// `email` or `webhook`.
    pub channel: String,
    pub attempts: i32,
    pub change: Change,
    pub alert: Uuid,
    pub kind: Kind,
    pub event: Option<String>,
    pub window: Window,
    pub app: Uuid,
    pub app_name: String,
    pub owner_email: String,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
}

/// Locks the next notification of `channel` that is due, skipping those
/// another sender holds and those of the apps in `skip` (apps a sender is
/// already waiting on). Run inside a transaction, which the caller ends
/// with one of [`sent`], [`retry`] or [`failed`].
pub async fn next_notification(db: &impl Db, channel: &str, skip: &[Uuid]) -> Result<Option<Pending>, DbError> {
    let skip = skip.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
    let rows = db
        .query(
            &format!(
                "SELECT n.id, n.channel, n.attempts, {CHANGE_COLUMNS}, a.id, a.kind, a.event, a.window_secs, a.app_id, ap.name, u.email, \
                   a.webhook_url, a.webhook_secret \
                 FROM alert_notifications n JOIN alert_changes c ON c.id = n.change_id JOIN alerts a ON a.id = c.alert_id \
                   JOIN apps ap ON ap.id = a.app_id JOIN users u ON u.id = a.user_id \
                 WHERE n.status = 'pending' AND n.channel = $1 AND n.due_at <= now() \
                   AND NOT (a.app_id::text = ANY (string_to_array($2, ','))) \
                 ORDER BY n.due_at LIMIT 1 FOR UPDATE OF n SKIP LOCKED"
            ),
            &[channel.into(), skip.into()],
        )
        .await?;
    let Some(r) = rows.first() else { return Ok(None) };
    let kind = r.text(10)?;
    Ok(Some(Pending {
        id: r.uuid(0)?,
        channel: r.text(1)?,
        attempts: r.i64(2)? as i32,
        change: change(r, 3)?,
        alert: r.uuid(9)?,
        kind: Kind::parse(&kind).ok_or_else(|| DbError::Decode(format!("alert kind {kind:?}")))?,
        event: r.opt_text(11)?,
        window: Window(r.i64(12)?),
        app: r.uuid(13)?,
        app_name: r.text(14)?,
        owner_email: r.text(15)?,
        webhook_url: r.opt_text(16)?,
        webhook_secret: r.opt_text(17)?,
    }))
}

/// Records one webhook delivery attempt and what came back.
pub async fn record_delivery(db: &impl Db, id: Uuid, attempt: i32, status: Option<u16>, error: Option<&str>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO alert_deliveries (notification_id, attempt, http_status, error) VALUES ($1, $2::bigint::int, $3::bigint::int, $4) \
         ON CONFLICT DO NOTHING",
        &[id.into(), Param::I64(attempt.into()), status.map_or(Param::Null, |s| Param::I64(s.into())), error.map_or(Param::Null, Param::from)],
    )
    .await
    .map(drop)
}

/// Marks a notification sent.
pub async fn sent(db: &impl Db, id: Uuid, attempts: i32, status: Option<u16>) -> Result<(), DbError> {
    finish(db, id, "sent", attempts, status, None, 0).await
}

/// Leaves a notification pending, due again in `delay_ms`.
pub async fn retry(db: &impl Db, id: Uuid, attempts: i32, status: Option<u16>, error: &str, delay_ms: i64) -> Result<(), DbError> {
    finish(db, id, "pending", attempts, status, Some(error), delay_ms).await
}

/// Gives a notification up.
pub async fn failed(db: &impl Db, id: Uuid, attempts: i32, status: Option<u16>, error: &str) -> Result<(), DbError> {
    finish(db, id, "failed", attempts, status, Some(error), 0).await
}

async fn finish(db: &impl Db, id: Uuid, status: &str, attempts: i32, http: Option<u16>, error: Option<&str>, delay_ms: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE alert_notifications SET status = $2, attempts = $3::bigint::int, last_status = $4::bigint::int, last_error = $5, \
           sent_at = CASE WHEN $2 = 'sent' THEN now() END, \
           due_at = now() + make_interval(secs => $6::bigint::double precision / 1000) WHERE id = $1",
        &[
            id.into(),
            status.into(),
            Param::I64(attempts.into()),
            http.map_or(Param::Null, |s| Param::I64(s.into())),
            error.map_or(Param::Null, Param::from),
            Param::I64(delay_ms),
        ],
    )
    .await
    .map(drop)
}

/// Deletes changes older than `days` (their notifications and attempts go
/// with them); returns how many.
pub async fn prune(db: &impl Db, days: i64) -> Result<u64, DbError> {
    db.execute("DELETE FROM alert_changes WHERE at < now() - make_interval(days => $1::bigint::int)", &[Param::I64(days)]).await
}
