//! Every event that gets a 202 is one PostgreSQL stores: a property test
//! generates events across the edge's whole accepted space — timestamps from
//! year 1 to 9999 with any offset, Unicode from every plane (combining
//! marks, right-to-left text, astral characters), control characters and
//! NUL, integers and floats from the smallest to the largest, nesting, long
//! strings — sends them through the real ingest, lets the worker COPY them
//! into PostgreSQL, reads them back through `GET /api/logs`, and checks each
//! accepted one came back as sent (strings byte for byte; numbers as the
//! same numbers, which `jsonb` may write differently), and each refused one
//! named its field.

use lvd_tests::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Cases per run, sent in batches of [`BATCH`].
const CASES: usize = 600;
const BATCH: usize = 100;

/// Text from every corner of Unicode, control characters and NUL included.
fn text(max: usize) -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        8 => "[a-z]{1,8}",
        2 => any::<char>().prop_map(String::from),
        // Combining marks, right-to-left scripts, astral emoji, ZWJ, BOM.
        1 => Just("e\u{301}\u{302}".to_owned()),
        1 => Just("שלום עולם".to_owned()),
        1 => Just("مرحبا\u{200f}".to_owned()),
        1 => Just("👩\u{200d}💻🏳️\u{200d}🌈".to_owned()),
        1 => Just("\u{feff}\u{2028}\u{2029}".to_owned()),
        1 => Just("\\N\t\n\r\\".to_owned()),
        1 => prop::char::range('\u{10000}', '\u{10ffff}').prop_map(String::from),
    ];
    prop::collection::vec(pieces, 0..max).prop_map(|p| p.concat())
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::num::f64::NORMAL.prop_map(Value::from),
        prop::num::f64::SUBNORMAL.prop_map(Value::from),
        Just(json!(f64::MAX)),
        Just(json!(f64::MIN_POSITIVE)),
        Just(json!(-0.0)),
        Just(json!(0)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        8 => Just(Value::Null),
        8 => any::<bool>().prop_map(Value::from),
        24 => number(),
        24 => text(6).prop_map(Value::from),
        // Control characters, NUL among them (PostgreSQL's jsonb refuses it).
        1 => prop::char::range('\u{0}', '\u{1f}').prop_map(|c| Value::from(format!("a{c}b"))),
        4 => "[x]{200,2000}".prop_map(Value::from),
    ];
    leaf.prop_recursive(10, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((text(3), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::vec((text(3), json_value()), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

/// RFC 3339 times across PostgreSQL's range and beyond it (year 0, and
/// offsets that carry a time across year 1 or 9999), with 0–9 fraction digits.
fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => any_time(),
        1 => prop_oneof![
            Just("0000-06-01T00:00:00Z"),
            Just("0001-01-01T00:30:00+01:00"),
            Just("0001-01-01T00:00:00Z"),
            Just("9999-12-31T23:59:59.999999999Z"),
            Just("9999-12-31T23:30:00-01:00"),
        ]
        .prop_map(str::to_owned),
    ]
}

fn any_time() -> impl Strategy<Value = String> {
    (0u32..=9999, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60, 0u32..60, prop::option::of((1usize..=9, any::<u32>())), -1439i32..=1439)
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let frac = frac.map_or(String::new(), |(digits, v)| format!(".{:0digits$}", v % 10u32.pow(digits as u32)));
            let zone = match off {
                0 => "Z".to_owned(),
                o => format!("{}{:02}:{:02}", if o < 0 { '-' } else { '+' }, o.abs() / 60, o.abs() % 60),
            };
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}")
        })
}

/// One event the way a client could send it; `message_id` is set per case.
fn event() -> impl Strategy<Value = Value> {
    (text(12), prop::option::of(object()), prop::option::of(object()), prop::option::of(timestamp())).prop_map(
        |(name, properties, context, ts)| {
            let mut e = json!({ "event": name });
            if let Some(p) = properties {
                e["properties"] = p;
            }
            if let Some(c) = context {
                e["context"] = c;
            }
            if let Some(t) = ts {
                e["timestamp"] = t.into();
            }
            e
        },
    )
}

/// JSON equality as PostgreSQL's `jsonb` keeps it: strings and keys byte for
/// byte, numbers as numbers — `jsonb` stores them as `numeric`, so the same
/// number may come back written differently (`3.069224373587525e16` as
/// `30692243735875250`, `-0.0` as `0.0`), never as another number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(p), Some(q), _, _) => p == q,
            (_, _, Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        _ => a == b,
    }
}

/// The time as the API shows it: UTC with microseconds (PostgreSQL's
/// precision; the edge truncates finer digits).
fn shown(ts: &str) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(ts).unwrap().with_timezone(&chrono::Utc);
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test]
async fn every_event_that_gets_a_202_comes_back_from_postgresql_as_it_was_sent() {
    let app = spawn_app().await;
    let token = app.signed_in("storable@example.com").await;
    let (id, key) = app.create_app(&token, "Storable").await;
    let mut runner = TestRunner::new(Config { cases: CASES as u32, ..Config::default() });
    let strategy = event();

    let (mut sent, mut accepted, mut rejected) = (HashMap::new(), 0, 0);
    let mut refused_by: HashMap<String, usize> = HashMap::new();
    for b in 0..CASES / BATCH {
        let mut events = Vec::new();
        for i in 0..BATCH {
            let mut e = strategy.new_tree(&mut runner).unwrap().current();
            let mid = format!("case-{b}-{i}");
            e["message_id"] = mid.clone().into();
            events.push((mid, e));
        }
        let replies = send(&app, &key, &events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()).await;
        for ((mid, e), r) in events.into_iter().zip(&replies) {
            match r["status"].as_str().unwrap() {
                "rejected" => {
                    let pointer = r["errors"][0]["pointer"].as_str().unwrap_or_else(|| panic!("a rejection names its field: {r}"));
                    assert!(["/event", "/properties", "/context", "/timestamp"].contains(&pointer), "{pointer} for {e}");
                    *refused_by.entry(pointer.to_owned()).or_default() += 1;
                    rejected += 1;
                }
                _ => {
                    accepted += 1;
                    sent.insert(mid, e);
                }
            }
        }
    }
    assert!(accepted > CASES / 2 && rejected > 0, "the cases cover both sides of the edge: {accepted} accepted, refused {refused_by:?}");

    let stored = app.wait_stored(accepted as i64).await;
    assert_eq!(stored, accepted as i64, "every accepted event stored once, nothing quarantined");
    let mut back = HashMap::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/logs?app={id}&limit=500{cursor}");
        let page: Value = app.call(Method::GET, &path, &token, None).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            back.insert(item["message_id"].as_str().unwrap().to_owned(), item.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    for (mid, e) in &sent {
        let got = back.get(mid).unwrap_or_else(|| panic!("{mid} was accepted but is not stored"));
        assert_eq!(got["event"], e["event"], "{mid}");
        assert!(same(&got["properties"], e.get("properties").unwrap_or(&json!({}))), "{mid}: {} != {}", got["properties"], e["properties"]);
        assert!(same(&got["context"], e.get("context").unwrap_or(&Value::Null)), "{mid}: {} != {}", got["context"], e["context"]);
        let ts = e.get("timestamp").and_then(Value::as_str).map(shown);
        assert_eq!(got["timestamp"].as_str(), ts.as_deref(), "{mid}");
    }
    let (_, ready) = app.get_json("/health/ready").await;
    assert_eq!(ready["quarantined_rows"], 0, "{ready}");
    assert_eq!(ready["dead_letters"]["ingest"], 0, "{ready}");
    eprintln!("{CASES} generated events: {accepted} accepted and read back as sent, {rejected} refused with a pointer ({refused_by:?})");
}

/// Sends `events` as batches under the 1 MiB body limit; the reply of each
/// event, in order.
async fn send(app: &TestApp, key: &str, events: &[Value]) -> Vec<Value> {
    let body = json!({ "batch": events });
    if events.len() > 1 && body.to_string().len() > 1_000_000 {
        let (a, b) = events.split_at(events.len() / 2);
        let mut replies = Box::pin(send(app, key, a)).await;
        replies.extend(Box::pin(send(app, key, b)).await);
        return replies;
    }
    let resp = app.ingest(key, &body).await;
    assert_eq!(resp.status(), 202, "a batch whose events are all objects is accepted");
    let reply: Value = resp.json().await.unwrap();
    reply["results"].as_array().unwrap().clone()
}
