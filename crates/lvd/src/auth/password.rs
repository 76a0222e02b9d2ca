//! Passwords: 12–128 Unicode characters, hashed with Argon2id at the OWASP
//! minimum (19 MiB, t=2, p=1). The plaintext lives in a `SecretString` and
//! never reaches a log line or an error.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 128;

pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: String) -> Result<Self, String> {
        let n = raw.chars().count();
        if n < MIN_CHARS {
            return Err(format!("must be at least {MIN_CHARS} characters"));
        }
        if n > MAX_CHARS {
            return Err(format!("must be at most {MAX_CHARS} characters"));
        }
        Ok(Self(SecretString::from(raw)))
    }

    /// The plaintext, for the password hasher's request only (`hasher`).
    pub(super) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Memory in KiB, passes and lanes of every hash the product makes.
const MEMORY_KIB: u32 = 19 * 1024;
const TIME: u32 = 2;
const LANES: u32 = 1;

fn params() -> Params {
    Params::new(MEMORY_KIB, TIME, LANES, None).expect("valid Argon2 parameters")
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Whether `phc` is a hash this product would make: Argon2id, version 19,
/// its parameters, a salt and a 32-byte output.
pub fn is_current(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    parsed.algorithm == argon2::ARGON2ID_IDENT
        && parsed.version == Some(Version::V0x13 as u32)
        && parsed.salt.is_some()
        && parsed.hash.is_some_and(|h| h.len() == 32)
        && Params::try_from(&parsed).is_ok_and(|p| (p.m_cost(), p.t_cost(), p.p_cost()) == (MEMORY_KIB, TIME, LANES))
}

/// Hashes `password` with a fresh random salt into a PHC string.
pub fn hash(password: &Password) -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).expect("16 bytes make a valid salt");
    argon2()
        .hash_password(password.0.expose_secret().as_bytes(), &salt)
        .expect("hashing with valid parameters cannot fail")
        .to_string()
}

/// Checks `password` against a stored PHC string. The parameters come from
/// the string, so hashes made with stronger settings keep verifying.
pub fn verify(password: &Password, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    argon2().verify_password(password.0.expose_secret().as_bytes(), &parsed).is_ok()
}

/// A well-formed hash, with the parameters of real ones, that no known password
/// matches. Login
/// verifies against it when the email is unknown, so an unknown email costs
/// the same time as a wrong password and timing reveals nothing.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$9y1rT0aBqUk3YXoA7KkYcg$8kJQpR9Zl3l1b2PzQ2v5m6uZ4mQwQ0f1i8e3Xx9m7Ck";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_counts_unicode_characters() {
        assert!(Password::parse("é".repeat(12)).is_ok(), "12 two-byte characters are 12 characters");
        assert!(Password::parse("a".repeat(11)).is_err());
        assert!(Password::parse("a".repeat(129)).is_err());
        assert!(Password::parse("a".repeat(128)).is_ok());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let p = Password::parse("correct horse battery".into()).unwrap();
        let h = hash(&p);
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&p, &h));
        assert!(is_current(&h));
        assert!(!verify(&Password::parse("wrong horse battery".into()).unwrap(), &h));
    }

    #[test]
    fn the_dummy_hash_parses_with_real_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(Params::try_from(&parsed).unwrap(), Params::new(19 * 1024, 2, 1, Some(32)).unwrap());
    }
}
