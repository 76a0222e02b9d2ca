//! Apps: what a user instruments. Each has a name, a retention and an ingest
//! key that SDKs send events with. Every query is scoped by the owner, so
//! another user's app is indistinguishable from one that does not exist.

pub mod store;

use sha2::{Digest, Sha256};

/// 1–100 characters (Unicode), surrounding whitespace trimmed, no control characters.
#[derive(Debug, Clone, PartialEq)]
pub struct AppName(String);

impl AppName {
    pub fn parse(raw: String) -> Result<Self, &'static str> {
        let name = raw.trim();
        let n = name.chars().count();
        if n == 0 {
            return Err("must not be empty");
        }
        if n > 100 {
            return Err("must be at most 100 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Days events are kept: 1–365, 30 when not given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetentionDays(i32);

impl RetentionDays {
    pub const DEFAULT: Self = Self(30);

    pub fn parse(n: i64) -> Result<Self, &'static str> {
        if (1..=365).contains(&n) { Ok(Self(n as i32)) } else { Err("must be between 1 and 365") }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// The prefix that lets secret scanners recognise a leaked ingest key.
pub const KEY_PREFIX: &str = "lvd_ingest_";

/// A new ingest key (prefix + 256 random bits) and the hash to store.
pub fn new_ingest_key() -> (String, Vec<u8>) {
    let key = format!("{KEY_PREFIX}{}", crate::auth::tokens::random_256());
    let hash = ingest_key_hash(&key);
    (key, hash)
}

/// Whether `key` has the shape of a key the old Flask application issued
/// (16–64 visible ASCII characters, no prefix), kept by `lvd-worker
/// import-sqlite` so its senders keep working: ingest looks such keys up as
/// it does ours.
pub fn is_legacy_key(key: &str) -> bool {
    (16..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) && !key.starts_with(KEY_PREFIX)
}

/// Whether ingest should look `key` up at all: one of ours, or a legacy one.
pub fn may_open(key: &str) -> bool {
    key.starts_with(KEY_PREFIX) || is_legacy_key(key)
}

pub fn ingest_key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn names_are_trimmed_and_bounded_in_characters() {
        assert_eq!(AppName::parse("  Shop ".into()).unwrap().as_str(), "Shop");
        assert!(AppName::parse("   ".into()).is_err());
        assert!(AppName::parse("ü".repeat(100)).is_ok());
        assert!(AppName::parse("a".repeat(101)).is_err());
        assert!(AppName::parse("a\u{0}b".into()).is_err());
    }

    #[test]
    fn retention_is_one_to_365_days() {
        assert!(RetentionDays::parse(0).is_err());
        assert!(RetentionDays::parse(366).is_err());
        assert_eq!(RetentionDays::parse(365).unwrap().get(), 365);
    }

    #[test]
    fn keys_carry_the_prefix_and_256_bits() {
        let (key, hash) = new_ingest_key();
        let raw = URL_SAFE_NO_PAD.decode(key.strip_prefix(KEY_PREFIX).unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(hash, ingest_key_hash(&key));
        assert!(may_open(&key) && !is_legacy_key(&key));
    }

    #[test]
    fn legacy_keys_are_visible_ascii_of_16_to_64_characters() {
        assert!(is_legacy_key("3f9c2a7e41b84d6f9a0c5e7b2d1f8a6c"));
        assert!(is_legacy_key(&"k".repeat(64)) && !is_legacy_key(&"k".repeat(65)));
        assert!(!is_legacy_key("short-key-15chr"));
        assert!(!is_legacy_key("has a space in it somewhere"));
        assert!(!is_legacy_key("ünïcödé-ünïcödé-ünï"));
        assert!(!may_open("") && !may_open("x"));
    }
}
