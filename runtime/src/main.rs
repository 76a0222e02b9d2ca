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
mod spin_args;
mod template;
mod trigger_http;
mod variables;
mod watch;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::engine::{Capabilities, Limits, Shared};
use crate::host::key_value::KvStores;
use crate::host::postgres::PgPools;
use crate::manifest::App;
use crate::spin_args::Pick;
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

/// The flags of `spin up` this runtime takes, with Spin's names, value forms
/// and defaults; the few of its own are marked.
#[derive(Args)]
struct UpArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Where key-value stores live (Spin's `--runtime-config-file`).
    #[arg(long, env = "SPIN_RUNTIME_CONFIG_FILE")]
    runtime_config_file: Option<PathBuf>,
    /// The state directory: where the `default` key-value store lives
    /// (`.spin/` beside the manifest unless set; empty: none, in memory).
    #[arg(long)]
    state_dir: Option<String>,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, env = "SPIN_HTTP_LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    listen: String,
    /// lvd-runtime only: rebuild and swap in a component when its watched
    /// files change (`spin watch` restarts the app instead).
    #[arg(long)]
    watch: bool,
    /// Build every component before serving.
    #[arg(long)]
    build: bool,
    /// lvd-runtime only: PostgreSQL connections per address, shared by all
    /// instances (Spin: 64 per component and address).
    #[arg(long, env = "LVD_PG_POOL_SIZE", default_value_t = 16)]
    pg_pool_size: usize,
    /// Longest a request may take (seconds, or a range `a..b`); none by
    /// default, as in Spin.
    #[arg(long, value_parser = spin_args::duration)]
    request_timeout: Option<Pick<Duration>>,
    /// Requests one instance may serve (Spin's default for wasi:http 0.3
    /// components: 128). 1 = a fresh instance per request.
    #[arg(long, env = "LVD_MAX_INSTANCE_REUSE_COUNT", default_value = "128", value_parser = spin_args::count)]
    max_instance_reuse_count: Pick<usize>,
    /// Requests one instance may serve at once (Spin's default: 16).
    #[arg(long, env = "LVD_MAX_INSTANCE_CONCURRENT_REUSE_COUNT", default_value = "16", value_parser = spin_args::count)]
    max_instance_concurrent_reuse_count: Pick<usize>,
    /// How long an idle instance is kept for reuse.
    #[arg(long, default_value = "1s", value_parser = spin_args::duration)]
    idle_instance_timeout: Pick<Duration>,
    /// Do not cache compiled components on disk.
    #[arg(long)]
    disable_cache: bool,
}

fn main() -> Result<()> {
    // JSON lines unless a person is reading (a terminal), or LVD_LOG_FORMAT
    // says `json` or `text`.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into());
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
    let vars = variables::AppVariables::resolve(&app.variables, variables::from_environment())?;
    let rc = runtime_config::RuntimeConfig::load(
        args.runtime_config_file.as_deref(),
        &app.root,
        args.state_dir.as_deref(),
    )?;
    let limits = Limits {
        request_timeout: args.request_timeout,
        max_instance_reuse_count: args.max_instance_reuse_count,
        max_instance_concurrent_reuse_count: args.max_instance_concurrent_reuse_count,
        idle_instance_timeout: args.idle_instance_timeout,
    };
    let engine = engine::engine(!args.disable_cache)?;
    start_epoch_ticker(engine.clone());
    let linker = engine::linker(&engine)?;
    let shared = Arc::new(Shared {
        pg_pools: Arc::new(PgPools::new(args.pg_pool_size)),
        kv_stores: Arc::new(KvStores::new(&rc.key_value_stores)?),
    });

    let mut handlers = HashMap::new();
    let mut caps_by_id = HashMap::new();
    let ids: Vec<String> = app.components.keys().cloned().collect();
    for c in app.components.values() {
        shared.kv_stores.check_labels(&c.id, &c.key_value_stores)?;
        let caps = Arc::new(Capabilities::resolve(c, &vars, &ids)?);
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
        app_name: app.name.clone(),
        app_version: app.version.clone(),
    });

    let listen = spin_args::listen(&args.listen)?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("failed to listen on {listen}"))?;
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
