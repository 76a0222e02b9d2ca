//! Alerts: a condition on one app's live figures that tells its owner, by
//! email and by a signed webhook, when tracking breaks and when it mends.
//!
//! - The routes (`components/apps`) keep alerts in PostgreSQL ([`store`]);
//!   what a body may say is checked here ([`Settings::apply`]).
//! - The worker evaluates every enabled alert at least every 15 s from the
//!   counters ingest keeps in Redis ([`eval`]; never a scan of
//!   `log_entries`), and records each change of state with the
//!   notifications it owes in one transaction (the outbox), under the
//!   alert's row lock: one change, one notification per channel, whatever
//!   the number of workers, and a worker that dies after deciding leaves the
//!   sending to another ([`store::record`], [`store::next_notification`]).
//!
//! Decisions the contract leaves open (also in `openapi.yaml`):
//! - `threshold` is a fraction for `violation_rate` (default 0.1; fires when
//!   the rate is above it) and `volume_drop` (default 0.5; fires when the
//!   window's events fall below that share of the usual). `event_missing`
//!   and `new_unplanned` take none: their threshold is the window in
//!   seconds and 0 new names, which is what their history shows.
//! - `min_events` (default 10) applies to `violation_rate` (events judged in
//!   the window) and `volume_drop` (events the usual volume predicts for the
//!   window): below it, the figure is too small to alert on.
//! - `new_unplanned` fires when an unplanned name first arrives, stays
//!   firing for `window`, and resolves when a window passes with no new
//!   name; the names it saw are in its history and notifications. The names
//!   an app sent before its first such alert (the last 8 days of the
//!   counters) count as seen.
//! - Editing or muting an alert puts it back to `ok` without a notification:
//!   its next evaluation judges the new definition afresh.

pub mod eval;
pub mod store;

use serde_json::{Value, json};

use crate::input::Fields;
use crate::logs::EventName;
use crate::problem::Problem;
use crate::webhook::{AllowList, check_url};

/// Alerts one app may have.
pub const MAX_PER_APP: i64 = 20;
/// Event names kept per app for `new_unplanned`; past it, new names are
/// not tracked (and cannot fire).
pub const MAX_KNOWN_NAMES: i64 = 10_000;
/// How often every enabled alert is evaluated, unless the worker's
/// `LVD_ALERT_INTERVAL_MS` says otherwise.
pub const DEFAULT_INTERVAL_MS: u64 = 15_000;
/// A webhook delivery is tried this many times (backoff doubling from 2 s
/// up to 4 h: about 12 hours in all) before the notification is marked
/// failed.
pub const MAX_WEBHOOK_ATTEMPTS: i32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ViolationRate,
    VolumeDrop,
    EventMissing,
    NewUnplanned,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::ViolationRate, Kind::VolumeDrop, Kind::EventMissing, Kind::NewUnplanned];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ViolationRate => "violation_rate",
            Kind::VolumeDrop => "volume_drop",
            Kind::EventMissing => "event_missing",
            Kind::NewUnplanned => "new_unplanned",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The default threshold of a kind that takes one.
    pub(crate) fn default_threshold(self) -> Option<f64> {
        match self {
            Kind::ViolationRate => Some(0.1),
            Kind::VolumeDrop => Some(0.5),
            Kind::EventMissing | Kind::NewUnplanned => None,
        }
    }

    /// What a notification says the figure is.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::ViolationRate => "share of judged events that were invalid",
            Kind::VolumeDrop => "events in the window as a share of the usual",
            Kind::EventMissing => "seconds since the event last arrived",
            Kind::NewUnplanned => "unplanned event names first seen in the window",
        }
    }
}

/// The window an alert looks over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(pub i64);

impl Window {
    pub const DEFAULT: Window = Window(900);

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "5m" => Some(Window(300)),
            "15m" => Some(Window(900)),
            "1h" => Some(Window(3600)),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self.0 {
            300 => "5m",
            3600 => "1h",
            _ => "15m",
        }
    }

    pub fn secs(self) -> i64 {
        self.0
    }
}

/// What an alert watches and whom it tells: everything a body may set.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub kind: Kind,
    pub event: Option<EventName>,
    /// The figure's bound; for `event_missing` the window in seconds, for
    /// `new_unplanned` 0 (see the module docs).
    pub threshold: f64,
    pub window: Window,
    pub min_events: i64,
    pub email: bool,
    pub webhook_url: Option<String>,
    pub enabled: bool,
}

impl Settings {
    /// A `POST` body (`current` is `None`) or a `PATCH` body applied to the
    /// alert's `current` settings; 422 naming each bad field. A field a
    /// kind does not use is refused when the body gives it.
    pub fn apply(body: &[u8], current: Option<&Settings>, allow: &AllowList) -> Result<Self, Problem> {
        let mut f = Fields::parse(body)?;
        let kind = match f.take("kind") {
            None | Some(Value::Null) if current.is_none() => {
                f.error("kind", "is required");
                None
            }
            None | Some(Value::Null) => current.map(|c| c.kind),
            Some(Value::String(raw)) => Kind::parse(&raw).or_else(|| {
                f.error("kind", "must be one of violation_rate, volume_drop, event_missing, new_unplanned");
                None
            }),
            Some(_) => {
                f.error("kind", "must be a string");
                None
            }
        };
        let kept = current.filter(|c| Some(c.kind) == kind);

        let event = match f.take("event") {
            None => current.and_then(|c| c.event.clone()).filter(|_| kind != Some(Kind::NewUnplanned)),
            Some(Value::Null) => None,
            Some(Value::String(s)) => f.parsed("event", Some(s), EventName::parse),
            Some(_) => {
                f.error("event", "must be a string");
                None
            }
        };
        let given_threshold = match f.take("threshold") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => {
                f.error("threshold", "must be a number");
                None
            }
        };
        let window = match f.optional_str("window") {
            Some(raw) => Window::parse(&raw).or_else(|| {
                f.error("window", "must be one of 5m, 15m, 1h");
                None
            }),
            None => Some(current.map_or(Window::DEFAULT, |c| c.window)),
        };
        let given_min = f.optional_int("min_events").flatten();
        let email = f.optional_bool("email").unwrap_or(current.is_none_or(|c| c.email));
        let enabled = f.optional_bool("enabled").unwrap_or(current.is_none_or(|c| c.enabled));
        let webhook_url = match f.take("webhook_url") {
            None => current.and_then(|c| c.webhook_url.clone()),
            Some(Value::Null) => None,
            Some(Value::String(s)) => match check_url(&s, allow) {
                Ok(url) => Some(url.to_string()),
                Err(why) => {
                    f.error("webhook_url", why);
                    None
                }
            },
            Some(_) => {
                f.error("webhook_url", "must be a string");
                None
            }
        };

        let mut threshold = 0.0;
        let mut min_events = kept.map_or(DEFAULT_MIN_EVENTS, |c| c.min_events);
        if let Some(kind) = kind {
            match kind.default_threshold() {
                Some(default) => {
                    threshold = given_threshold.unwrap_or(kept.map_or(default, |c| c.threshold));
                    let bounds = if kind == Kind::ViolationRate { "from 0 up to (not including) 1" } else { "above 0 and at most 1" };
                    let ok = if kind == Kind::ViolationRate { (0.0..1.0).contains(&threshold) } else { threshold > 0.0 && threshold <= 1.0 };
                    if !ok {
                        f.error("threshold", format!("must be a fraction {bounds} for {}", kind.as_str()));
                    }
                    match given_min {
                        Some(n) if !(0..=1_000_000).contains(&n) => f.error("min_events", "must be an integer from 0 to 1000000"),
                        Some(n) => min_events = n,
                        None => {}
                    }
                }
                None => {
                    if given_threshold.is_some() {
                        f.error("threshold", format!("is not used by {} (leave it out)", kind.as_str()));
                    }
                    if given_min.is_some() {
                        f.error("min_events", format!("is not used by {} (leave it out)", kind.as_str()));
                    }
                    threshold = if kind == Kind::EventMissing { window.map_or(0.0, |w| w.secs() as f64) } else { 0.0 };
                    min_events = 0;
                }
            }
            if kind == Kind::EventMissing && event.is_none() && !f.has_error("/event") {
                f.error("event", "is required for event_missing");
            }
            if kind == Kind::NewUnplanned && event.is_some() {
                f.error("event", "is not used by new_unplanned (it watches every name)");
            }
        }
        f.finish()?;
        Ok(Self {
            kind: kind.expect("checked"),
            event,
            threshold,
            window: window.expect("checked"),
            min_events,
            email,
            webhook_url,
            enabled,
        })
    }
}

/// `min_events` when a body leaves it out.
pub const DEFAULT_MIN_EVENTS: i64 = 10;

/// A new webhook secret: 256 random bits, hex, prefixed so people can tell
/// it from other keys.
pub fn new_webhook_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The body of a webhook: the contract's fields, and `events` for
/// `new_unplanned`.
pub fn webhook_body(change: &store::Change, alert: uuid::Uuid, app: uuid::Uuid, kind: Kind) -> Vec<u8> {
    let mut body = json!({
        "alert": alert,
        "app": app,
        "kind": kind.as_str(),
        "state": change.state,
        "at": crate::logs::rfc3339(change.at),
        "value": change.value,
        "threshold": change.threshold,
    });
    if let Some(events) = &change.events {
        body["events"] = json!(events);
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(p: Problem) -> Vec<String> {
        p.errors.into_iter().map(|e| e.pointer).collect()
    }

    fn allow() -> AllowList {
        AllowList::parse("127.0.0.1")
    }

    #[test]
    fn a_new_alert_takes_the_defaults_of_its_kind() {
        let s = Settings::apply(br#"{"kind": "violation_rate"}"#, None, &allow()).unwrap();
        assert_eq!((s.threshold, s.window, s.min_events, s.email, s.enabled), (0.1, Window(900), 10, true, true));
        let s = Settings::apply(br#"{"kind": "event_missing", "event": "signup", "window": "5m"}"#, None, &allow()).unwrap();
        assert_eq!((s.threshold, s.min_events, s.event.as_ref().map(EventName::as_str)), (300.0, 0, Some("signup")));
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = Settings::apply(br#"{"window": "2h", "email": "yes", "threshold": "x"}"#, None, &allow()).unwrap_err();
        assert_eq!(pointers(p), ["/kind", "/threshold", "/window", "/email"]);
        let p = Settings::apply(br#"{"kind": "violation_rate", "threshold": 1.5, "min_events": -1}"#, None, &allow()).unwrap_err();
        assert_eq!(pointers(p), ["/threshold", "/min_events"]);
        let p = Settings::apply(br#"{"kind": "event_missing", "threshold": 0.5}"#, None, &allow()).unwrap_err();
        assert_eq!(pointers(p), ["/threshold", "/event"]);
        let p = Settings::apply(br#"{"kind": "new_unplanned", "event": "a"}"#, None, &allow()).unwrap_err();
        assert_eq!(pointers(p), ["/event"]);
        let p = Settings::apply(br#"{"kind": "volume_drop", "webhook_url": "http://10.0.0.1/hook"}"#, None, &allow()).unwrap_err();
        assert_eq!(pointers(p), ["/webhook_url"]);
    }

    #[test]
    fn a_patch_keeps_what_it_does_not_name_and_resets_what_a_new_kind_does_not_use() {
        let current = Settings::apply(br#"{"kind": "violation_rate", "threshold": 0.3, "min_events": 50, "event": "pay"}"#, None, &allow()).unwrap();
        let s = Settings::apply(br#"{"enabled": false}"#, Some(&current), &allow()).unwrap();
        assert_eq!(s, Settings { enabled: false, ..current.clone() });
        let s = Settings::apply(br#"{"kind": "volume_drop"}"#, Some(&current), &allow()).unwrap();
        assert_eq!((s.threshold, s.min_events, s.event.is_some()), (0.5, 10, true), "a new kind starts from its defaults");
        let s = Settings::apply(br#"{"kind": "new_unplanned"}"#, Some(&current), &allow()).unwrap();
        assert_eq!((s.threshold, s.event), (0.0, None), "new_unplanned watches every name");
        let s = Settings::apply(br#"{"webhook_url": "http://127.0.0.1:9/h"}"#, Some(&current), &allow()).unwrap();
        assert_eq!(s.webhook_url.as_deref(), Some("http://127.0.0.1:9/h"));
        let s = Settings::apply(br#"{"webhook_url": null}"#, Some(&s), &allow()).unwrap();
        assert_eq!(s.webhook_url, None);
    }
}
