use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;

use lvd_worker::delivery::{Deps, RetryPolicy};
use lvd_worker::hasher::Hashing;
use lvd_worker::ingest::{self, Writer};
use lvd_worker::jobs::Jobs;
use lvd_worker::kv::WorkerRedis;
use lvd_worker::mail::Mailer;
use lvd_worker::metrics::Metrics;
use lvd_worker::queue::Queue;
use lvd_worker::runner;

#[derive(Parser)]
#[command(name = "lvd-worker", about = "Live Validation Dashboard worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of `Run`'s settings costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations from migrations/ and exit.
    Migrate {
        #[arg(long, env = "LVD_DATABASE_URL")]
        database_url: String,
    },
    /// Work the queues until SIGTERM.
    Run(RunArgs),
    /// Bring the old Flask application's SQLite database (users, apps,
    /// rules, events) into PostgreSQL; safe to run again. Prints a report.
    ImportSqlite(ImportArgs),
}

#[derive(Args)]
struct ImportArgs {
    /// The old application's SQLite file (opened read-only).
    file: std::path::PathBuf,
    /// Read and check everything, print the report, write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, env = "LVD_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/lvd?sslmode=disable")]
    database_url: String,
    /// Events written per transaction.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// A test hook: `abort_after_batches=N` aborts the process after N
    /// batches of events are committed.
    #[arg(long, env = "LVD_IMPORT_FAILPOINT", default_value = "", hide = true)]
    failpoint: String,
}

#[derive(Args)]
struct RunArgs {
    /// Where events are stored.
    #[arg(long, env = "LVD_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/lvd?sslmode=disable")]
    database_url: String,
    /// Tasks writing the ingest stream into log_entries, each with its own connection.
    #[arg(long, env = "LVD_WORKER_INGEST_WRITERS", default_value_t = 2)]
    ingest_writers: usize,
    /// Stream entries (requests) per COPY.
    #[arg(long, env = "LVD_WORKER_INGEST_BATCH", default_value_t = 200)]
    ingest_batch: usize,
    #[arg(long, env = "LVD_REDIS_URL", default_value = "redis://127.0.0.1:6379/1")]
    redis_url: String,
    #[arg(long, env = "LVD_SMTP_URL", default_value = "smtp://127.0.0.1:1025")]
    smtp_url: String,
    #[arg(long, env = "LVD_SMTP_FROM", default_value = "Live Validation Dashboard <no-reply@lvd.localhost>")]
    smtp_from: String,
    /// Where /health and /metrics are served.
    #[arg(long, env = "LVD_WORKER_LISTEN", default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// Sends in flight at once.
    #[arg(long, env = "LVD_WORKER_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    #[arg(long, env = "LVD_WORKER_MAX_ATTEMPTS", default_value_t = 8)]
    max_attempts: u32,
    #[arg(long, env = "LVD_WORKER_BACKOFF_BASE_MS", default_value_t = 1000)]
    backoff_base_ms: u64,
    #[arg(long, env = "LVD_WORKER_BACKOFF_MAX_MS", default_value_t = 300_000)]
    backoff_max_ms: u64,
    /// A job pending this long on another worker is taken over.
    #[arg(long, env = "LVD_WORKER_RECLAIM_IDLE_MS", default_value_t = 30_000)]
    reclaim_idle_ms: u64,
    /// Reports and exports produced at once (each holds two PostgreSQL
    /// connections while it runs).
    #[arg(long, env = "LVD_WORKER_JOB_CONCURRENCY", default_value_t = 2)]
    job_concurrency: usize,
    /// A job queued (or started by a worker that no longer holds it) this
    /// long ago is put on the queue again: its entry was lost.
    #[arg(long, env = "LVD_WORKER_JOB_STALE_SECS", default_value_t = 120)]
    job_stale_secs: u64,
    /// How often stale jobs are looked for and expired files deleted.
    #[arg(long, env = "LVD_WORKER_JOB_UPKEEP_MS", default_value_t = 30_000)]
    job_upkeep_ms: u64,
    /// The key the auth component presents to have passwords hashed here
    /// (its `hasher_key` variable); under 32 bytes or unset, the hashing
    /// endpoint is off and components hash in themselves.
    #[arg(long, env = "LVD_HASHER_KEY", hide_env_values = true)]
    hasher_key: Option<String>,
    /// Passwords hashed at once (each takes a core and 19 MiB for ~20 ms);
    /// by default, the machine's cores.
    #[arg(long, env = "LVD_HASHER_CONCURRENCY")]
    hasher_concurrency: Option<usize>,
    /// How often each enabled alert is evaluated.
    #[arg(long, env = "LVD_ALERT_INTERVAL_MS", default_value_t = lvd::alerts::DEFAULT_INTERVAL_MS)]
    alert_interval_ms: u64,
    /// Hosts alert webhooks may reach over http or at loopback, private or
    /// link-local addresses (comma-separated `host` or `host:port`): the
    /// same list as the `alert_webhook_allow_hosts` variable.
    #[arg(long, env = "LVD_ALERT_WEBHOOK_ALLOW_HOSTS", default_value = "")]
    alert_webhook_allow_hosts: String,
    /// A test hook: `alert_decided` aborts the process right after an alert
    /// change is committed, before it is sent.
    #[arg(long, env = "LVD_WORKER_FAILPOINT", default_value = "", hide = true)]
    failpoint: String,
    /// The page's public address, for links in mail.
    #[arg(long, env = "LVD_PUBLIC_URL", default_value = "http://127.0.0.1:3000")]
    public_url: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    // JSON lines unless a person is reading (a terminal), or LVD_LOG_FORMAT
    // says `json` or `text`.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let json = match std::env::var("LVD_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    match Cli::parse().command {
        Command::Migrate { database_url } => {
            let applied = lvd_worker::migrate::run(&database_url).await?;
            if applied.is_empty() {
                tracing::info!("database is up to date");
            }
            for m in applied {
                tracing::info!(migration = %m, "applied");
            }
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::ImportSqlite(args) => {
            let opts = lvd_worker::import::Options {
                abort_after_batches: args.failpoint.strip_prefix("abort_after_batches=").and_then(|n| n.parse().ok()),
                file: args.file,
                database_url: args.database_url,
                dry_run: args.dry_run,
                batch: args.batch,
            };
            let started = std::time::Instant::now();
            let report = lvd_worker::import::run(&opts).await?;
            print!("{report}");
            println!("Took {:.1} s.", started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let client = redis::Client::open(args.redis_url.as_str()).context("invalid LVD_REDIS_URL")?;
    let consumer = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let queue = Queue::open(&client, lvd::keys::EMAIL_QUEUE, &consumer).await?;
    let metrics = Metrics::new();
    let policy = RetryPolicy {
        max_attempts: args.max_attempts,
        base: Duration::from_millis(args.backoff_base_ms),
        max: Duration::from_millis(args.backoff_max_ms),
        reclaim_idle: Duration::from_millis(args.reclaim_idle_ms),
    };
    let deps = Arc::new(Deps { queue, mailer: Mailer::new(&args.smtp_url, &args.smtp_from)?, policy: policy.clone(), metrics: metrics.clone() });
    let redis = WorkerRedis(client.get_connection_manager().await.context("failed to connect to Redis")?);
    let jobs = Arc::new(Jobs {
        queue: Queue::open(&client, lvd::keys::JOB_QUEUE, &consumer).await?,
        redis: redis.clone(),
        database_url: args.database_url.clone(),
        policy,
        metrics: metrics.clone(),
        public_url: args.public_url.clone(),
    });

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("failed to listen on {}", args.listen))?;
    println!("Worker serving http://{}", listener.local_addr()?);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let hashing = Hashing::new(args.hasher_key, args.hasher_concurrency.unwrap_or(cores), metrics.clone()).map(Arc::new);
    if hashing.is_some() {
        tracing::info!("hashing passwords for the auth component on {}/internal/password", listener.local_addr()?);
    }
    tokio::spawn(lvd_worker::server::serve(listener, Arc::new(metrics.clone()), hashing));
    let ingest = Queue::open(&client, lvd::keys::INGEST_STREAM, &format!("{consumer}-depth")).await?;
    tokio::spawn(sample_depth(deps.clone(), ingest, jobs.queue.clone()));
    tokio::spawn(lvd_worker::partitions::run(args.database_url.clone()));
    tokio::spawn(lvd_worker::jobs::upkeep(
        args.database_url.clone(),
        redis,
        Duration::from_secs(args.job_stale_secs),
        Duration::from_millis(args.job_upkeep_ms),
    ));

    let (tx, rx) = tokio::sync::watch::channel(false);
    let alerts = Arc::new(lvd_worker::alerts::Alerts {
        database_url: args.database_url.clone(),
        redis: jobs.redis.clone(),
        interval: Duration::from_millis(args.alert_interval_ms.max(100)),
        metrics: metrics.clone(),
        sender: lvd_worker::webhook::Sender::new(lvd::webhook::AllowList::parse(&args.alert_webhook_allow_hosts))?,
        public_url: args.public_url.clone(),
        sending: Default::default(),
        picking: Default::default(),
        crash_after_deciding: args.failpoint == "alert_decided",
    });
    tokio::spawn(lvd_worker::alerts::run(alerts, rx.clone()));
    let mut writers = Vec::new();
    for i in 0..args.ingest_writers {
        let queue = Queue::open(&client, lvd::keys::INGEST_STREAM, &format!("{consumer}-ingest-{i}")).await?;
        let writer = Writer::new(&args.database_url, queue, metrics.clone(), args.ingest_batch, Duration::from_millis(args.reclaim_idle_ms));
        writers.push(tokio::spawn(ingest::run(writer, rx.clone())));
    }
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        let _ = tx.send(true);
    });
    tracing::info!(consumer, "working {}, {} and {}", lvd::keys::EMAIL_QUEUE, lvd::keys::INGEST_STREAM, lvd::keys::JOB_QUEUE);
    let job_runner = tokio::spawn(runner::run(jobs, args.job_concurrency, rx.clone(), Duration::from_secs(30), metrics.clone()));
    runner::run(deps, args.concurrency, rx, Duration::from_secs(30), metrics.clone()).await;
    let _ = job_runner.await;
    // Each writer finishes the step in flight (its COPY and ack) first.
    for w in writers {
        let _ = w.await;
    }
    Ok(())
}

/// Keeps the queue-depth gauges current for /metrics.
async fn sample_depth(deps: Arc<Deps>, ingest: Queue, jobs: Queue) {
    loop {
        if let Ok(n) = jobs.depth().await {
            deps.metrics.queue_depth.with_label_values(&["jobs"]).set(n as i64);
        }
        if let Ok(n) = deps.queue.depth().await {
            deps.metrics.queue_depth.with_label_values(&["email"]).set(n as i64);
        }
        if let Ok(n) = ingest.depth().await {
            deps.metrics.queue_depth.with_label_values(&["ingest"]).set(n as i64);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
