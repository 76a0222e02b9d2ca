//! Judging an alert against the counters ingest keeps in Redis: the
//! per-minute and per-hour buckets and the last-seen hash of
//! `crate::logs::stats`. One script reads what every alert of an app needs
//! (the last hour by the minute, the last 25 hours by the hour, the
//! last-seen times) in one round trip.

use chrono::{DateTime, Utc};

use super::{Kind, Settings};
use crate::keys;
use crate::kv::{Arg, Redis, RedisError};
use crate::logs::ingest::OTHER;
use crate::logs::stats::{Counts, SCRIPT, parse_hashes};

/// Minute buckets read: the longest window.
const MINUTES: i64 = 60;
/// Hour buckets read: the previous 24 hours and the current one.
const HOURS: i64 = 25;

/// An app's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub now: DateTime<Utc>,
    /// The last [`MINUTES`] minute buckets, oldest first; the last is the
    /// current (partial) minute.
    pub minutes: Vec<Vec<(String, String)>>,
    /// The last [`HOURS`] hour buckets, oldest first; the last is the
    /// current (partial) hour.
    pub hours: Vec<Vec<(String, String)>>,
    /// Event name → when it last arrived (ms since the epoch).
    pub seen: Vec<(String, String)>,
}

/// Reads `app`'s figures as of `now`.
pub async fn figures(redis: &impl Redis, app: uuid::Uuid, now: DateTime<Utc>) -> Result<Figures, RedisError> {
    let minute = now.timestamp().div_euclid(60);
    let hour = now.timestamp().div_euclid(3600);
    let mut args: Vec<Arg> = vec![Arg::Int(MINUTES + HOURS + 1)];
    args.extend((minute - MINUTES + 1..=minute).map(|i| Arg::from(keys::stats_bucket(app, 'm', i))));
    args.extend((hour - HOURS + 1..=hour).map(|i| Arg::from(keys::stats_bucket(app, 'h', i))));
    args.push(keys::stats_seen(app).into());
    let mut hashes = parse_hashes(&redis.eval(&SCRIPT, args).await?, (MINUTES + HOURS + 1) as usize)?;
    let seen = hashes.pop().unwrap_or_default();
    let hours = hashes.split_off(MINUTES as usize);
    Ok(Figures { now, minutes: hashes, hours, seen })
}

/// The counts of `event` (every event when `None`; the "other" fields only
/// count then) in a bucket's fields.
fn counts<'a>(buckets: impl IntoIterator<Item = &'a Vec<(String, String)>>, event: Option<&str>) -> Counts {
    let mut counts = Counts::default();
    for (field, value) in buckets.into_iter().flatten() {
        if let Ok(parts) = serde_json::from_str::<Vec<String>>(field)
            && let [c, status, name] = parts.as_slice()
            && c == "c"
            && event.is_none_or(|e| e == name)
        {
            counts.add(status, value.parse().unwrap_or(0));
        }
    }
    counts
}

/// The event names counted in the last `secs`, of one `status` or of any
/// (the "other" fields have none).
pub fn names(figures: &Figures, secs: i64, status: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = recent(figures, secs)
        .flatten()
        .filter_map(|(field, _)| match serde_json::from_str::<Vec<String>>(field).ok()?.as_slice() {
            [c, s, name] if c == "c" && status.is_none_or(|want| want == s) && name != OTHER => Some(name.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every event name the last-seen hash holds: what an app sent in the last
/// 8 days.
pub fn seen_names(figures: &Figures) -> Vec<String> {
    figures.seen.iter().map(|(name, _)| name.clone()).filter(|n| n != OTHER).collect()
}

/// The minute buckets of the last `secs`, the current one included.
fn recent(figures: &Figures, secs: i64) -> impl Iterator<Item = &Vec<(String, String)>> {
    let n = (secs / 60).clamp(1, MINUTES) as usize;
    figures.minutes.iter().skip(figures.minutes.len().saturating_sub(n))
}

/// Seconds the window's buckets span: the full minutes before the current
/// one, and the current one so far.
fn span(figures: &Figures, secs: i64) -> f64 {
    let n = (secs / 60).clamp(1, MINUTES);
    ((n - 1) * 60 + figures.now.timestamp().rem_euclid(60) + 1) as f64
}

/// Whether a condition holds, and the figure it was judged on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub holds: bool,
    pub value: f64,
}

/// Judges every kind but `new_unplanned` (which needs the app's known
/// names, [`super::store::remember_names`]). `since` is when the alert took
/// its current definition: an event the counters have not seen (in their 8
/// days) is missing once a window has passed since then.
pub fn judge(alert: &Settings, since: DateTime<Utc>, figures: &Figures) -> Verdict {
    let event = alert.event.as_ref().map(|e| e.as_str());
    let window = alert.window.secs();
    match alert.kind {
        Kind::ViolationRate => {
            let c = counts(recent(figures, window), event);
            let judged = c.valid + c.invalid;
            let value = if judged == 0 { 0.0 } else { c.invalid as f64 / judged as f64 };
            Verdict { holds: judged > 0 && judged >= alert.min_events.max(0) as u64 && value > alert.threshold, value }
        }
        Kind::VolumeDrop => {
            // The usual: the 24 full hours before this one, scaled to the
            // span the window's buckets cover.
            let day = counts(figures.hours.iter().take(figures.hours.len().saturating_sub(1)), event).total() as f64;
            let expected = day / 86_400.0 * span(figures, window);
            let now = counts(recent(figures, window), event).total() as f64;
            let value = if expected > 0.0 { now / expected } else { 1.0 };
            Verdict { holds: expected > 0.0 && expected >= alert.min_events.max(0) as f64 && value < alert.threshold, value }
        }
        Kind::EventMissing => {
            let name = event.unwrap_or_default();
            let last = figures
                .seen
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, ms)| ms.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or(since);
            let value = (figures.now - last).num_seconds().max(0) as f64;
            Verdict { holds: value >= window as f64, value }
        }
        Kind::NewUnplanned => Verdict { holds: false, value: 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Window;
    use crate::logs::EventName;
    use chrono::TimeZone;

    fn field(status: &str, event: &str, n: u64) -> (String, String) {
        (serde_json::to_string(&["c", status, event]).unwrap(), n.to_string())
    }

    fn alert(kind: Kind, threshold: f64, event: Option<&str>) -> Settings {
        Settings {
            kind,
            event: event.map(|e| EventName::parse(e.to_owned()).unwrap()),
            threshold,
            window: Window(300),
            min_events: 10,
            email: true,
            webhook_url: None,
            enabled: true,
        }
    }

    /// Figures at 30 s into a minute, with `last5` spread over the last 5
    /// minute buckets' fields and `day` in each of the 24 previous hours.
    fn figures(last5: &[(String, String)], day: &[(String, String)]) -> Figures {
        let mut minutes = vec![Vec::new(); MINUTES as usize];
        for m in minutes.iter_mut().skip(MINUTES as usize - 5) {
            *m = last5.to_vec();
        }
        let mut hours = vec![day.to_vec(); HOURS as usize];
        hours[HOURS as usize - 1] = Vec::new();
        Figures { now: Utc.timestamp_opt(1_800_000_030, 0).unwrap(), minutes, hours, seen: Vec::new() }
    }

    #[test]
    fn a_violation_rate_above_the_threshold_holds_once_enough_events_were_judged() {
        let f = figures(&[field("valid", "pay", 1), field("invalid", "pay", 1), field("unplanned", "x", 9)], &[]);
        let v = judge(&alert(Kind::ViolationRate, 0.4, None), f.now, &f);
        assert_eq!(v, Verdict { holds: true, value: 0.5 }, "5 invalid of 10 judged; unplanned are not judged");
        assert!(!judge(&alert(Kind::ViolationRate, 0.5, None), f.now, &f).holds, "above, not at");
        let few = figures(&[field("invalid", "pay", 1)], &[]);
        assert!(!judge(&alert(Kind::ViolationRate, 0.4, None), f.now, &few).holds, "5 judged < min_events 10");
        assert_eq!(judge(&alert(Kind::ViolationRate, 0.4, Some("other")), f.now, &f).value, 0.0, "narrowed to one event");
    }

    #[test]
    fn a_volume_drop_compares_the_window_with_the_days_average() {
        // 2,880 an hour is 0.8 a second; the window's buckets span 271 s
        // (4 full minutes, and 31 s of the current one): 216.8 expected.
        let f = figures(&[field("valid", "pay", 10)], &[field("valid", "pay", 2880)]);
        let v = judge(&alert(Kind::VolumeDrop, 0.5, None), f.now, &f);
        assert!(v.holds && (v.value - 50.0 / 216.8).abs() < 1e-9, "{v:?}");
        let busy = figures(&[field("valid", "pay", 40)], &[field("valid", "pay", 2880)]);
        assert!(!judge(&alert(Kind::VolumeDrop, 0.5, None), f.now, &busy).holds, "200 of 216.8");
        let new_app = figures(&[], &[]);
        assert!(!judge(&alert(Kind::VolumeDrop, 0.5, None), f.now, &new_app).holds, "no usual volume, no drop");
    }

    #[test]
    fn an_event_is_missing_once_a_window_passes_without_it() {
        let mut f = figures(&[], &[]);
        let a = alert(Kind::EventMissing, 300.0, Some("pay"));
        let created = f.now - chrono::Duration::seconds(100);
        assert_eq!(judge(&a, created, &f), Verdict { holds: false, value: 100.0 }, "never seen: counted from the alert's creation");
        f.seen = vec![("pay".into(), ((f.now.timestamp() - 400) * 1000).to_string())];
        assert_eq!(judge(&a, created, &f), Verdict { holds: true, value: 400.0 }, "last seen before the alert was made");
        f.seen[0].1 = ((f.now.timestamp() - 5) * 1000).to_string();
        assert!(!judge(&a, created, &f).holds);
    }

    #[test]
    fn names_come_from_the_window_only() {
        let mut f = figures(&[field("unplanned", "b", 1), field("valid", "c", 1), field("unplanned", "", 3)], &[]);
        f.minutes[0] = vec![field("unplanned", "old", 1)];
        assert_eq!(names(&f, 300, Some("unplanned")), ["b"]);
        assert_eq!(names(&f, 3600, Some("unplanned")), ["b", "old"]);
        assert_eq!(names(&f, 300, None), ["b", "c"]);
    }
}
