//! `lvd-worker migrate`: every migration applied once, in order, recorded.

use lvd_tests::TestDb;

#[tokio::test]
async fn migrations_apply_once_each_and_are_recorded() {
    let db = TestDb::create().await;

    let first = lvd_worker::migrate::run(&db.url).await.unwrap();
    let second = lvd_worker::migrate::run(&db.url).await.unwrap();

    let on_disk = std::fs::read_dir(lvd_tests::repo_root().join("migrations")).unwrap().count();
    assert_eq!(first.len(), on_disk, "applied {first:?}");
    assert!(second.is_empty(), "re-applied {second:?}");
    let client = db.client().await;
    let recorded: i64 = client.query_one("SELECT count(*) FROM refinery_schema_history", &[]).await.unwrap().get(0);
    assert_eq!(recorded as usize, on_disk);
    client.batch_execute("SELECT id, email, password_hash, is_active, created_at FROM users").await.unwrap();
}
