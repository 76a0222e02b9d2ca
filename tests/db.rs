//! `lvd`'s statements through the native adapter (`lvd::db::postgres::PgDb`,
//! what the worker writes with) against real PostgreSQL. Components run the
//! same statements through the Spin adapter in every other suite; this one
//! shows the native side reads values as Spin does and classifies faults
//! alike, and that the writer's statements store each row once.

use lvd::apps::{AppName, RetentionDays, store as apps};
use lvd::auth::email::Email;
use lvd::auth::store as users;
use lvd::db::postgres::PgDb;
use lvd::db::{CopyIn, Db, DbError};
use lvd::logs::ingest::judge;
use lvd::logs::{EventName, Incoming, quarantine, rows};
use lvd_tests::TestDb;
use uuid::Uuid;

async fn user(db: &PgDb, email: &str) -> Uuid {
    let email = Email::parse(email).unwrap();
    assert!(users::insert_unverified(db, &email, "hash").await.unwrap());
    users::user_by_email(db, &email).await.unwrap().expect("the user just inserted").id
}

fn line(app: Uuid, message_id: &str) -> String {
    let event = Incoming {
        event: EventName::parse("signup".into()).unwrap(),
        properties: serde_json::json!({ "plan": "pro" }),
        timestamp: None,
        message_id: Some(message_id.into()),
        context: None,
    };
    rows::line(&judge(event, None, chrono::Utc::now()), app)
}

#[tokio::test]
async fn the_domain_statements_run_through_the_native_adapter_and_read_values_as_spin_does() {
    let test_db = TestDb::migrated().await;
    let db = PgDb::connect(&test_db.url).await.unwrap();
    let owner = user(&db, "native@example.com").await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let app = apps::create(&db, owner, &AppName::parse("Web".into()).unwrap(), RetentionDays::DEFAULT, vec![7; 32]).await.unwrap();
    assert!(app.created_at > before, "created_at read back through utc!: {}", app.created_at);
    let listed = apps::list(&db, owner).await.unwrap();
    assert_eq!(listed.iter().map(|a| a.id).collect::<Vec<_>>(), [app.id]);
    assert!(apps::get(&db, Uuid::new_v4(), app.id).await.unwrap().is_none(), "another owner sees nothing");

    // A timestamptz selected bare is refused, as Spin's host refuses it.
    let rows = db.query("SELECT now()", &[]).await.unwrap();
    assert!(rows[0].timestamp(0).is_err(), "{:?}", rows[0]);
    // NULL of any type, as Spin's db-null parameter is.
    let rows = db.query("SELECT $1::uuid IS NULL, $2::jsonb IS NULL", &[lvd::db::Param::Null, lvd::db::Param::Null]).await.unwrap();
    assert_eq!((rows[0].bool(0).unwrap(), rows[0].bool(1).unwrap()), (true, true));
}

#[tokio::test]
async fn faults_are_classified_with_postgresqls_own_words_kept() {
    let test_db = TestDb::migrated().await;
    let db = PgDb::connect(&test_db.url).await.unwrap();
    user(&db, "twice@example.com").await;
    let again = db
        .execute("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'h')", &[Uuid::new_v4().into(), "twice@example.com".into()])
        .await
        .unwrap_err();
    assert!(matches!(again, DbError::UniqueViolation(_)), "{again:?}");
    assert_eq!(again.server().map(|s| s.code.as_str()), Some("23505"));
    let refused = db.query("SELECT 'x'::int", &[]).await.unwrap_err();
    assert!(matches!(refused, DbError::Query(_)), "{refused:?}");
    assert!(lvd::cause::chain(&refused).contains("22P02"), "{}", lvd::cause::chain(&refused));

    let port = lvd_tests::free_port();
    let down = PgDb::connect(&format!("postgres://postgres@127.0.0.1:{port}/x")).await.err().expect("nothing listens there");
    assert!(matches!(down, DbError::Unavailable(_)), "{down:?}");
}

#[tokio::test]
async fn the_writers_statements_store_each_row_once_and_quarantine_once() {
    let test_db = TestDb::migrated().await;
    let db = PgDb::connect(&test_db.url).await.unwrap();
    rows::prepare(&db).await.unwrap();
    let owner = user(&db, "writer@example.com").await;
    let app = apps::create(&db, owner, &AppName::parse("W".into()).unwrap(), RetentionDays::DEFAULT, vec![9; 32]).await.unwrap();
    let (a, b) = (line(app.id, "a"), line(app.id, "b"));

    assert_eq!(rows::copy(&db, &[a.as_str()]).await.unwrap(), 1);
    assert!(rows::copy(&db, &[a.as_str()]).await.is_err(), "the fast path refuses a row stored before");
    assert_eq!(rows::merge(&db, &[a.as_str(), b.as_str()]).await.unwrap(), 1, "the safe path stores only the new row");
    assert_eq!(rows::merge(&db, &[a.as_str(), b.as_str()]).await.unwrap(), 0);
    let gone = line(Uuid::new_v4(), "c");
    assert_eq!(rows::merge(&db, &[gone.as_str()]).await.unwrap(), 0, "a row of an app that does not exist is skipped");
    let stored = db.query("SELECT count(*) FROM log_entries", &[]).await.unwrap();
    assert_eq!(stored[0].i64(0).unwrap(), 2);
    let mut csv = Vec::new();
    let n = db.copy_out("COPY (SELECT message_id FROM log_entries ORDER BY message_id) TO STDOUT (FORMAT csv)", &mut csv).await.unwrap();
    assert_eq!((n, String::from_utf8(csv).unwrap()), (4, "a\nb\n".to_owned()), "the rows come back out in bulk");

    // The session stays usable after a refused batch (its transaction rolled back).
    db.batch("SELECT 1").await.unwrap();
    assert_eq!(quarantine::keep(&db, "1-1", 0, &b, "22008: out of range").await.unwrap(), 1);
    assert_eq!(quarantine::keep(&db, "1-1", 0, &b, "22008: out of range").await.unwrap(), 0, "once per entry and line");
    assert_eq!(quarantine::keep(&db, "1-1", 1, "garbage", "bad").await.unwrap(), 1, "a row naming no app is kept too");
    assert_eq!(quarantine::count(&db).await.unwrap(), 2);

    let (created, _) = rows::maintain_partitions(&db).await.unwrap();
    let (again, dropped) = rows::maintain_partitions(&db).await.unwrap();
    assert_eq!((again, dropped), (0, 0), "idempotent after creating {created}");
}
