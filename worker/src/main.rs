use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lvd-worker", about = "Live Validation Dashboard worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations from migrations/ and exit.
    Migrate {
        #[arg(long, env = "LVD_DATABASE_URL")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Migrate { database_url } => {
            let applied = lvd_worker::migrate::run(&database_url).await?;
            if applied.is_empty() {
                tracing::info!("database is up to date");
            }
            for m in applied {
                tracing::info!(migration = %m, "applied");
            }
        }
    }
    Ok(())
}
