//! Access tokens (JWT, HS256, 15 minutes) and refresh tokens (256 random
//! bits, stored only as a SHA-256 hash: with that much entropy a keyed hash
//! adds nothing).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const ACCESS_TTL_SECS: i64 = 15 * 60;
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// Token id, for the deny-list.
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
}

pub fn issue_access(secret: &[u8], user: Uuid, now: i64) -> String {
    let claims = Claims { sub: user, jti: Uuid::new_v4(), iat: now, exp: now + ACCESS_TTL_SECS };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .expect("HS256 encoding cannot fail")
}

/// Checks signature, algorithm and expiry (no leeway). `None` for anything
/// that is not a valid access token of ours.
pub fn verify_access(secret: &[u8], token: &str) -> Option<Claims> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v).ok().map(|d| d.claims)
}

/// 256 random bits, base64url: the body of refresh tokens and ingest keys.
pub fn random_256() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new refresh token and the hash to store.
pub fn new_refresh() -> (String, Vec<u8>) {
    let token = random_256();
    let hash = refresh_hash(&token);
    (token, hash)
}

pub fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_token_verifies_only_with_its_secret_and_before_expiry() {
        let user = Uuid::new_v4();
        let now = chrono::Utc::now().timestamp();
        let t = issue_access(b"secret", user, now);
        assert_eq!(verify_access(b"secret", &t).unwrap().sub, user);
        assert!(verify_access(b"other", &t).is_none());
        let expired = issue_access(b"secret", user, now - ACCESS_TTL_SECS - 1);
        assert!(verify_access(b"secret", &expired).is_none());
        assert!(verify_access(b"secret", "not.a.jwt").is_none());
    }

    #[test]
    fn refresh_tokens_are_256_bit_and_hashed() {
        let (t, h) = new_refresh();
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        assert_eq!(h, refresh_hash(&t));
        assert_ne!(new_refresh().0, t);
    }
}
