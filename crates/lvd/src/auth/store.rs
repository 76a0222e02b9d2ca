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

/// Creates an inactive account with this password, unless the email has one.
/// Leaves an existing account's password alone: a pending sign-up's password
/// travels with its own code ([`insert_signup_code`]), and only that code
/// puts it on the account ([`activate`]). Returns whether the account is
/// still unverified (a verification code should go out).
pub async fn insert_unverified(db: &impl Db, email: &Email, password_hash: &str) -> Result<bool, DbError> {
    let rows = db
        .query(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO UPDATE SET email = users.email
               WHERE users.is_active = false
             RETURNING id",
            &[Uuid::new_v4().into(), email.as_str().into(), password_hash.into()],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Activates a pending account with the password its code carried. `None`
/// when the account is already active: a second pending code can never
/// replace the password of an account that one code already opened.
pub async fn activate(db: &impl Db, email: &Email, password_hash: &str) -> Result<Option<User>, DbError> {
    let rows = db
        .query(
            &format!(
                "UPDATE users SET is_active = true, password_hash = $2
                 WHERE email = $1 AND is_active = false RETURNING {USER_COLUMNS}"
            ),
            &[email.as_str().into(), password_hash.into()],
        )
        .await?;
    rows.first().map(user).transpose()
}

pub async fn set_password(db: &impl Db, id: Uuid, password_hash: &str) -> Result<(), DbError> {
    db.execute("UPDATE users SET password_hash = $2, is_active = true WHERE id = $1", &[id.into(), password_hash.into()])
        .await
        .map(drop)
}

/// Replaces the password hash `old` with `new` (a sign-in rehashing an
/// imported or outdated hash), unless it changed since it was read: a reset
/// in between keeps its password. Returns whether it was replaced.
pub async fn upgrade_password(db: &impl Db, id: Uuid, old: &str, new: &str) -> Result<bool, DbError> {
    let n = db.execute("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2", &[id.into(), old.into(), new.into()]).await?;
    Ok(n == 1)
}

/// Stores a pending sign-up: its code and the password registered with it.
/// Earlier sign-ups' codes stay live, each opening its own password.
pub async fn insert_signup_code(db: &impl Db, email: &Email, code_hash: Vec<u8>, password_hash: &str) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO one_time_codes (id, email, purpose, code_hash, password_hash, expires_at)
         VALUES ($1, $2, 'verify', $3, $4, now() + make_interval(secs => $5))",
        &[Uuid::new_v4().into(), email.as_str().into(), code_hash.into(), password_hash.into(), Param::F64(otp::TTL_SECS as f64)],
    )
    .await
    .map(drop)
}

/// The password of the newest sign-up of this email (what a resend's code
/// opens), or the account's own when no sign-up left a code.
pub async fn latest_signup_password(db: &impl Db, email: &Email) -> Result<Option<String>, DbError> {
    let rows = db
        .query(
            "SELECT coalesce(
                 (SELECT password_hash FROM one_time_codes WHERE email = $1 AND purpose = 'verify'
                  ORDER BY created_at DESC LIMIT 1),
                 (SELECT password_hash FROM users WHERE email = $1 AND is_active = false))",
            &[email.as_str().into()],
        )
        .await?;
    rows.first().map(|r| r.opt_text(0)).transpose().map(Option::flatten)
}

/// Stores a new reset code; earlier unconsumed reset codes die with it.
pub async fn insert_reset_code(db: &impl Db, email: &Email, code_hash: Vec<u8>) -> Result<(), DbError> {
    db.execute(
        "WITH retired AS (
             UPDATE one_time_codes SET consumed_at = now()
             WHERE email = $2 AND purpose = 'reset' AND consumed_at IS NULL)
         INSERT INTO one_time_codes (id, email, purpose, code_hash, expires_at)
         VALUES ($1, $2, 'reset', $3, now() + make_interval(secs => $4))",
        &[Uuid::new_v4().into(), email.as_str().into(), code_hash.into(), Param::F64(otp::TTL_SECS as f64)],
    )
    .await
    .map(drop)
}

pub struct StoredCode {
    pub id: Uuid,
    pub code_hash: Vec<u8>,
    pub expired: bool,
    /// The password a sign-up code activates; `None` for reset codes.
    pub password_hash: Option<String>,
}

/// How many unconsumed codes of one email and purpose a try is checked
/// against, newest first. The resend interval allows one new code a minute,
/// so this covers every unexpired one and the recently expired.
pub const CODES_CHECKED: i64 = 20;

/// The unconsumed codes of this email and purpose, expired ones included
/// (a right but expired code answers `code_expired`), newest first.
pub async fn unconsumed_codes(db: &impl Db, email: &Email, purpose: Purpose) -> Result<Vec<StoredCode>, DbError> {
    let rows = db
        .query(
            "SELECT id, code_hash, expires_at <= now(), password_hash FROM one_time_codes
             WHERE email = $1 AND purpose = $2 AND consumed_at IS NULL
             ORDER BY created_at DESC LIMIT $3",
            &[email.as_str().into(), purpose.as_str().into(), Param::I64(CODES_CHECKED)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(StoredCode { id: r.uuid(0)?, code_hash: r.bytes(1)?, expired: r.bool(2)?, password_hash: r.opt_text(3)? }))
        .collect()
}

/// Marks a live code used; `false` if another request used it first or it
/// has just expired.
pub async fn consume_code(db: &impl Db, id: Uuid) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE one_time_codes SET consumed_at = now()
             WHERE id = $1 AND consumed_at IS NULL AND expires_at > now()",
            &[id.into()],
        )
        .await?;
    Ok(n == 1)
}

/// Retires every unconsumed code of this email and purpose (once an
/// account is verified, the other pending sign-ups are void).
pub async fn retire_codes(db: &impl Db, email: &Email, purpose: Purpose) -> Result<(), DbError> {
    db.execute(
        "UPDATE one_time_codes SET consumed_at = now() WHERE email = $1 AND purpose = $2 AND consumed_at IS NULL",
        &[email.as_str().into(), purpose.as_str().into()],
    )
    .await
    .map(drop)
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
