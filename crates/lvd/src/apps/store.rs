//! The SQL of apps. Every statement takes the owner, so tenant isolation is
//! part of each query rather than a check someone could forget.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AppName, RetentionDays};
use crate::db::{Db, DbError, Row};

#[derive(Debug, Clone)]
pub struct App {
    pub id: Uuid,
    pub name: String,
    pub retention_days: i64,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = concat!("id, name, retention_days, ", crate::utc!("created_at"));

fn app(r: &Row) -> Result<App, DbError> {
    Ok(App { id: r.uuid(0)?, name: r.text(1)?, retention_days: r.i64(2)?, created_at: r.timestamp(3)? })
}

pub async fn create(db: &impl Db, owner: Uuid, name: &AppName, retention: RetentionDays, key_hash: Vec<u8>) -> Result<App, DbError> {
    let rows = db
        .query(
            &format!(
                "INSERT INTO apps (id, user_id, name, retention_days, ingest_key_hash) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[Uuid::new_v4().into(), owner.into(), name.as_str().into(), retention.get().into(), key_hash.into()],
        )
        .await?;
    rows.first().map(app).transpose()?.ok_or_else(|| DbError::Decode("INSERT returned no row".into()))
}

/// The owner's apps, oldest first (a short list: it comes whole).
pub async fn list(db: &impl Db, owner: Uuid) -> Result<Vec<App>, DbError> {
    let rows = db
        .query(&format!("SELECT {COLUMNS} FROM apps WHERE user_id = $1 ORDER BY created_at, id"), &[owner.into()])
        .await?;
    rows.iter().map(app).collect()
}

pub async fn get(db: &impl Db, owner: Uuid, id: Uuid) -> Result<Option<App>, DbError> {
    let rows = db
        .query(&format!("SELECT {COLUMNS} FROM apps WHERE id = $1 AND user_id = $2"), &[id.into(), owner.into()])
        .await?;
    rows.first().map(app).transpose()
}

/// Deletes the app (its rules and events go with it, by foreign key) and
/// returns its key hash, for the cache to forget; `None` when the owner has
/// no such app.
pub async fn delete(db: &impl Db, owner: Uuid, id: Uuid) -> Result<Option<Vec<u8>>, DbError> {
    let rows = db
        .query("DELETE FROM apps WHERE id = $1 AND user_id = $2 RETURNING ingest_key_hash", &[id.into(), owner.into()])
        .await?;
    rows.first().map(|r| r.bytes(0)).transpose()
}

/// Replaces the key hash and returns the old one, for the cache to forget;
/// `None` when the owner has no such app.
pub async fn rotate_key(db: &impl Db, owner: Uuid, id: Uuid, key_hash: Vec<u8>) -> Result<Option<Vec<u8>>, DbError> {
    let rows = db
        .query(
            "UPDATE apps a SET ingest_key_hash = $3 FROM apps old \
             WHERE a.id = $1 AND a.user_id = $2 AND old.id = a.id RETURNING old.ingest_key_hash",
            &[id.into(), owner.into(), key_hash.into()],
        )
        .await?;
    rows.first().map(|r| r.bytes(0)).transpose()
}

/// The app an ingest key (by its hash) opens, if any.
/// The app an ingest key (by its hash) opens, with its rules' current versions.
pub async fn by_key_hash(db: &impl Db, key_hash: &[u8]) -> Result<Option<crate::cache::IngestApp>, DbError> {
    let rows = db.query("SELECT id, retention_days FROM apps WHERE ingest_key_hash = $1", &[key_hash.to_vec().into()]).await?;
    let Some(r) = rows.first() else { return Ok(None) };
    let id = r.uuid(0)?;
    let rules = crate::rules::store::versions(db, id).await?.into_iter().collect();
    Ok(Some(crate::cache::IngestApp { id, retention_days: r.i64(1)?, rules }))
}

/// The hash of an app's current ingest key (for its cache entry's name).
pub async fn key_hash(db: &impl Db, app: Uuid) -> Result<Option<Vec<u8>>, DbError> {
    let rows = db.query("SELECT ingest_key_hash FROM apps WHERE id = $1", &[app.into()]).await?;
    rows.first().map(|r| r.bytes(0)).transpose()
}
