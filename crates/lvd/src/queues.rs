//! The jobs that carry background work from the components to the worker
//! on Redis streams (named in `crate::keys`). Both sides read these
//! definitions from here so they cannot drift.
//!
//! Delivery is at least once: a job stays pending in the stream's consumer
//! group until a worker acknowledges it, and a worker that dies mid-job leaves
//! it for another to reclaim.

use serde::{Deserialize, Serialize};

use crate::keys::EMAIL_QUEUE;
use crate::kv::{Redis, RedisError};

/// An email to send. The code is in the clear only here, in transit to the
/// worker; the database keeps only its keyed hash. `expires_at` (Unix
/// seconds) is when the code dies: the worker sends nothing after it, and
/// keeps no code in a job it gives up on ([`EmailJob::redact`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EmailJob {
    VerificationCode {
        to: String,
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
    },
    PasswordReset {
        to: String,
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
    },
    /// A report the owner asked to be told about is done, or failed. No
    /// secret: the link leads to the page, where the owner signs in.
    JobFinished {
        to: String,
        /// `report` or `export`.
        job_kind: String,
        app: String,
        /// `done` or `failed`.
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Where the owner downloads it (the page).
        link: String,
        /// The API path of the file.
        download_path: String,
    },
    /// An alert fired or resolved (`crate::alerts`). No secret: the link
    /// leads to the app's live view on the page.
    AlertChanged {
        to: String,
        app: String,
        /// The alert's kind, as the API names it.
        alert_kind: String,
        /// What the figure is, for people.
        figure: String,
        event: Option<String>,
        /// `firing` or `resolved`.
        state: String,
        value: f64,
        threshold: f64,
        window: String,
        /// `new_unplanned`: the names that arrived.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<String>,
        at: String,
        link: String,
    },
}

impl EmailJob {
    pub fn to(&self) -> &str {
        match self {
            EmailJob::VerificationCode { to, .. }
            | EmailJob::PasswordReset { to, .. }
            | EmailJob::JobFinished { to, .. }
            | EmailJob::AlertChanged { to, .. } => to,
        }
    }

    /// Whether the code has died (at `now`, Unix seconds): mailing it would
    /// only put a useless secret in a mailbox.
    pub fn expired(&self, now: i64) -> bool {
        match self {
            EmailJob::VerificationCode { expires_at, .. } | EmailJob::PasswordReset { expires_at, .. } => {
                expires_at.is_some_and(|t| t <= now)
            }
            EmailJob::JobFinished { .. } | EmailJob::AlertChanged { .. } => false,
        }
    }

    /// A job's JSON without its code, for a job that will never be sent (the
    /// dead-letter stream): the kind and recipient stay, for the operator. Any
    /// top-level `code` goes, so a job this version cannot read loses it too;
    /// text that is not a JSON object is kept as it is.
    pub fn redact(json: &str) -> String {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(mut job)) => {
                job.remove("code");
                serde_json::Value::Object(job).to_string()
            }
            _ => json.to_owned(),
        }
    }
}

/// Emails the queue holds at most (`MAXLEN ~`): far above what the per-IP
/// limits on `/auth` let through, so only a flood the limits missed trims
/// it, and then the oldest mail goes first (its code expires in 10 minutes
/// anyway) rather than Redis running out of memory.
pub const EMAIL_QUEUE_MAX: i64 = 100_000;

pub async fn enqueue_email(redis: &impl Redis, job: &EmailJob) -> Result<(), RedisError> {
    let json = serde_json::to_string(job).expect("a job serializes");
    let mut args = vec![EMAIL_QUEUE.into(), "MAXLEN".into(), "~".into(), crate::kv::Arg::Int(EMAIL_QUEUE_MAX)];
    args.extend(crate::keys::entry_fields(json, redis.request_id()));
    redis.execute("XADD", args).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_job_keeps_its_kind_and_recipient_but_not_its_code() {
        let job = EmailJob::PasswordReset { to: "a@x.io".into(), code: "424242".into(), expires_at: Some(1) };
        let redacted = EmailJob::redact(&serde_json::to_string(&job).unwrap());
        assert!(!redacted.contains("424242"), "{redacted}");
        let v: serde_json::Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!((v["kind"].as_str(), v["to"].as_str()), (Some("password_reset"), Some("a@x.io")));
        assert_eq!(EmailJob::redact("{not json"), "{not json");
        assert!(!EmailJob::redact(r#"{"kind":"unknown","code":"123456"}"#).contains("123456"));
    }

    #[test]
    fn a_job_expires_with_its_code_and_an_old_job_never_does() {
        let job = |expires_at| EmailJob::VerificationCode { to: "a@x.io".into(), code: "000001".into(), expires_at };
        assert!(job(Some(100)).expired(100));
        assert!(!job(Some(101)).expired(100));
        assert!(!job(None).expired(i64::MAX));
        let old: EmailJob = serde_json::from_str(r#"{"kind":"verification_code","to":"a@x.io","code":"000001"}"#).unwrap();
        assert_eq!(old, job(None));
    }
}
