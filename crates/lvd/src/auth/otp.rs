//! One-time codes: six digits from a CSPRNG, stored only as an HMAC keyed
//! with a secret Spin variable and bound to their purpose and email, so a
//! leaked table cannot be brute-forced offline and a reset code cannot verify
//! an account (or the other way round).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a code lives.
pub const TTL_SECS: i64 = 600;
/// (Tries at codes are counted in Redis: see `limits::CODE_TRIES`.)
/// At most one code per email and purpose in this many seconds.
pub const RESEND_INTERVAL_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Verify,
    Reset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::Reset => "reset",
        }
    }
}

/// A code as the user typed it: exactly six ASCII digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code(******)")
    }
}

impl Code {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.len() == 6 && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be 6 digits")
        }
    }

    /// A fresh code, uniform over 000000–999999.
    pub fn generate() -> Self {
        let n: u32 = rand::random_range(0..1_000_000);
        Self(format!("{n:06}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// HMAC-SHA256 keyed with `key` over purpose, email and code.
    fn mac(&self, key: &[u8], purpose: Purpose, email: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        for part in [purpose.as_str().as_bytes(), b"\0", email.as_bytes(), b"\0", self.0.as_bytes()] {
            mac.update(part);
        }
        mac
    }

    pub fn keyed_hash(&self, key: &[u8], purpose: Purpose, email: &str) -> Vec<u8> {
        self.mac(key, purpose, email).finalize().into_bytes().to_vec()
    }

    /// Constant-time comparison with a stored hash.
    pub fn matches(&self, key: &[u8], purpose: Purpose, email: &str, stored: &[u8]) -> bool {
        self.mac(key, purpose, email).verify_slice(stored).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_six_digits_parse() {
        assert!(Code::parse("012345").is_ok());
        for bad in ["12345", "1234567", "12345a", "١٢٣٤٥٦", ""] {
            assert!(Code::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_code_matches_only_its_purpose_email_and_key() {
        let c = Code::parse("424242").unwrap();
        let h = c.keyed_hash(b"k", Purpose::Verify, "a@x.io");
        assert!(c.matches(b"k", Purpose::Verify, "a@x.io", &h));
        assert!(!c.matches(b"k", Purpose::Reset, "a@x.io", &h));
        assert!(!c.matches(b"k", Purpose::Verify, "b@x.io", &h));
        assert!(!c.matches(b"other", Purpose::Verify, "a@x.io", &h));
        assert!(!Code::parse("424243").unwrap().matches(b"k", Purpose::Verify, "a@x.io", &h));
    }

    #[test]
    fn generated_codes_are_six_digits_and_vary() {
        let codes: std::collections::HashSet<String> = (0..50).map(|_| Code::generate().0).collect();
        assert!(codes.iter().all(|c| Code::parse(c).is_ok()));
        assert!(codes.len() > 40, "50 codes gave only {} distinct", codes.len());
    }
}
