//! `lvd::auth::hasher::Hasher` over the worker's hashing endpoint, with the
//! component's own hashing as the fallback (see `lvd::auth::hasher` for the
//! exchange and why).
//!
//! Configured by the auth component's variables `hasher_url` (the worker's
//! address, listed in `allowed_outbound_hosts` as `hasher_host`) and
//! `hasher_key` (a secret of at least 32 bytes; shorter or unset: the
//! component hashes in itself and never calls out). Any failure — refused
//! connection, no answer within [`deadline::HASHER`], a status other than
//! 200, an answer it cannot use — falls back to hashing here, and the
//! instance then leaves the worker alone for [`REST_AFTER_FAILURE`], so a
//! stopped worker costs one refused connection per instance, not one per
//! sign-in.

use lvd::auth::hasher::{self, Hasher, InProcess, Reply};
use lvd::auth::password::Password;
use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::deadline;
use crate::host::{outbound, variables};

/// How long an instance hashes in itself after a call to the worker failed.
const REST_AFTER_FAILURE: Duration = Duration::from_secs(5);

thread_local! {
    /// When this instance may call the worker again. Instance health, not
    /// request state: any request may set it, every request obeys it.
    static RESTING_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

pub struct Sidecar {
    /// `(url, key)`, or `None` when the exchange is off.
    to: Option<(String, String)>,
    /// The request, for the log line of a failure.
    request_id: String,
}

impl Sidecar {
    /// The hasher the variables describe, for the request `request_id`.
    pub async fn load(request_id: &str) -> Result<Self, variables::Error> {
        let key = variables::get("hasher_key").await?;
        let to = if key.len() >= hasher::MIN_KEY_BYTES {
            Some((variables::get("hasher_url").await?.trim_end_matches('/').to_owned(), key))
        } else {
            None
        };
        Ok(Self { to, request_id: request_id.to_owned() })
    }

    /// The worker's reply to `password` (hash) or `password` against `phc`
    /// (verify), or `None` when the component must do it itself.
    async fn ask(&self, password: &Password, phc: Option<&str>) -> Option<Reply> {
        let (url, key) = self.to.as_ref()?;
        if RESTING_UNTIL.get().is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let (path, body) = hasher::request_body(password, phc);
        let outcome = match deadline::within(deadline::HASHER, outbound::post_json(&format!("{url}{path}"), key, body, 1024)).await {
            None => Err(format!("no answer within {:?}", deadline::HASHER)),
            Some(Err(e)) => Err(e),
            Some(Ok((200, body))) => hasher::read_reply(path, &body).ok_or_else(|| "an answer it could not use".to_owned()),
            Some(Ok((status, _))) => Err(format!("status {status}")),
        };
        outcome
            .inspect_err(|e| {
                RESTING_UNTIL.set(Some(Instant::now() + REST_AFTER_FAILURE));
                let message = format!("password hasher at {url}: {e}; hashing in the component for {REST_AFTER_FAILURE:?}");
                crate::log::warn("auth", Some(&self.request_id), &message);
            })
            .ok()
    }
}

impl Hasher for Sidecar {
    async fn hash(&self, password: &Password) -> String {
        match self.ask(password, None).await {
            Some(Reply::Hashed(phc)) => phc,
            _ => InProcess.hash(password).await,
        }
    }

    async fn verify(&self, password: &Password, phc: &str) -> bool {
        match self.ask(password, Some(phc)).await {
            Some(Reply::Verified(ok)) => ok,
            _ => InProcess.verify(password, phc).await,
        }
    }
}
