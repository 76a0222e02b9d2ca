//! `lvd-runtime`: runs a Spin application from its `spin.toml` and
//! `runtime-config.toml` on machines without the Spin CLI, behaving like
//! `spin up` for everything this app uses. Wiring only; each concern lives in
//! its own module.

mod allowed_hosts;
mod bindings;
mod build;
mod engine;
mod host;
mod manifest;
mod outbound_http;
mod router;
mod runtime_config;
mod template;
mod trigger_http;
mod variables;
mod watch;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::engine::{Capabilities, Limits, Shared};
use crate::host::key_value::KvStores;
use crate::host::postgres::PgPools;
use crate::manifest::App;
use crate::trigger_http::HttpTrigger;

#[derive(Parser)]
#[command(name = "lvd-runtime", version, about = "Run a Spin app locally (a subset of `spin up`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application (like `spin up`).
    Up(UpArgs),
    /// Run every component's `[component.*.build]` command (like `spin build`).
    Build {
        #[arg(short = 'f', long = "from", default_value = "spin.toml")]
        manifest: PathBuf,
    },
}

#[derive(Args)]
struct UpArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Where key-value stores live (Spin's `--runtime-config-file`).
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Rebuild and swap in a component when its watched files change.
    #[arg(long)]
    watch: bool,
    /// Build every component before serving.
    #[arg(long)]
    build: bool,
    /// PostgreSQL connections per address, shared by all instances.
    #[arg(long, env = "LVD_PG_POOL_SIZE", default_value_t = 16)]
    pg_pool_size: usize,
    /// Largest request body accepted (larger gets 413).
    #[arg(long, env = "LVD_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Longest a request may take before its instance is stopped.
    #[arg(long, env = "LVD_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    request_timeout_secs: u64,
    /// Instances that may run at once.
    #[arg(long, env = "LVD_MAX_INSTANCES", default_value_t = 512)]
    max_instances: u32,
    /// Requests one instance may serve (Spin's flag, and Spin 4.0.2's
    /// default for wasi:http 0.3 components). 1 = a fresh instance per request.
    #[arg(long, env = "LVD_MAX_INSTANCE_REUSE_COUNT", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    max_instance_reuse_count: u64,
    /// Requests one instance may serve at once (Spin's flag and default).
    #[arg(long, env = "LVD_MAX_INSTANCE_CONCURRENT_REUSE_COUNT", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    max_instance_concurrent_reuse_count: u64,
    /// Do not cache compiled components on disk.
    #[arg(long)]
    no_cache: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match Cli::parse().command {
        Command::Up(args) => runtime.block_on(up(args)),
        Command::Build { manifest } => {
            let app = App::load(&manifest)?;
            build::all(&app)
        }
    }
}

async fn up(args: UpArgs) -> Result<()> {
    let app = App::load(&args.manifest)?;
    if args.build {
        build::all(&app)?;
    }
    let vars = variables::AppVariables::resolve(&app.variables, |k| std::env::var(k).ok())?;
    let rc = runtime_config::RuntimeConfig::load(args.runtime_config_file.as_deref(), &app.root)?;
    let limits = Limits {
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        max_instances: args.max_instances,
        max_memory_bytes: 512 << 20,
        max_instance_reuse_count: args.max_instance_reuse_count as usize,
        max_instance_concurrent_reuse_count: args.max_instance_concurrent_reuse_count as usize,
        idle_instance_timeout: Duration::from_secs(1),
    };
    let engine = engine::engine(&limits, !args.no_cache)?;
    start_epoch_ticker(engine.clone());
    let linker = engine::linker(&engine)?;
    let shared = Arc::new(Shared {
        pg_pools: Arc::new(PgPools::new(args.pg_pool_size)),
        kv_stores: Arc::new(KvStores::open(&rc.key_value_stores)?),
    });

    let mut handlers = HashMap::new();
    let mut caps_by_id = HashMap::new();
    for c in app.components.values() {
        let caps = Arc::new(Capabilities::resolve(c, &vars)?);
        let wasm = std::fs::read(&c.source).with_context(|| {
            format!("failed to read component {:?} from {} (build it first)", c.id, c.source.display())
        })?;
        let handler = engine::prepare(&engine, &linker, &wasm, caps.clone(), shared.clone(), limits.clone())?;
        handlers.insert(c.id.clone(), Arc::new(handler));
        caps_by_id.insert(c.id.clone(), caps);
    }
    let components = Arc::new(RwLock::new(handlers));
    let trigger = Arc::new(HttpTrigger {
        router: router::Router::build(&app.routes)?,
        components: components.clone(),
        max_body_bytes: args.max_body_bytes,
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port.
    tracing::info!(app = %app.name, components = app.components.len(), "application loaded");
    println!("Serving http://{addr}");
    println!("Available Routes:");
    for r in &app.routes {
        println!("  {}: http://{addr}{}", r.component, r.route);
    }
    std::io::stdout().flush()?;

    if args.watch {
        let ctx = watch::Context { engine, linker, shared, limits, caps: caps_by_id, components };
        watch::spawn(Arc::new(app), ctx)?;
    }
    trigger.serve(listener, shutdown_signal(), Duration::from_secs(30)).await
}

/// Advances the engine's epoch so that guests yield regularly.
fn start_epoch_ticker(engine: wasmtime::Engine) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(10));
            engine.increment_epoch();
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
