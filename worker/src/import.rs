//! `lvd-worker import-sqlite FILE`: brings the old Flask application's
//! SQLite database into ours — users, apps, rules, then events — as
//! `lvd::legacy` maps each row, writing through `lvd::legacy::store`.
//!
//! The file is opened read-only (the old application may still be running;
//! a later run picks up what it wrote since). Every write is remembered with
//! the rows it writes (`legacy_ids`, and per app the last legacy event
//! stored), so a second run changes nothing and a run killed anywhere is
//! finished by the next one, without duplicates. Events stream from a
//! reading thread to one writer, `--batch` rows per transaction (one
//! writer: the marks must advance in legacy order). `--dry-run` reads and
//! checks everything against the database as it is and writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use uuid::Uuid;

use lvd::apps::{self, RetentionDays};
use lvd::auth::email::Email;
use lvd::auth::password;
use lvd::db::postgres::PgDb;
use lvd::legacy::{self, LegacyEvent, LegacyRule, Report, Rules, Skip, store};
use lvd::logs::EventName;
use lvd::rules::Schema;

pub struct Options {
    pub file: PathBuf,
    pub database_url: String,
    pub dry_run: bool,
    /// Events per transaction.
    pub batch: usize,
    /// A test hook: abort the process after this many event batches.
    pub abort_after_batches: Option<u64>,
}

/// Imports (or, dry, checks) the file; the report says what was done.
pub async fn run(opts: &Options) -> Result<Report> {
    let file = opts.file.clone();
    let legacy = tokio::task::spawn_blocking(move || read_small(&file)).await??;
    if !opts.dry_run {
        crate::migrate::run(&opts.database_url).await?;
    }
    let db = PgDb::connect(&opts.database_url).await.context("failed to connect to PostgreSQL")?;
    if !store::schema_ready(&db).await? {
        bail!("the database has no import tables yet: run `lvd-worker migrate` first (a dry run writes nothing, the schema neither)");
    }
    let now = Utc::now();
    let mut report = Report { dry_run: opts.dry_run, codes_ignored: legacy.codes, ..Report::default() };
    let users = import_users(&db, &legacy, opts.dry_run, &mut report).await?;
    let apps = import_apps(&db, &legacy, &users, opts.dry_run, now, &mut report).await?;
    let rules = import_rules(&db, &legacy, &apps, opts.dry_run, &mut report).await?;
    import_events(&db, opts, &legacy.with_events, apps, rules, now, &mut report).await?;
    Ok(report)
}

/// The legacy users, apps and rules (small), and what the events need known
/// up front.
struct Legacy {
    users: Vec<LegacyUser>,
    apps: Vec<LegacyApp>,
    rules: Vec<(i64, LegacyRule)>,
    /// The oldest event of each app (whose time reads).
    oldest: HashMap<i64, DateTime<Utc>>,
    /// The apps that have events.
    with_events: HashSet<i64>,
    codes: u64,
}

struct LegacyUser {
    id: i64,
    email: String,
    password_hash: String,
    active: bool,
    created_at: DateTime<Utc>,
}

struct LegacyApp {
    id: i64,
    user_id: i64,
    name: String,
    api_key: String,
    created_at: DateTime<Utc>,
}

fn open(file: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("failed to open {} read-only", file.display()))?;
    for table in ["users", "apps", "validation_rules", "log_entries"] {
        let found: bool = conn.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| r.get(0))?;
        if !found {
            bail!("{} has no `{table}` table: not the old application's database", file.display());
        }
    }
    Ok(conn)
}

/// A legacy `DATETIME` cell (text, or a number of Unix seconds).
fn time(row: &Row, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(legacy::parse_time),
        ValueRef::Integer(n) => legacy::from_unix(n),
        ValueRef::Real(f) => legacy::from_unix(f as i64),
        _ => None,
    })
}

/// A cell as text, whatever SQLite stored (its dynamic typing lets a
/// `VARCHAR` hold a number).
fn text(row: &Row, i: usize) -> rusqlite::Result<String> {
    Ok(match row.get_ref(i)? {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Null => String::new(),
    })
}

fn flag(row: &Row, i: usize) -> rusqlite::Result<Option<bool>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(n) => Some(n != 0),
        ValueRef::Real(f) => Some(f != 0.0),
        ValueRef::Text(t) => Some(!matches!(t, b"0" | b"false" | b"f" | b"")),
        _ => None,
    })
}

fn read_small(file: &Path) -> Result<Legacy> {
    let conn = open(file)?;
    // A row without a readable time keeps the epoch's, and says so through
    // its age: rare enough not to need its own reason.
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let users = conn
        .prepare("SELECT id, email, password_hash, is_active, created_at FROM users ORDER BY id")?
        .query_map([], |r| {
            Ok(LegacyUser {
                id: r.get(0)?,
                email: text(r, 1)?,
                password_hash: text(r, 2)?,
                active: flag(r, 3)?.unwrap_or(false),
                created_at: time(r, 4)?.unwrap_or(epoch),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let apps = conn
        .prepare("SELECT id, user_id, name, api_key, created_at FROM apps ORDER BY id")?
        .query_map([], |r| {
            Ok(LegacyApp { id: r.get(0)?, user_id: r.get(1)?, name: text(r, 2)?, api_key: text(r, 3)?, created_at: time(r, 4)?.unwrap_or(epoch) })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let rules = conn
        .prepare(
            "SELECT id, app_id, event_name, schema_json, is_active, created_at FROM validation_rules ORDER BY app_id, event_name, created_at, id",
        )?
        .query_map([], |r| {
            let rule = LegacyRule {
                id: r.get(0)?,
                event: text(r, 2)?,
                schema_json: text(r, 3)?,
                active: flag(r, 4)?.unwrap_or(true),
                created_at: time(r, 5)?.unwrap_or(epoch),
            };
            Ok((r.get::<_, i64>(1)?, rule))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let firsts: Vec<(i64, Option<DateTime<Utc>>)> = conn
        .prepare("SELECT app_id, min(created_at) FROM log_entries GROUP BY app_id")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, time(r, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let with_events = firsts.iter().map(|(app, _)| *app).collect();
    let oldest = firsts.into_iter().filter_map(|(app, t)| t.map(|t| (app, t))).collect();
    let has_codes: bool = conn.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'otps'", [], |r| r.get(0))?;
    let codes = if has_codes { conn.query_row("SELECT count(*) FROM otps", [], |r| r.get::<_, i64>(0))? as u64 } else { 0 };
    Ok(Legacy { users, apps, rules, oldest, with_events, codes })
}

/// Stands for an id this run would have written (dry).
const WOULD_BE: Uuid = Uuid::max();

/// Legacy user → ours, for those here (or, dry, that would be).
async fn import_users(db: &PgDb, legacy: &Legacy, dry: bool, report: &mut Report) -> Result<HashMap<i64, Uuid>> {
    let mapped = store::mapped(db, "user").await?;
    let mut ours: HashMap<i64, Uuid> = mapped.iter().map(|(k, (id, _))| (*k, *id)).collect();
    // Legacy users by normalised address: the one imported is an active
    // one before an inactive one, then the first.
    let mut by_email: BTreeMap<String, Vec<&LegacyUser>> = BTreeMap::new();
    for u in &legacy.users {
        report.users.read += 1;
        match Email::parse(&u.email) {
            Ok(email) => by_email.entry(email.as_str().to_owned()).or_default().push(u),
            Err(why) => report.skip("users", Skip::new("address", format!("user {}: {:?} {why}", u.id, u.email))),
        }
    }
    for (address, mut users) in by_email {
        users.sort_by_key(|u| (!u.active, u.id));
        let keeper = users[0];
        for other in &users[1..] {
            let apps = legacy.apps.iter().filter(|a| a.user_id == other.id).count();
            report.skip(
                "users",
                Skip::new(
                    "same address",
                    format!(
                        "user {} ({:?}) has the address of user {} ({address}): not imported, nor its {apps} apps",
                        other.id, other.email, keeper.id
                    ),
                ),
            );
        }
        if ours.contains_key(&keeper.id) {
            report.users.already += 1;
            continue;
        }
        let email = Email::parse(&address).expect("normalised already");
        if !password::is_werkzeug(&keeper.password_hash) && !keeper.password_hash.starts_with("$argon2") {
            report.note(
                "users whose password cannot be checked (they sign in after a password reset)".into(),
                format!("user {} ({address})", keeper.id),
            );
        }
        let id = if dry {
            (!store::email_taken(db, &email).await?).then_some(WOULD_BE)
        } else {
            store::insert_user(db, keeper.id, &email, &keeper.password_hash, keeper.active, keeper.created_at).await?
        };
        match id {
            Some(id) => {
                report.users.imported += 1;
                ours.insert(keeper.id, id);
            }
            None => {
                report.skip("users", Skip::new("account exists", format!("user {} ({address}): the address already has an account here", keeper.id)))
            }
        }
    }
    Ok(ours)
}

/// Legacy app → ours, for those here (or, dry, that would be).
async fn import_apps(
    db: &PgDb,
    legacy: &Legacy,
    users: &HashMap<i64, Uuid>,
    dry: bool,
    now: DateTime<Utc>,
    report: &mut Report,
) -> Result<HashMap<i64, Uuid>> {
    let mapped = store::mapped(db, "app").await?;
    let mut ours: HashMap<i64, Uuid> = mapped.iter().map(|(k, (id, _))| (*k, *id)).collect();
    for app in &legacy.apps {
        report.apps.read += 1;
        if ours.contains_key(&app.id) {
            report.apps.already += 1;
            continue;
        }
        let Some(owner) = users.get(&app.user_id) else {
            report.skip("apps", Skip::new("owner not imported", format!("app {}: its user {} is not imported", app.id, app.user_id)));
            continue;
        };
        let (name, renamed) = legacy::app_name(&app.name, app.id);
        if let Some(note) = renamed {
            report.note("apps renamed to fit our names".into(), note);
        }
        if !apps::is_legacy_key(&app.api_key) {
            report.skip(
                "apps",
                Skip::new("key", format!("app {}: its key is not 16–64 visible ASCII characters, which ingest would not take", app.id)),
            );
            continue;
        }
        let retention = legacy::retention_for(legacy.oldest.get(&app.id).copied(), now);
        if retention != RetentionDays::DEFAULT {
            report.note("apps whose retention covers their history".into(), format!("app {} ({}): {} days", app.id, name.as_str(), retention.get()));
        }
        let id = if dry {
            Some(WOULD_BE)
        } else {
            store::insert_app(db, app.id, *owner, &name, retention, apps::ingest_key_hash(&app.api_key), app.created_at).await?
        };
        match id {
            Some(id) => {
                report.apps.imported += 1;
                report.keys_to_rotate.push((app.id, name.as_str().to_owned()));
                ours.insert(app.id, id);
            }
            None => report.skip("apps", Skip::new("key taken", format!("app {}: an app here already has its key", app.id))),
        }
    }
    Ok(ours)
}

/// Each legacy app's rule versions (for events' `rule_version`).
async fn import_rules(db: &PgDb, legacy: &Legacy, apps: &HashMap<i64, Uuid>, dry: bool, report: &mut Report) -> Result<HashMap<i64, Rules>> {
    let mapped = store::mapped(db, "rule").await?;
    let mut by_app: HashMap<i64, Rules> = HashMap::new();
    // Dry: the versions this run would give, per app and event.
    let mut next: HashMap<(i64, String), i64> = HashMap::new();
    for (app_id, rule) in &legacy.rules {
        report.rules.read += 1;
        if let Some((_, Some(version))) = mapped.get(&rule.id) {
            report.rules.already += 1;
            by_app.entry(*app_id).or_default().add(&rule.event, rule.created_at, *version, rule.active);
            next.insert((*app_id, rule.event.clone()), version + 1);
            continue;
        }
        let Some(app) = apps.get(app_id) else {
            report.skip("rules", Skip::new("app not imported", format!("rule {}: its app {app_id} is not imported", rule.id)));
            continue;
        };
        let checked = EventName::parse(rule.event.clone())
            .map_err(|m| format!("event name {m}"))
            .and_then(|_| serde_json::from_str(&rule.schema_json).map_err(|e| format!("schema_json is not JSON: {e}")))
            .and_then(|schema| match Schema::compile(&schema) {
                Ok(_) => Ok(schema),
                Err(errors) => Err(errors.iter().map(|e| format!("/schema{}: {}", e.pointer, e.message)).collect::<Vec<_>>().join("; ")),
            });
        let schema = match checked {
            Ok(schema) => schema,
            Err(why) => {
                report.skip("rules", Skip::new("rule checks", format!("rule {} (app {app_id}, {:?}): {why}", rule.id, rule.event)));
                continue;
            }
        };
        let version = if dry {
            let n = next.entry((*app_id, rule.event.clone())).or_insert(1);
            *n += 1;
            *n - 1
        } else {
            store::insert_rule(db, rule.id, *app, &rule.event, &schema, rule.active, rule.created_at).await?
        };
        report.rules.imported += 1;
        by_app.entry(*app_id).or_default().add(&rule.event, rule.created_at, version, rule.active);
    }
    Ok(by_app)
}

/// What the reading thread hands the writer.
struct Batch {
    lines: Vec<String>,
    /// Legacy app → its last legacy id in `lines`.
    marks: HashMap<i64, i64>,
    /// Rows read for this batch (written, skipped or already here).
    read: u64,
}

#[allow(clippy::too_many_arguments)]
async fn import_events(
    db: &PgDb,
    opts: &Options,
    with_events: &HashSet<i64>,
    apps: HashMap<i64, Uuid>,
    rules: HashMap<i64, Rules>,
    now: DateTime<Utc>,
    report: &mut Report,
) -> Result<()> {
    let marks = store::event_marks(db).await?;
    // Where reading starts: the lowest mark of an imported app with events
    // (0 when one has none yet); rows at or below their app's own mark are
    // skipped. A run after the cut-over reads only what arrived since.
    let from = apps.keys().filter(|a| with_events.contains(a)).map(|a| marks.get(a).copied().unwrap_or(0)).min().unwrap_or(0);
    report.events_after = from;
    let file = opts.file.clone();
    let (total, span) = tokio::task::spawn_blocking(move || -> Result<_> {
        let conn = open(&file)?;
        let total: i64 = conn.query_row("SELECT count(*) FROM log_entries WHERE id > ?1", [from], |r| r.get(0))?;
        let span =
            conn.query_row("SELECT min(created_at), max(created_at) FROM log_entries WHERE id > ?1", [from], |r| Ok((time(r, 0)?, time(r, 1)?)))?;
        Ok((total as u64, span))
    })
    .await??;
    if let (Some(first), Some(last), false) = (span.0, span.1, opts.dry_run) {
        let oldest_kept = (now - chrono::Duration::days(legacy::MAX_AGE_DAYS - 1)).date_naive();
        store::ensure_partitions(db, first.date_naive().max(oldest_kept), last.date_naive()).await?;
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
    let batch = opts.batch.max(1);
    let file = opts.file.clone();
    let reader = tokio::task::spawn_blocking(move || read_events(&file, from, &apps, &marks, &rules, now, batch, &tx));
    let progress = Progress::new(total);
    let mut batches = 0u64;
    while let Some(b) = rx.recv().await {
        if !b.lines.is_empty() {
            let n = if opts.dry_run {
                b.lines.len() as u64
            } else {
                let lines: Vec<&str> = b.lines.iter().map(String::as_str).collect();
                store::write_events(db, &lines, &b.marks).await.context("failed to write events")?
            };
            report.events.imported += n;
            batches += 1;
            if opts.abort_after_batches == Some(batches) {
                eprintln!("import: aborting after {batches} batches (LVD_IMPORT_FAILPOINT)");
                std::process::abort();
            }
        }
        progress.advance(b.read);
    }
    progress.finish();
    let read = reader.await??;
    report.events.read = read.read;
    report.events.already = read.already;
    for skip in read.skips {
        report.skip("events", skip);
    }
    for (reason, n) in read.more_skipped {
        *report.events.skipped.entry(reason).or_default() += n;
    }
    Ok(())
}

/// What the reading thread saw besides the rows it sent.
#[derive(Default)]
struct Read {
    read: u64,
    already: u64,
    /// The first skipped rows of each reason, with their details.
    skips: Vec<Skip>,
    /// Skipped rows past those, counted only.
    more_skipped: BTreeMap<&'static str, u64>,
}

#[allow(clippy::too_many_arguments)]
fn read_events(
    file: &Path,
    from: i64,
    apps: &HashMap<i64, Uuid>,
    marks: &HashMap<i64, i64>,
    rules: &HashMap<i64, Rules>,
    now: DateTime<Utc>,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Batch>,
) -> Result<Read> {
    let conn = open(file)?;
    let mut stmt = conn.prepare("SELECT id, app_id, event_name, payload, is_valid, errors, created_at FROM log_entries WHERE id > ?1 ORDER BY id")?;
    let mut rows = stmt.query([from])?;
    let mut read = Read::default();
    let mut shown: BTreeMap<&'static str, usize> = BTreeMap::new();
    let no_rules = Rules::default();
    let mut current = Batch { lines: Vec::with_capacity(batch), marks: HashMap::new(), read: 0 };
    let mut skip = |read: &mut Read, s: Skip| {
        let n = shown.entry(s.reason).or_default();
        if *n < legacy::EXAMPLES {
            *n += 1;
            read.skips.push(s);
        } else {
            *read.more_skipped.entry(s.reason).or_default() += 1;
        }
    };
    while let Some(r) = rows.next()? {
        read.read += 1;
        current.read += 1;
        let e = LegacyEvent {
            id: r.get(0)?,
            app_id: r.get(1)?,
            event: text(r, 2)?,
            payload: text(r, 3)?,
            is_valid: flag(r, 4)?,
            errors: match r.get_ref(5)? {
                ValueRef::Null => None,
                _ => Some(text(r, 5)?),
            },
            created_at: time(r, 6)?.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        };
        match apps.get(&e.app_id) {
            None => skip(&mut read, Skip::new("app not imported", format!("event {}: its app {} is not imported", e.id, e.app_id))),
            Some(_) if marks.get(&e.app_id).is_some_and(|m| e.id <= *m) => read.already += 1,
            Some(app) => match legacy::event_row(&e, *app, rules.get(&e.app_id).unwrap_or(&no_rules), now) {
                Ok(line) => {
                    current.lines.push(line);
                    current.marks.insert(e.app_id, e.id);
                }
                Err(s) => skip(&mut read, s),
            },
        }
        if current.lines.len() >= batch || current.read >= batch as u64 {
            let full = std::mem::replace(&mut current, Batch { lines: Vec::with_capacity(batch), marks: HashMap::new(), read: 0 });
            if tx.blocking_send(full).is_err() {
                bail!("the writer stopped");
            }
        }
    }
    if current.read > 0 {
        let _ = tx.blocking_send(current);
    }
    Ok(read)
}

/// Events done so far, on stderr: a bar with rows/s and ETA on a terminal,
/// a line every few seconds otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: std::cell::Cell<u64>,
    started: Instant,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template("events {bar:40} {human_pos}/{human_len} {rate} ETA {eta}")
                    .expect("a valid template")
                    .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0} rows/s", s.per_sec());
                    }),
            );
            bar
        });
        let now = Instant::now();
        Self { bar, total, done: 0.into(), started: now, last_line: now.into() }
    }

    fn advance(&self, n: u64) {
        self.done.set(self.done.get() + n);
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.get().elapsed() >= Self::EVERY => {
                self.last_line.set(Instant::now());
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn line(&self) -> String {
        let done = self.done.get();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 { (self.total.saturating_sub(done) as f64 / rate).round() } else { 0.0 };
        format!("events: {done} of {} read, {rate:.0} rows/s, ETA {eta:.0} s", self.total)
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => eprintln!("{}", self.line()),
        }
    }
}
