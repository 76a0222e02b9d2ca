//! `lvd-worker import-sqlite` against a SQLite file built here from the old
//! application's schema (`fixtures/legacy-sqlite.sql`), with password hashes
//! made by Werkzeug itself (fixed vectors below), into real PostgreSQL, then
//! used through the product: a legacy user signs in with the old password,
//! a legacy key ingests, the history is in the event query. Also: the dry
//! run writes nothing, a second run changes nothing, and a run killed
//! midway is finished by the next without duplicates.

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{Duration, Utc};
use lvd_tests::*;
use serde_json::{Value, json};

/// The password every legacy user had.
const PASSWORD: &str = "correct horse battery";
/// `werkzeug.security.generate_password_hash(PASSWORD, method=...)`
/// (Werkzeug 3.1.8, Python 3.11): `pbkdf2:sha256:1000` and its default
/// scrypt (`scrypt:32768:8:1`).
const PBKDF2_HASH: &str = "pbkdf2:sha256:1000$0rP37fqd5rIxsyqP$619d0f7da429ba2bb2bd0b1ca972f42d3efc0a15f2e0343a068542b650e23d32";
const SCRYPT_HASH: &str = "scrypt:32768:8:1$c9zzC9TAHnBf96xk$9bc93dd4aa734da210a97114370fbc6ea3660e2761043090a3219dea4958513034fd37e2a7eb94279f4b8963175bc8462937ca672650346cf1501d20ffec6d65";

const SHOP_KEY: &str = "9d1c0a9f3b2e4d5c8a7b6e5f4d3c2b1a";
const BLOG_KEY: &str = "blog-key-0123456789abcdef0123456789";

/// A legacy database at `path`: its schema, then `sql`.
fn legacy_db(path: &Path, fill: impl FnOnce(&rusqlite::Connection)) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&std::fs::read_to_string(repo_root().join("tests/fixtures/legacy-sqlite.sql")).unwrap()).unwrap();
    fill(&conn);
}

/// A legacy time `days` ago, as the old application wrote it.
fn ago(days: i64) -> String {
    (Utc::now() - Duration::days(days)).format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Every table, and the cases the import must report rather than bring.
fn fill_every_table(c: &rusqlite::Connection) {
    let users: [(i64, &str, &str, i64); 5] = [
        (1, " Ann@Example.com", PBKDF2_HASH, 1),
        // The same address once normalised: reported, not imported.
        (2, "ann@example.com", PBKDF2_HASH, 0),
        (3, "bob@example.com", SCRYPT_HASH, 1),
        (4, "carol@example.com", PBKDF2_HASH, 0),
        (5, "not an address", PBKDF2_HASH, 1),
    ];
    for (id, email, hash, active) in users {
        c.execute(
            "INSERT INTO users (id, email, password_hash, is_active, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, email, hash, active, ago(100)],
        )
        .unwrap();
    }
    c.execute_batch("INSERT INTO otps (email, code, purpose) VALUES ('ann@example.com', '123456', 'verify'), ('bob@example.com', '654321', 'reset')")
        .unwrap();
    // Quiet has no events: it must not make a second run read them all again.
    let apps = [(1, 1, "Shop", SHOP_KEY), (2, 3, "Blog\tsite", BLOG_KEY), (3, 2, "Twin", "twin-key-0123456789abcdef"), (4, 3, "Quiet", "quiet-key-0123456789abcdef")];
    for (id, user, name, key) in apps {
        c.execute(
            "INSERT INTO apps (id, user_id, name, api_key, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, user, name, key, ago(90)],
        )
        .unwrap();
    }
    let rules = [
        (1, 1, "signup", json!({"type": "object", "required": ["plan"]}), 0, ago(10)),
        (2, 1, "signup", json!({"type": "object", "required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}}}), 1, ago(5)),
        // Refused by our checks: a remote reference.
        (3, 1, "checkout", json!({"type": "object", "properties": {"total": {"$ref": "https://example.com/money.json"}}}), 1, ago(5)),
        (4, 2, "login", json!({"type": "object"}), 1, ago(5)),
        (5, 3, "signup", json!({"type": "object"}), 1, ago(5)),
    ];
    for (id, app, event, schema, active, at) in rules {
        c.execute(
            "INSERT INTO validation_rules (id, app_id, event_name, schema_json, is_active, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![id, app, event, schema.to_string(), active, at],
        )
        .unwrap();
    }
    // id, app, event, payload, is_valid, errors, days ago
    type Event<'a> = (i64, i64, &'a str, &'a str, Option<i64>, Option<&'a str>, i64);
    let events: [Event; 7] = [
        (1, 1, "signup", r#"{"plan": "pro"}"#, Some(1), None, 4),
        (2, 1, "signup", r#"{"seats": 3}"#, Some(0), Some(r#"["'plan' is a required property"]"#), 3),
        (3, 1, "checkout", r#"{"total": 12.5}"#, None, None, 40),
        (4, 1, "signup", "[1]", Some(1), None, 2),
        (5, 1, "signup", r#"{"plan": "free"}"#, Some(1), None, 6),
        (6, 2, "login", r#"{}"#, Some(1), None, 1),
        (7, 3, "signup", r#"{}"#, Some(1), None, 1),
    ];
    for (id, app, event, payload, valid, errors, days) in events {
        c.execute(
            "INSERT INTO log_entries (id, app_id, event_name, payload, is_valid, errors, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![id, app, event, payload, valid, errors, ago(days)],
        )
        .unwrap();
    }
}

async fn import(db: &TestDb, file: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(worker_bin())
        .arg("import-sqlite")
        .arg(file)
        .args(args)
        .env("LVD_DATABASE_URL", &db.url)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap()
}

/// The report of a run that must have succeeded.
async fn imported(db: &TestDb, file: &Path, args: &[&str]) -> String {
    let out = import(db, file, args, &[]).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    report
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn counts(db: &TestDb) -> [i64; 4] {
    [
        count(db, "SELECT count(*) FROM users").await,
        count(db, "SELECT count(*) FROM apps").await,
        count(db, "SELECT count(*) FROM validation_rules").await,
        count(db, "SELECT count(*) FROM log_entries").await,
    ]
}

async fn password_hash(db: &TestDb, email: &str) -> String {
    db.client().await.query_one("SELECT password_hash FROM users WHERE email = $1", &[&email]).await.unwrap().get(0)
}

async fn login(app: &TestApp, email: &str, password: &str) -> (u16, Value) {
    let resp = app.post_json("/auth/login", &json!({"email": email, "password": password})).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn temp_file(dir: &TempDir, name: &str) -> PathBuf {
    dir.path.join(name)
}

#[tokio::test]
async fn the_old_database_comes_over_once_and_works_through_the_product() {
    let app = spawn_app().await;
    let dir = TempDir::new();
    let file = temp_file(&dir, "legacy.db");
    legacy_db(&file, fill_every_table);

    let dry = imported(&app.db, &file, &["--dry-run"]).await;
    assert!(dry.contains("Dry run: nothing was written."), "{dry}");
    assert!(dry.contains("users: 5 read, 3 would import, 0 already imported, 2 skipped (1 address, 1 same address)"), "{dry}");
    assert!(dry.contains("events: 7 read, 5 would import"), "{dry}");
    assert_eq!(counts(&app.db).await, [0, 0, 0, 0], "a dry run writes nothing");

    let report = imported(&app.db, &file, &[]).await;
    assert!(report.contains("users: 5 read, 3 imported, 0 already imported, 2 skipped (1 address, 1 same address)"), "{report}");
    assert!(report.contains("user 2 (\"ann@example.com\") has the address of user 1 (ann@example.com): not imported, nor its 1 apps"), "{report}");
    assert!(report.contains("apps: 4 read, 3 imported, 0 already imported, 1 skipped (1 owner not imported)"), "{report}");
    assert!(report.contains("rules: 5 read, 3 imported, 0 already imported, 2 skipped (1 app not imported, 1 rule checks)"), "{report}");
    assert!(report.contains("rule 3 (app 1, \"checkout\"): /schema/properties/total/$ref: remote references are not allowed"), "{report}");
    assert!(report.contains("events: 7 read, 5 imported, 0 already imported, 2 skipped (1 app not imported, 1 payload)"), "{report}");
    assert!(report.contains("codes: 2 one-time codes not imported"), "{report}");
    assert!(report.contains("legacy app 1 (Shop)") && report.contains("legacy app 2 (Blog site)"), "{report}");
    assert!(report.contains("app 1 (Shop): 41 days"), "retention covers the 40-day-old event: {report}");
    assert_eq!(counts(&app.db).await, [3, 3, 3, 5]);

    let pg = app.db.client().await;
    let users = pg.query("SELECT email, is_active, password_hash FROM users ORDER BY email", &[]).await.unwrap();
    let users: Vec<(String, bool, String)> = users.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        users.iter().map(|u| (u.0.as_str(), u.1)).collect::<Vec<_>>(),
        [("ann@example.com", true), ("bob@example.com", true), ("carol@example.com", false)]
    );
    assert_eq!(users[0].2, PBKDF2_HASH, "the hash is kept as it was until the user signs in");
    let shop = pg.query_one("SELECT id::text, name, retention_days, ingest_key_hash FROM apps WHERE name = 'Shop'", &[]).await.unwrap();
    let shop_id: String = shop.get(0);
    assert_eq!(shop.get::<_, i32>(2), 41);
    assert_eq!(shop.get::<_, Vec<u8>>(3), lvd::apps::ingest_key_hash(SHOP_KEY), "the legacy key, as our hash");
    assert_eq!(count(&app.db, "SELECT count(*) FROM apps WHERE name = 'Blog site'").await, 1);
    let rules = pg
        .query("SELECT event, version, deleted_at IS NULL FROM validation_rules WHERE app_id = $1::text::uuid ORDER BY event, version", &[&shop_id])
        .await
        .unwrap();
    let rules: Vec<(String, i32, bool)> = rules.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(rules, [("signup".into(), 1, false), ("signup".into(), 2, true)], "the inactive rule is history, the active one current");
    let events = pg
        .query(
            "SELECT event, status, errors::text, rule_version, (received_at AT TIME ZONE 'UTC')::date = ((now() AT TIME ZONE 'UTC') - make_interval(days => $2))::date \
             FROM log_entries WHERE app_id = $1::text::uuid ORDER BY received_at",
            &[&shop_id, &40i32],
        )
        .await
        .unwrap();
    let events: Vec<(String, String, String, Option<i32>, bool)> =
        events.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    assert_eq!(
        events,
        [
            ("checkout".into(), "unplanned".into(), "[]".into(), None, true),
            ("signup".into(), "valid".into(), "[]".into(), None, false),
            ("signup".into(), "valid".into(), "[]".into(), Some(2), false),
            (
                "signup".into(),
                "invalid".into(),
                r#"[{"keyword": "legacy", "message": "'plan' is a required property", "pointer": ""}]"#.into(),
                Some(2),
                false
            ),
        ],
        "received_at, status, errors and the version of the rule active then"
    );

    let again = imported(&app.db, &file, &[]).await;
    assert!(again.contains("users: 5 read, 0 imported, 3 already imported"), "{again}");
    assert!(again.contains("events: 2 read, 0 imported, 1 already imported, 1 skipped (1 app not imported)"), "{again}");
    assert!(again.contains("(events up to legacy id 5 were done by an earlier run and not read again)"), "{again}");
    assert_eq!(counts(&app.db).await, [3, 3, 3, 5], "a second run changes nothing");

    // Through the product: old passwords sign in and become Argon2id.
    assert_eq!(login(&app, "ann@example.com", "wrong horse battery").await.0, 401);
    assert_eq!(password_hash(&app.db, "ann@example.com").await, PBKDF2_HASH, "a wrong password changes nothing");
    let (status, tokens) = login(&app, "ANN@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(password_hash(&app.db, "ann@example.com").await.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert_eq!(login(&app, "ann@example.com", PASSWORD).await.0, 200, "and the new hash verifies");
    assert_eq!(login(&app, "bob@example.com", PASSWORD).await.0, 200, "scrypt too");
    assert!(password_hash(&app.db, "bob@example.com").await.starts_with("$argon2id$"));
    assert_eq!(login(&app, "carol@example.com", PASSWORD).await.0, 403, "an inactive user stays unverified");
    assert_eq!(password_hash(&app.db, "carol@example.com").await, PBKDF2_HASH);

    // The history is in the query, and the legacy key ingests.
    let token = tokens["access_token"].as_str().unwrap();
    let resp = app.call(reqwest::Method::GET, &format!("/api/logs?app={shop_id}&limit=100"), token, None).await;
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 4, "{page}");
    assert_eq!(page["items"][0]["status"], "invalid", "newest first: {page}");
    assert_eq!(page["items"][0]["errors"][0]["message"], "'plan' is a required property");
    let reply = app.ingest_ok(SHOP_KEY, &json!({"event": "signup", "properties": {"plan": "free"}})).await;
    assert_eq!(reply["results"][0]["status"], "valid", "checked by the imported current rule: {reply}");
    assert_eq!(app.wait_stored(6).await, 6);
    let reply = app.ingest(BLOG_KEY, &json!({"event": "login"})).await;
    assert_eq!(reply.status(), 202);
}

#[tokio::test]
async fn a_killed_import_is_finished_by_the_next_run_without_duplicates() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let file = temp_file(&dir, "legacy.db");
    const EVENTS: i64 = 12_000;
    legacy_db(&file, |c| {
        c.execute("INSERT INTO users (id, email, password_hash, is_active) VALUES (1, 'dana@example.com', ?1, 1)", [PBKDF2_HASH]).unwrap();
        c.execute("INSERT INTO apps (id, user_id, name, api_key) VALUES (1, 1, 'Shop', ?1)", [SHOP_KEY]).unwrap();
        let tx = c.unchecked_transaction().unwrap();
        let mut insert =
            tx.prepare("INSERT INTO log_entries (app_id, event_name, payload, is_valid, created_at) VALUES (1, ?1, ?2, NULL, ?3)").unwrap();
        for i in 0..EVENTS {
            insert.execute(rusqlite::params![format!("event_{}", i % 7), format!(r#"{{"n": {i}}}"#), ago(i % 20)]).unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
    });

    let killed = import(&db, &file, &["--batch", "1000"], &[("LVD_IMPORT_FAILPOINT", "abort_after_batches=3")]).await;
    assert!(!killed.status.success(), "the failpoint aborts the run");
    assert_eq!(count(&db, "SELECT count(*) FROM log_entries").await, 3000, "three whole batches, nothing of the fourth");

    let report = imported(&db, &file, &["--batch", "1000"]).await;
    assert!(report.contains("users: 1 read, 0 imported, 1 already imported"), "{report}");
    assert!(report.contains("events: 9000 read, 9000 imported, 0 already imported, 0 skipped"), "reading resumes after the mark: {report}");
    assert!(report.contains("events up to legacy id 3000 were done by an earlier run"), "{report}");
    assert_eq!(count(&db, "SELECT count(*) FROM log_entries").await, EVENTS);
    assert_eq!(count(&db, "SELECT count(DISTINCT properties->>'n') FROM log_entries").await, EVENTS, "each legacy event once");
    let again = imported(&db, &file, &["--batch", "1000"]).await;
    assert!(again.contains("events: 0 read, 0 imported"), "{again}");
    assert_eq!(count(&db, "SELECT count(*) FROM log_entries").await, EVENTS);
}
