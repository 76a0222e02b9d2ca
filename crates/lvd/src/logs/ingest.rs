//! Judging events and handing them to storage in one atomic step.
//!
//! The hot path never waits on a PostgreSQL commit. One Lua script, run by
//! Redis as a unit, does everything a request needs: the per-key rate limit,
//! a backlog check, the `message_id` dedup, the live per-minute and per-hour
//! counters, the per-app tail of invalid events, and one entry on the ingest
//! stream holding the request's rows as lines of PostgreSQL `COPY` text. The
//! worker drains that stream into `log_entries` with `COPY`, many requests per
//! commit, and acknowledges entries only after the commit, so a 202 means the
//! events sit in Redis until they are in PostgreSQL. A crash of a component
//! between the script and its reply loses nothing either: the script is the
//! commit point, all or nothing.
//!
//! What it keeps in Redis is bounded whatever the input: dedup keys live
//! [`DEDUP_SECS`] at most, each counter bucket and the last-seen hash hold at
//! most [`MAX_BUCKET_FIELDS`] fields (the rest fold into "other"), the tail
//! of invalid events is trimmed to about [`INVALID_TAIL_LEN`], and the ingest
//! stream is bounded by the backlog check (`max_backlog` entries, then 503)
//! rather than by `MAXLEN`, which would drop accepted events.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Incoming, rfc3339, rows};
use crate::keys;
use crate::kv::{Arg, Redis, RedisError, Reply, Script};
use crate::limits::Decision;
use crate::rules::{Schema, Violation};

/// The name of the per-ingest-key request limit (`crate::limits`): the
/// ingest script counts it, and so does a lone malformed event.
pub const KEY_LIMIT: &str = "ingest_key";
/// How long buckets are kept: minutes serve the 15m and 1h windows, hours
/// the 24h and 7d ones; both with room to spare.
pub const MINUTE_TTL_SECS: i64 = 3 * 3600;
pub const HOUR_TTL_SECS: i64 = 8 * 86_400;
/// Fields one bucket (and the app's last-seen hash) may hold: counters of
/// event names and error pointers not yet in a full bucket are folded into
/// its "other" fields (see [`Judged::counter_fields`]), so Redis memory and
/// the stats script's work do not grow with the variety of the input. A
/// bucket holds at most this plus the four "other" fields.
pub const MAX_BUCKET_FIELDS: i64 = 400;
/// Pointers longer than this are counted under "other": a pointer carries
/// property names from the event, of any length.
pub const MAX_COUNTED_POINTER_CHARS: usize = 256;
/// The "event" of the "other" fields: no real event name is empty.
pub const OTHER: &str = "";
/// How long a `message_id` is remembered for dedup: 7 days (as Amplitude
/// does), or the app's retention when that is shorter.
pub const DEDUP_SECS: i64 = 7 * 86_400;
/// Entries kept in an app's tail of invalid events (`MAXLEN ~`: Redis trims
/// whole nodes, so up to about twice this may stay).
pub const INVALID_TAIL_LEN: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Valid,
    Invalid,
    Unplanned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Invalid => "invalid",
            Status::Unplanned => "unplanned",
        }
    }
}

/// An event with its verdict, ready to store.
#[derive(Debug, Clone)]
pub struct Judged {
    pub id: Uuid,
    pub event: Incoming,
    pub status: Status,
    pub errors: Vec<Violation>,
    pub rule_version: Option<i64>,
    pub received_at: DateTime<Utc>,
}

/// Checks an event against its rule (`None`: the app has no rule for it).
pub fn judge(event: Incoming, rule: Option<(i64, &Schema)>, received_at: DateTime<Utc>) -> Judged {
    let (status, errors, rule_version) = match rule {
        None => (Status::Unplanned, Vec::new(), None),
        Some((version, schema)) => {
            let errors = schema.check(&event.properties);
            let status = if errors.is_empty() { Status::Valid } else { Status::Invalid };
            (status, errors, Some(version))
        }
    };
    Judged { id: Uuid::now_v7(), event, status, errors, rule_version, received_at }
}

impl Judged {
    /// The event as `GET /api/logs` shows it, as JSON text.
    pub fn view(&self) -> String {
        #[derive(Serialize)]
        struct View<'a> {
            id: Uuid,
            event: &'a str,
            status: Status,
            errors: &'a [Violation],
            properties: &'a Value,
            context: &'a Option<Value>,
            timestamp: Option<String>,
            received_at: String,
            rule_version: Option<i64>,
            message_id: &'a Option<String>,
        }
        serde_json::to_string(&View {
            id: self.id,
            event: self.event.event.as_str(),
            status: self.status,
            errors: &self.errors,
            properties: &self.event.properties,
            context: &self.event.context,
            timestamp: self.event.timestamp.map(rfc3339),
            received_at: rfc3339(self.received_at),
            rule_version: self.rule_version,
            message_id: &self.event.message_id,
        })
        .expect("an event serializes")
    }

    /// The live counters this event adds to, each with the "other" field it
    /// folds into when its bucket is full: one for its status, one per
    /// error. Fields are JSON arrays, so no event name or pointer can forge
    /// another's field; "other" fields name the event [`OTHER`], which no
    /// event has.
    pub fn counter_fields(&self) -> Vec<(String, String)> {
        let name = self.event.event.as_str();
        let status = self.status.as_str();
        // Tuples serialize as JSON arrays, without building a `Value` first.
        let mut fields = vec![(json_text(&("c", status, name)), json_text(&("c", status, OTHER)))];
        let other_error = json_text(&("e", OTHER, OTHER, OTHER));
        fields.extend(self.errors.iter().map(|e| {
            let field = if e.pointer.chars().count() > MAX_COUNTED_POINTER_CHARS {
                other_error.clone()
            } else {
                json_text(&("e", name, e.pointer.as_str(), e.keyword.as_str()))
            };
            (field, other_error.clone())
        }));
        fields
    }
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("strings serialize")
}

/// What storage needs to know about the app beyond its events.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Requests per minute per ingest key.
    pub per_key_per_minute: u64,
    /// How long a `message_id` is remembered: [`DEDUP_SECS`], or the app's
    /// retention when shorter (see [`Settings::dedup_secs_for`]).
    pub dedup_secs: i64,
    /// Entries the ingest stream may hold before ingest answers 503: the
    /// worker is down or far behind, and Redis memory is finite.
    pub max_backlog: u64,
}

impl Settings {
    /// The dedup window of an app that keeps its events `retention_days`.
    pub fn dedup_secs_for(retention_days: i64) -> i64 {
        (retention_days * 86_400).min(DEDUP_SECS)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored; `duplicates[i]` tells whether event `i` was a duplicate.
    Stored { decision: Decision, duplicates: Vec<bool> },
    RateLimited(Decision),
    /// The backlog is full; nothing was stored.
    Backlogged(Decision),
}

static SCRIPT: Script = Script::new(concat!(
    crate::window_hit!(),
    crate::count_request!(),
    r#"
-- The request itself is counted here when the caller passed its figures
-- (ARGV[15] names the first of its keys), with the status the reply will have.
local function count(status) if ARGV[15] ~= '' then count_request(16, status) end end
local c, ttl = hit(KEYS[6], ARGV[2])
if c > tonumber(ARGV[1]) then count('429') return {0, c, ttl} end
local n = tonumber(ARGV[9])
if n > 0 and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[8]) then count('503') return {-1, c, ttl} end
local out = {1, c, ttl}
local rows, incr, fold, seen = {}, {}, {}, {}
local cap = tonumber(ARGV[11])
local verdicts = {}
local i = 20 + tonumber(ARGV[19])
for _ = 1, n do
  local msgid, name, invalid, row, status, nf = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], tonumber(ARGV[i+5])
  local dup = 0
  if msgid ~= '' and not redis.call('SET', ARGV[3] .. msgid, '1', 'NX', 'EX', ARGV[4]) then dup = 1 end
  if dup == 0 then
    rows[#rows + 1] = row
    for f = 1, nf do
      local k = ARGV[i + 4 + 2 * f]
      incr[k] = (incr[k] or 0) + 1
      fold[k] = ARGV[i + 5 + 2 * f]
    end
    seen[name] = true
    if invalid ~= '' then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[12], '*', 'e', invalid) end
  else
    status = 'duplicate'
  end
  verdicts[status] = (verdicts[status] or 0) + 1
  out[#out + 1] = dup
  i = i + 6 + 2 * nf
end
for status, v in pairs(verdicts) do redis.call('HINCRBY', KEYS[7], status, v) end
-- A field a full hash does not hold yet goes to its "other" field instead.
local function bump(key, k, v)
  if redis.call('HEXISTS', key, k) == 0 and redis.call('HLEN', key) >= cap then k = fold[k] end
  redis.call('HINCRBY', key, k, v)
end
if #rows > 0 then
  if ARGV[14] ~= '' then
    redis.call('XADD', KEYS[1], '*', ARGV[10], table.concat(rows), 'request_id', ARGV[14])
  else
    redis.call('XADD', KEYS[1], '*', ARGV[10], table.concat(rows))
  end
  for name in pairs(seen) do
    if redis.call('HEXISTS', KEYS[5], name) == 0 and redis.call('HLEN', KEYS[5]) >= cap then name = ARGV[13] end
    redis.call('HSET', KEYS[5], name, ARGV[7])
  end
  for k, v in pairs(incr) do
    bump(KEYS[3], k, v)
    bump(KEYS[4], k, v)
  end
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('EXPIRE', KEYS[5], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
count('202')
return out
"#
));

/// Rate-limits the request and, when it may pass, stores `events` (possibly
/// none: a batch of rejected events still counts against the limit).
pub async fn store(redis: &impl Redis, app: Uuid, events: &[Judged], received_at: DateTime<Utc>, settings: Settings) -> Result<Outcome, RedisError> {
    let ms = received_at.timestamp_millis();
    let mut args: Vec<Arg> = vec![
        Arg::Int(10),
        keys::INGEST_STREAM.into(),
        keys::invalid_tail(app).into(),
        keys::stats_bucket(app, 'm', ms.div_euclid(60_000)).into(),
        keys::stats_bucket(app, 'h', ms.div_euclid(3_600_000)).into(),
        keys::stats_seen(app).into(),
        keys::rate_limit(KEY_LIMIT, &app.to_string()).into(),
        keys::metrics::EVENTS.into(),
        crate::metrics::KEYS[0].into(),
        crate::metrics::KEYS[1].into(),
        crate::metrics::KEYS[2].into(),
        settings.per_key_per_minute.into(),
        Arg::Int(60),
        keys::dedup_prefix(app).into(),
        Arg::Int(settings.dedup_secs.max(1)),
        Arg::Int(MINUTE_TTL_SECS),
        Arg::Int(HOUR_TTL_SECS),
        Arg::Int(ms),
        settings.max_backlog.into(),
        Arg::Int(events.len() as i64),
        keys::FIELD.into(),
        Arg::Int(MAX_BUCKET_FIELDS),
        Arg::Int(INVALID_TAIL_LEN),
        OTHER.into(),
        redis.request_id().unwrap_or_default().into(),
    ];
    let pending = redis.pending();
    match pending {
        Some(p) => args.extend(crate::metrics::script_args(&p.sample(), 8)),
        None => args.extend([Arg::from(""), "".into(), Arg::Int(0), Arg::Int(0), Arg::Int(0)]),
    }
    for e in events {
        let fields = e.counter_fields();
        args.push(e.event.message_id.clone().unwrap_or_default().into());
        args.push(e.event.event.as_str().into());
        args.push(if e.status == Status::Invalid { e.view() } else { String::new() }.into());
        args.push(rows::line(e, app).into());
        args.push(e.status.as_str().into());
        args.push(Arg::Int(fields.len() as i64));
        for (field, fold) in fields {
            args.push(field.into());
            args.push(fold.into());
        }
    }
    let reply = redis.eval(&SCRIPT, args).await?;
    if let Some(p) = pending {
        p.counted();
    }
    let int = |i: usize| reply.get(i).and_then(Reply::int);
    let (code, count, ttl) = (int(0), int(1).unwrap_or(i64::MAX) as u64, int(2).unwrap_or(60).max(1) as u64);
    let limit = settings.per_key_per_minute;
    let decision = Decision { allowed: code != Some(0), limit, remaining: limit.saturating_sub(count), reset_secs: ttl };
    Ok(match code {
        Some(1) => Outcome::Stored { decision, duplicates: (0..events.len()).map(|i| int(3 + i) == Some(1)).collect() },
        Some(0) => Outcome::RateLimited(decision),
        Some(-1) => Outcome::Backlogged(decision),
        _ => return Err(RedisError(format!("unexpected ingest reply {reply:?}").into())),
    })
}

/// An unplanned event named `sign\up` with a non-ASCII `message_id`,
/// for unit tests of what is built from events.
#[cfg(test)]
pub(crate) fn sample(properties: Value) -> Judged {
    let event = Incoming {
        event: super::EventName::parse("sign\\up".into()).unwrap(),
        properties,
        timestamp: None,
        message_id: Some("m\u{e9}".into()),
        context: None,
    };
    judge(event, None, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn judged(properties: Value) -> Judged {
        sample(properties)
    }

    #[test]
    fn counter_fields_cannot_collide_across_names() {
        let a = judged(json!({})).counter_fields();
        assert_eq!(a, [(r#"["c","unplanned","sign\\up"]"#.to_owned(), r#"["c","unplanned",""]"#.to_owned())]);
    }
}
