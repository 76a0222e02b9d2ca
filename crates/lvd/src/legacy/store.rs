//! The statements of the import. Each writes its rows and their place in
//! `legacy_ids` (or the app's mark in `legacy_event_marks`) in one
//! statement or one transaction, so what a crash leaves is always whole
//! rows, each remembered.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::apps::{AppName, RetentionDays};
use crate::auth::email::Email;
use crate::db::{CopyIn, Db, DbError, Param};
use crate::logs::rfc3339;
use crate::logs::rows::COLUMNS;

/// Whether the database has the import's tables (migration V10).
pub async fn schema_ready(db: &impl Db) -> Result<bool, DbError> {
    let rows = db.query("SELECT to_regclass('legacy_event_marks') IS NOT NULL", &[]).await?;
    rows.first().map_or(Ok(false), |r| r.bool(0))
}

/// Which of our rows legacy rows of `kind` (`user`, `app`, `rule`) became:
/// legacy id → (our id, version for a rule).
pub async fn mapped(db: &impl Db, kind: &str) -> Result<HashMap<i64, (Uuid, Option<i64>)>, DbError> {
    let rows = db.query("SELECT legacy_id, id, version::bigint FROM legacy_ids WHERE kind = $1", &[kind.into()]).await?;
    rows.iter().map(|r| Ok((r.i64(0)?, (r.uuid(1)?, r.opt_i64(2)?)))).collect()
}

/// Whether an account here already has the address.
pub async fn email_taken(db: &impl Db, email: &Email) -> Result<bool, DbError> {
    Ok(!db.query("SELECT 1 FROM users WHERE email = $1", &[email.as_str().into()]).await?.is_empty())
}

/// Inserts a legacy user with its hash as it is; `None` when the address
/// already has an account.
pub async fn insert_user(
    db: &impl Db,
    legacy_id: i64,
    email: &Email,
    password_hash: &str,
    active: bool,
    created_at: DateTime<Utc>,
) -> Result<Option<Uuid>, DbError> {
    let rows = db
        .query(
            "WITH u AS (INSERT INTO users (id, email, password_hash, is_active, created_at) \
                        VALUES ($1, $2, $3, $4, $5::text::timestamptz) ON CONFLICT (email) DO NOTHING RETURNING id) \
             INSERT INTO legacy_ids (kind, legacy_id, id) SELECT 'user', $6, id FROM u RETURNING id",
            &[Uuid::new_v4().into(), email.as_str().into(), password_hash.into(), active.into(), rfc3339(created_at).into(), legacy_id.into()],
        )
        .await?;
    rows.first().map(|r| r.uuid(0)).transpose()
}

/// Inserts a legacy app keeping its key (as our hash); `None` when an app
/// here already has that key.
pub async fn insert_app(
    db: &impl Db,
    legacy_id: i64,
    owner: Uuid,
    name: &AppName,
    retention: RetentionDays,
    key_hash: Vec<u8>,
    created_at: DateTime<Utc>,
) -> Result<Option<Uuid>, DbError> {
    let rows = db
        .query(
            "WITH a AS (INSERT INTO apps (id, user_id, name, retention_days, ingest_key_hash, created_at) \
                        VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz) ON CONFLICT (ingest_key_hash) DO NOTHING RETURNING id) \
             INSERT INTO legacy_ids (kind, legacy_id, id) SELECT 'app', $7, id FROM a RETURNING id",
            &[
                Uuid::new_v4().into(),
                owner.into(),
                name.as_str().into(),
                retention.get().into(),
                key_hash.into(),
                rfc3339(created_at).into(),
                legacy_id.into(),
            ],
        )
        .await?;
    rows.first().map(|r| r.uuid(0)).transpose()
}

/// Adds a legacy rule as the event's next version (deleted at once when it
/// was inactive: it is history, never applied); returns the version.
pub async fn insert_rule(
    db: &impl Db,
    legacy_id: i64,
    app: Uuid,
    event: &str,
    schema: &serde_json::Value,
    active: bool,
    created_at: DateTime<Utc>,
) -> Result<i64, DbError> {
    let rows = db
        .query(
            "WITH r AS (INSERT INTO validation_rules (app_id, event, version, schema, created_at, deleted_at) \
                        SELECT $1, $2, coalesce(max(version), 0) + 1, $3::text::jsonb, $4::text::timestamptz, \
                               CASE WHEN $5 THEN NULL ELSE now() END \
                        FROM validation_rules WHERE app_id = $1 AND event = $2 RETURNING version) \
             INSERT INTO legacy_ids (kind, legacy_id, id, version) SELECT 'rule', $6, $1, version FROM r RETURNING version::bigint",
            &[app.into(), event.into(), Param::Text(schema.to_string()), rfc3339(created_at).into(), active.into(), legacy_id.into()],
        )
        .await?;
    rows.first().map(|r| r.i64(0)).transpose()?.ok_or_else(|| DbError::Decode("INSERT returned no row".into()))
}

/// The last legacy event stored, by legacy app.
pub async fn event_marks(db: &impl Db) -> Result<HashMap<i64, i64>, DbError> {
    let rows = db.query("SELECT legacy_app_id, last_id FROM legacy_event_marks", &[]).await?;
    rows.iter().map(|r| Ok((r.i64(0)?, r.i64(1)?))).collect()
}

/// Creates `log_entries`' daily partitions from `first` to `last`.
pub async fn ensure_partitions(db: &impl Db, first: NaiveDate, last: NaiveDate) -> Result<i64, DbError> {
    let rows = db
        .query(
            "SELECT lvd_ensure_log_partitions_between($1::text::date, $2::text::date)::bigint",
            &[first.to_string().into(), last.to_string().into()],
        )
        .await?;
    rows.first().map_or(Ok(0), |r| r.i64(0))
}

/// Writes a batch of events (`logs::rows::line`s) and moves each app's mark
/// to its last legacy id in the batch, in one transaction.
pub async fn write_events(db: &impl CopyIn, lines: &[&str], marks: &HashMap<i64, i64>) -> Result<u64, DbError> {
    let marks = serde_json::Value::Object(marks.iter().map(|(app, id)| (app.to_string(), (*id).into())).collect());
    crate::db::transaction(db, async {
        let n = db.copy_in(&format!("COPY log_entries ({COLUMNS}) FROM STDIN"), lines).await?;
        db.execute(
            "INSERT INTO legacy_event_marks (legacy_app_id, last_id) \
             SELECT key::bigint, value::bigint FROM jsonb_each_text($1::text::jsonb) \
             ON CONFLICT (legacy_app_id) DO UPDATE SET last_id = greatest(legacy_event_marks.last_id, excluded.last_id), updated_at = now()",
            &[Param::Text(marks.to_string())],
        )
        .await?;
        Ok(n)
    })
    .await
}
