//! Password hashing as a service: the one place a password becomes a PHC
//! string or is checked against one.
//!
//! Argon2id with 19 MiB is most of the cost of signing in or up, and inside
//! a WebAssembly component it runs ~3× slower than natively. So the worker
//! (native, beside the components) offers it over HTTP: the auth component
//! sends the password to `POST {hasher_url}/internal/password/{hash,verify}`
//! with `Authorization: Bearer {hasher_key}`, and hashes in itself (the
//! same function, the same PHC string) whenever that fails: no key set, the
//! worker down, slow or refusing. Nothing a caller sees depends on which
//! side hashed: the parameters are [`password`]'s either way, an unknown
//! email still costs one verification (on the same side as a known one), and
//! a PHC string from either side verifies on the other.
//!
//! This module holds both ends of that exchange, so they cannot drift: the
//! [`Hasher`] seam the account service hashes through, [`InProcess`], the
//! wire format the component writes ([`request_body`], [`read_reply`]) and
//! what the worker answers ([`answer`]). The worker bounds what it will
//! compute: a password of the allowed length, and a stored hash that is
//! either Argon2 with parameters no larger than [`MAX_MEMORY_KIB`],
//! [`MAX_TIME`], [`MAX_LANES`], or a Werkzeug hash of an imported account
//! within [`password`]'s bounds ([`password::is_werkzeug`]).

use argon2::password_hash::PasswordHash;
use serde::{Deserialize, Serialize};

use super::password::{self, Password};

/// The worker's paths.
pub const HASH_PATH: &str = "/internal/password/hash";
pub const VERIFY_PATH: &str = "/internal/password/verify";
/// The largest request body the worker reads: a 128-character password
/// (at most 512 bytes of UTF-8, escaped) and a PHC string fit many times.
pub const MAX_BODY_BYTES: usize = 4096;
/// The shortest `hasher_key` that turns the exchange on (shorter: both
/// sides leave it off, and components hash in themselves).
pub const MIN_KEY_BYTES: usize = 32;
/// The costliest stored hash the worker verifies: far above the 19 MiB,
/// t=2, p=1 the product writes, so stronger settings keep working, and
/// low enough that no request can make it allocate without bound.
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
pub const MAX_TIME: u32 = 16;
pub const MAX_LANES: u32 = 8;

/// How the account service hashes and checks passwords.
#[allow(async_fn_in_trait)]
pub trait Hasher {
    /// A PHC string of `password` with a fresh salt.
    async fn hash(&self, password: &Password) -> String;
    /// Whether `password` matches the stored hash `phc`: a PHC string, or
    /// a Werkzeug hash of an imported account (see [`password::verify`]).
    async fn verify(&self, password: &Password, phc: &str) -> bool;
}

/// Hashing in the calling process (the component's fallback, and tests).
pub struct InProcess;

impl Hasher for InProcess {
    async fn hash(&self, password: &Password) -> String {
        password::hash(password)
    }

    async fn verify(&self, password: &Password, phc: &str) -> bool {
        password::verify(password, phc)
    }
}

/// One request to the worker.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    password: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phc: Option<std::borrow::Cow<'a, str>>,
}

/// The worker's answer: `phc` to a hash, `ok` to a verification.
#[derive(Serialize, Deserialize)]
struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
}

/// What the component sends: the path and the JSON body for hashing
/// `password` (`phc: None`) or verifying it against `phc`.
pub fn request_body(password: &Password, phc: Option<&str>) -> (&'static str, Vec<u8>) {
    let wire = Wire { password: password.expose().into(), phc: phc.map(Into::into) };
    let path = if phc.is_some() { VERIFY_PATH } else { HASH_PATH };
    (path, serde_json::to_vec(&wire).expect("a request serializes"))
}

/// What a worker's answer says, when it says something this side can use:
/// a new hash must be one the product would make itself (Argon2id at the
/// product's parameters), else the caller hashes in itself.
pub enum Reply {
    Hashed(String),
    Verified(bool),
}

pub fn read_reply(path: &str, body: &[u8]) -> Option<Reply> {
    let answer: Answer = serde_json::from_slice(body).ok()?;
    match (path, answer) {
        (HASH_PATH, Answer { phc: Some(phc), ok: None }) if password::is_current(&phc) => Some(Reply::Hashed(phc)),
        (VERIFY_PATH, Answer { phc: None, ok: Some(ok) }) => Some(Reply::Verified(ok)),
        _ => None,
    }
}

/// Why the worker refused a request, as its status.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// 400: not a request of this exchange.
    Malformed,
    /// 422: a password of the wrong length, or a stored hash that is
    /// neither Argon2 nor Werkzeug within the bounds.
    Unprocessable,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed => 400,
            Refusal::Unprocessable => 422,
        }
    }
}

/// The worker's side: the JSON answer to a request on `path` (the
/// CPU-bound part; the worker runs it off its async threads).
pub fn answer(path: &str, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let wire: Wire = serde_json::from_slice(body).map_err(|_| Refusal::Malformed)?;
    let password = Password::parse(wire.password.into_owned()).map_err(|_| Refusal::Unprocessable)?;
    let answer = match (path, wire.phc) {
        (HASH_PATH, None) => Answer { phc: Some(password::hash(&password)), ok: None },
        (VERIFY_PATH, Some(phc)) => {
            if !within_bounds(&phc) {
                return Err(Refusal::Unprocessable);
            }
            Answer { phc: None, ok: Some(password::verify(&password, &phc)) }
        }
        _ => return Err(Refusal::Malformed),
    };
    Ok(serde_json::to_vec(&answer).expect("an answer serializes"))
}

/// Whether `phc` is an Argon2 hash whose cost is within the worker's
/// bounds, or a Werkzeug hash within [`password`]'s.
fn within_bounds(phc: &str) -> bool {
    if password::is_werkzeug(phc) {
        return true;
    }
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let Ok(params) = argon2::Params::try_from(&parsed) else { return false };
    params.m_cost() <= MAX_MEMORY_KIB && params.t_cost() <= MAX_TIME && params.p_cost() <= MAX_LANES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::parse(s.into()).unwrap()
    }

    #[test]
    fn a_hash_from_the_worker_side_verifies_in_process_and_back() {
        let (path, body) = request_body(&pw("correct horse battery"), None);
        let Some(Reply::Hashed(phc)) = read_reply(path, &answer(path, &body).unwrap()) else { panic!("no hash") };
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(password::verify(&pw("correct horse battery"), &phc));

        let local = password::hash(&pw("correct horse battery"));
        for (guess, expected) in [("correct horse battery", true), ("wrong horse battery!", false)] {
            let (path, body) = request_body(&pw(guess), Some(&local));
            let Some(Reply::Verified(ok)) = read_reply(path, &answer(path, &body).unwrap()) else { panic!("no verdict") };
            assert_eq!(ok, expected, "{guess}");
        }
    }

    /// Made by Werkzeug 3.1.8: `generate_password_hash("correct horse battery", method="scrypt:1024:8:1")`
    /// (`password`'s tests hold more).
    const WERKZEUG_SCRYPT: &str = "scrypt:1024:8:1$ac8fjDBFtK306AtB$811abe6243af81f5b26bcf95a736e6482b4b58f57140235aa0887e275cd3c8c9\
                                   92fd59e5aa12887d0d565c854c2f1eda416f7a4befdcefc5ab8ba871a27345a5";

    #[test]
    fn the_worker_verifies_a_werkzeug_hash_within_the_bounds() {
        for (guess, expected) in [("correct horse battery", true), ("wrong horse battery!", false)] {
            let (path, body) = request_body(&pw(guess), Some(WERKZEUG_SCRYPT));
            let Some(Reply::Verified(ok)) = read_reply(path, &answer(path, &body).unwrap()) else { panic!("no verdict") };
            assert_eq!(ok, expected, "{guess}");
        }
        let costly = WERKZEUG_SCRYPT.replace("scrypt:1024:8:1$", "scrypt:262144:8:1$");
        let (path, body) = request_body(&pw("correct horse battery"), Some(&costly));
        assert_eq!(answer(path, &body), Err(Refusal::Unprocessable), "n = 2^18 is past the bound");
    }

    #[test]
    fn the_worker_refuses_what_it_should_not_compute() {
        let (_, body) = request_body(&pw("correct horse battery"), None);
        assert_eq!(answer(VERIFY_PATH, &body), Err(Refusal::Malformed), "a verification without a hash");
        assert_eq!(answer(HASH_PATH, b"{\"password\":\"short\"}"), Err(Refusal::Unprocessable));
        assert_eq!(answer(HASH_PATH, b"not json"), Err(Refusal::Malformed));
        assert_eq!(answer(HASH_PATH, b"{\"password\":\"correct horse battery\",\"x\":1}"), Err(Refusal::Malformed));
        let costly = "$argon2id$v=19$m=4194304,t=2,p=1$9y1rT0aBqUk3YXoA7KkYcg$8kJQpR9Zl3l1b2PzQ2v5m6uZ4mQwQ0f1i8e3Xx9m7Ck";
        let (path, body) = request_body(&pw("correct horse battery"), Some(costly));
        assert_eq!(answer(path, &body), Err(Refusal::Unprocessable), "4 GiB is past the bound");
        let (path, body) = request_body(&pw("correct horse battery"), Some("pbkdf2:sha256:1$x$y"));
        assert_eq!(answer(path, &body), Err(Refusal::Unprocessable), "a Werkzeug hash whose key is not hex");
    }

    #[test]
    fn a_reply_that_is_not_the_products_own_hash_is_not_used() {
        let weak = "$argon2id$v=19$m=8,t=1,p=1$9y1rT0aBqUk3YXoA7KkYcg$8kJQpR9Zl3l1b2PzQ2v5m6uZ4mQwQ0f1i8e3Xx9m7Ck";
        assert!(read_reply(HASH_PATH, format!("{{\"phc\":\"{weak}\"}}").as_bytes()).is_none(), "weaker parameters");
        assert!(read_reply(HASH_PATH, b"{\"ok\":true}").is_none());
        assert!(read_reply(VERIFY_PATH, b"{\"phc\":\"x\"}").is_none());
        assert!(matches!(read_reply(VERIFY_PATH, b"{\"ok\":false}"), Some(Reply::Verified(false))));
    }
}
