//! The process-wide wasmtime `Engine` and, per component, everything an
//! instance needs: the pre-instantiated component and the capabilities its
//! manifest entry grants. Components are compiled once and pre-instantiated;
//! instances come from a pooling allocator sized as Spin 4.0.2 sizes it
//! (`crates/core/src/lib.rs`, the same `SPIN_*` variables). A wasi:http 0.3
//! instance serves up to `max_instance_reuse_count` requests, as Spin's 0.3
//! path; a wasi:http 0.2 (`incoming-handler`) instance serves one, as Spin
//! does for 0.2 whatever the flags say.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::handler::{HandlerState, ProxyHandler, ProxyPre, StoreBundle};
use wasmtime_wasi_http::p3::{WasiHttpCtxView, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::host::key_value::{KvData, KvState, KvStores};
use crate::host::postgres::{PgData, PgPools, PgState};
use crate::host::redis::{RedisData, RedisState};
use crate::host::variables::{VariablesData, VariablesState};
use crate::manifest;
use crate::outbound_http::OutboundHttp;
use crate::spin_args::Pick;
use crate::variables::AppVariables;

/// How instances are used: `spin up`'s flags of the same names.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a request may run; none by default, as in Spin.
    pub request_timeout: Option<Pick<Duration>>,
    /// Requests one instance may serve in its life (picked per instance).
    pub max_instance_reuse_count: Pick<usize>,
    /// Requests one instance may serve at the same time.
    pub max_instance_concurrent_reuse_count: Pick<usize>,
    /// How long a reusable instance may wait idle for its next request.
    pub idle_instance_timeout: Pick<Duration>,
}

const MB: u64 = 1 << 20;
const GB: usize = 1 << 30;

pub fn engine(cache: bool) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    // Guests yield at every epoch tick, so a busy loop cannot starve the
    // executor (Spin sets no deadline; a busy guest holds its thread there).
    config.epoch_interruption(true);
    let max_instances: u32 = env("SPIN_MAX_INSTANCE_COUNT", 1_000);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(env("SPIN_WASMTIME_INSTANCE_COUNT", max_instances))
        .total_memories(env("SPIN_WASMTIME_TOTAL_MEMORIES", max_instances))
        .total_tables(env("SPIN_WASMTIME_TOTAL_TABLES", 2 * max_instances))
        .total_stacks(env("SPIN_WASMTIME_TOTAL_STACKS", max_instances))
        .total_core_instances(env("SPIN_WASMTIME_TOTAL_CORE_INSTANCES", 4 * max_instances))
        .table_elements(env("SPIN_WASMTIME_INSTANCE_TABLE_ELEMENTS", 100_000))
        .max_component_instance_size(env("SPIN_WASMTIME_INSTANCE_SIZE", 10 * MB) as usize)
        .max_core_instance_size(env("SPIN_WASMTIME_CORE_INSTANCE_SIZE", 10 * MB) as usize)
        .max_core_instances_per_component(env("SPIN_WASMTIME_CORE_INSTANCE_COUNT", 200))
        .max_tables_per_component(env("SPIN_WASMTIME_INSTANCE_TABLES", 64))
        .max_memories_per_component(env("SPIN_WASMTIME_INSTANCE_MEMORIES", 32))
        .max_tables_per_module(env("SPIN_WASMTIME_MAX_TABLES_PER_MODULE", 2))
        .max_memories_per_module(env("SPIN_WASMTIME_MAX_MEMORIES_PER_MODULE", 2))
        .max_memory_size(4 * GB)
        .linear_memory_keep_resident(env("SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", 2 * MB) as usize)
        .table_keep_resident(env("SPIN_WASMTIME_TABLE_KEEP_RESIDENT", MB / 2) as usize);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // LVD_WASMTIME_PROFILE=perfmap writes /tmp/perf-<pid>.map, so `perf
    // record` names guest functions (how the ingest figures were profiled).
    if std::env::var("LVD_WASMTIME_PROFILE").is_ok_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if cache {
        // Compiled code is cached on disk, keyed by the wasm and the engine's
        // settings, so restarts and tests skip Cranelift.
        let cache = wasmtime::Cache::new(wasmtime::CacheConfig::new()).map_err(anyhow::Error::from);
        config.cache(Some(cache.context("failed to set up the compilation cache")?));
    }
    Engine::new(&config).map_err(anyhow::Error::from).context("failed to create the wasmtime engine")
}

/// A `SPIN_*` sizing variable; a value that does not parse stops the
/// runtime, as it stops Spin.
fn env<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|e| panic!("failed to parse env var `{name}={v}`: {e}")),
        Err(_) => default,
    }
}

/// Per-request store data: one field per hosted interface.
pub struct InstanceState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound_http: OutboundHttp,
    pg: PgState,
    kv: KvState,
    redis: RedisState,
    variables: VariablesState,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { hooks: &mut self.outbound_http, table: &mut self.table, ctx: &mut self.http }
    }
}

impl wasmtime_wasi_http::p2::WasiHttpView for InstanceState {
    fn http(&mut self) -> wasmtime_wasi_http::p2::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p2::WasiHttpCtxView { hooks: &mut self.outbound_http, table: &mut self.table, ctx: &mut self.http }
    }
}

/// What one component is allowed, resolved once at start.
pub struct Capabilities {
    pub id: String,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub key_value_stores: Arc<HashSet<String>>,
    pub variables: Arc<BTreeMap<String, String>>,
    pub environment: Vec<(String, String)>,
}

impl Capabilities {
    /// `components` are the ids of every component of the app (what
    /// `*.spin.internal` in `allowed_outbound_hosts` stands for).
    pub fn resolve(c: &manifest::Component, vars: &AppVariables, components: &[String]) -> Result<Self> {
        let hosts: Vec<String> = c
            .allowed_outbound_hosts
            .iter()
            .map(|t| t.resolve(|n| vars.get(n)))
            .collect::<Result<_>>()?;
        let allowed_hosts = AllowedHosts::parse(hosts.iter().map(String::as_str), components)
            .with_context(|| format!("component {:?}: invalid allowed_outbound_hosts", c.id))?;
        let variables = c
            .variables
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.resolve(|n| vars.get(n))?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            id: c.id.clone(),
            allowed_hosts: Arc::new(allowed_hosts),
            key_value_stores: Arc::new(c.key_value_stores.iter().cloned().collect()),
            variables: Arc::new(variables),
            environment: c.environment.clone().into_iter().collect(),
        })
    }
}

/// Services shared by every instance of every component.
pub struct Shared {
    pub pg_pools: Arc<PgPools>,
    pub kv_stores: Arc<KvStores>,
}

pub fn linker(engine: &Engine) -> Result<Linker<InstanceState>> {
    use crate::bindings::spin;
    let mut linker = Linker::<InstanceState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    spin::postgres::postgres::add_to_linker::<_, PgData>(&mut linker, |s| &mut s.pg)?;
    spin::key_value::key_value::add_to_linker::<_, KvData>(&mut linker, |s| &mut s.kv)?;
    spin::redis::redis::add_to_linker::<_, RedisData>(&mut linker, |s| &mut s.redis)?;
    spin::variables::variables::add_to_linker::<_, VariablesData>(&mut linker, |s| &mut s.variables)?;
    crate::bindings::fermyon::spin::variables::add_to_linker::<_, VariablesData>(&mut linker, |s| &mut s.variables)?;
    crate::bindings::fermyon::spin::key_value::add_to_linker::<_, KvData>(&mut linker, |s| &mut s.kv)?;
    crate::bindings::fermyon::spin::redis::add_to_linker::<_, RedisData>(&mut linker, |s| &mut s.redis)?;
    Ok(linker)
}

/// The `HandlerState` of one component: makes the store of each new
/// instance, and says how long and how often an instance may be reused.
pub struct ComponentHandler {
    engine: Engine,
    caps: Arc<Capabilities>,
    shared: Arc<Shared>,
    limits: Limits,
    /// A wasi:http 0.3 component: its instances are reused.
    reuse: bool,
}

impl HandlerState for ComponentHandler {
    type StoreData = InstanceState;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<InstanceState>> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr();
        for (k, v) in &self.caps.environment {
            wasi.env(k, v);
        }
        let state = InstanceState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outbound_http: OutboundHttp::new(self.caps.allowed_hosts.clone()),
            pg: PgState::new(self.caps.allowed_hosts.clone(), self.shared.pg_pools.clone()),
            kv: KvState::new(self.caps.key_value_stores.clone(), self.shared.kv_stores.clone()),
            redis: RedisState::new(self.caps.allowed_hosts.clone()),
            variables: VariablesState { component: self.caps.id.as_str().into(), values: self.caps.variables.clone() },
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(StoreBundle { store, write_profile: Box::new(|_| ()) })
    }

    fn request_timeout(&self) -> Duration {
        self.limits.request_timeout.map_or(Duration::MAX, Pick::<Duration>::pick)
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.limits.idle_instance_timeout.pick()
    }

    fn max_instance_reuse_count(&self) -> usize {
        if self.reuse { self.limits.max_instance_reuse_count.pick() } else { 1 }
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        if self.reuse { self.limits.max_instance_concurrent_reuse_count.pick() } else { 1 }
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        tracing::error!(component = %self.caps.id, "instance failed: {error:?}");
    }
}

/// Compiles `wasm` and pre-instantiates it against the linker.
pub fn prepare(
    engine: &Engine,
    linker: &Linker<InstanceState>,
    wasm: &[u8],
    caps: Arc<Capabilities>,
    shared: Arc<Shared>,
    limits: Limits,
) -> Result<ProxyHandler<ComponentHandler>> {
    let component = Component::new(engine, wasm).map_err(anyhow::Error::from).with_context(|| format!("failed to compile component {:?}", caps.id))?;
    // Spin refuses a component that exports more than one HTTP handler
    // (`crates/http/src/trigger.rs`), rather than picking one.
    let handlers = component
        .component_type()
        .exports(engine)
        .filter(|(name, _)| {
            name.starts_with("wasi:http/incoming-handler@0.2")
                || *name == "wasi:http/handler@0.3.0-rc-2026-03-15"
                || *name == "fermyon:spin/inbound-http"
        })
        .count();
    anyhow::ensure!(
        handlers <= 1,
        "component {:?} exports multiple different handlers but it's expected to export only one",
        caps.id
    );
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("component {:?} imports something this runtime does not provide", caps.id))?;
    let p2 = component.component_type().exports(engine).any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2"));
    let pre = if p2 {
        ProxyPre::P2(wasmtime_wasi_http::handler::p2::bindings::ProxyPre::new(pre).map_err(anyhow::Error::from).with_context(|| {
            format!("component {:?} exports a wasi:http/incoming-handler@0.2 this runtime cannot call", caps.id)
        })?)
    } else {
        ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre).map_err(anyhow::Error::from).with_context(|| {
            format!(
                "component {:?} exports neither wasi:http/handler@0.3.0-rc-2026-03-15 (spin-sdk 6) nor wasi:http/incoming-handler@0.2 (spin-sdk 5)",
                caps.id
            )
        })?)
    };
    let handler = ComponentHandler { engine: engine.clone(), caps, shared, limits, reuse: !p2 };
    Ok(ProxyHandler::new(handler, pre))
}
