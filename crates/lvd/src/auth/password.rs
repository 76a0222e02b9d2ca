//! Passwords: 12–128 Unicode characters, hashed with Argon2id at the OWASP
//! minimum (19 MiB, t=2, p=1). The plaintext lives in a `SecretString` and
//! never reaches a log line or an error.
//!
//! [`verify`] also takes the Werkzeug hashes that accounts imported from the
//! Flask app arrive with, so that they can sign in, and be rehashed as
//! Argon2id there and then (`service::login`). The salt is the salt text's
//! bytes, the key lowercase hex:
//!
//! - `pbkdf2:sha256:<iterations>$<salt>$<hex>`: PBKDF2-HMAC-SHA256 of the
//!   UTF-8 password, a 32-byte key; `pbkdf2:sha512:…` likewise, 64 bytes.
//! - `scrypt:<n>:<r>:<p>$<salt>$<hex>`: scrypt of the same, a 64-byte key.
//!
//! A value in the database must never make a sign-in loop or allocate
//! without bound, so only these are computed: PBKDF2 with 1 to
//! [`MAX_PBKDF2_ITERATIONS`] iterations; scrypt with n a power of two from
//! 2 to 2^[`MAX_SCRYPT_LOG_N`], r up to [`MAX_SCRYPT_R`] and p up to
//! [`MAX_SCRYPT_P`] (at most 128·n·r = 256 MiB). Everything else verifies
//! nothing: other digests, parameters past the bounds, Werkzeug's plain and
//! `sha256$salt$…` hashes, and `pbkdf2:sha256` without an iteration count
//! (Werkzeug always writes the count; the default a reader assumes differs
//! between its versions).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

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

/// Checks `password` against a stored hash: an Argon2 PHC string or a
/// Werkzeug hash within the bounds (see the module docs). The parameters
/// come from the string, so hashes made with stronger settings keep verifying.
pub fn verify(password: &Password, stored: &str) -> bool {
    let password = password.0.expose_secret().as_bytes();
    if let Some(werkzeug) = Werkzeug::parse(stored) {
        return werkzeug.matches(password);
    }
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    argon2().verify_password(password, &parsed).is_ok()
}

/// Whether `stored` is a Werkzeug hash that [`verify`] computes: a known
/// method, parameters within the bounds, a salt and a key of the right length.
pub fn is_werkzeug(stored: &str) -> bool {
    Werkzeug::parse(stored).is_some()
}

/// The bounds on the work of a Werkzeug hash: 2 and 4 times Werkzeug 3.1's
/// defaults (`pbkdf2:sha256:1000000`, `scrypt:32768:8:1`) in iterations
/// and n, and twice its r.
pub const MAX_PBKDF2_ITERATIONS: u32 = 2_000_000;
pub const MAX_SCRYPT_LOG_N: u32 = 17;
pub const MAX_SCRYPT_R: u32 = 16;
pub const MAX_SCRYPT_P: u32 = 4;

/// A Werkzeug hash within the bounds, borrowing its salt from the stored string.
struct Werkzeug<'a> {
    kdf: Kdf,
    salt: &'a [u8],
    key: Vec<u8>,
}

enum Kdf {
    Pbkdf2Sha256 { iterations: u32 },
    Pbkdf2Sha512 { iterations: u32 },
    Scrypt(scrypt::Params),
}

impl Kdf {
    /// The length of the key Werkzeug stores: Python's default `dklen`.
    fn key_len(&self) -> usize {
        match self {
            Kdf::Pbkdf2Sha256 { .. } => 32,
            Kdf::Pbkdf2Sha512 { .. } | Kdf::Scrypt(_) => 64,
        }
    }
}

impl<'a> Werkzeug<'a> {
    /// `<method>$<salt>$<hex>`, split as Werkzeug splits it.
    fn parse(stored: &'a str) -> Option<Self> {
        let mut parts = stored.splitn(3, '$');
        let (method, salt, hex) = (parts.next()?, parts.next()?, parts.next()?);
        let kdf = match method.split(':').collect::<Vec<_>>()[..] {
            ["pbkdf2", "sha256", i] => Kdf::Pbkdf2Sha256 { iterations: iterations(i)? },
            ["pbkdf2", "sha512", i] => Kdf::Pbkdf2Sha512 { iterations: iterations(i)? },
            ["scrypt", n, r, p] => Kdf::Scrypt(scrypt_params(n, r, p)?),
            _ => return None,
        };
        let key = unhex(hex).filter(|key| key.len() == kdf.key_len())?;
        (!salt.is_empty()).then_some(Werkzeug { kdf, salt: salt.as_bytes(), key })
    }

    /// Derives the key of `password` and compares it in constant time.
    fn matches(&self, password: &[u8]) -> bool {
        let mut derived = vec![0u8; self.key.len()];
        match &self.kdf {
            Kdf::Pbkdf2Sha256 { iterations } => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, self.salt, *iterations, &mut derived),
            Kdf::Pbkdf2Sha512 { iterations } => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, self.salt, *iterations, &mut derived),
            Kdf::Scrypt(params) => scrypt::scrypt(password, self.salt, params, &mut derived).expect("a 64-byte key is a valid output"),
        }
        derived.ct_eq(&self.key).into()
    }
}

fn iterations(text: &str) -> Option<u32> {
    number(text).filter(|i| (1..=MAX_PBKDF2_ITERATIONS).contains(i))
}

/// scrypt's cost, Werkzeug's way round (n, not its logarithm), within the bounds.
fn scrypt_params(n: &str, r: &str, p: &str) -> Option<scrypt::Params> {
    let (n, r, p) = (number(n)?, number(r)?, number(p)?);
    let log_n = n.trailing_zeros();
    let within = n.is_power_of_two() && (1..=MAX_SCRYPT_LOG_N).contains(&log_n) && (1..=MAX_SCRYPT_R).contains(&r) && (1..=MAX_SCRYPT_P).contains(&p);
    within.then(|| scrypt::Params::new(log_n as u8, r, p, 64).ok()).flatten()
}

/// A decimal of ASCII digits only (`str::parse` would also take a sign).
fn number(text: &str) -> Option<u32> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

/// Lowercase hex, as Python's `bytes.hex` writes it (Werkzeug compares the
/// text, so uppercase never matched there either).
fn unhex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes().chunks(2).map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?)).collect()
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

    /// Made by Werkzeug 3.1.8 (Python 3.11): `generate_password_hash(WERKZEUG_PASSWORD, method=…)`
    /// with the method the hash starts with; `SCRYPT_DEFAULT` and `PBKDF2_DEFAULT` with
    /// `method="scrypt"` and `method="pbkdf2"`, Werkzeug 3.1's defaults.
    const WERKZEUG_PASSWORD: &str = "correct horse battery";
    const PBKDF2_SHA256: &str = "pbkdf2:sha256:1000$0rP37fqd5rIxsyqP$619d0f7da429ba2bb2bd0b1ca972f42d3efc0a15f2e0343a068542b650e23d32";
    const PBKDF2_SHA512: &str = "pbkdf2:sha512:1000$zHvc3ZnTazXWkQlh$85908462ea8c0515f703723282223b20a2f8039d86e528951e1f7bb2fcc266e4\
                                 1bbdff52b2d4eea60ee8580834bba358507e2f10ad283903d15a13ccb7bd5e93";
    const SCRYPT_SMALL: &str = "scrypt:1024:8:1$ac8fjDBFtK306AtB$811abe6243af81f5b26bcf95a736e6482b4b58f57140235aa0887e275cd3c8c9\
                                92fd59e5aa12887d0d565c854c2f1eda416f7a4befdcefc5ab8ba871a27345a5";
    const SCRYPT_DEFAULT: &str = "scrypt:32768:8:1$c9zzC9TAHnBf96xk$9bc93dd4aa734da210a97114370fbc6ea3660e2761043090a3219dea49585130\
                                  34fd37e2a7eb94279f4b8963175bc8462937ca672650346cf1501d20ffec6d65";
    const PBKDF2_DEFAULT: &str = "pbkdf2:sha256:1000000$0yrLt5bYRHek1Wur$2d7ffb9292fb350b94e225098080bb25ca2c0861e0a925f3378c0a12c17e1939";
    /// The same, of a password with non-ASCII characters (hashed as UTF-8).
    const UNICODE_PASSWORD: &str = "żółć gęślą jaźń";
    const PBKDF2_UNICODE: &str = "pbkdf2:sha256:1000$CSvWxyUdaofPLmce$4d53cff35edc055668279af4c3f52e20b2bfd855acc0081e45f0befffd99b703";

    fn pw(s: &str) -> Password {
        Password::parse(s.into()).unwrap()
    }

    #[test]
    fn werkzeug_hashes_verify_their_password_only() {
        for stored in [PBKDF2_SHA256, PBKDF2_SHA512, SCRYPT_SMALL, SCRYPT_DEFAULT, PBKDF2_DEFAULT] {
            assert!(is_werkzeug(stored), "{stored}");
            assert!(verify(&pw(WERKZEUG_PASSWORD), stored), "{stored}");
            assert!(!verify(&pw("correct horse battery!"), stored), "{stored}");
            assert!(!is_current(stored), "a legacy hash is not current: {stored}");
        }
        assert!(verify(&pw(UNICODE_PASSWORD), PBKDF2_UNICODE));
        assert!(!verify(&pw(WERKZEUG_PASSWORD), PBKDF2_UNICODE));
    }

    #[test]
    fn a_tampered_werkzeug_hash_verifies_nothing() {
        let password = pw(WERKZEUG_PASSWORD);
        for stored in [PBKDF2_SHA256, SCRYPT_SMALL] {
            let (method, rest) = stored.split_once('$').unwrap();
            let (salt, hex) = rest.split_once('$').unwrap();
            let flipped = format!("{}{}", if hex.starts_with('0') { '1' } else { '0' }, &hex[1..]);
            for tampered in [
                format!("{method}${salt}${flipped}"),
                format!("{method}${salt}x${hex}"),
                format!("{method}${salt}${}", hex.to_uppercase()),
                format!("{method}${salt}${}", &hex[2..]),
                format!("{method}${salt}${hex}00"),
            ] {
                assert!(!verify(&password, &tampered), "{tampered}");
            }
        }
        let other_iterations = PBKDF2_SHA256.replace("sha256:1000$", "sha256:1001$");
        assert!(is_werkzeug(&other_iterations) && !verify(&password, &other_iterations));
        let other_digest = PBKDF2_SHA256.replace("sha256:", "sha512:");
        assert!(!is_werkzeug(&other_digest), "a 32-byte key is not a SHA-512 one");
    }

    #[test]
    fn werkzeug_parameters_past_the_bounds_are_not_computed() {
        let key32 = "00".repeat(32);
        let key64 = "00".repeat(64);
        for stored in [
            format!("pbkdf2:sha256:0$salt${key32}"),
            format!("pbkdf2:sha256:2000001$salt${key32}"),
            format!("pbkdf2:sha256:4294967296$salt${key32}"),
            format!("scrypt:262144:8:1$salt${key64}"),
            format!("scrypt:1:8:1$salt${key64}"),
            format!("scrypt:1000:8:1$salt${key64}"),
            format!("scrypt:1024:17:1$salt${key64}"),
            format!("scrypt:1024:0:1$salt${key64}"),
            format!("scrypt:1024:8:5$salt${key64}"),
            format!("scrypt:1024:8:0$salt${key64}"),
        ] {
            assert!(!is_werkzeug(&stored), "{stored}");
            assert!(!verify(&pw(WERKZEUG_PASSWORD), &stored), "{stored}");
        }
        assert!(is_werkzeug(&format!("pbkdf2:sha256:2000000$salt${key32}")));
        assert!(is_werkzeug(&format!("scrypt:131072:16:4$salt${key64}")));
    }

    #[test]
    fn other_and_malformed_werkzeug_hashes_verify_nothing() {
        let password = pw(WERKZEUG_PASSWORD);
        let key32 = "00".repeat(32);
        for stored in [
            String::new(),
            format!("pbkdf2:sha256$salt${key32}"),
            format!("pbkdf2$salt${key32}"),
            format!("pbkdf2:sha1:1000$salt${}", "00".repeat(20)),
            format!("pbkdf2:sha256:+1000$salt${key32}"),
            format!("pbkdf2:sha256: 1000$salt${key32}"),
            format!("pbkdf2:sha256:1000:1$salt${key32}"),
            format!("pbkdf2:sha256:1000$${key32}"),
            "pbkdf2:sha256:1000$salt".into(),
            format!("scrypt$salt${}", "00".repeat(64)),
            format!("scrypt:1024:8$salt${}", "00".repeat(64)),
            "sha256$salt$0f".into(),
            "md5$$5f4dcc3b5aa765d61d8327deb882cf99".into(),
            "plain$$correct horse battery".into(),
            "correct horse battery".into(),
        ] {
            assert!(!is_werkzeug(&stored), "{stored}");
            assert!(!verify(&password, &stored), "{stored}");
        }
    }

    #[test]
    fn the_dummy_hash_parses_with_real_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(Params::try_from(&parsed).unwrap(), Params::new(19 * 1024, 2, 1, Some(32)).unwrap());
    }
}
