//! Ingest as a service, independent of HTTP and of how PostgreSQL, Redis and
//! the key-value store are reached: [`Ingest::open`] finds the app an ingest
//! key opens, [`Ingest::accept`] judges a request's events and hands them to
//! storage (`super::ingest`). The logs component reads the request, calls
//! these two, and maps [`IngestError`] to a reply in one function.
//!
//! Ingest is limited per ingest key, not per client IP: one server-side
//! sender may carry many users' events from one address. Unknown keys are
//! the exception: each costs a PostgreSQL query, so failures are limited per
//! client IP ([`Limits::bad_keys_per_ip`] a minute); a key the shared cache
//! knows passes whatever its address did.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::ingest::{self, Judged, KEY_LIMIT, Outcome, Settings};
use super::plan::{self, CachedKey, Compiled, Plan, PlanError};
use super::{Body, Incoming};
use crate::cache::{IngestApp, KeyValue};
use crate::db::{Db, DbError};
use crate::kv::{Redis, RedisError};
use crate::limits::{self, Decision, Limit};
use crate::problem::{FieldError, Problem};
use crate::rules::Violation;

/// The limits ingest enforces (Spin variables of the logs component).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests per minute per ingest key.
    pub per_key_per_minute: u64,
    /// Entries the ingest stream may hold before ingest answers 503.
    pub max_backlog: u64,
    /// Failed ingest keys per client IP per minute.
    pub bad_keys_per_ip: u64,
}

impl Limits {
    fn bad_keys(&self) -> Limit {
        Limit { name: "ingest_bad_key_ip", max: self.bad_keys_per_ip, window_secs: 60 }
    }
}

/// Everything that can stop a request's events from being accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The key opens no app; counted against the client's IP.
    #[error("unknown ingest key")]
    UnknownKey(Decision),
    /// The key's limit, or the client IP's limit on unknown keys, is spent.
    #[error("rate limited")]
    RateLimited(Decision),
    /// The ingest stream is full (the worker is down or far behind).
    #[error("ingest backlog full")]
    Backlogged(Decision),
    /// A lone event that is malformed: its field errors.
    #[error("malformed event")]
    Malformed(Vec<FieldError>),
    /// A body that is neither an event nor a batch (400 or 422).
    #[error("body refused: {}", .0.detail)]
    Body(Problem),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// What ingest reads and writes through.
pub struct Ingest<'a, D, R, K> {
    pub db: &'a D,
    pub redis: &'a R,
    pub kv: &'a K,
    /// The instance's compiled schemas.
    pub compiled: &'a Compiled,
    pub limits: Limits,
}

impl<D: Db, R: Redis, K: KeyValue> Ingest<'_, D, R, K> {
    /// The app `key` opens. A key the cache does not know costs a
    /// PostgreSQL query, so a client `ip` already over its limit of unknown
    /// keys is refused before it (even with a good key: it is cached after
    /// its first use, so a working sender is rarely here).
    pub async fn open(&self, key: &str, ip: &str) -> Result<IngestApp, IngestError> {
        match plan::cached_app_for_key(self.kv, key).await {
            CachedKey::App(app) => return Ok(app),
            CachedKey::Malformed => return Err(self.unknown_key(ip).await),
            CachedKey::Uncached => {}
        }
        let now = limits::peek(self.redis, self.limits.bad_keys(), ip).await?;
        if !now.allowed {
            return Err(IngestError::RateLimited(now));
        }
        match plan::stored_app_for_key(self.kv, self.db, key).await? {
            Some(app) => Ok(app),
            None => Err(self.unknown_key(ip).await),
        }
    }

    /// A key that opens nothing, counted against the client's IP; the
    /// failure past the limit is already 429.
    async fn unknown_key(&self, ip: &str) -> IngestError {
        match limits::hit(self.redis, self.limits.bad_keys(), ip).await {
            Ok(d) if !d.allowed => IngestError::RateLimited(d),
            Ok(d) => IngestError::UnknownKey(d),
            Err(e) => IngestError::Redis(e),
        }
    }

    /// Judges the events of `body` against the app's current rules and
    /// hands them to storage in one atomic step; the receipt means they are
    /// safe. A malformed event of a batch is rejected alone; a lone
    /// malformed event fails the request, and still counts against the
    /// key's limit.
    pub async fn accept(&self, app: &IngestApp, body: &[u8], received_at: DateTime<Utc>) -> Result<Receipt, IngestError> {
        let settings = Settings {
            per_key_per_minute: self.limits.per_key_per_minute,
            dedup_secs: Settings::dedup_secs_for(app.retention_days),
            max_backlog: self.limits.max_backlog,
        };
        let parsed = match Body::parse(body).map_err(IngestError::Body)? {
            Body::Single(Ok(event)) => vec![Ok(event)],
            Body::Single(Err(errors)) => return Err(self.lone_malformed(app.id, settings, errors).await),
            Body::Batch(events) => events,
        };
        let names = parsed.iter().filter_map(|e| e.as_ref().ok()).map(|e| &e.event);
        let plan = Plan::load(self.kv, self.db, self.compiled, app, names).await?;
        let mut judged: Vec<Judged> = Vec::with_capacity(parsed.len());
        let mut slots: Vec<Result<usize, Vec<FieldError>>> = Vec::with_capacity(parsed.len());
        for event in parsed {
            slots.push(event.map(|e: Incoming| {
                let rule = plan.rule(&e.event);
                judged.push(ingest::judge(e, rule, received_at));
                judged.len() - 1
            }));
        }
        match ingest::store(self.redis, app.id, &judged, received_at, settings).await? {
            Outcome::Stored { decision, duplicates } => Ok(Receipt { decision, judged, slots, duplicates }),
            Outcome::RateLimited(decision) => Err(IngestError::RateLimited(decision)),
            Outcome::Backlogged(decision) => Err(IngestError::Backlogged(decision)),
        }
    }

    async fn lone_malformed(&self, app: Uuid, settings: Settings, errors: Vec<FieldError>) -> IngestError {
        let limit = Limit { name: KEY_LIMIT, max: settings.per_key_per_minute, window_secs: 60 };
        match limits::hit(self.redis, limit, &app.to_string()).await {
            Ok(d) if !d.allowed => IngestError::RateLimited(d),
            _ => IngestError::Malformed(errors),
        }
    }
}

/// Accepted: the key's limit decision, and one result per event in the
/// order sent (the 202 body, as it serializes).
#[derive(Debug)]
pub struct Receipt {
    pub decision: Decision,
    judged: Vec<Judged>,
    /// Per event sent: its index in `judged`, or its field errors.
    slots: Vec<Result<usize, Vec<FieldError>>>,
    /// Per judged event: whether its `message_id` was seen before.
    duplicates: Vec<bool>,
}

#[derive(Serialize)]
struct Body202<'a> {
    accepted: usize,
    duplicates: usize,
    results: Vec<ItemResult<'a>>,
}

#[derive(Serialize)]
struct ItemResult<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    status: &'static str,
    errors: Errors<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_version: Option<i64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Errors<'a> {
    Rejected(&'a [FieldError]),
    Judged(&'a [Violation]),
}

impl Serialize for Receipt {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let results = self
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| match slot {
                Err(errors) => ItemResult { index, id: None, status: "rejected", errors: Errors::Rejected(errors), rule_version: None },
                Ok(i) if self.duplicates[*i] => {
                    ItemResult { index, id: None, status: "duplicate", errors: Errors::Rejected(&[]), rule_version: None }
                }
                Ok(i) => {
                    let e = &self.judged[*i];
                    ItemResult { index, id: Some(e.id), status: e.status.as_str(), errors: Errors::Judged(&e.errors), rule_version: e.rule_version }
                }
            })
            .collect();
        let duplicates = self.duplicates.iter().filter(|d| **d).count();
        Body202 { accepted: self.judged.len() - duplicates, duplicates, results }.serialize(serializer)
    }
}
