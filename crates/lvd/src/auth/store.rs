//! Every SQL statement of accounts, codes and refresh tokens: one statement
//! per function, rows mapped here. Times come from the database's clock.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::email::Email;
use super::otp::{self, Purpose};
use super::tokens::REFRESH_TTL_SECS;
use crate::db::{Db, DbError, Param};

pub struct User {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = concat!("id, email, password_hash, is_active, ", crate::utc!("created_at"));

fn user(row: &crate::db::Row) -> Result<User, DbError> {
    Ok(User {
        id: row.uuid(0)?,
        email: row.text(1)?,
        password_hash: row.text(2)?,
        is_active: row.bool(3)?,
        created_at: row.timestamp(4)?,
    })
}

pub async fn user_by_email(db: &impl Db, email: &Email) -> Result<Option<User>, DbError> {
    let rows = db.query(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"), &[email.as_str().into()]).await?;
    rows.first().map(user).transpose()
}

pub async fn user_by_id(db: &impl Db, id: Uuid) -> Result<Option<User>, DbError> {
    let rows = db.query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &[id.into()]).await?;
    rows.first().map(user).transpose()
}

/// Creates an inactive account, or — when an unverified one exists — gives it
/// the new password (whoever can read the mail will verify it). An active
/// account is left untouched. Returns whether a verification code should go out.
pub async fn upsert_unverified(db: &impl Db, email: &Email, password_hash: &str) -> Result<bool, DbError> {
    let rows = db
        .query(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash
               WHERE users.is_active = false
             RETURNING id",
            &[Uuid::new_v4().into(), email.as_str().into(), password_hash.into()],
        )
        .await?;
    Ok(!rows.is_empty())
}

pub async fn activate(db: &impl Db, email: &Email) -> Result<Option<User>, DbError> {
    let rows = db
        .query(
            &format!("UPDATE users SET is_active = true WHERE email = $1 RETURNING {USER_COLUMNS}"),
            &[email.as_str().into()],
        )
        .await?;
    rows.first().map(user).transpose()
}

pub async fn set_password(db: &impl Db, id: Uuid, password_hash: &str) -> Result<(), DbError> {
    db.execute("UPDATE users SET password_hash = $2, is_active = true WHERE id = $1", &[id.into(), password_hash.into()])
        .await
        .map(drop)
}

/// Stores a new code; earlier unconsumed codes of the same purpose die with it.
pub async fn insert_code(db: &impl Db, email: &Email, purpose: Purpose, code_hash: Vec<u8>) -> Result<(), DbError> {
    db.execute(
        "WITH retired AS (
             UPDATE one_time_codes SET consumed_at = now()
             WHERE email = $2 AND purpose = $3 AND consumed_at IS NULL)
         INSERT INTO one_time_codes (id, email, purpose, code_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        &[Uuid::new_v4().into(), email.as_str().into(), purpose.as_str().into(), code_hash.into(), Param::F64(otp::TTL_SECS as f64)],
    )
    .await
    .map(drop)
}

pub struct StoredCode {
    pub id: Uuid,
    pub code_hash: Vec<u8>,
    pub attempts: i64,
    pub expired: bool,
}

/// The live (unconsumed) code of this email and purpose, if any.
pub async fn live_code(db: &impl Db, email: &Email, purpose: Purpose) -> Result<Option<StoredCode>, DbError> {
    let rows = db
        .query(
            "SELECT id, code_hash, attempts, expires_at <= now() FROM one_time_codes
             WHERE email = $1 AND purpose = $2 AND consumed_at IS NULL
             ORDER BY created_at DESC LIMIT 1",
            &[email.as_str().into(), purpose.as_str().into()],
        )
        .await?;
    rows.first()
        .map(|r| Ok(StoredCode { id: r.uuid(0)?, code_hash: r.bytes(1)?, attempts: r.i64(2)?, expired: r.bool(3)? }))
        .transpose()
}

/// Counts a wrong try; `false` when the code had no tries left (races included).
pub async fn count_failed_attempt(db: &impl Db, id: Uuid) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE one_time_codes SET attempts = attempts + 1 WHERE id = $1 AND attempts < $2",
            &[id.into(), Param::I32(otp::MAX_ATTEMPTS as i32)],
        )
        .await?;
    Ok(n == 1)
}

/// Marks a code used; `false` if another request used it first.
pub async fn consume_code(db: &impl Db, id: Uuid) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE one_time_codes SET consumed_at = now()
             WHERE id = $1 AND consumed_at IS NULL AND expires_at > now() AND attempts < $2",
            &[id.into(), Param::I32(otp::MAX_ATTEMPTS as i32)],
        )
        .await?;
    Ok(n == 1)
}

pub async fn insert_refresh(db: &impl Db, user: Uuid, family: Uuid, token_hash: Vec<u8>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        &[Uuid::new_v4().into(), user.into(), family.into(), token_hash.into(), Param::F64(REFRESH_TTL_SECS as f64)],
    )
    .await
    .map(drop)
}

/// Marks a live refresh token rotated and returns its user and family. `None`
/// when the token is unknown, expired, revoked or already rotated.
pub async fn rotate_refresh(db: &impl Db, token_hash: Vec<u8>) -> Result<Option<(Uuid, Uuid)>, DbError> {
    let rows = db
        .query(
            "UPDATE refresh_tokens SET rotated_at = now()
             WHERE token_hash = $1 AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now()
             RETURNING user_id, family_id",
            &[token_hash.into()],
        )
        .await?;
    rows.first().map(|r| Ok((r.uuid(0)?, r.uuid(1)?))).transpose()
}

/// Revokes every token of the family the given token belongs to (used when a
/// rotated token is presented again: someone else holds the family).
pub async fn revoke_family_of(db: &impl Db, token_hash: Vec<u8>) -> Result<u64, DbError> {
    db.execute(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE revoked_at IS NULL
           AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        &[token_hash.into()],
    )
    .await
}

pub async fn revoke_refresh(db: &impl Db, token_hash: Vec<u8>) -> Result<(), DbError> {
    db.execute("UPDATE refresh_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL", &[token_hash.into()])
        .await
        .map(drop)
}

pub async fn revoke_all_refresh(db: &impl Db, user: Uuid) -> Result<(), DbError> {
    db.execute("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", &[user.into()])
        .await
        .map(drop)
}
