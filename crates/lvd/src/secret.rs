//! Shared secrets presented by callers (`GET /metrics`' token, the password
//! hasher's key), compared in constant time.

use subtle::ConstantTimeEq;

/// Whether `given` is the `configured` secret. A configured secret shorter
/// than `min_len` bytes (unset included) matches nothing, so a template's
/// placeholder never opens anything. Both sides are hashed first, so the
/// comparison takes the same time whatever their lengths.
pub fn matches(given: Option<&str>, configured: &str, min_len: usize) -> bool {
    let (Some(given), false) = (given, configured.len() < min_len) else { return false };
    let digest = |s: &str| <sha2::Sha256 as sha2::Digest>::digest(s.as_bytes());
    digest(given).ct_eq(&digest(configured)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_secret_matches_and_a_short_one_never() {
        assert!(matches(Some("0123456789abcdef"), "0123456789abcdef", 16));
        assert!(!matches(Some("0123456789abcdeF"), "0123456789abcdef", 16));
        assert!(!matches(None, "0123456789abcdef", 16));
        assert!(!matches(Some("short"), "short", 16));
        assert!(!matches(Some(""), "", 1));
    }
}
