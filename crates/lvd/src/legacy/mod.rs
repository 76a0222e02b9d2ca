//! Bringing a team's history from the old Flask application (its SQLite
//! schema is `tests/fixtures/legacy-sqlite.sql`): how each legacy row
//! becomes ours, and the report of what was and was not brought. The worker
//! reads the file (`lvd-worker import-sqlite`); the statements that write
//! are [`store`]'s.
//!
//! What carries over, and how:
//! - users: the address normalised as [`Email`] does; the Werkzeug password
//!   hash kept as it is (sign-in verifies it once and stores Argon2id
//!   instead); `is_active` kept. Two legacy users whose addresses normalise
//!   to one, or one whose address already has an account here, are
//!   reported: the first legacy row (an active one before an inactive one)
//!   is imported, the others are not, nor their apps, rules and events,
//!   until the legacy data is put right and the import run again.
//! - apps: the name (trimmed, control characters replaced, cut at 100
//!   characters, each change reported); the legacy `api_key` stays the
//!   ingest key, stored as our hash; every such key was kept in the clear by
//!   the old application, so the report lists them for rotation. A retention
//!   long enough for the app's oldest imported event, at least the default
//!   and at most 365 days ([`retention_for`]).
//! - rules: per app and event, in the legacy order, versions 1, 2, …; an
//!   inactive rule is a version that no longer applies (deleted), the last
//!   active one is current ([`Rules`]). A schema our rule checks refuse is
//!   reported with its pointer and skipped.
//! - events: status from `is_valid` (`NULL`: unplanned), each legacy error
//!   string a violation with that message, `received_at` the legacy
//!   `created_at`; ids derived from the legacy id ([`event_id`]). Events
//!   older than the longest retention are skipped (their day's partition is
//!   past keeping).
//! - never: one-time codes (plaintext in the old database) and sessions.

pub mod store;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::apps::{AppName, RetentionDays};
use crate::logs::ingest::{Judged, Status};
use crate::logs::{EventName, Incoming};
use crate::rules::{self, Violation};

/// A legacy `DATETIME`: naive UTC text (`YYYY-MM-DD HH:MM:SS[.ffffff]`, or
/// with a `T`), or Unix seconds where a row stored a number.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
        .iter()
        .find_map(|f| {
            NaiveDateTime::parse_from_str(text, f)
                .ok()
                .or_else(|| chrono::NaiveDate::parse_from_str(text, f).ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
        })
        .map(|t| Utc.from_utc_datetime(&t))
        .or_else(|| DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc)))
}

pub fn from_unix(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

/// The id of an imported event: a UUIDv7 of its legacy `created_at` whose
/// random bits are the legacy id, so the same legacy row always becomes the
/// same row here, ordered in time as our own ids are.
pub fn event_id(received_at: DateTime<Utc>, legacy_id: i64) -> Uuid {
    let mut rest = [0u8; 10];
    rest[2..].copy_from_slice(&legacy_id.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(received_at.timestamp_millis().max(0) as u64, &rest).into_uuid()
}

pub fn status(is_valid: Option<bool>) -> Status {
    match is_valid {
        Some(true) => Status::Valid,
        Some(false) => Status::Invalid,
        None => Status::Unplanned,
    }
}

/// The keyword legacy violations carry: the old application kept only a
/// message per error, never where or which keyword.
pub const LEGACY_KEYWORD: &str = "legacy";

/// The legacy `errors` column (a JSON array of strings) as violations, each
/// message bounded (and marked cut) as ours are; text that is not such an array is kept as
/// one message.
pub fn errors(raw: Option<&str>) -> Vec<Violation> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty() && *r != "null") else {
        return Vec::new();
    };
    let messages: Vec<String> = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(items)) => items.into_iter().map(|v| if let Value::String(s) = v { s } else { v.to_string() }).collect(),
        Ok(Value::String(s)) => vec![s],
        _ => vec![raw.to_owned()],
    };
    messages
        .into_iter()
        .take(rules::MAX_ERRORS)
        .map(|m| Violation {
            pointer: String::new(),
            keyword: LEGACY_KEYWORD.to_owned(),
            message: rules::bounded(m.replace('\0', ""), rules::MAX_MESSAGE_CHARS),
        })
        .collect()
}

/// A legacy app name made into ours, and what had to change, if anything.
pub fn app_name(raw: &str, legacy_id: i64) -> (AppName, Option<String>) {
    let cleaned: String = raw.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let cleaned = cleaned.trim();
    let cut: String = cleaned.chars().take(100).collect();
    match AppName::parse(cut.clone()) {
        Ok(name) if name.as_str() == raw => (name, None),
        Ok(name) => (name, Some(format!("app {legacy_id}: name {raw:?} imported as {cut:?}"))),
        Err(_) => {
            let name = format!("Imported app {legacy_id}");
            (AppName::parse(name.clone()).expect("a valid name"), Some(format!("app {legacy_id}: empty name imported as {name:?}")))
        }
    }
}

/// The longest an imported event may be: past this, its day's partition is
/// dropped (`logs::rows::PARTITION_KEEP_DAYS`), so it is not imported.
pub const MAX_AGE_DAYS: i64 = 365;

/// The retention of an imported app: long enough that its oldest event is
/// kept, at least the default and at most 365 days.
pub fn retention_for(oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> RetentionDays {
    let days = oldest.map_or(0, |t| (now - t).num_days() + 1);
    RetentionDays::parse(days.clamp(RetentionDays::DEFAULT.get() as i64, MAX_AGE_DAYS)).expect("within bounds")
}

/// One legacy rule, as read.
#[derive(Debug, Clone)]
pub struct LegacyRule {
    pub id: i64,
    pub event: String,
    pub schema_json: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// One legacy event, as read.
#[derive(Debug, Clone)]
pub struct LegacyEvent {
    pub id: i64,
    pub app_id: i64,
    pub event: String,
    pub payload: String,
    pub is_valid: Option<bool>,
    pub errors: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The versions of one app's rules, by event: which legacy rule is which
/// version, and which version judged an event of a given time (the last
/// active one created by then), for events' `rule_version`.
#[derive(Debug, Default)]
pub struct Rules {
    /// (event) → [(legacy created_at, version, active)] in version order.
    by_event: BTreeMap<String, Vec<(DateTime<Utc>, i64, bool)>>,
}

impl Rules {
    pub fn add(&mut self, event: &str, created_at: DateTime<Utc>, version: i64, active: bool) {
        let versions = self.by_event.entry(event.to_owned()).or_default();
        versions.push((created_at, version, active));
        versions.sort_by_key(|v| v.1);
    }

    /// The version an event at `at` was judged against, as far as the
    /// legacy rules tell: the latest active rule created by then.
    pub fn version_at(&self, event: &str, at: DateTime<Utc>) -> Option<i64> {
        self.by_event.get(event)?.iter().filter(|(t, _, active)| *active && *t <= at).map(|v| v.1).max()
    }
}

/// Why a legacy event is not imported; `None`: it is, as this row.
pub fn event_row(e: &LegacyEvent, app: Uuid, rules: &Rules, now: DateTime<Utc>) -> Result<String, Skip> {
    let event = EventName::parse(e.event.clone()).map_err(|m| Skip::new("event name", format!("event {}: name {m}", e.id)))?;
    let properties: Value = match serde_json::from_str(&e.payload) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Err(Skip::new("payload", format!("event {}: payload is not a JSON object", e.id)));
        }
    };
    if let Some(pointer) = crate::logs::nul_pointer(&properties) {
        return Err(Skip::new("payload", format!("event {}: payload holds the NUL character at {pointer:?}", e.id)));
    }
    if (now - e.created_at).num_days() >= MAX_AGE_DAYS {
        return Err(Skip::new("age", format!("event {}: older than {MAX_AGE_DAYS} days", e.id)));
    }
    let status = status(e.is_valid);
    let errors = if status == Status::Invalid { errors(e.errors.as_deref()) } else { Vec::new() };
    let rule_version = if status == Status::Unplanned { None } else { rules.version_at(&e.event, e.created_at) };
    let judged = Judged {
        id: event_id(e.created_at, e.id),
        event: Incoming { event, properties, timestamp: None, message_id: None, context: None },
        status,
        errors,
        rule_version,
        received_at: e.created_at,
    };
    Ok(crate::logs::rows::line(&judged, app))
}

/// A legacy row not imported: the reason (what the report groups by) and
/// which row, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub reason: &'static str,
    pub detail: String,
}

impl Skip {
    pub fn new(reason: &'static str, detail: String) -> Self {
        Self { reason, detail }
    }
}

/// Counts of one legacy table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Rows read from the file.
    pub read: u64,
    /// Rows written by this run (with `--dry-run`, that would be).
    pub imported: u64,
    /// Rows an earlier run already brought.
    pub already: u64,
    /// Rows not imported, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// The most examples the report prints per table and reason.
pub const EXAMPLES: usize = 10;

/// What an import did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Report {
    pub dry_run: bool,
    pub users: Counts,
    pub apps: Counts,
    pub rules: Counts,
    pub events: Counts,
    /// Legacy one-time codes left behind.
    pub codes_ignored: u64,
    /// Events were read after this legacy id: those up to it belong to apps
    /// whose events an earlier run stored up to there (0: read them all).
    pub events_after: i64,
    /// Examples of each kind of skipped row, and other notes.
    pub notes: BTreeMap<String, Vec<String>>,
    /// Legacy apps whose ingest key was kept: `(legacy id, name)`.
    pub keys_to_rotate: Vec<(i64, String)>,
}

impl Report {
    pub fn skip(&mut self, table: &'static str, skip: Skip) {
        let counts = match table {
            "users" => &mut self.users,
            "apps" => &mut self.apps,
            "rules" => &mut self.rules,
            _ => &mut self.events,
        };
        *counts.skipped.entry(skip.reason).or_default() += 1;
        self.note(format!("{table} skipped ({})", skip.reason), skip.detail);
    }

    pub fn note(&mut self, heading: String, line: String) {
        let lines = self.notes.entry(heading).or_default();
        if lines.len() < EXAMPLES {
            lines.push(line);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would import" } else { "imported" };
        writeln!(f, "{}", if self.dry_run { "Dry run: nothing was written." } else { "Import finished." })?;
        for (table, c) in [("users", &self.users), ("apps", &self.apps), ("rules", &self.rules), ("events", &self.events)] {
            let skipped: u64 = c.skipped.values().sum();
            write!(f, "{table:>7}: {} read, {} {verb}, {} already imported, {} skipped", c.read, c.imported, c.already, skipped)?;
            if skipped > 0 {
                let why: Vec<String> = c.skipped.iter().map(|(r, n)| format!("{n} {r}")).collect();
                write!(f, " ({})", why.join(", "))?;
            }
            writeln!(f)?;
        }
        if self.events_after > 0 {
            writeln!(f, "         (events up to legacy id {} were done by an earlier run and not read again)", self.events_after)?;
        }
        writeln!(f, "  codes: {} one-time codes not imported (never carried over)", self.codes_ignored)?;
        for (heading, lines) in &self.notes {
            writeln!(f, "{heading}:")?;
            for line in lines {
                writeln!(f, "  - {line}")?;
            }
        }
        if !self.keys_to_rotate.is_empty() {
            writeln!(
                f,
                "Ingest keys kept from the old application ({}), which stored them in the clear: rotate each \
                 (POST /api/apps/{{app}}/keys/rotate) once its senders can be given the new key:",
                self.keys_to_rotate.len()
            )?;
            for (id, name) in self.keys_to_rotate.iter().take(100) {
                writeln!(f, "  - legacy app {id} ({name})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn legacy_times_are_naive_utc() {
        assert_eq!(at("2026-03-04 05:06:07").to_rfc3339(), "2026-03-04T05:06:07+00:00");
        assert_eq!(at("2026-03-04 05:06:07.123456").timestamp_subsec_micros(), 123_456);
        assert_eq!(at("2026-03-04T05:06:07"), at("2026-03-04 05:06:07"));
        assert_eq!(at("2026-03-04").to_rfc3339(), "2026-03-04T00:00:00+00:00");
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn an_event_keeps_its_id_across_runs_and_sorts_by_time() {
        let t = at("2026-03-04 05:06:07");
        assert_eq!(event_id(t, 42), event_id(t, 42));
        assert_ne!(event_id(t, 42), event_id(t, 43));
        assert!(event_id(t, 999) < event_id(at("2026-03-04 05:06:08"), 1));
        assert_eq!(event_id(t, 42).get_version_num(), 7);
    }

    #[test]
    fn legacy_errors_become_messages() {
        let v = errors(Some(r#"["'plan' is a required property", "1 is not of type 'string'"]"#));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].message, "'plan' is a required property");
        assert_eq!((v[0].pointer.as_str(), v[0].keyword.as_str()), ("", LEGACY_KEYWORD));
        assert_eq!(errors(Some("not json"))[0].message, "not json");
        assert!(errors(None).is_empty() && errors(Some("null")).is_empty() && errors(Some("")).is_empty());
        let many = serde_json::to_string(&vec!["x".repeat(1000); 50]).unwrap();
        let v = errors(Some(&many));
        assert_eq!(v.len(), rules::MAX_ERRORS);
        assert_eq!(v[0].message.chars().count(), rules::MAX_MESSAGE_CHARS + 1);
        assert!(v[0].message.ends_with('…'), "cut as ours are");
    }

    #[test]
    fn names_are_made_valid_and_the_change_noted() {
        assert_eq!(app_name("Shop", 1).1, None);
        let (name, note) = app_name(&"a".repeat(120), 2);
        assert_eq!(name.as_str().len(), 100);
        assert!(note.unwrap().contains("app 2"));
        assert_eq!(app_name("a\tb", 3).0.as_str(), "a b");
        assert_eq!(app_name("  ", 4).0.as_str(), "Imported app 4");
    }

    #[test]
    fn retention_covers_the_oldest_event_within_bounds() {
        let now = at("2026-06-01 00:00:00");
        assert_eq!(retention_for(None, now).get(), 30);
        assert_eq!(retention_for(Some(at("2026-05-25 00:00:00")), now).get(), 30);
        assert_eq!(retention_for(Some(at("2026-03-01 00:00:00")), now).get(), 93);
        assert_eq!(retention_for(Some(at("2020-01-01 00:00:00")), now).get(), 365);
    }

    #[test]
    fn an_event_is_judged_by_the_last_active_rule_of_its_time() {
        let mut rules = Rules::default();
        rules.add("signup", at("2026-01-01 00:00:00"), 1, true);
        rules.add("signup", at("2026-02-01 00:00:00"), 2, false);
        rules.add("signup", at("2026-03-01 00:00:00"), 3, true);
        assert_eq!(rules.version_at("signup", at("2025-12-31 00:00:00")), None);
        assert_eq!(rules.version_at("signup", at("2026-02-15 00:00:00")), Some(1));
        assert_eq!(rules.version_at("signup", at("2026-03-15 00:00:00")), Some(3));
        assert_eq!(rules.version_at("login", at("2026-03-15 00:00:00")), None);
    }

    #[test]
    fn event_rows_carry_the_verdict_or_say_why_not() {
        let now = at("2026-06-01 00:00:00");
        let e = LegacyEvent {
            id: 7,
            app_id: 1,
            event: "signup".into(),
            payload: r#"{"plan":"pro"}"#.into(),
            is_valid: Some(false),
            errors: Some(r#"["bad"]"#.into()),
            created_at: at("2026-05-01 10:00:00"),
        };
        let app = Uuid::nil();
        let line = event_row(&e, app, &Rules::default(), now).unwrap();
        let cols: Vec<&str> = line.trim_end().split('\t').collect();
        assert_eq!(cols[0], event_id(e.created_at, 7).to_string());
        assert_eq!((cols[2], cols[3]), ("signup", "invalid"));
        assert_eq!(cols[4], r#"[{"pointer":"","keyword":"legacy","message":"bad"}]"#);
        assert_eq!(cols[8], "2026-05-01T10:00:00.000000Z");
        let unplanned = LegacyEvent { is_valid: None, ..e.clone() };
        assert!(event_row(&unplanned, app, &Rules::default(), now).unwrap().contains("\tunplanned\t[]\t"));
        for (bad, reason) in [
            (LegacyEvent { payload: "[1]".into(), ..e.clone() }, "payload"),
            (LegacyEvent { payload: r#"{"a":"\u0000"}"#.into(), ..e.clone() }, "payload"),
            (LegacyEvent { event: String::new(), ..e.clone() }, "event name"),
            (LegacyEvent { created_at: at("2025-01-01 00:00:00"), ..e.clone() }, "age"),
        ] {
            assert_eq!(event_row(&bad, app, &Rules::default(), now).unwrap_err().reason, reason);
        }
    }
}
