//! A report of one app's events over a range (native only: the worker makes
//! them): totals and per-event counts by status, the top errors, the rules
//! in force at the range's end, and the events over time — read from
//! `log_entries` in one snapshot, then written as JSON for programs, CSV for
//! spreadsheets, or one self-contained HTML page for people (inline styles
//! and an inline SVG chart, no external asset, readable printed).

use chrono::{DateTime, Duration, DurationRound, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::cells;
use super::produce::Claimed;
use super::Spec;
use crate::db::postgres::PgDb;
use crate::db::{CopyIn, Db, DbError, Param};
use crate::logs::rfc3339;
use crate::logs::stats::Counts;

/// Events listed by name at most (the busiest); the totals count them all.
pub const MAX_EVENTS: usize = 1000;
/// Errors listed at most, commonest first.
pub const TOP_ERRORS: usize = 20;
/// Ranges up to this long are charted by the hour, longer ones by the day.
const HOURLY_UP_TO: i64 = 72;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub event: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorRow {
    pub event: String,
    pub pointer: String,
    pub keyword: String,
    /// One of the messages it gave.
    pub message: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRow {
    pub event: String,
    pub version: i64,
    pub set_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub start: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// What a report says.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub app_id: Uuid,
    pub app_name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    /// Where the data starts: `from`, or the app's retention if that is later.
    pub retained_from: DateTime<Utc>,
    pub totals: Counts,
    pub events: usize,
    pub by_event: Vec<EventRow>,
    pub top_errors: Vec<ErrorRow>,
    pub rules: Vec<RuleRow>,
    /// `hour` or `day`.
    pub bucket: &'static str,
    pub series: Vec<Point>,
}

const RANGE: &str = "app_id = $1 AND received_at >= $2::text::timestamptz AND received_at < $3::text::timestamptz";

/// Reads the report's figures on `db` in one read-only snapshot.
pub async fn gather(db: &PgDb, job: &Claimed, spec: &Spec) -> Result<Report, DbError> {
    db.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let report = read(db, job, spec).await;
    let _ = db.batch("COMMIT").await;
    report
}

async fn read(db: &PgDb, job: &Claimed, spec: &Spec) -> Result<Report, DbError> {
    let rows = db.query("SELECT (now() - make_interval(days => $1::bigint::int)) AT TIME ZONE 'UTC'", &[Param::I64(job.retention_days)]).await?;
    let generated_at = Utc::now();
    let retained_from = rows.first().map(|r| r.timestamp(0)).transpose()?.unwrap_or(spec.from).max(spec.from);
    let range = [job.app_id.into(), rfc3339(retained_from).into(), rfc3339(spec.to).into()];

    let mut totals = Counts::default();
    let mut by_event = Vec::new();
    let rows = db
        .query(&format!("SELECT event, status, count(*) FROM log_entries WHERE {RANGE} GROUP BY event, status"), &range)
        .await?;
    let mut per_event: std::collections::BTreeMap<String, Counts> = Default::default();
    for r in &rows {
        let (event, status, n) = (r.text(0)?, r.text(1)?, r.i64(2)?.max(0) as u64);
        totals.add(&status, n);
        per_event.entry(event).or_default().add(&status, n);
    }
    let events = per_event.len();
    by_event.extend(per_event.into_iter().map(|(event, counts)| EventRow { event, counts }));
    by_event.sort_by(|a, b| b.counts.total().cmp(&a.counts.total()).then_with(|| a.event.cmp(&b.event)));
    by_event.truncate(MAX_EVENTS);

    let rows = db
        .query(
            &format!(
                "SELECT event, coalesce(e->>'pointer', ''), coalesce(e->>'keyword', ''), min(e->>'message'), count(*) \
                 FROM log_entries, jsonb_array_elements(errors) AS e \
                 WHERE {RANGE} AND status = 'invalid' \
                 GROUP BY 1, 2, 3 ORDER BY 5 DESC, 1, 2, 3 LIMIT {TOP_ERRORS}"
            ),
            &range,
        )
        .await?;
    let top_errors = rows
        .iter()
        .map(|r| {
            Ok(ErrorRow { event: r.text(0)?, pointer: r.text(1)?, keyword: r.text(2)?, message: r.opt_text(3)?.unwrap_or_default(), count: r.i64(4)?.max(0) as u64 })
        })
        .collect::<Result<_, DbError>>()?;

    // The newest version of each event's rule set before the range ends,
    // unless the rule was deleted by then.
    let rows = db
        .query(
            concat!(
                "SELECT DISTINCT ON (event) event, version, ",
                crate::utc!("created_at"),
                ", deleted_at IS NOT NULL AND deleted_at < $2::text::timestamptz \
                 FROM validation_rules WHERE app_id = $1 AND created_at < $2::text::timestamptz \
                 ORDER BY event, version DESC"
            ),
            &[job.app_id.into(), rfc3339(spec.to).into()],
        )
        .await?;
    let mut rules = Vec::new();
    for r in &rows {
        if !r.bool(3)? {
            rules.push(RuleRow { event: r.text(0)?, version: r.i64(1)?, set_at: rfc3339(r.timestamp(2)?) });
        }
    }

    let hourly = (spec.to - retained_from) <= Duration::hours(HOURLY_UP_TO);
    let (bucket, step) = if hourly { ("hour", Duration::hours(1)) } else { ("day", Duration::days(1)) };
    let rows = db
        .query(
            &format!(
                "SELECT date_trunc('{bucket}', received_at AT TIME ZONE 'UTC'), status, count(*) \
                 FROM log_entries WHERE {RANGE} GROUP BY 1, 2"
            ),
            &range,
        )
        .await?;
    let start = retained_from.duration_trunc(step).unwrap_or(retained_from);
    let end = spec.to.min(generated_at.max(retained_from));
    let mut series = Vec::new();
    let mut at = start;
    while at < end && series.len() < 5000 {
        series.push((at, Counts::default()));
        at += step;
    }
    for r in &rows {
        let (t, status, n) = (r.timestamp(0)?, r.text(1)?, r.i64(2)?.max(0) as u64);
        if let Some((_, c)) = series.iter_mut().find(|(s, _)| *s == t) {
            c.add(&status, n);
        }
    }
    let series = series.into_iter().map(|(t, counts)| Point { start: rfc3339(t), counts }).collect();

    Ok(Report {
        app_id: job.app_id,
        app_name: job.app_name.clone(),
        from: spec.from,
        to: spec.to,
        generated_at,
        retained_from,
        totals,
        events,
        by_event,
        top_errors,
        rules,
        bucket,
        series,
    })
}

/// The report for programs.
pub fn json(r: &Report) -> Vec<u8> {
    let body = json!({
        "app": { "id": r.app_id, "name": r.app_name },
        "from": rfc3339(r.from),
        "to": rfc3339(r.to),
        "retained_from": rfc3339(r.retained_from),
        "generated_at": rfc3339(r.generated_at),
        "totals": { "valid": r.totals.valid, "invalid": r.totals.invalid, "unplanned": r.totals.unplanned, "total": r.totals.total() },
        "events": r.events,
        "by_event": r.by_event,
        "top_errors": r.top_errors,
        "rules": r.rules,
        "series": { "bucket": r.bucket, "points": r.series },
    });
    serde_json::to_vec_pretty(&body).expect("a report serializes")
}

/// The CSV report's columns: one table, a `section` per kind of row
/// (`totals`, `event`, `error`, `rule`), so a spreadsheet can filter it.
pub const CSV_COLUMNS: [&str; 10] = ["section", "event", "status", "count", "pointer", "keyword", "message", "version", "set_at", "from_to"];

/// The report for spreadsheets.
pub fn csv(r: &Report) -> Vec<u8> {
    let mut w = cells::writer(Vec::new());
    let mut row = |cols: [&str; 10]| w.write_record(cols.map(|c| cells::neutralise(c).into_owned())).expect("writing to memory");
    row(CSV_COLUMNS);
    let range = format!("{}/{}", rfc3339(r.from), rfc3339(r.to));
    for (status, n) in statuses(&r.totals) {
        row(["totals", "", status, &n.to_string(), "", "", "", "", "", &range]);
    }
    for e in &r.by_event {
        for (status, n) in statuses(&e.counts) {
            row(["event", &e.event, status, &n.to_string(), "", "", "", "", "", ""]);
        }
    }
    for e in &r.top_errors {
        row(["error", &e.event, "invalid", &e.count.to_string(), &e.pointer, &e.keyword, &e.message, "", "", ""]);
    }
    for rule in &r.rules {
        row(["rule", &rule.event, "", "", "", "", "", &rule.version.to_string(), &rule.set_at, ""]);
    }
    drop(row);
    w.into_inner().expect("writing to memory")
}

fn statuses(c: &Counts) -> [(&'static str, u64); 3] {
    [("valid", c.valid), ("invalid", c.invalid), ("unplanned", c.unplanned)]
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;margin:2rem auto;max-width:64rem;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:2rem 0 .5rem;border-bottom:1px solid #d0d7de;padding-bottom:.25rem}
.muted{color:#57606a}.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.4rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eaeef2;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}code{font:13px ui-monospace,monospace;word-break:break-all}
.valid{color:#1a7f37}.invalid{color:#cf222e}.unplanned{color:#9a6700}svg{width:100%;height:auto}
.legend span{margin-right:1rem}.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:-.05em}
@media print{body{margin:0;max-width:none;font-size:11pt}h2,table,svg{break-inside:avoid}.card{border-color:#999}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
";

const COLORS: [(&str, &str); 3] = [("valid", "#2da44e"), ("invalid", "#cf222e"), ("unplanned", "#bf8700")];

/// The report for people: one HTML file with everything inline.
pub fn html(r: &Report) -> Vec<u8> {
    let t = &r.totals;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Report: " (r.app_name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Tracking report: " (r.app_name) }
                p.muted {
                    "Events received from " time { (rfc3339(r.from)) } " to " time { (rfc3339(r.to)) } " (UTC). Generated "
                    time { (rfc3339(r.generated_at)) } "."
                    @if r.retained_from > r.from { " Events before " (rfc3339(r.retained_from)) " are past the app's retention." }
                }
                div.cards {
                    div.card { "Events" b { (t.total()) } }
                    div.card.valid { "Valid" b { (t.valid) } }
                    div.card.invalid { "Invalid" b { (t.invalid) } }
                    div.card.unplanned { "Unplanned" b { (t.unplanned) } }
                }
                h2 { "Events over time (per " (r.bucket) ")" }
                (chart(r))
                h2 { "Top errors" }
                @if r.top_errors.is_empty() { p.muted { "No invalid events in this range." } } @else {
                    table {
                        thead { tr { th { "Event" } th { "Where" } th { "Rule" } th { "Message" } th.n { "Count" } } }
                        tbody { @for e in &r.top_errors {
                            tr { td { (e.event) } td { code { (if e.pointer.is_empty() { "(the event)" } else { &e.pointer }) } } td { (e.keyword) } td { (e.message) } td.n { (e.count) } }
                        } }
                    }
                }
                h2 { "By event" }
                @if r.by_event.is_empty() { p.muted { "No events in this range." } } @else {
                    table {
                        thead { tr { th { "Event" } th.n { "Valid" } th.n { "Invalid" } th.n { "Unplanned" } th.n { "Total" } } }
                        tbody { @for e in &r.by_event {
                            tr { td { (e.event) } td.n { (e.counts.valid) } td.n { (e.counts.invalid) } td.n { (e.counts.unplanned) } td.n { (e.counts.total()) } }
                        } }
                    }
                    @if r.events > r.by_event.len() { p.muted { "The " (r.by_event.len()) " busiest of " (r.events) " events." } }
                }
                h2 { "Rules in force" }
                @if r.rules.is_empty() { p.muted { "No rules: every event was unplanned." } } @else {
                    table {
                        thead { tr { th { "Event" } th.n { "Version" } th { "Set at" } } }
                        tbody { @for rule in &r.rules { tr { td { (rule.event) } td.n { (rule.version) } td { (rule.set_at) } } } }
                    }
                }
            }
        }
    };
    page.into_string().into_bytes()
}

/// A stacked bar chart of the series, as inline SVG that scales to its width.
fn chart(r: &Report) -> Markup {
    let (w, h, pad) = (960.0_f64, 220.0_f64, 24.0_f64);
    let max = r.series.iter().map(|p| p.counts.total()).max().unwrap_or(0).max(1) as f64;
    let n = r.series.len().max(1) as f64;
    let slot = (w - 2.0 * pad) / n;
    let bar = (slot * 0.8).max(0.5);
    let scale = (h - 2.0 * pad) / max;
    let mut bars = Vec::new();
    for (i, p) in r.series.iter().enumerate() {
        let x = pad + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = h - pad;
        for (name, color) in COLORS {
            let v = match name {
                "valid" => p.counts.valid,
                "invalid" => p.counts.invalid,
                _ => p.counts.unplanned,
            };
            if v > 0 {
                let height = v as f64 * scale;
                y -= height;
                bars.push((format!("{x:.2}"), format!("{y:.2}"), format!("{height:.2}"), color, format!("{}: {v} {name}", p.start)));
            }
        }
    }
    html! {
        svg viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(format!("Events per {} over the range", r.bucket)) {
            line x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) stroke="#8c959f" {}
            text x=(pad) y=(pad - 8.0) font-size="12" fill="#57606a" { (max as u64) " per " (r.bucket) }
            @for (x, y, height, color, label) in &bars {
                rect x=(x) y=(y) width=(format!("{bar:.2}")) height=(height) fill=(color) { title { (label) } }
            }
            @if let (Some(first), Some(last)) = (r.series.first(), r.series.last()) {
                text x=(pad) y=(h - 6.0) font-size="12" fill="#57606a" { (first.start) }
                text x=(w - pad) y=(h - 6.0) font-size="12" fill="#57606a" text-anchor="end" { (last.start) }
            }
        }
        p.legend { @for (name, color) in COLORS { span { i style=(format!("background:{color}")) {} (name) } } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        Report {
            app_id: Uuid::nil(),
            app_name: "<script>alert(1)</script>".into(),
            from: t("2026-11-01T00:00:00Z"),
            to: t("2026-11-01T03:00:00Z"),
            generated_at: t("2026-11-02T00:00:00Z"),
            retained_from: t("2026-11-01T00:00:00Z"),
            totals: Counts { valid: 3, invalid: 2, unplanned: 1 },
            events: 1,
            by_event: vec![EventRow { event: "=cmd|' /C calc'!A0".into(), counts: Counts { valid: 3, invalid: 2, unplanned: 1 } }],
            top_errors: vec![ErrorRow { event: "signup".into(), pointer: "/plan".into(), keyword: "enum".into(), message: "x".into(), count: 2 }],
            rules: vec![RuleRow { event: "signup".into(), version: 2, set_at: "2026-10-01T00:00:00.000000Z".into() }],
            bucket: "hour",
            series: vec![
                Point { start: "2026-11-01T00:00:00.000000Z".into(), counts: Counts { valid: 3, invalid: 2, unplanned: 1 } },
                Point { start: "2026-11-01T01:00:00.000000Z".into(), counts: Counts::default() },
            ],
        }
    }

    #[test]
    fn the_html_report_is_self_contained_and_escapes_what_users_wrote() {
        let page = String::from_utf8(html(&sample())).unwrap();
        assert!(!page.contains("<script>"), "a user's text must never become markup");
        assert!(page.contains("&lt;script&gt;"));
        for external in ["src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "no external asset ({external})");
        }
        assert_eq!(page.matches("<rect").count(), 3, "one bar segment per non-zero status");
    }

    #[test]
    fn the_csv_report_neutralises_formulas() {
        let text = String::from_utf8(csv(&sample())).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3 + 3 + 1 + 1);
        assert_eq!(&rows[3][1], "'=cmd|' /C calc'!A0");
        assert_eq!((&rows[6][0], &rows[6][4], &rows[6][3]), ("error", "/plan", "2"));
    }
}
