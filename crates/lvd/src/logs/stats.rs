//! Live figures of an app, read from the counters ingest keeps in Redis
//! (`keys::stats_bucket`): never a scan of PostgreSQL. One Lua script reads
//! every bucket of the window in one round trip.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

use super::ingest::OTHER;
use super::rfc3339;
use crate::keys;
use crate::kv::{Arg, Redis, RedisError, Reply, Script};

/// How many of the commonest errors the figures list.
pub const TOP_ERRORS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Window {
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
}

impl Window {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "15m" => Some(Self::M15),
            "1h" => Some(Self::H1),
            "24h" => Some(Self::H24),
            "7d" => Some(Self::D7),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::M15 => "15m",
            Self::H1 => "1h",
            Self::H24 => "24h",
            Self::D7 => "7d",
        }
    }

    /// The bucket kind (`m` minutes, `h` hours), its length in seconds, and
    /// how many buckets the window holds (the current one included).
    fn buckets(self) -> (char, i64, i64) {
        match self {
            Self::M15 => ('m', 60, 15),
            Self::H1 => ('m', 60, 60),
            Self::H24 => ('h', 3600, 24),
            Self::D7 => ('h', 3600, 168),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub valid: u64,
    pub invalid: u64,
    pub unplanned: u64,
}

impl Counts {
    pub fn add(&mut self, status: &str, n: u64) {
        match status {
            "valid" => self.valid += n,
            "invalid" => self.invalid += n,
            "unplanned" => self.unplanned += n,
            _ => {}
        }
    }

    pub fn total(&self) -> u64 {
        self.valid + self.invalid + self.unplanned
    }
}

/// One event's figures. `event` is `None` on the "other" row: the events
/// that found their bucket full (`ingest::MAX_BUCKET_FIELDS`), together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventFigures {
    pub event: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    pub last_seen: Option<String>,
}

/// One error's count. All three names are `None` on the "other" row: the
/// errors that found their bucket full, or whose pointer was too long to
/// count on its own (`ingest::MAX_COUNTED_POINTER_CHARS`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFigures {
    pub event: Option<String>,
    pub pointer: Option<String>,
    pub keyword: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The figures `GET /api/apps/{app}/stats` serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub window: Window,
    pub totals: Counts,
    pub by_event: Vec<EventFigures>,
    pub top_errors: Vec<ErrorFigures>,
    pub series: Vec<Bucket>,
}

/// Reads hashes (`KEYS`) in one round trip: each as its length, then its
/// fields and values.
pub(crate) static SCRIPT: Script = Script::new(r#"
local out = {}
for i = 1, #KEYS do
  local h = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = #h / 2
  for j = 1, #h do out[#out + 1] = h[j] end
end
return out
"#);

/// How long figures stay cached: a dashboard polled by many viewers costs
/// one read of the counters per app and window a second, and an event still
/// shows within 2 s of its 202.
pub const CACHE_MS: i64 = 1000;

/// Caches `body`, the figures of `app` over `window`, as its owner's
/// (`<owner id>\n<body>`: the `/api` gate hands the body back only to the
/// owner, `crate::limits::gate`).
pub async fn cache(redis: &impl Redis, app: Uuid, window: Window, owner: Uuid, body: &str) -> Result<(), RedisError> {
    let entry = format!("{owner}\n{body}");
    let args = vec![keys::stats_cache(app, window.as_str()).into(), entry.into(), "PX".into(), Arg::Int(CACHE_MS)];
    redis.execute("SET", args).await.map(drop)
}

/// The cached figures of `app` over `window`, when they are fresh and
/// `owner`'s.
pub async fn cached(redis: &impl Redis, app: Uuid, window: Window, owner: Uuid) -> Result<Option<String>, RedisError> {
    let reply = redis.execute("GET", vec![keys::stats_cache(app, window.as_str()).into()]).await?;
    let Some(Reply::Bytes(entry)) = reply.into_iter().next() else { return Ok(None) };
    Ok(owned_body(&entry, &owner.to_string()))
}

/// The body of a cache entry when it is `owner`'s.
pub fn owned_body(entry: &[u8], owner: &str) -> Option<String> {
    let body = entry.strip_prefix(owner.as_bytes())?.strip_prefix(b"\n")?;
    String::from_utf8(body.to_vec()).ok()
}

/// Reads the window ending at `now` (its last bucket is the current one).
pub async fn read(redis: &impl Redis, app: Uuid, window: Window, now: DateTime<Utc>) -> Result<Stats, RedisError> {
    let (unit, secs, count) = window.buckets();
    let current = now.timestamp().div_euclid(secs);
    let first = current - count + 1;
    let mut args: Vec<Arg> = vec![Arg::Int(count + 1)];
    args.extend((first..=current).map(|i| Arg::from(keys::stats_bucket(app, unit, i))));
    args.push(keys::stats_seen(app).into());
    let mut hashes = parse_hashes(&redis.eval(&SCRIPT, args).await?, count as usize + 1)?;
    let seen = hashes.pop().unwrap_or_default();
    Ok(assemble(window, first, secs, &hashes, &seen))
}

/// The `n` hashes of a [`SCRIPT`] reply, as field and value pairs.
pub(crate) fn parse_hashes(reply: &[Reply], n: usize) -> Result<Vec<Vec<(String, String)>>, RedisError> {
    let mut hashes = Vec::with_capacity(n);
    let mut at = 0;
    for _ in 0..n {
        let len = reply.get(at).and_then(Reply::int).ok_or_else(|| RedisError("short stats reply".into()))? as usize;
        let pairs = (0..len).filter_map(|k| Some((reply.get(at + 1 + 2 * k)?.text()?, reply.get(at + 2 + 2 * k)?.text()?))).collect();
        hashes.push(pairs);
        at += 1 + 2 * len;
    }
    Ok(hashes)
}

/// Folds the buckets' counter fields (see `Judged::counter_fields`) into figures.
fn assemble(window: Window, first: i64, secs: i64, buckets: &[Vec<(String, String)>], seen: &[(String, String)]) -> Stats {
    let mut totals = Counts::default();
    let mut by_event: BTreeMap<String, Counts> = BTreeMap::new();
    let mut errors: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut series = Vec::with_capacity(buckets.len());
    for (i, fields) in buckets.iter().enumerate() {
        let mut counts = Counts::default();
        for (field, value) in fields {
            let n: u64 = value.parse().unwrap_or(0);
            let Ok(parts) = serde_json::from_str::<Vec<String>>(field) else { continue };
            match parts.as_slice() {
                [c, status, event] if c == "c" => {
                    counts.add(status, n);
                    by_event.entry(event.clone()).or_default().add(status, n);
                }
                [e, event, pointer, keyword] if e == "e" => {
                    *errors.entry((event.clone(), pointer.clone(), keyword.clone())).or_default() += n;
                }
                _ => {}
            }
        }
        totals.valid += counts.valid;
        totals.invalid += counts.invalid;
        totals.unplanned += counts.unplanned;
        let start = Utc.timestamp_opt((first + i as i64) * secs, 0).single().map(rfc3339_secs).unwrap_or_default();
        series.push(Bucket { start, counts });
    }
    let seen: BTreeMap<&str, &str> = seen.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut by_event: Vec<EventFigures> = by_event
        .into_iter()
        .map(|(event, counts)| {
            let last_seen = seen.get(event.as_str()).and_then(|ms| ms.parse::<i64>().ok()).and_then(|ms| Utc.timestamp_millis_opt(ms).single()).map(rfc3339);
            EventFigures { event: named(event), counts, last_seen }
        })
        .collect();
    by_event.sort_by(|a, b| b.counts.total().cmp(&a.counts.total()).then_with(|| a.event.cmp(&b.event)));
    let mut top_errors: Vec<ErrorFigures> =
        errors
        .into_iter()
        .map(|((event, pointer, keyword), count)| match named(event) {
            // An empty pointer is real (the properties themselves); only the
            // event name tells the "other" row.
            Some(event) => ErrorFigures { event: Some(event), pointer: Some(pointer), keyword: Some(keyword), count },
            None => ErrorFigures { event: None, pointer: None, keyword: None, count },
        })
        .collect();
    // Stable sort: equal counts stay in (event, pointer, keyword) order.
    top_errors.sort_by(|a, b| b.count.cmp(&a.count));
    top_errors.truncate(TOP_ERRORS);
    Stats { window, totals, by_event, top_errors, series }
}

/// A name from a counter field; [`OTHER`] is the "other" row's.
fn named(name: String) -> Option<String> {
    (name != OTHER).then_some(name)
}

fn rfc3339_secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_body_goes_only_to_its_owner() {
        let owner = Uuid::new_v4();
        let entry = format!("{owner}\n{{\"totals\":{{}}}}");
        assert_eq!(owned_body(entry.as_bytes(), &owner.to_string()).as_deref(), Some("{\"totals\":{}}"));
        assert_eq!(owned_body(entry.as_bytes(), &Uuid::new_v4().to_string()), None);
        assert_eq!(owned_body(owner.to_string().as_bytes(), &owner.to_string()), None, "no separator");
    }

    fn f(parts: &[&str], n: u64) -> (String, String) {
        (serde_json::to_string(parts).unwrap(), n.to_string())
    }

    #[test]
    fn buckets_fold_into_totals_events_errors_and_a_full_series() {
        let buckets = vec![
            vec![f(&["c", "valid", "pay"], 2), f(&["c", "invalid", "pay"], 1), f(&["e", "pay", "/amount", "required"], 1)],
            vec![],
            vec![f(&["c", "unplanned", "open"], 5), f(&["c", "invalid", "pay"], 3), f(&["e", "pay", "/amount", "required"], 2), f(&["e", "pay", "/plan", "enum"], 1)],
        ];
        let seen = vec![("pay".to_owned(), "1795737600000".to_owned())];
        let s = assemble(Window::M15, 29_928_960, 60, &buckets, &seen);
        assert_eq!(s.totals, Counts { valid: 2, invalid: 4, unplanned: 5 });
        assert_eq!(s.series.len(), 3);
        assert_eq!(s.series[1].counts, Counts::default(), "empty buckets are zeros");
        assert_eq!(s.series[0].start, "2026-11-27T00:00:00Z");
        assert_eq!(s.by_event[0].event.as_deref(), Some("pay"), "busiest first");
        assert_eq!(s.by_event[0].last_seen.as_deref(), Some("2026-11-27T00:00:00.000000Z"));
        assert_eq!(s.by_event[1].last_seen, None);
        assert_eq!((s.top_errors[0].pointer.as_deref(), s.top_errors[0].count), (Some("/amount"), 3));
        assert_eq!(s.top_errors.len(), 2);
    }

    #[test]
    fn the_other_fields_show_as_rows_without_names() {
        let buckets = vec![vec![
            f(&["c", "valid", "pay"], 2),
            f(&["c", "invalid", ""], 4),
            f(&["e", "pay", "", "type"], 1),
            f(&["e", "", "", ""], 7),
        ]];
        let s = assemble(Window::M15, 29_928_960, 60, &buckets, &[]);
        assert_eq!(s.by_event[0].event, None, "the other row, busiest");
        assert_eq!(s.by_event[0].counts.invalid, 4);
        assert_eq!(s.totals.invalid, 4, "other counts in the totals");
        assert_eq!((s.top_errors[0].event.as_deref(), s.top_errors[0].pointer.as_deref(), s.top_errors[0].count), (None, None, 7));
        assert_eq!(s.top_errors[1].pointer.as_deref(), Some(""), "an empty pointer is a real one");
    }
}
