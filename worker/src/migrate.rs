//! Applies `migrations/` to PostgreSQL with refinery: plain SQL files run in
//! version order, each once, each inside its own transaction, recorded in
//! `refinery_schema_history`. A migration that fails leaves no trace.

use anyhow::{Context, Result};
use tokio_postgres::NoTls;

refinery::embed_migrations!("../migrations");

/// Versions and names of the migrations this run applied (empty when the
/// database was already up to date).
pub async fn run(database_url: &str) -> Result<Vec<String>> {
    let (mut client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .context("failed to connect to PostgreSQL")?;
    let conn_task = tokio::spawn(connection);
    let report = migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .context("failed to apply migrations")?;
    drop(client);
    let _ = conn_task.await;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}
