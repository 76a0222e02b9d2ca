//! `GET /api/apps/{app}/quarantine`: rows of the app's accepted events that
//! PostgreSQL refused even one by one, kept by the worker with the reason
//! (`quarantined_rows`), newest first, with keyset pagination on
//! `(quarantined_at, entry, line)`. The edge refuses every value it knows
//! PostgreSQL would, so this list is normally empty; it exists so that a
//! 202 never turns into silence.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::rfc3339;
use crate::db::{Db, DbError, Param, Row};
use crate::problem::Problem;

/// A page request: how many, after which row.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub limit: i64,
    pub after: Option<(DateTime<Utc>, String, i64)>,
}

impl Page {
    /// `limit` (1–500, default 50) and `cursor`; 422 naming each bad one.
    pub fn parse(query: &str) -> Result<Self, Problem> {
        let (limit, after) = crate::input::page(query, decode_cursor)?;
        Ok(Self { limit, after })
    }
}

fn encode_cursor(at: DateTime<Utc>, entry: &str, line: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{line}|{entry}", rfc3339(at)))
}

fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, String, i64)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let mut parts = text.splitn(3, '|');
    let at = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
    let line = parts.next()?.parse().ok()?;
    Some((at, parts.next()?.to_owned(), line))
}

/// Keeps a line PostgreSQL refused, with its reason, as line `line` of
/// ingest entry `entry`; once only, however often the entry is settled. A
/// line of an app deleted meanwhile goes with its app, as its stored
/// neighbours would. Returns the rows kept (0 or 1).
pub async fn keep(db: &impl Db, entry: &str, line: usize, text: &str, reason: &str) -> Result<u64, DbError> {
    let app = super::rows::app_of(text).map_or(Param::Null, Param::Uuid);
    db.execute(
        "INSERT INTO quarantined_rows (entry_id, line, app_id, row_text, reason) \
         SELECT $1, $2, $3, $4, $5 WHERE $3::uuid IS NULL OR EXISTS (SELECT 1 FROM apps WHERE id = $3) \
         ON CONFLICT DO NOTHING",
        &[entry.into(), Param::I32(i32::try_from(line).unwrap_or(i32::MAX)), app, Param::Bytes(text.as_bytes().to_vec()), reason.into()],
    )
    .await
}

/// Rows quarantined, of every app (for `/health/ready`).
pub async fn count(db: &impl Db) -> Result<u64, DbError> {
    let rows = db.query("SELECT count(*) FROM quarantined_rows", &[]).await?;
    Ok(rows.first().map_or(Ok(0), |r| r.i64(0))?.max(0) as u64)
}

/// One page of the app's quarantined rows and the cursor of the next.
pub async fn page(db: &impl Db, app: Uuid, page: &Page) -> Result<(Vec<Value>, Option<String>), DbError> {
    let rows = db
        .query(
            concat!(
                "SELECT entry_id, line, reason, row_text, ",
                crate::utc!("quarantined_at"),
                " FROM quarantined_rows \
                 WHERE app_id = $1 \
                   AND ($2::text IS NULL OR (quarantined_at, entry_id, line) < ($2::text::timestamptz, $3, $4)) \
                 ORDER BY quarantined_at DESC, entry_id DESC, line DESC \
                 LIMIT $5"
            ),
            &[
                app.into(),
                page.after.as_ref().map_or(Param::Null, |a| Param::Text(rfc3339(a.0))),
                page.after.as_ref().map_or(Param::Null, |a| Param::Text(a.1.clone())),
                page.after.as_ref().map_or(Param::Null, |a| Param::I32(a.2 as i32)),
                Param::I64(page.limit + 1),
            ],
        )
        .await?;
    let items = rows.iter().take(page.limit as usize).map(item).collect::<Result<Vec<_>, _>>()?;
    let next = if rows.len() as i64 > page.limit {
        let last = &rows[page.limit as usize - 1];
        Some(encode_cursor(last.timestamp(4)?, &last.text(0)?, last.i64(1)?))
    } else {
        None
    };
    Ok((items, next))
}

fn item(r: &Row) -> Result<Value, DbError> {
    Ok(json!({
        "entry": r.text(0)?,
        "line": r.i64(1)?,
        "reason": r.text(2)?,
        // The row as the worker tried to store it: one line of COPY text.
        "row": String::from_utf8_lossy(&r.bytes(3)?),
        "quarantined_at": rfc3339(r.timestamp(4)?),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_parameters_are_named() {
        let at = Utc::now();
        let c = encode_cursor(at, "1-2", 3);
        let p = Page::parse(&format!("cursor={c}&limit=10")).unwrap();
        assert_eq!(p.limit, 10);
        assert_eq!(p.after.unwrap().1, "1-2");
        let e = Page::parse("limit=0&cursor=x").unwrap_err();
        let pointers: Vec<_> = e.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/limit", "/cursor"]);
    }
}
