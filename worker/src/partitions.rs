//! Keeps `log_entries`' daily partitions: a week ahead created, those past
//! the longest retention dropped (retention drops partitions, not rows).
//! Both are idempotent SQL functions (migrations/V5), safe to run from every
//! worker at once.

use anyhow::{Context, Result};
use std::time::Duration;

/// Days of partitions kept ready ahead of today.
pub const DAYS_AHEAD: i32 = 7;
/// The longest retention an app may have, plus a day of slack.
pub const KEEP_DAYS: i32 = 366;

pub async fn maintain(database_url: &str) -> Result<(i32, i32)> {
    let (pg, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await.context("failed to connect to PostgreSQL")?;
    tokio::spawn(conn);
    let created: i32 = pg.query_one("SELECT lvd_ensure_log_partitions($1)", &[&DAYS_AHEAD]).await?.get(0);
    let dropped: i32 = pg.query_one("SELECT lvd_drop_log_partitions($1)", &[&KEEP_DAYS]).await?.get(0);
    Ok((created, dropped))
}

/// Runs [`maintain`] now and every hour.
pub async fn run(database_url: String) {
    loop {
        match maintain(&database_url).await {
            Ok((created, dropped)) if created + dropped > 0 => tracing::info!(created, dropped, "log_entries partitions maintained"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %format!("{e:#}"), "partition maintenance failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
