//! Background jobs: a report or an export of one app's events over a range
//! of `received_at`, asked for through the API (`components/jobs`),
//! produced by the worker, downloaded from any runtime instance.
//!
//! - The `jobs` row is the truth about a job ([`store`]); the Redis queue
//!   ([`crate::keys::JOB_QUEUE`]) only carries its id to a worker, with the
//!   email queue's guarantees (consumer group, reclaim, backoff).
//! - A worker writes the file into `job_files` in parts ([`PART_BYTES`]),
//!   inside the one transaction that marks the job done and that holds the
//!   job's row lock from start to end (`produce`, native only): a worker that
//!   dies leaves no partial file and the job is produced again by another;
//!   two workers never both produce one.
//! - Files live in PostgreSQL because every runtime instance can read it and
//!   none can see a worker's disk; a download streams the parts one query at
//!   a time, so no component holds a whole file. They expire after the
//!   `job_file_days` variable (7 by default), when the worker deletes them.

pub mod store;

#[cfg(feature = "native")]
pub mod cells;
#[cfg(feature = "native")]
pub mod produce;
#[cfg(feature = "native")]
pub mod report;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::input::Fields;
use crate::keys::JOB_QUEUE;
use crate::kv::{Redis, RedisError};
use crate::logs::{EventName, TIME_RANGE, rfc3339, storable_time};
use crate::problem::Problem;

/// The most a stored file part holds.
pub const PART_BYTES: usize = 1 << 20;
/// Unfinished (queued or running) jobs a user may have at once, unless the
/// `jobs_max_unfinished` variable says otherwise.
pub const DEFAULT_MAX_UNFINISHED: u64 = 5;
/// Days a finished job's file is kept, unless `job_file_days` says otherwise.
pub const DEFAULT_FILE_DAYS: u64 = 7;
/// What a user at the cap is told to wait before asking again.
pub const CAP_RETRY_AFTER_SECS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Report,
    Export,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Report => "report",
            Kind::Export => "export",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "report" => Some(Kind::Report),
            "export" => Some(Kind::Export),
            _ => None,
        }
    }

    /// The formats this kind can produce.
    pub fn formats(self) -> &'static [Format] {
        match self {
            Kind::Report => &[Format::Json, Format::Csv, Format::Html],
            Kind::Export => &[Format::Ndjson, Format::Csv],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Html,
    Ndjson,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
            Format::Ndjson => "ndjson",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Format::Json, Format::Csv, Format::Html, Format::Ndjson].into_iter().find(|f| f.as_str() == s)
    }

    /// The `Content-Type` of a download.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// What a job was asked to produce: validated, as stored in `jobs.params`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub kind: Kind,
    pub format: Format,
    /// Inclusive.
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    /// Exports only: one status.
    pub status: Option<&'static str>,
    /// Exports only: one event.
    pub event: Option<EventName>,
    /// Reports only: mail the owner when done.
    pub notify: bool,
}

impl Spec {
    /// A `POST /api/apps/{app}/reports` body; 422 naming each bad field.
    pub fn report(body: &[u8]) -> Result<Self, Problem> {
        Self::parse(Kind::Report, body)
    }

    /// A `POST /api/apps/{app}/exports` body; 422 naming each bad field.
    pub fn export(body: &[u8]) -> Result<Self, Problem> {
        Self::parse(Kind::Export, body)
    }

    fn parse(kind: Kind, body: &[u8]) -> Result<Self, Problem> {
        let mut f = Fields::parse(body)?;
        let time = |f: &mut Fields, name: &str| {
            let raw = f.required_str(name)?;
            match DateTime::parse_from_rfc3339(&raw).map(|t| t.with_timezone(&Utc)) {
                Ok(t) if storable_time(t) => Some(t),
                Ok(_) => {
                    f.error(name, TIME_RANGE);
                    None
                }
                Err(_) => {
                    f.error(name, "must be an RFC 3339 time, such as 2026-11-27T08:00:00Z");
                    None
                }
            }
        };
        let from = time(&mut f, "from");
        let to = time(&mut f, "to");
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            f.error("to", "must be later than from");
        }
        let names: Vec<_> = kind.formats().iter().map(|f| f.as_str()).collect();
        let format = f.required_str("format").and_then(|raw| {
            let format = Format::parse(&raw).filter(|fmt| kind.formats().contains(fmt));
            if format.is_none() {
                f.error("format", format!("must be one of {}", names.join(", ")));
            }
            format
        });
        let (mut status, mut event, mut notify) = (None, None, false);
        match kind {
            Kind::Export => {
                status = f.optional_str("status").and_then(|raw| {
                    let s = ["valid", "invalid", "unplanned"].into_iter().find(|s| *s == raw);
                    if s.is_none() {
                        f.error("status", "must be one of valid, invalid, unplanned");
                    }
                    s
                });
                let raw = f.optional_str("event");
                event = f.parsed("event", raw, EventName::parse);
            }
            Kind::Report => match f.take("notify") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => notify = b,
                Some(_) => f.error("notify", "must be true or false"),
            },
        }
        f.finish()?;
        Ok(Self { kind, format: format.expect("checked"), from: from.expect("checked"), to: to.expect("checked"), status, event, notify })
    }

    /// The job's parameters as `jobs.params` keeps them.
    pub fn params(&self) -> Value {
        json!({
            "from": rfc3339(self.from),
            "to": rfc3339(self.to),
            "status": self.status,
            "event": self.event.as_ref().map(EventName::as_str),
            "notify": self.notify,
        })
    }

    /// A spec back from its row; `Err` says why it cannot be (a row this
    /// version cannot read: the job fails with that reason).
    pub fn stored(kind: &str, format: &str, params: &Value) -> Result<Self, String> {
        let kind = Kind::parse(kind).ok_or_else(|| format!("unknown job kind {kind:?}"))?;
        let format = Format::parse(format).filter(|f| kind.formats().contains(f)).ok_or_else(|| format!("unknown format {format:?}"))?;
        let time = |name: &str| {
            params[name]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| format!("unreadable {name}"))
        };
        let status = match params["status"].as_str() {
            None => None,
            Some(s) => Some(["valid", "invalid", "unplanned"].into_iter().find(|v| *v == s).ok_or("unknown status")?),
        };
        let event = params["event"].as_str().map(|e| EventName::parse(e.to_owned())).transpose()?;
        Ok(Self { kind, format, from: time("from")?, to: time("to")?, status, event, notify: params["notify"].as_bool().unwrap_or(false) })
    }
}

/// The file name a download is offered under: ASCII only, so no header
/// quoting question arises.
pub fn file_name(kind: Kind, format: Format, id: Uuid) -> String {
    format!("lvd-{}-{}.{}", kind.as_str(), id, format.as_str())
}

/// Puts a job's id on the queue for a worker. A job whose enqueue fails is
/// still safe: the worker queues any job left `queued` for long
/// ([`store::stale`]).
pub async fn enqueue(redis: &impl Redis, id: Uuid) -> Result<(), RedisError> {
    let payload = json!({ "job_id": id }).to_string();
    let mut args = vec![JOB_QUEUE.into()];
    args.extend(crate::keys::entry_fields(payload, redis.request_id()));
    redis.execute("XADD", args).await.map(drop)
}

/// The job id a queue entry carries.
pub fn queued_id(payload: &str) -> Option<Uuid> {
    serde_json::from_str::<Value>(payload).ok()?["job_id"].as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(p: Problem) -> Vec<String> {
        p.errors.into_iter().map(|e| e.pointer).collect()
    }

    #[test]
    fn a_report_needs_a_range_and_a_format_it_can_produce() {
        let p = Spec::report(br#"{"format": "ndjson", "notify": "yes"}"#).unwrap_err();
        assert_eq!(pointers(p), ["/from", "/to", "/format", "/notify"]);
        let p = Spec::report(br#"{"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z", "format": "html"}"#).unwrap_err();
        assert_eq!(pointers(p), ["/to"]);
        let s = Spec::report(br#"{"from": "2026-11-01T00:00:00+01:00", "to": "2026-11-02T00:00:00Z", "format": "html", "notify": true}"#).unwrap();
        assert_eq!((s.kind, s.format, s.notify, rfc3339(s.from).as_str()), (Kind::Report, Format::Html, true, "2026-10-31T23:00:00.000000Z"));
    }

    #[test]
    fn an_export_takes_filters_and_refuses_bad_ones() {
        let p = Spec::export(br#"{"from": "x", "to": "0000-01-01T00:00:00Z", "format": "html", "status": "ok", "event": ""}"#).unwrap_err();
        assert_eq!(pointers(p), ["/from", "/to", "/format", "/status", "/event"]);
        let s = Spec::export(br#"{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "format": "csv", "status": "invalid", "event": "signup"}"#)
            .unwrap();
        assert_eq!((s.status, s.event.as_ref().map(EventName::as_str)), (Some("invalid"), Some("signup")));
        assert_eq!(Spec::stored("export", "csv", &s.params()).unwrap(), s);
    }

    #[test]
    fn a_queue_entry_carries_the_job_id() {
        let id = Uuid::new_v4();
        assert_eq!(queued_id(&json!({ "job_id": id }).to_string()), Some(id));
        assert_eq!(queued_id("{}"), None);
    }
}
