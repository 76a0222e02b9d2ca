//! Events as apps send them: parsed at the edge into [`Incoming`], so nothing
//! past the parser touches a raw body. A malformed event yields its own
//! field errors (pointers relative to the event) instead of failing a batch.

pub mod ingest;
pub mod live;
pub mod plan;
pub mod quarantine;
pub mod query;
pub mod rows;
pub mod service;
pub mod stats;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::problem::{FieldError, Problem};

/// Most events one request may carry.
pub const MAX_BATCH: usize = 500;

/// An event name: 1–128 Unicode characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventName(String);

impl EventName {
    pub fn parse(raw: String) -> Result<Self, &'static str> {
        let n = raw.chars().count();
        if n == 0 {
            return Err("must not be empty");
        }
        if n > 128 {
            return Err("must be at most 128 characters");
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A well-formed event, not yet judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub event: EventName,
    pub properties: Value,
    pub timestamp: Option<DateTime<Utc>>,
    pub message_id: Option<String>,
    pub context: Option<Value>,
}

/// The events of a request body: one event, or `{"batch": [...]}`.
pub enum Body {
    Single(Result<Incoming, Vec<FieldError>>),
    Batch(Vec<Result<Incoming, Vec<FieldError>>>),
}

impl Body {
    /// Parses a request body: 400 for JSON that does not parse, 422 for a
    /// body that is neither an event object nor a batch of 1–500.
    pub fn parse(bytes: &[u8]) -> Result<Self, Problem> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|_| Problem::new(400, "malformed_json", "The request body is not valid JSON."))?;
        let Value::Object(mut map) = value else {
            return Err(Problem::validation(vec![FieldError::new("", "must be an event object or {\"batch\": [...]}")]));
        };
        if map.contains_key("batch") && map.contains_key("event") {
            return Err(Problem::validation(vec![FieldError::new(
                "/event",
                "must not be sent beside /batch: send one event, or {\"batch\": [...]}",
            )]));
        }
        match map.remove("batch") {
            None => Ok(Body::Single(Incoming::parse(map))),
            Some(Value::Array(items)) if items.is_empty() => {
                Err(Problem::validation(vec![FieldError::new("/batch", "must hold at least one event")]))
            }
            Some(Value::Array(items)) if items.len() > MAX_BATCH => Err(Problem::validation(vec![FieldError::new(
                "/batch",
                format!("must hold at most {MAX_BATCH} events; got {}", items.len()),
            )])),
            Some(Value::Array(items)) => Ok(Body::Batch(
                items
                    .into_iter()
                    .map(|item| match item {
                        Value::Object(m) => Incoming::parse(m),
                        _ => Err(vec![FieldError::new("", "must be an event object")]),
                    })
                    .collect(),
            )),
            Some(_) => Err(Problem::validation(vec![FieldError::new("/batch", "must be an array of events")])),
        }
    }
}

impl Incoming {
    /// Unknown fields are ignored: SDKs add their own (`type`, `userId`, …).
    pub fn parse(mut map: Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, msg: &str| errors.push(FieldError::new(field, msg));

        let event = match map.remove("event") {
            Some(Value::String(s)) => EventName::parse(s).map_err(|m| bad("/event", m)).ok(),
            None | Some(Value::Null) => {
                bad("/event", "is required");
                None
            }
            Some(_) => {
                bad("/event", "must be a string");
                None
            }
        };
        let properties = match map.remove("properties") {
            None | Some(Value::Null) => Some(Value::Object(Map::new())),
            Some(v @ Value::Object(_)) if has_nul(&v) => {
                bad("/properties", "must not contain the NUL character (\\u0000)");
                None
            }
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => {
                bad("/properties", "must be an object");
                None
            }
        };
        let timestamp = match map.remove("timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) if storable_time(t.with_timezone(&Utc)) => Some(t.with_timezone(&Utc)),
                Ok(_) => {
                    bad("/timestamp", TIME_RANGE);
                    None
                }
                Err(_) => {
                    bad("/timestamp", "must be an RFC 3339 time, such as 2026-11-27T08:00:00Z");
                    None
                }
            },
            Some(_) => {
                bad("/timestamp", "must be an RFC 3339 time string");
                None
            }
        };
        let message_id = match map.remove("message_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() || s.chars().count() > 128 => {
                bad("/message_id", "must be 1 to 128 characters");
                None
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                bad("/message_id", "must not contain control characters");
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                bad("/message_id", "must be a string");
                None
            }
        };
        let context = match map.remove("context") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) if has_nul(&v) => {
                bad("/context", "must not contain the NUL character (\\u0000)");
                None
            }
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => {
                bad("/context", "must be an object");
                None
            }
        };
        match (event, properties) {
            (Some(event), Some(properties)) if errors.is_empty() => Ok(Self { event, properties, timestamp, message_id, context }),
            _ => Err(errors),
        }
    }
}

/// What a time outside [`storable_time`] is told.
pub(crate) const TIME_RANGE: &str = "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z";

/// Whether PostgreSQL stores `t` as it is written in RFC 3339: years 1 to
/// 9999 in UTC. RFC 3339 also parses year 0, which PostgreSQL refuses ("date/
/// time field value out of range"), and an offset can carry a time in year
/// 1 or 9999 across into year 0 or 10000 once it is moved to UTC.
pub(crate) fn storable_time(t: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&t.year())
}

/// PostgreSQL's `jsonb` cannot hold U+0000, so it is refused at the edge
/// rather than failing a whole batch at storage.
fn has_nul(v: &Value) -> bool {
    nul_pointer(v).is_some()
}

/// Where in `v` the first U+0000 is, as a JSON pointer (`""` for `v`
/// itself, `/a/0` for a string inside it, the object's own pointer for a
/// key holding one), or `None`: PostgreSQL's `jsonb` and `text` refuse it.
pub fn nul_pointer(v: &Value) -> Option<String> {
    fn escape(key: &str) -> String {
        key.replace('~', "~0").replace('/', "~1")
    }
    match v {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_pointer(v).map(|p| format!("/{i}{p}"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(String::new());
            }
            nul_pointer(v).map(|p| format!("/{}{p}", escape(k)))
        }),
        _ => None,
    }
}

/// RFC 3339 in UTC with microseconds: PostgreSQL's precision, so a time read
/// back compares equal to the one written.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value) -> Result<Incoming, Vec<FieldError>> {
        Incoming::parse(v.as_object().unwrap().clone())
    }

    fn pointers(r: Result<Incoming, Vec<FieldError>>) -> Vec<String> {
        r.err().unwrap().into_iter().map(|e| e.pointer).collect()
    }

    #[test]
    fn properties_default_to_an_empty_object() {
        let e = one(json!({"event": "signup"})).unwrap();
        assert_eq!(e.properties, json!({}));
        assert_eq!(e.event.as_str(), "signup");
    }

    #[test]
    fn each_malformed_field_is_named() {
        assert_eq!(pointers(one(json!({"properties": []}))), ["/event", "/properties"]);
        assert_eq!(pointers(one(json!({"event": "a", "timestamp": "yesterday"}))), ["/timestamp"]);
        assert_eq!(pointers(one(json!({"event": "a", "message_id": "x".repeat(129)}))), ["/message_id"]);
        assert_eq!(pointers(one(json!({"event": "a\nb"}))), ["/event"]);
        assert_eq!(pointers(one(json!({"event": "a", "properties": {"k": "a\u{0}b"}}))), ["/properties"]);
    }

    #[test]
    fn only_times_postgresql_stores_are_accepted() {
        for bad in ["0000-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"] {
            assert_eq!(pointers(one(json!({"event": "a", "timestamp": bad}))), ["/timestamp"], "{bad}");
        }
        for good in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2026-12-01T10:00:00+14:00"] {
            assert!(one(json!({"event": "a", "timestamp": good})).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_nul_is_located_by_its_pointer() {
        assert_eq!(nul_pointer(&json!({"a": [1, {"b/c": "x\u{0}"}]})).as_deref(), Some("/a/1/b~1c"));
        assert_eq!(nul_pointer(&json!({"k\u{0}": 1})).as_deref(), Some(""));
        assert_eq!(nul_pointer(&json!({"a": "fine"})), None);
    }

    #[test]
    fn names_count_characters_not_bytes() {
        assert!(EventName::parse("é".repeat(128)).is_ok());
        assert!(EventName::parse("é".repeat(129)).is_err());
    }

    #[test]
    fn batches_hold_one_to_500_events() {
        let batch = |n: usize| json!({"batch": vec![json!({"event": "a"}); n]}).to_string();
        assert!(matches!(Body::parse(batch(500).as_bytes()), Ok(Body::Batch(b)) if b.len() == 500));
        assert_eq!(Body::parse(batch(501).as_bytes()).err().unwrap().status, 422);
        assert_eq!(Body::parse(batch(0).as_bytes()).err().unwrap().status, 422);
        assert_eq!(Body::parse(b"{").err().unwrap().status, 400);
        let both = json!({"event": "a", "batch": [{"event": "b"}]}).to_string();
        assert_eq!(Body::parse(both.as_bytes()).err().unwrap().errors[0].pointer, "/event");
    }
}
