//! The account operations behind `/auth`, independent of HTTP and of how
//! PostgreSQL and Redis are reached. Each returns a domain result; the auth
//! component maps it to a reply.
//!
//! Must never: tell a caller whether an email has an account (register,
//! resend and forgot always succeed alike; login fails alike and in similar
//! time for an unknown email and a wrong password; a wrong code fails alike
//! for an account, a pending sign-up and an unknown email, because tries are
//! counted per email in Redis whatever the database holds), let a code open
//! any password but the one registered with it, or keep a code or token
//! anywhere but as a hash.

use serde::Serialize;
use uuid::Uuid;

use super::email::Email;
use super::hasher::Hasher;
use super::otp::{self, Code, Purpose};
use super::password::{self, Password};
use super::{store, tokens};
use crate::db::{Db, DbError};
use crate::kv::{Redis, RedisError};
use crate::limits;
use crate::queues::{self, EmailJob};

/// Secrets the service signs and hashes with (secret Spin variables).
pub struct Keys {
    pub jwt_secret: Vec<u8>,
    pub otp_key: Vec<u8>,
}

/// The fewest bytes `jwt_secret` and `otp_key` may have: an HS256 key must
/// be at least as long as its hash (RFC 7518, section 3.2), and a shorter
/// HMAC key makes a stolen table of code hashes easier to attack offline.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secret variable `name` as a key, refused when it is shorter than
/// [`MIN_SECRET_BYTES`]. The error names the variable, never its value.
pub fn secret(name: &str, value: String) -> Result<Vec<u8>, String> {
    if value.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the variable {name} (SPIN_VARIABLE_{}) has {} bytes; it needs at least {MIN_SECRET_BYTES}: \
             every request fails until it is set to a longer random value",
            name.to_ascii_uppercase(),
            value.len()
        ));
    }
    Ok(value.into_bytes())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("email not verified")]
    EmailNotVerified,
    #[error("account locked for {0} s")]
    AccountLocked(u64),
    #[error("invalid code")]
    InvalidCode,
    #[error("code expired")]
    CodeExpired,
    /// The code's tries, or the account's tries of the day, are spent; with
    /// the seconds until the latter frees one.
    #[error("too many attempts")]
    TooManyAttempts(Option<u64>),
    #[error("invalid token")]
    InvalidToken,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

pub struct Auth<'a, D, R, H> {
    pub db: &'a D,
    pub redis: &'a R,
    pub keys: &'a Keys,
    /// Where passwords are hashed and checked (see `super::hasher`).
    pub hasher: &'a H,
}

pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl<D: Db, R: Redis, H: Hasher> Auth<'_, D, R, H> {
    /// Starts a pending sign-up and mails its code, which will activate this
    /// password and no other. An active account is left alone, and a sign-up
    /// within a minute of the last code is dropped (the code already mailed
    /// opens the password registered with it); the reply is the same either way.
    pub async fn register(&self, email: &Email, password: &Password) -> Result<(), AuthError> {
        // Hash whatever happens, so that a taken email costs the same time.
        let hash = self.hasher.hash(password).await;
        let pending = store::insert_unverified(self.db, email, &hash).await?;
        if self.new_code(email, Purpose::Verify).await? && pending {
            let code = Code::generate();
            store::insert_signup_code(self.db, email, self.code_hash(&code, Purpose::Verify, email), &hash).await?;
            self.mail(email, &code, Purpose::Verify).await?;
        }
        Ok(())
    }

    /// Mails a new code for the newest pending sign-up of this email.
    pub async fn resend(&self, email: &Email) -> Result<(), AuthError> {
        if self.new_code(email, Purpose::Verify).await?
            && let Some(hash) = store::latest_signup_password(self.db, email).await?
        {
            let code = Code::generate();
            store::insert_signup_code(self.db, email, self.code_hash(&code, Purpose::Verify, email), &hash).await?;
            self.mail(email, &code, Purpose::Verify).await?;
        }
        Ok(())
    }

    pub async fn forgot(&self, email: &Email) -> Result<(), AuthError> {
        if self.new_code(email, Purpose::Reset).await? && store::user_by_email(self.db, email).await?.is_some() {
            let code = Code::generate();
            store::insert_reset_code(self.db, email, self.code_hash(&code, Purpose::Reset, email)).await?;
            self.mail(email, &code, Purpose::Reset).await?;
        }
        Ok(())
    }

    /// Whether a new code may go out now (one per email and purpose a
    /// minute); when it may, the email's tries at codes start afresh. Runs
    /// for every email, account or not, so tries behave alike for both.
    async fn new_code(&self, email: &Email, purpose: Purpose) -> Result<bool, AuthError> {
        Ok(limits::claim_code_send(self.redis, purpose.as_str(), email.as_str(), otp::RESEND_INTERVAL_SECS).await?)
    }

    fn code_hash(&self, code: &Code, purpose: Purpose, email: &Email) -> Vec<u8> {
        code.keyed_hash(&self.keys.otp_key, purpose, email.as_str())
    }

    async fn mail(&self, email: &Email, code: &Code, purpose: Purpose) -> Result<(), AuthError> {
        let (to, code) = (email.as_str().to_owned(), code.as_str().to_owned());
        let expires_at = Some(chrono::Utc::now().timestamp() + otp::TTL_SECS);
        let job = match purpose {
            Purpose::Verify => EmailJob::VerificationCode { to, code, expires_at },
            Purpose::Reset => EmailJob::PasswordReset { to, code, expires_at },
        };
        queues::enqueue_email(self.redis, &job).await?;
        Ok(())
    }

    /// Checks a code and uses it up. Every try is counted before it is
    /// checked, per email and purpose, in Redis: the sixth try at a code fails
    /// even with the right code, and so does any try past the day's cap.
    /// Only a right code is told apart (expired or not): a wrong one answers
    /// `invalid_code` whatever the email, so no reply says an account exists.
    async fn redeem(&self, email: &Email, code: &Code, purpose: Purpose) -> Result<store::StoredCode, AuthError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let member = match limits::begin_code_try(self.redis, purpose.as_str(), email.as_str(), now_ms, otp::TTL_SECS).await? {
            limits::CodeTry::Allowed { member } => member,
            limits::CodeTry::CodeSpent => return Err(AuthError::TooManyAttempts(None)),
            limits::CodeTry::WindowSpent { retry_after_secs } => return Err(AuthError::TooManyAttempts(Some(retry_after_secs))),
        };
        let codes = store::unconsumed_codes(self.db, email, purpose).await?;
        // Check every one (no early exit), in constant time each.
        let hit = codes.into_iter().fold(None, |hit, c| {
            let matches = code.matches(&self.keys.otp_key, purpose, email.as_str(), &c.code_hash);
            if matches && hit.is_none() { Some(c) } else { hit }
        });
        let Some(stored) = hit else {
            return Err(AuthError::InvalidCode);
        };
        limits::code_try_succeeded(self.redis, purpose.as_str(), email.as_str(), &member).await?;
        if stored.expired {
            return Err(AuthError::CodeExpired);
        }
        if !store::consume_code(self.db, stored.id).await? {
            return Err(AuthError::InvalidCode);
        }
        Ok(stored)
    }

    /// Activates the account with the password registered with this code.
    pub async fn verify(&self, email: &Email, code: &Code, now: i64) -> Result<Tokens, AuthError> {
        let stored = self.redeem(email, code, Purpose::Verify).await?;
        let hash = stored.password_hash.ok_or(AuthError::InvalidCode)?;
        let user = store::activate(self.db, email, &hash).await?.ok_or(AuthError::InvalidCode)?;
        store::retire_codes(self.db, email, Purpose::Verify).await?;
        self.issue(user.id, Uuid::new_v4(), now).await
    }

    pub async fn login(&self, email: &Email, password: &Password, now_ms: i64) -> Result<Tokens, AuthError> {
        if let Some(secs) = limits::login_locked_for(self.redis, email.as_str()).await? {
            return Err(AuthError::AccountLocked(secs));
        }
        let user = store::user_by_email(self.db, email).await?;
        // One verification either way, on the same side (see `hasher`).
        let ok = match &user {
            Some(u) => self.hasher.verify(password, &u.password_hash).await,
            None => {
                let _ = self.hasher.verify(password, password::DUMMY_HASH).await;
                false
            }
        };
        let user = match user {
            Some(u) if ok => u,
            _ => {
                limits::record_login_failure(self.redis, email.as_str(), now_ms).await?;
                return Err(AuthError::InvalidCredentials);
            }
        };
        if !user.is_active {
            return Err(AuthError::EmailNotVerified);
        }
        if !password::is_current(&user.password_hash) {
            // While the plaintext is at hand, an imported Werkzeug hash or
            // one at other Argon2 parameters becomes the product's own. Lost
            // to a reset in between (`false`) is fine: that password stands.
            // A database error fails the sign-in, as every statement here does.
            let new_hash = self.hasher.hash(password).await;
            store::upgrade_password(self.db, user.id, &user.password_hash, &new_hash).await?;
        }
        limits::clear_login_failures(self.redis, email.as_str()).await?;
        self.issue(user.id, Uuid::new_v4(), now_ms / 1000).await
    }

    /// Rotates a refresh token. Presenting one that was already rotated means
    /// two parties hold the family: all of it is revoked.
    pub async fn refresh(&self, refresh_token: &str, now: i64) -> Result<Tokens, AuthError> {
        let hash = tokens::refresh_hash(refresh_token);
        match store::rotate_refresh(self.db, hash.clone()).await? {
            Some((user, family)) => self.issue(user, family, now).await,
            None => {
                store::revoke_family_of(self.db, hash).await?;
                Err(AuthError::InvalidToken)
            }
        }
    }

    /// Revokes the refresh token and, when given, denies the access token for
    /// the rest of its life. Idempotent.
    pub async fn logout(&self, refresh_token: Option<&str>, access: Option<&tokens::Claims>, now: i64) -> Result<(), AuthError> {
        if let Some(t) = refresh_token {
            store::revoke_refresh(self.db, tokens::refresh_hash(t)).await?;
        }
        if let Some(c) = access {
            limits::deny_token(self.redis, &c.jti.to_string(), c.exp - now).await?;
        }
        Ok(())
    }

    pub async fn reset(&self, email: &Email, code: &Code, new_password: &Password) -> Result<(), AuthError> {
        self.redeem(email, code, Purpose::Reset).await?;
        let user = store::user_by_email(self.db, email).await?.ok_or(AuthError::InvalidCode)?;
        store::set_password(self.db, user.id, &self.hasher.hash(new_password).await).await?;
        store::revoke_all_refresh(self.db, user.id).await?;
        Ok(())
    }

    /// The claims of a valid, unrevoked access token.
    pub async fn authenticate(&self, bearer: &str) -> Result<tokens::Claims, AuthError> {
        authenticate(self.redis, &self.keys.jwt_secret, bearer).await
    }

    pub async fn me(&self, claims: &tokens::Claims) -> Result<Me, AuthError> {
        let user = store::user_by_id(self.db, claims.sub).await?.ok_or(AuthError::InvalidToken)?;
        Ok(Me { id: user.id, email: user.email, created_at: user.created_at })
    }

    async fn issue(&self, user: Uuid, family: Uuid, now: i64) -> Result<Tokens, AuthError> {
        let (refresh_token, hash) = tokens::new_refresh();
        store::insert_refresh(self.db, user, family, hash).await?;
        Ok(Tokens {
            access_token: tokens::issue_access(&self.keys.jwt_secret, user, now),
            refresh_token,
            token_type: "Bearer",
            expires_in: tokens::ACCESS_TTL_SECS,
        })
    }
}

/// The claims of a valid, unrevoked access token: signature, expiry, then the
/// deny-list that logout writes to.
pub async fn authenticate(redis: &impl Redis, jwt_secret: &[u8], bearer: &str) -> Result<tokens::Claims, AuthError> {
    let claims = tokens::verify_access(jwt_secret, bearer).ok_or(AuthError::InvalidToken)?;
    if limits::is_denied(redis, &claims.jti.to_string()).await? {
        return Err(AuthError::InvalidToken);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused_naming_its_variable() {
        let err = secret("otp_key", "x".repeat(31)).unwrap_err();
        assert!(err.contains("otp_key") && err.contains("SPIN_VARIABLE_OTP_KEY") && err.contains("31"), "{err}");
        assert!(!err.contains("xxxx"), "the value never shows: {err}");
        assert!(secret("jwt_secret", String::new()).is_err());
        assert_eq!(secret("jwt_secret", "k".repeat(32)).unwrap().len(), 32);
    }
}
