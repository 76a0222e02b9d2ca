//! Keeps `log_entries`' daily partitions: the days ahead created, those past
//! the longest retention dropped, now and every hour (the statements are
//! `lvd::logs::rows::maintain_partitions`).

use std::time::Duration;

use lvd::cause::chain;
use lvd::db::postgres::PgDb;
use lvd::logs::rows;

/// Runs the upkeep now and every hour, on a connection of its own.
pub async fn run(database_url: String) {
    loop {
        let upkeep = async { rows::maintain_partitions(&PgDb::connect(&database_url).await?).await };
        match upkeep.await {
            Ok((created, dropped)) if created + dropped > 0 => tracing::info!(created, dropped, "log_entries partitions maintained"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %chain(&e), "partition maintenance failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
