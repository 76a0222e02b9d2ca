//! `Email`: an address that has been trimmed, lower-cased and checked.
//! Every lookup and every stored address goes through it, so two spellings of
//! one address can never make two accounts.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err("must not be empty");
        }
        if normalised.chars().count() > 254 {
            return Err("must be at most 254 characters");
        }
        if normalised.chars().any(char::is_control) || !email_address::EmailAddress::is_valid(&normalised) {
            return Err("must be an email address");
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
    }

    #[test]
    fn non_addresses_are_refused() {
        for bad in ["", "   ", "ada", "ada@", "@example.com", "a b@example.com", "ada@exa\u{7}mple.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }
}
