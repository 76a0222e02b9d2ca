//! Stored events: a judged event's row of `log_entries` as `COPY` text, and
//! every statement that writes such rows. The ingest script puts each
//! request's rows on the ingest stream in this format; the worker's writer
//! hands them to PostgreSQL with these statements; nothing else spells
//! either, so the format and the table cannot drift apart.
//!
//! Writing is exactly once: [`copy`] is the fast path for rows never written
//! before; [`merge`] stages rows and inserts those not stored yet (keyed by
//! each row's id), skipping rows of apps deleted meanwhile, for rows that
//! may have been written before or that the fast path refused; a row even
//! [`merge`] refuses goes to `super::quarantine::keep` with PostgreSQL's
//! reason.

use serde_json::Value;
use uuid::Uuid;

use super::ingest::Judged;
use super::rfc3339;
use crate::db::{CopyIn, Db, DbError, Param};

/// The columns of a row, in [`line`]'s order.
pub const COLUMNS: &str =
    "id, app_id, event, status, errors, properties, context, \"timestamp\", received_at, rule_version, message_id";

/// One line of `COPY log_entries (COLUMNS) FROM STDIN`, text format.
pub fn line(e: &Judged, app: Uuid) -> String {
    let json = |v: &Value| serde_json::to_string(v).expect("JSON serializes");
    let fields = [
        Some(e.id.to_string()),
        Some(app.to_string()),
        Some(e.event.event.as_str().to_owned()),
        Some(e.status.as_str().to_owned()),
        Some(serde_json::to_string(&e.errors).expect("errors serialize")),
        Some(json(&e.event.properties)),
        e.event.context.as_ref().map(json),
        e.event.timestamp.map(rfc3339),
        Some(rfc3339(e.received_at)),
        e.rule_version.map(|v| v.to_string()),
        e.event.message_id.clone(),
    ];
    let mut line = String::with_capacity(256);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        match field {
            None => line.push_str("\\N"),
            Some(text) => escape(text, &mut line),
        }
    }
    line.push('\n');
    line
}

/// The app a line names (its second column), if it still parses.
pub fn app_of(line: &str) -> Option<Uuid> {
    line.split('\t').nth(1).and_then(|a| Uuid::parse_str(a).ok())
}

/// Escapes text for `COPY ... FROM STDIN` (text format).
fn escape(text: &str, out: &mut String) {
    if !text.bytes().any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t')) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

/// Readies a writer's connection: its staging table and merge statement,
/// which live as long as the session. Run once per connection.
pub async fn prepare(db: &impl CopyIn) -> Result<(), DbError> {
    db.batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS log_staging (LIKE log_entries) ON COMMIT DELETE ROWS; \
         PREPARE lvd_merge AS INSERT INTO log_entries ({COLUMNS}) \
           SELECT {COLUMNS} FROM log_staging s WHERE EXISTS (SELECT 1 FROM apps a WHERE a.id = s.app_id) \
           ON CONFLICT DO NOTHING"
    ))
    .await
}

/// The fast path: lines straight into `log_entries` with one `COPY`.
/// Refused whole if any row is (a duplicate id, an app deleted meanwhile).
pub async fn copy(db: &impl CopyIn, lines: &[&str]) -> Result<u64, DbError> {
    db.copy_in(&format!("COPY log_entries ({COLUMNS}) FROM STDIN"), lines).await
}

/// The safe path, in one transaction: stage the lines, then insert those
/// whose id is not stored yet and whose app still exists. Returns the rows
/// inserted. Needs a connection [`prepare`]d.
pub async fn merge(db: &impl CopyIn, lines: &[&str]) -> Result<u64, DbError> {
    crate::db::transaction(db, async {
        db.copy_in(&format!("COPY log_staging ({COLUMNS}) FROM STDIN"), lines).await?;
        db.execute("EXECUTE lvd_merge", &[]).await
    })
    .await
}

/// Days of `log_entries` partitions kept ready ahead of today.
pub const PARTITION_DAYS_AHEAD: i32 = 7;
/// The longest retention an app may have, plus a day of slack: partitions
/// older than this are dropped (retention drops partitions, not rows).
pub const PARTITION_KEEP_DAYS: i32 = 366;

/// Creates the partitions of the days ahead and drops those past the
/// longest retention; returns how many of each. Both are idempotent SQL
/// functions (migrations/V5), safe to run from every worker at once.
pub async fn maintain_partitions(db: &impl Db) -> Result<(i64, i64), DbError> {
    let created = db.query("SELECT lvd_ensure_log_partitions($1)", &[Param::I32(PARTITION_DAYS_AHEAD)]).await?;
    let dropped = db.query("SELECT lvd_drop_log_partitions($1)", &[Param::I32(PARTITION_KEEP_DAYS)]).await?;
    let count = |rows: Vec<crate::db::Row>| rows.first().map_or(Ok(0), |r| r.i64(0));
    Ok((count(created)?, count(dropped)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::ingest::sample as judged;
    use serde_json::json;

    #[test]
    fn copy_lines_escape_what_copy_treats_specially() {
        let line = line(&judged(json!({"note": "a\tb\nc"})), Uuid::nil());
        let cols: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(cols.len(), 11, "{line}");
        assert_eq!(cols[2], "sign\\\\up");
        // JSON already escapes the tab and newline; COPY doubles the backslash.
        assert_eq!(cols[5], r#"{"note":"a\\tb\\nc"}"#);
        assert_eq!((cols[6], cols[7], cols[9]), ("\\N", "\\N", "\\N"));
        assert_eq!(cols[10], "m\u{e9}");
    }

    #[test]
    fn a_line_names_its_app() {
        let app = Uuid::now_v7();
        assert_eq!(app_of(&line(&judged(json!({})), app)), Some(app));
        assert_eq!(app_of("garbage"), None);
    }
}
