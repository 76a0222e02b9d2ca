//! The account operations behind `/auth`, independent of HTTP and of how
//! PostgreSQL and Redis are reached. Each returns a domain result; the auth
//! component maps it to a reply.
//!
//! Must never: tell a caller whether an email has an account (register,
//! resend and forgot always succeed alike; login fails alike and in similar
//! time for an unknown email and a wrong password), or keep a code or token
//! anywhere but as a hash.

use serde::Serialize;
use uuid::Uuid;

use super::email::Email;
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
    #[error("too many attempts")]
    TooManyAttempts,
    #[error("invalid token")]
    InvalidToken,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

pub struct Auth<'a, D, R> {
    pub db: &'a D,
    pub redis: &'a R,
    pub keys: &'a Keys,
}

pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl<D: Db, R: Redis> Auth<'_, D, R> {
    /// Creates or refreshes an unverified account and mails a code. An active
    /// account is left alone; the reply is the same either way.
    pub async fn register(&self, email: &Email, password: &Password) -> Result<(), AuthError> {
        // Hash whatever happens, so that a taken email costs the same time.
        let hash = password::hash(password);
        if store::upsert_unverified(self.db, email, &hash).await? {
            self.send_code(email, Purpose::Verify).await?;
        }
        Ok(())
    }

    pub async fn resend(&self, email: &Email) -> Result<(), AuthError> {
        if let Some(user) = store::user_by_email(self.db, email).await?
            && !user.is_active
        {
            self.send_code(email, Purpose::Verify).await?;
        }
        Ok(())
    }

    pub async fn forgot(&self, email: &Email) -> Result<(), AuthError> {
        if store::user_by_email(self.db, email).await?.is_some() {
            self.send_code(email, Purpose::Reset).await?;
        }
        Ok(())
    }

    async fn send_code(&self, email: &Email, purpose: Purpose) -> Result<(), AuthError> {
        if !limits::claim_code_send(self.redis, purpose.as_str(), email.as_str(), otp::RESEND_INTERVAL_SECS).await? {
            return Ok(());
        }
        let code = Code::generate();
        store::insert_code(self.db, email, purpose, code.keyed_hash(&self.keys.otp_key, purpose, email.as_str())).await?;
        let (to, code) = (email.as_str().to_owned(), code.as_str().to_owned());
        let job = match purpose {
            Purpose::Verify => EmailJob::VerificationCode { to, code },
            Purpose::Reset => EmailJob::PasswordReset { to, code },
        };
        queues::enqueue_email(self.redis, &job).await?;
        Ok(())
    }

    /// Checks a code and uses it up. Wrong tries count; the sixth try fails
    /// even with the right code.
    async fn redeem(&self, email: &Email, code: &Code, purpose: Purpose) -> Result<(), AuthError> {
        let stored = store::live_code(self.db, email, purpose).await?.ok_or(AuthError::InvalidCode)?;
        if stored.attempts >= otp::MAX_ATTEMPTS {
            return Err(AuthError::TooManyAttempts);
        }
        if stored.expired {
            return Err(AuthError::CodeExpired);
        }
        if !code.matches(&self.keys.otp_key, purpose, email.as_str(), &stored.code_hash) {
            return Err(if store::count_failed_attempt(self.db, stored.id).await? {
                AuthError::InvalidCode
            } else {
                AuthError::TooManyAttempts
            });
        }
        if !store::consume_code(self.db, stored.id).await? {
            return Err(AuthError::InvalidCode);
        }
        Ok(())
    }

    pub async fn verify(&self, email: &Email, code: &Code, now: i64) -> Result<Tokens, AuthError> {
        self.redeem(email, code, Purpose::Verify).await?;
        let user = store::activate(self.db, email).await?.ok_or(AuthError::InvalidCode)?;
        self.issue(user.id, Uuid::new_v4(), now).await
    }

    pub async fn login(&self, email: &Email, password: &Password, now_ms: i64) -> Result<Tokens, AuthError> {
        if let Some(secs) = limits::login_locked_for(self.redis, email.as_str()).await? {
            return Err(AuthError::AccountLocked(secs));
        }
        let user = store::user_by_email(self.db, email).await?;
        let ok = match &user {
            Some(u) => password::verify(password, &u.password_hash),
            None => {
                password::verify_dummy(password);
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
        store::set_password(self.db, user.id, &password::hash(new_password)).await?;
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
