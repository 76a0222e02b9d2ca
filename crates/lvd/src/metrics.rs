//! The deployment's figures for `GET /metrics`.
//!
//! Components are stateless and any number of runtime instances may serve
//! the app, so no process holds the figures: they live in Redis, which every
//! instance already shares, and `GET /metrics` reads them back from there
//! (and from PostgreSQL) whichever instance answers it.
//!
//! - **Requests and latency**: after a component has handed its reply to
//!   the host, it runs [`record`] — one script, one round trip, off the
//!   client's clock — which counts the request by method, route pattern and
//!   status and adds its latency to the route's histogram.
//! - **Cache hits and misses**: each request tallies what its cache reads
//!   found (`crate::cache`), and [`record`] adds them in the same script.
//! - **Events by status**: the ingest script counts them as it stores them
//!   (`crate::logs::ingest`), in the step that already runs.
//! - **Queues**: depth, dead letters, retries waiting and the age of the
//!   oldest unfinished entry (entries are deleted once done, so the first
//!   entry of a stream is the oldest in the backlog), read at scrape time.
//! - **PostgreSQL**: quarantined rows, jobs by kind and status, and the
//!   database's connections by state (`pg_stat_activity`): the pool use of
//!   every instance and worker together.
//!
//! Labels are bounded: a route is its pattern (`/api/apps/{app}`), never a
//! path; an unknown path is `unmatched`; a method outside the standard ones
//! is `other`. Counters only grow, so Prometheus's `rate()` reads them as
//! it would any process's — and unlike one process's, they survive the
//! restart of any instance.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::BTreeMap;

use crate::db::{Db, DbError};
use crate::keys;
use crate::kv::{Arg, Redis, RedisError, Reply, Script};

/// Upper bounds (seconds) of the request latency histogram's buckets; one
/// more, `+Inf`, counts the rest.
pub const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The methods a `method` label may hold; any other is `other`.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// What one request adds to the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub method: &'a str,
    /// The route pattern that matched, or `unmatched`.
    pub route: &'a str,
    /// The reply's status (0 while a script that counts it decides it).
    pub status: u16,
    pub seconds: f64,
    /// Each cache read the request made: the cache's name and whether it hit.
    pub cache: std::borrow::Cow<'a, [(String, bool)]>,
}

/// Separates the parts of a hash field (method, route, status or bucket):
/// none of them can hold it.
const SEP: &str = "\t";

/// The Lua function every script that counts a request shares:
/// `count_request(at, status)` reads the request's figures from `ARGV[at]`
/// on — series (method and route), bucket index, microseconds, the number
/// of cache reads, then each read (`cache<TAB>hit|miss`) — and adds them,
/// with `status`, to the hashes `KEYS[k]`, `KEYS[k+1]`, `KEYS[k+2]` (requests,
/// latency, cache) where `k` is `ARGV[at - 1]`. See [`script_args`].
#[macro_export]
macro_rules! count_request {
    () => {
        r#"
local function count_request(at, status)
  local k = tonumber(ARGV[at - 1])
  local series = ARGV[at]
  redis.call('HINCRBY', KEYS[k], series .. '\t' .. status, 1)
  redis.call('HINCRBY', KEYS[k + 1], series .. '\t' .. ARGV[at + 1], 1)
  redis.call('HINCRBY', KEYS[k + 1], series .. '\tus', ARGV[at + 2])
  for j = at + 4, at + 3 + tonumber(ARGV[at + 3]) do redis.call('HINCRBY', KEYS[k + 2], ARGV[j], 1) end
end
"#
    };
}

/// Counts one request whose status is known: `ARGV[1]` is the status, then
/// the figures from `ARGV[3]` (`ARGV[2]` says where the keys are).
static RECORD_SCRIPT: Script = Script::new(concat!(crate::count_request!(), "count_request(3, ARGV[1])\nreturn 1"));

/// The three hashes a script that counts a request writes, in the order
/// [`count_request!`] takes them.
pub const KEYS: [&str; 3] = [keys::metrics::REQUESTS, keys::metrics::LATENCY, keys::metrics::CACHE];

/// A request's figures as [`count_request!`] reads them, with `first_key`
/// the index (1-based) of the first of [`KEYS`] among the script's keys.
pub fn script_args(sample: &Sample<'_>, first_key: i64) -> Vec<Arg> {
    let method = if METHODS.contains(&sample.method) { sample.method } else { "other" };
    let bucket = BUCKETS.iter().position(|b| sample.seconds <= *b).unwrap_or(BUCKETS.len());
    let mut args: Vec<Arg> = vec![
        Arg::Int(first_key),
        [method, sample.route].join(SEP).into(),
        Arg::Int(bucket as i64),
        Arg::Int((sample.seconds * 1e6).round() as i64),
        Arg::Int(sample.cache.len() as i64),
    ];
    args.extend(sample.cache.iter().map(|(cache, hit)| Arg::from([cache.as_str(), if *hit { "hit" } else { "miss" }].join(SEP))));
    args
}

/// Adds one request to the deployment's figures.
pub async fn record(redis: &impl Redis, sample: &Sample<'_>) -> Result<(), RedisError> {
    let mut args: Vec<Arg> = vec![Arg::Int(3)];
    args.extend(KEYS.map(Arg::from));
    args.push(Arg::from(sample.status.to_string()));
    args.extend(script_args(sample, 1));
    redis.eval(&RECORD_SCRIPT, args).await.map(drop)
}

/// A request whose figures a script it already runs can count, so counting
/// costs it no round trip of its own: what a request-serving Redis handle
/// offers (`Redis::pending`). The script that counts it calls
/// [`Pending::counted`] once it has run, and the request is not counted again.
pub trait Pending {
    /// The figures so far: method, route, the time since the request
    /// arrived, its cache reads.
    fn sample(&self) -> Sample<'_>;
    fn counted(&self);
}

/// Every hash of counters, then each queue's depth, dead letters, delayed
/// retries and first entry id (`0` when empty), as one flat reply.
static READ_SCRIPT: Script = Script::new(r#"
local out = {}
for i = 1, 4 do
  local h = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = #h
  for _, v in ipairs(h) do out[#out + 1] = v end
end
for i = 5, #KEYS, 3 do
  out[#out + 1] = redis.call('XLEN', KEYS[i])
  out[#out + 1] = redis.call('XLEN', KEYS[i + 1])
  out[#out + 1] = redis.call('ZCARD', KEYS[i + 2])
  local first = redis.call('XRANGE', KEYS[i], '-', '+', 'COUNT', 1)
  out[#out + 1] = first[1] and first[1][1] or '0'
end
return out
"#);

/// One request series: method and route.
type Series = (String, String);

/// A route's latency histogram: count per bucket (not cumulative; the last
/// is `+Inf`) and the sum in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

/// One queue's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Queue {
    pub depth: u64,
    pub dead_letters: u64,
    pub delayed: u64,
    /// Age of the oldest unfinished entry, seconds; 0 when the queue is empty.
    pub oldest_secs: f64,
}

/// Everything `GET /metrics` shows. Parts that could not be read stay
/// empty and `up` says which.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub requests: BTreeMap<(String, String, String), u64>,
    pub latency: BTreeMap<Series, Latency>,
    pub cache: BTreeMap<(String, String), u64>,
    pub events: BTreeMap<String, u64>,
    pub queues: BTreeMap<String, Queue>,
    pub quarantined_rows: Option<u64>,
    pub jobs: BTreeMap<(String, String), u64>,
    pub pg_connections: BTreeMap<String, u64>,
    /// Whether Redis and PostgreSQL answered the scrape.
    pub redis_up: bool,
    pub postgres_up: bool,
}

/// Reads the Redis side of the figures into `snap`.
pub async fn read_redis(redis: &impl Redis, snap: &mut Snapshot, now_ms: i64) -> Result<(), RedisError> {
    let mut args: Vec<Arg> = vec![Arg::Int(4 + 3 * keys::QUEUES.len() as i64)];
    for key in [keys::metrics::REQUESTS, keys::metrics::LATENCY, keys::metrics::CACHE, keys::metrics::EVENTS] {
        args.push(key.into());
    }
    for (_, key) in keys::QUEUES {
        args.push((*key).into());
        args.push(keys::dead_letter(key).into());
        args.push(keys::delayed(key).into());
    }
    let reply = redis.eval(&READ_SCRIPT, args).await?;
    let mut at = reply.iter();
    let mut hash = || -> Result<Vec<(String, u64)>, RedisError> {
        let n = at.next().and_then(Reply::int).ok_or_else(|| short())?;
        let mut pairs = Vec::new();
        for _ in 0..n / 2 {
            let field = at.next().and_then(Reply::text).ok_or_else(short)?;
            let value = at.next().and_then(Reply::int).ok_or_else(short)?;
            pairs.push((field, value.max(0) as u64));
        }
        Ok(pairs)
    };
    let (requests, latency, cache, events) = (hash()?, hash()?, hash()?, hash()?);
    for (field, n) in requests {
        if let [method, route, status] = field.split(SEP).collect::<Vec<_>>()[..] {
            snap.requests.insert((method.to_owned(), route.to_owned(), status.to_owned()), n);
        }
    }
    for (field, n) in latency {
        let [method, route, part] = field.split(SEP).collect::<Vec<_>>()[..] else { continue };
        let entry = snap.latency.entry((method.to_owned(), route.to_owned())).or_default();
        entry.buckets.resize(BUCKETS.len() + 1, 0);
        match part {
            "us" => entry.sum_us = n,
            i => {
                if let Some(slot) = i.parse::<usize>().ok().and_then(|i| entry.buckets.get_mut(i)) {
                    *slot = n;
                }
            }
        }
    }
    for (field, n) in cache {
        if let Some((cache, outcome)) = field.split_once(SEP) {
            snap.cache.insert((cache.to_owned(), outcome.to_owned()), n);
        }
    }
    snap.events = events.into_iter().collect();
    for (name, _) in keys::QUEUES {
        let mut int = || at.next().and_then(Reply::int).map(|n| n.max(0) as u64).ok_or_else(short);
        let (depth, dead_letters, delayed) = (int()?, int()?, int()?);
        let first = at.next().and_then(Reply::text).ok_or_else(short)?;
        let first_ms = first.split('-').next().and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(0);
        let oldest_secs = if depth == 0 || first_ms == 0 { 0.0 } else { (now_ms - first_ms).max(0) as f64 / 1000.0 };
        snap.queues.insert((*name).to_owned(), Queue { depth, dead_letters, delayed, oldest_secs });
    }
    snap.redis_up = true;
    Ok(())
}

/// Reads the PostgreSQL side of the figures into `snap`.
pub async fn read_postgres(db: &impl Db, snap: &mut Snapshot) -> Result<(), DbError> {
    snap.quarantined_rows = Some(crate::logs::quarantine::count(db).await?);
    for row in db.query("SELECT kind, status, count(*) FROM jobs GROUP BY kind, status", &[]).await? {
        snap.jobs.insert((row.text(0)?, row.text(1)?), row.i64(2)?.max(0) as u64);
    }
    let connections = "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity \
                       WHERE datname = current_database() GROUP BY 1";
    for row in db.query(connections, &[]).await? {
        snap.pg_connections.insert(row.text(0)?, row.i64(1)?.max(0) as u64);
    }
    snap.postgres_up = true;
    Ok(())
}

impl Snapshot {
    /// Takes what `other` read (each side fills its own fields).
    pub fn merge(&mut self, other: Snapshot) {
        self.requests.extend(other.requests);
        self.latency.extend(other.latency);
        self.cache.extend(other.cache);
        self.events.extend(other.events);
        self.queues.extend(other.queues);
        self.quarantined_rows = self.quarantined_rows.or(other.quarantined_rows);
        self.jobs.extend(other.jobs);
        self.pg_connections.extend(other.pg_connections);
        self.redis_up |= other.redis_up;
        self.postgres_up |= other.postgres_up;
    }
}

/// The shortest metrics token that opens anything: a placeholder such as a
/// template's `CHANGE-ME` never does.
pub const MIN_TOKEN_LEN: usize = 16;

/// Whether `given` (a Bearer token) is the configured metrics token. A
/// configured token shorter than [`MIN_TOKEN_LEN`] (unset included) allows
/// no one; the comparison takes the same time wherever the two differ.
pub fn token_allows(given: Option<&str>, configured: &str) -> bool {
    crate::secret::matches(given, configured, MIN_TOKEN_LEN)
}

fn short() -> RedisError {
    RedisError("short metrics reply".into())
}


/// The exposition formats `GET /metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// OpenMetrics 1.0, for a client whose `Accept` names it (Prometheus
    /// asks for it first).
    OpenMetrics,
    /// Prometheus's text format 0.0.4, for everyone else (`curl`, older
    /// scrapers).
    Text,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) { Format::OpenMetrics } else { Format::Text }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The snapshot in `format`, written by `prometheus-client`.
pub fn render(snap: &Snapshot, format: Format) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(snap.clone()));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    match format {
        Format::OpenMetrics => out,
        Format::Text => to_text_format(&out),
    }
}

/// OpenMetrics text as Prometheus's 0.0.4 text: the two differ, for what
/// this module writes, only in that OpenMetrics names a counter family
/// without its samples' `_total` suffix, and ends with `# EOF`. Samples,
/// labels, escaping and numbers are the same.
fn to_text_format(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

type Labels = Vec<(&'static str, String)>;

/// One family: its name, help, type and each labelled value.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(n: u64) -> ConstCounter<u64> {
    ConstCounter::new(n)
}

fn gauge(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(n.min(i64::MAX as u64) as i64)
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let up = [("redis", self.redis_up), ("postgres", self.postgres_up)];
        family(&mut enc, "lvd_dependency_up", "Whether the scrape could read the dependency (1) or not (0)", Gauge, up.map(|(d, ok)| (vec![("dependency", d.to_owned())], gauge(ok as u64))))?;
        let requests = self.requests.iter().map(|((m, r, s), n)| (vec![("method", m.clone()), ("route", r.clone()), ("status", s.clone())], counter(*n)));
        family(&mut enc, "lvd_http_requests", "Requests answered, by method, route pattern and status", Counter, requests)?;
        let limited = self.requests.iter().filter(|((_, _, s), _)| s == "429");
        let limited = limited.map(|((m, r, _), n)| (vec![("method", m.clone()), ("route", r.clone())], counter(*n)));
        family(&mut enc, "lvd_rate_limited_replies", "Requests refused with 429 by a rate limit, by method and route", Counter, limited)?;
        let mut latency = enc.encode_descriptor("lvd_http_request_duration_seconds", "Time from a request's arrival in its component to its reply, by method and route", None, MetricType::Histogram)?;
        for ((method, route), h) in &self.latency {
            let labels: Labels = vec![("method", method.clone()), ("route", route.clone())];
            // Per-bucket counts: the encoder makes them cumulative, and
            // writes the bound `f64::MAX` as `+Inf` (prometheus-client's
            // own histograms end with it).
            let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().chain([f64::MAX]).zip(h.buckets.iter().copied()).collect();
            let count = h.buckets.iter().sum();
            latency.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum_us as f64 / 1e6, count, &buckets, None)?;
        }
        let cache = self.cache.iter().map(|((c, o), n)| (vec![("cache", c.clone()), ("outcome", o.clone())], counter(*n)));
        family(&mut enc, "lvd_cache_lookups", "Cache reads, by cache and outcome (hit or miss)", Counter, cache)?;
        let events = self.events.iter().map(|(s, n)| (vec![("status", s.clone())], counter(*n)));
        family(&mut enc, "lvd_events_accepted", "Events accepted for storage, by verdict; duplicates (a message_id seen before) are not stored", Counter, events)?;
        let q = |f: fn(&Queue) -> u64| self.queues.iter().map(move |(name, q)| (vec![("queue", name.clone())], gauge(f(q)))).collect::<Vec<_>>();
        family(&mut enc, "lvd_queue_depth", "Entries waiting or in progress, by queue", Gauge, q(|q| q.depth))?;
        family(&mut enc, "lvd_queue_dead_letters", "Entries set aside as never able to succeed, by queue", Gauge, q(|q| q.dead_letters))?;
        family(&mut enc, "lvd_queue_delayed", "Entries waiting out a retry backoff, by queue", Gauge, q(|q| q.delayed))?;
        let age = self.queues.iter().map(|(name, q)| (vec![("queue", name.clone())], ConstGauge::new(q.oldest_secs)));
        family(&mut enc, "lvd_queue_oldest_seconds", "Age of the oldest unfinished entry, by queue (0 when empty)", Gauge, age)?;
        if let Some(n) = self.quarantined_rows {
            family(&mut enc, "lvd_quarantined_rows", "Accepted rows PostgreSQL refused, kept in quarantined_rows", Gauge, [(Labels::new(), gauge(n))])?;
        }
        let jobs = self.jobs.iter().map(|((k, s), n)| (vec![("kind", k.clone()), ("status", s.clone())], gauge(*n)));
        family(&mut enc, "lvd_jobs", "Reports and exports, by kind and status (queued, running, done, failed)", Gauge, jobs)?;
        let conns = self.pg_connections.iter().map(|(s, n)| (vec![("state", s.clone())], gauge(*n)));
        family(&mut enc, "lvd_postgres_connections", "Connections to the app's database from every instance and worker, by state", Gauge, conns)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_holds_every_family_with_its_labels_and_a_cumulative_histogram() {
        let mut snap = Snapshot { redis_up: true, ..Snapshot::default() };
        snap.requests.insert(("POST".into(), "/api/logs".into(), "202".into()), 3);
        snap.requests.insert(("POST".into(), "/api/logs".into(), "429".into()), 1);
        let mut buckets = vec![0; BUCKETS.len() + 1];
        (buckets[0], buckets[3], buckets[13]) = (2, 1, 1);
        snap.latency.insert(("POST".into(), "/api/logs".into()), Latency { buckets, sum_us: 12_500_000 });
        snap.cache.insert(("app".into(), "hit".into()), 5);
        snap.events.insert("invalid".into(), 7);
        snap.queues.insert("ingest".into(), Queue { depth: 2, dead_letters: 0, delayed: 0, oldest_secs: 1.5 });
        let text = render(&snap, Format::OpenMetrics);
        for line in [
            r#"lvd_http_requests_total{method="POST",route="/api/logs",status="202"} 3"#,
            r#"lvd_rate_limited_replies_total{method="POST",route="/api/logs"} 1"#,
            r#"lvd_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/api/logs"} 2"#,
            r#"lvd_http_request_duration_seconds_bucket{le="0.01",method="POST",route="/api/logs"} 3"#,
            r#"lvd_http_request_duration_seconds_bucket{le="10.0",method="POST",route="/api/logs"} 3"#,
            r#"lvd_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/api/logs"} 4"#,
            r#"lvd_http_request_duration_seconds_sum{method="POST",route="/api/logs"} 12.5"#,
            r#"lvd_http_request_duration_seconds_count{method="POST",route="/api/logs"} 4"#,
            r#"lvd_cache_lookups_total{cache="app",outcome="hit"} 5"#,
            r#"lvd_events_accepted_total{status="invalid"} 7"#,
            r#"lvd_queue_oldest_seconds{queue="ingest"} 1.5"#,
            r#"lvd_dependency_up{dependency="postgres"} 0"#,
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_text_format_names_counters_with_their_suffix_and_has_no_eof() {
        let mut snap = Snapshot::default();
        snap.events.insert("valid".into(), 2);
        let text = render(&snap, Format::Text);
        assert!(text.contains("# TYPE lvd_events_accepted_total counter\n"), "{text}");
        assert!(text.contains("# HELP lvd_events_accepted_total Events accepted"), "{text}");
        assert!(text.contains("lvd_events_accepted_total{status=\"valid\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE lvd_queue_depth gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert_eq!(Format::from_accept(Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
    }

    #[test]
    fn only_the_configured_token_opens_metrics_and_a_short_one_opens_nothing() {
        assert!(token_allows(Some("s3cret-token-for-metrics"), "s3cret-token-for-metrics"));
        assert!(!token_allows(Some("s3cret-token-for-metricz"), "s3cret-token-for-metrics"));
        assert!(!token_allows(None, "s3cret-token-for-metrics"));
        assert!(!token_allows(Some(""), ""));
        assert!(!token_allows(Some("CHANGE-ME"), "CHANGE-ME"), "a placeholder opens nothing");
    }
}
