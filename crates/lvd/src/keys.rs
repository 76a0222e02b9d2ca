//! Every Redis key and stream name the product uses, in one place, and the
//! Lua fragment every windowed counter shares. Nothing else in the tree
//! spells a key: components, the worker and the domain code all ask here,
//! so two writers of one key cannot drift apart.
//!
//! Two stores live in Redis. Outbound Redis (the `redis_url` variable) holds
//! queues, counters, limits and the deny-list, under `lvd:`. Spin's
//! key-value store (`default`, which `runtime-config.toml` backs with Redis,
//! see `crate::cache`) holds the read-through cache, under the names the
//! [`cache`] functions give.
//!
//! Emails never appear in keys: they are keyed by [`email_digest`].

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The ingest stream: each entry is one request's accepted events as rows of
/// `log_entries` (see `crate::logs::rows`), which the worker writes to
/// PostgreSQL.
pub const INGEST_STREAM: &str = "lvd:ingest";
/// The queue of emails to send.
pub const EMAIL_QUEUE: &str = "lvd:queue:email";
/// The queue of background jobs (reports, exports): each entry carries one
/// job's id; the job itself is its `jobs` row (`crate::jobs`).
pub const JOB_QUEUE: &str = "lvd:queue:jobs";

/// Every stream the worker drains, with the name `/health/ready` shows.
pub const QUEUES: &[(&str, &str)] = &[("email", EMAIL_QUEUE), ("ingest", INGEST_STREAM), ("jobs", JOB_QUEUE)];

/// The consumer group every worker joins, on every stream.
pub const GROUP: &str = "workers";
/// The stream field that holds an entry's payload (a job's JSON, or an
/// ingest request's rows).
pub const FIELD: &str = "job";
/// The stream field that names the request an entry came from, so the
/// worker's log lines about it carry the request's id.
pub const REQUEST_ID_FIELD: &str = "request_id";

/// `XADD` arguments after the stream and its options: the payload, then the
/// request's id when there is one.
pub fn entry_fields(payload: String, request_id: Option<&str>) -> Vec<crate::kv::Arg> {
    let mut args = vec!["*".into(), FIELD.into(), payload.into()];
    if let Some(id) = request_id {
        args.extend([REQUEST_ID_FIELD.into(), id.into()]);
    }
    args
}

/// Dead-letter stream of a queue: where entries go that can never succeed.
pub fn dead_letter(queue: &str) -> String {
    format!("{queue}:dead")
}

/// Sorted set of a queue's jobs waiting out a retry backoff, scored by due
/// time (ms).
pub fn delayed(queue: &str) -> String {
    format!("{queue}:delayed")
}

/// The fixed-window counter of limit `name` for one subject (an IP, a user,
/// an app).
pub fn rate_limit(name: &str, subject: &str) -> String {
    format!("lvd:rl:{name}:{subject}")
}

/// An access token's id on the deny-list (logout).
pub fn denied(jti: &str) -> String {
    format!("lvd:denied:{jti}")
}

/// The key of an email address: a SHA-256 digest (16 bytes, hex), so no
/// address is readable from Redis.
pub fn email_digest(email: &str) -> String {
    Sha256::digest(email.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Failed sign-ins of one email (a sorted set of times).
pub fn login_failures(email: &str) -> String {
    format!("lvd:login:fail:{}", email_digest(email))
}

/// The sign-in lock of one email.
pub fn login_lock(email: &str) -> String {
    format!("lvd:login:lock:{}", email_digest(email))
}

/// Set while a code of `purpose` was sent to `email` less than a minute ago.
pub fn code_sent(purpose: &str, email: &str) -> String {
    format!("lvd:otp:sent:{purpose}:{}", email_digest(email))
}

/// Tries at the current code of `purpose` for `email`.
pub fn code_tries(purpose: &str, email: &str) -> String {
    format!("lvd:otp:tries:{purpose}:{}", email_digest(email))
}

/// Wrong codes of `purpose` for `email` over the long window (sorted set).
pub fn code_failures(purpose: &str, email: &str) -> String {
    format!("lvd:otp:fail:{purpose}:{}", email_digest(email))
}

/// Newest invalid events of an app, for the live tail.
pub fn invalid_tail(app: Uuid) -> String {
    format!("lvd:invalid:{app}")
}

/// Counters of one app in one minute (`m`) or hour (`h`) bucket.
pub fn stats_bucket(app: Uuid, unit: char, index: i64) -> String {
    format!("lvd:stats:{app}:{unit}:{index}")
}

/// An app's live figures over one window (`15m`, `1h`, ...) with their
/// owner, cached for a second (`crate::logs::stats::cache`): outbound
/// Redis, so the `/api` gate reads it in its own round trip.
pub fn stats_cache(app: Uuid, window: &str) -> String {
    format!("lvd:cache:stats:{app}:{window}")
}

/// When each event of an app was last seen (ms since the epoch).
pub fn stats_seen(app: Uuid) -> String {
    format!("lvd:stats:{app}:seen")
}

/// The prefix of an app's `message_id` dedup keys (the id follows).
pub fn dedup_prefix(app: Uuid) -> String {
    format!("lvd:dedup:{app}:")
}

/// The deployment's counters behind `GET /metrics` (`crate::metrics` says
/// what each field holds).
pub mod metrics {
    /// Requests, by method, route and status.
    pub const REQUESTS: &str = "lvd:metrics:requests";
    /// Latency histogram buckets and sums, by method and route.
    pub const LATENCY: &str = "lvd:metrics:latency";
    /// Cache reads, by cache and outcome.
    pub const CACHE: &str = "lvd:metrics:cache";
    /// Events accepted, by verdict (and duplicates).
    pub const EVENTS: &str = "lvd:metrics:events";
}

/// Keys of Spin's key-value store: the read-through cache (`crate::cache`
/// says what each holds and for how long).
pub mod cache {
    use uuid::Uuid;

    /// The app an ingest key opens and its rules' current versions, by the
    /// key's SHA-256.
    pub fn app(key_hash: &[u8]) -> String {
        let hex: String = key_hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("app:{hex}")
    }

    /// One version's schema.
    pub fn rule(app: Uuid, version: i64, event: &str) -> String {
        format!("rule:{app}:{version}:{event}")
    }
}

/// The fixed-window counter every limit shares, as a Lua function for the
/// scripts that use it (`concat!(window_hit!(), "...")`): `hit(key,
/// window)` counts one, starts the window on the first hit, and returns the
/// count and the seconds left.
#[macro_export]
macro_rules! window_hit {
    () => {
        r#"
local function hit(key, window)
  local c = redis.call('INCR', key)
  local ttl = redis.call('TTL', key)
  if ttl < 0 then redis.call('EXPIRE', key, window); ttl = tonumber(window) end
  return c, ttl
end
"#
    };
}
