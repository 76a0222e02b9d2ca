//! The password hasher the auth component calls (`lvd::auth::hasher` has the
//! exchange and why): `POST /internal/password/hash` and `/verify` on the
//! worker's own listener, open only to `Authorization: Bearer <hasher_key>`.
//!
//! Hashing is bounded: at most `concurrency` at once (each takes a core and
//! 19 MiB for ~20 ms), on blocking threads, never on the threads that drive
//! the queues; a request that waits [`QUEUE_WAIT`] for its turn is answered
//! 503 and the component hashes in itself; bodies past
//! `lvd::auth::hasher::MAX_BODY_BYTES` are refused unread.

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use lvd::auth::hasher;

use crate::metrics::Metrics;
use crate::server::problem;

/// How long a request may wait for a free hashing slot.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

pub struct Hashing {
    key: String,
    slots: Arc<Semaphore>,
    metrics: Metrics,
}

impl Hashing {
    /// The hasher, or `None` when `key` is shorter than
    /// `lvd::auth::hasher::MIN_KEY_BYTES` (unset: the endpoint is off).
    pub fn new(key: Option<String>, concurrency: usize, metrics: Metrics) -> Option<Self> {
        let key = key.filter(|k| k.len() >= hasher::MIN_KEY_BYTES)?;
        metrics.concurrency.with_label_values(&["hasher"]).set(concurrency as i64);
        Some(Self { key, slots: Arc::new(Semaphore::new(concurrency.max(1))), metrics })
    }

    /// The status and JSON body answering `req`.
    pub async fn answer(&self, req: hyper::Request<Incoming>) -> (u16, String) {
        let path = req.uri().path().to_owned();
        let op = match path.as_str() {
            hasher::HASH_PATH => "hash",
            hasher::VERIFY_PATH => "verify",
            _ => return problem(404, "not_found", "No such path."),
        };
        if req.method() != hyper::Method::POST {
            return problem(405, "method_not_allowed", "Only POST.");
        }
        let bearer = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !lvd::secret::matches(bearer, &self.key, hasher::MIN_KEY_BYTES) {
            return problem(401, "invalid_token", "The hasher key is missing or wrong.");
        }
        let body = match Limited::new(req.into_body(), hasher::MAX_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return problem(413, "payload_too_large", "The body is too large."),
        };
        let Ok(Ok(slot)) = tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned()).await else {
            self.count(op, "busy");
            return problem(503, "unavailable", "Every hashing slot is busy.");
        };
        let busy = self.metrics.busy.with_label_values(&["hasher"]);
        busy.inc();
        let answered = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            hasher::answer(&path, &body)
        })
        .await;
        busy.dec();
        match answered {
            Ok(Ok(json)) => {
                self.count(op, "ok");
                (200, String::from_utf8(json).expect("JSON is UTF-8"))
            }
            Ok(Err(refusal)) => {
                self.count(op, "refused");
                problem(refusal.status(), "refused", "Not a password or hash this hasher takes.")
            }
            Err(_) => {
                self.count(op, "failed");
                problem(500, "internal_error", "Hashing failed.")
            }
        }
    }

    fn count(&self, op: &str, outcome: &str) {
        self.metrics.password_hashes.with_label_values(&[op, outcome]).inc();
    }
}
