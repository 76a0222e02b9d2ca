//! The SQL of rules. Callers have already checked that the app belongs to the
//! user (`apps::store::get`); every statement is still scoped by the app.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::db::{Db, DbError, Param, Row};
use crate::logs::EventName;

#[derive(Debug, Clone)]
pub struct Rule {
    pub event: String,
    pub version: i64,
    pub schema: Value,
    pub description: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = concat!("event, version, schema::text, description, ", crate::utc!("created_at"));

fn rule(r: &Row) -> Result<Rule, DbError> {
    Ok(Rule { event: r.text(0)?, version: r.i64(1)?, schema: r.json(2)?, description: r.opt_text(3)?, updated_at: r.timestamp(4)? })
}

/// Adds the next version of the event's rule. Two PUTs racing for the same
/// version collide on the primary key; the loser takes the next number.
pub async fn put(db: &impl Db, app: Uuid, event: &EventName, schema: &Value, description: Option<&str>) -> Result<Rule, DbError> {
    let sql = format!(
        "INSERT INTO validation_rules (app_id, event, version, schema, description) \
         SELECT $1, $2, coalesce(max(version), 0) + 1, $3::text::jsonb, $4 FROM validation_rules WHERE app_id = $1 AND event = $2 \
         RETURNING {COLUMNS}"
    );
    let params = [app.into(), event.as_str().into(), Param::Text(schema.to_string()), description.map_or(Param::Null, Param::from)];
    let mut attempt = 0;
    loop {
        match db.query(&sql, &params).await {
            Ok(rows) => return rows.first().map(rule).transpose()?.ok_or_else(|| DbError::Decode("INSERT returned no row".into())),
            Err(DbError::UniqueViolation(_)) if attempt < 5 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The current rule of every event that has one, by event name.
pub async fn current(db: &impl Db, app: Uuid) -> Result<Vec<Rule>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT DISTINCT ON (event) {COLUMNS} FROM validation_rules \
                 WHERE app_id = $1 AND deleted_at IS NULL ORDER BY event, version DESC"
            ),
            &[app.into()],
        )
        .await?;
    rows.iter().map(rule).collect()
}

/// One version of the event's rule (the latest when `version` is `None`);
/// `None` when there is none or the rule was deleted.
pub async fn get(db: &impl Db, app: Uuid, event: &EventName, version: Option<i64>) -> Result<Option<Rule>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM validation_rules \
                 WHERE app_id = $1 AND event = $2 AND deleted_at IS NULL AND ($3::bigint IS NULL OR version = $3) \
                 ORDER BY version DESC LIMIT 1"
            ),
            &[app.into(), event.as_str().into(), version.map_or(Param::Null, Param::from)],
        )
        .await?;
    rows.first().map(rule).transpose()
}

/// Every live version of the event's rule, newest first.
pub async fn history(db: &impl Db, app: Uuid, event: &EventName) -> Result<Vec<Rule>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM validation_rules \
                 WHERE app_id = $1 AND event = $2 AND deleted_at IS NULL ORDER BY version DESC"
            ),
            &[app.into(), event.as_str().into()],
        )
        .await?;
    rows.iter().map(rule).collect()
}

/// Deletes the event's rule (every version stops applying; the numbers stay
/// taken). `false` when it had none.
pub async fn delete(db: &impl Db, app: Uuid, event: &EventName) -> Result<bool, DbError> {
    Ok(db
        .execute(
            "UPDATE validation_rules SET deleted_at = now() WHERE app_id = $1 AND event = $2 AND deleted_at IS NULL",
            &[app.into(), event.as_str().into()],
        )
        .await?
        > 0)
}

/// The current version of each event's rule: what ingest caches per app.
pub async fn versions(db: &impl Db, app: Uuid) -> Result<Vec<(String, i64)>, DbError> {
    let rows = db
        .query(
            "SELECT DISTINCT ON (event) event, version FROM validation_rules \
             WHERE app_id = $1 AND deleted_at IS NULL ORDER BY event, version DESC",
            &[app.into()],
        )
        .await?;
    rows.iter().map(|r| Ok((r.text(0)?, r.i64(1)?))).collect()
}

/// The schema of one version (whether or not it is still current).
pub async fn schema(db: &impl Db, app: Uuid, event: &str, version: i64) -> Result<Option<Value>, DbError> {
    let rows = db
        .query(
            "SELECT schema::text FROM validation_rules WHERE app_id = $1 AND event = $2 AND version = $3::bigint",
            &[app.into(), event.into(), version.into()],
        )
        .await?;
    rows.first().map(|r| r.json(0)).transpose()
}
