//! `GET /api/logs`: an app's stored events, newest first, with filters and
//! keyset pagination. The cursor is the `(received_at, id)` of the last item
//! served, so pages stay stable while new events arrive: a new event sorts
//! before the first page and can never shift a later one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{EventName, TIME_RANGE, rfc3339, storable_time};
use crate::db::{Db, DbError, Param, Row};
use crate::problem::{FieldError, Problem};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// A parsed, validated `GET /api/logs` query.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    pub app: Uuid,
    pub status: Option<&'static str>,
    pub event: Option<EventName>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

impl LogQuery {
    /// Parses the query string; 422 naming each bad parameter. An `app` that
    /// is not a UUID is 404, like one that does not exist.
    pub fn parse(query: &str) -> Result<Self, Problem> {
        let mut errors = Vec::new();
        let (mut app, mut status, mut event, mut since, mut until, mut limit, mut after) = (None, None, None, None, None, DEFAULT_LIMIT, None);
        let mut app_raw = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let mut bad = |m: &str| errors.push(FieldError::new(&format!("/{k}"), m));
            match &*k {
                "app" => app_raw = Some(v.to_string()),
                "status" => match &*v {
                    "valid" => status = Some("valid"),
                    "invalid" => status = Some("invalid"),
                    "unplanned" => status = Some("unplanned"),
                    _ => bad("must be one of valid, invalid, unplanned"),
                },
                "event" => match EventName::parse(v.to_string()) {
                    Ok(e) => event = Some(e),
                    Err(m) => bad(m),
                },
                "since" | "until" => match DateTime::parse_from_rfc3339(&v).map(|t| t.with_timezone(&Utc)) {
                    Ok(t) if !storable_time(t) => bad(TIME_RANGE),
                    Ok(t) if &*k == "since" => since = Some(t),
                    Ok(t) => until = Some(t),
                    Err(_) => bad("must be an RFC 3339 time, such as 2026-11-27T08:00:00Z"),
                },
                "limit" => match v.parse::<i64>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                    _ => bad("must be an integer from 1 to 500"),
                },
                // An empty cursor is the first page, as an absent one.
                "cursor" if v.is_empty() => {}
                "cursor" => match decode_cursor(&v) {
                    Some(c) => after = Some(c),
                    None => bad("is not a cursor this API issued"),
                },
                _ => {}
            }
        }
        match app_raw {
            None => errors.insert(0, FieldError::new("/app", "is required")),
            Some(raw) => app = raw.parse().ok(),
        }
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let app = app.ok_or_else(Problem::not_found)?;
        Ok(Self { app, status, event, since, until, limit, after })
    }
}

pub fn encode_cursor(received_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", rfc3339(received_at)))
}

fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let (at, id) = text.split_once('|')?;
    let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    storable_time(at).then_some(())?;
    Some((at, id.parse().ok()?))
}

/// One page of events and the cursor of the next (`None` on the last page).
/// Events older than the app's retention are never shown, whether or not
/// their partition has been dropped yet.
pub async fn page(db: &impl Db, q: &LogQuery, retention_days: i64) -> Result<(Vec<Value>, Option<String>), DbError> {
    let text = |t: Option<DateTime<Utc>>| t.map_or(Param::Null, |t| Param::Text(rfc3339(t)));
    let rows = db
        .query(
            concat!(
                "SELECT id, event, status, errors::text, properties::text, context::text, ",
                crate::utc!("\"timestamp\""),
                ", ",
                crate::utc!("received_at"),
                ", rule_version, message_id \
             FROM log_entries \
             WHERE app_id = $1 \
               AND ($2::text IS NULL OR status = $2) \
               AND ($3::text IS NULL OR event = $3) \
               AND received_at >= greatest($4::text::timestamptz, now() - make_interval(days => $8::bigint::int)) \
               AND ($5::text IS NULL OR received_at < $5::text::timestamptz) \
               AND ($6::text IS NULL OR (received_at, id) < ($6::text::timestamptz, $7::uuid)) \
             ORDER BY received_at DESC, id DESC \
             LIMIT $9"
            ),
            &[
                q.app.into(),
                q.status.into(),
                q.event.as_ref().map(EventName::as_str).into(),
                text(q.since),
                text(q.until),
                text(q.after.map(|a| a.0)),
                q.after.map_or(Param::Null, |a| a.1.into()),
                Param::I64(retention_days),
                Param::I64(q.limit + 1),
            ],
        )
        .await?;
    let items = rows.iter().take(q.limit as usize).map(item).collect::<Result<Vec<_>, _>>()?;
    let next = if rows.len() as i64 > q.limit {
        let last = &rows[q.limit as usize - 1];
        Some(encode_cursor(last.timestamp(7)?, last.uuid(0)?))
    } else {
        None
    };
    Ok((items, next))
}

fn item(r: &Row) -> Result<Value, DbError> {
    Ok(json!({
        "id": r.uuid(0)?,
        "event": r.text(1)?,
        "status": r.text(2)?,
        "errors": r.json(3)?,
        "properties": r.json(4)?,
        "context": r.opt_json(5)?,
        "timestamp": r.opt_timestamp(6)?.map(rfc3339),
        "received_at": rfc3339(r.timestamp(7)?),
        "rule_version": r.opt_i64(8)?,
        "message_id": r.opt_text(9)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let (at, id) = (Utc::now(), Uuid::now_v7());
        let c = encode_cursor(at, id);
        let q = LogQuery::parse(&format!("app={}&cursor={c}", Uuid::nil())).unwrap();
        assert_eq!(q.after.unwrap().1, id);
        let p = LogQuery::parse(&format!("app={}&cursor=nope", Uuid::nil())).unwrap_err();
        assert_eq!(p.errors[0].pointer, "/cursor");
    }

    #[test]
    fn times_postgresql_cannot_hold_are_refused_not_sent() {
        let app = Uuid::nil();
        for (param, value) in [("since", "0000-01-01T00:00:00Z"), ("until", "0000-12-31T23:00:00+01:00")] {
            let p = LogQuery::parse(&format!("app={app}&{param}={value}")).unwrap_err();
            assert_eq!((p.status, p.errors[0].pointer.as_str()), (422, format!("/{param}").as_str()));
        }
        let forged = URL_SAFE_NO_PAD.encode(format!("0000-01-01T00:00:00Z|{}", Uuid::nil()));
        assert_eq!(LogQuery::parse(&format!("app={app}&cursor={forged}")).unwrap_err().errors[0].pointer, "/cursor");
        assert!(LogQuery::parse(&format!("app={app}&since=0001-01-01T00:00:00Z")).is_ok());
    }

    #[test]
    fn bad_parameters_are_named() {
        let p = LogQuery::parse("status=weird&limit=501&since=yesterday").unwrap_err();
        let pointers: Vec<_> = p.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/app", "/status", "/limit", "/since"]);
        assert_eq!(LogQuery::parse("app=not-a-uuid").unwrap_err().status, 404);
        assert_eq!(LogQuery::parse(&format!("app={}", Uuid::nil())).unwrap().limit, 50);
    }
}
