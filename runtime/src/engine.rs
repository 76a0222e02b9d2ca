//! The process-wide wasmtime `Engine` and, per component, everything an
//! instance needs: the pre-instantiated component and the capabilities its
//! manifest entry grants. Components are compiled once and pre-instantiated;
//! each request gets a fresh `Store` and instance (Spin's model), drawn from a
//! pooling allocator so that instantiation is a memory remap, not an mmap.

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
use crate::variables::AppVariables;

/// Settings that shape every instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a request may run before its instance is torn down.
    pub request_timeout: Duration,
    /// Instances that may be live at once (the pooling allocator's slots).
    pub max_instances: u32,
    /// Largest linear memory an instance may grow to.
    pub max_memory_bytes: usize,
    /// Requests one instance may serve in its life. 1 (the default) gives
    /// every request a fresh instance. Spin 4.0.2 reuses wasi:http 0.3
    /// instances by default (128 requests, 16 at once); its
    /// `--max-instance-reuse-count` flags have the same meaning here.
    pub max_instance_reuse_count: usize,
    /// Requests one instance may serve at the same time.
    pub max_instance_concurrent_reuse_count: usize,
    /// How long a reusable instance may wait idle for its next request.
    pub idle_instance_timeout: Duration,
}

pub fn engine(limits: &Limits, cache: bool) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    // Guests yield at every epoch tick, so a busy loop cannot starve the
    // executor and timeouts can fire.
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits.max_instances)
        .total_core_instances(limits.max_instances * 8)
        .total_memories(limits.max_instances * 4)
        .total_tables(limits.max_instances * 8)
        .max_memory_size(limits.max_memory_bytes)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        .total_stacks(limits.max_instances)
        // Keep the first pages of each slot mapped between instances (zeroed
        // with memset) rather than unmapped (madvise) and faulted back in.
        // Tunable like Spin's SPIN_WASMTIME_*_KEEP_RESIDENT; see README.
        .linear_memory_keep_resident(env_usize("LVD_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", 2 << 20))
        .table_keep_resident(env_usize("LVD_WASMTIME_TABLE_KEEP_RESIDENT", 512 << 10));
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

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
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

/// What one component is allowed, resolved once at start.
pub struct Capabilities {
    pub id: String,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub key_value_stores: Arc<HashSet<String>>,
    pub variables: Arc<BTreeMap<String, String>>,
    pub environment: Vec<(String, String)>,
}

impl Capabilities {
    pub fn resolve(c: &manifest::Component, vars: &AppVariables) -> Result<Self> {
        let hosts: Vec<String> = c
            .allowed_outbound_hosts
            .iter()
            .map(|t| t.resolve(|n| vars.get(n)))
            .collect::<Result<_>>()?;
        let allowed_hosts = AllowedHosts::parse(hosts.iter().map(String::as_str))
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
    spin::postgres::postgres::add_to_linker::<_, PgData>(&mut linker, |s| &mut s.pg)?;
    spin::key_value::key_value::add_to_linker::<_, KvData>(&mut linker, |s| &mut s.kv)?;
    spin::redis::redis::add_to_linker::<_, RedisData>(&mut linker, |s| &mut s.redis)?;
    spin::variables::variables::add_to_linker::<_, VariablesData>(&mut linker, |s| &mut s.variables)?;
    Ok(linker)
}

/// The `HandlerState` of one component: makes a fresh store per request.
pub struct ComponentHandler {
    engine: Engine,
    caps: Arc<Capabilities>,
    shared: Arc<Shared>,
    limits: Limits,
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
            variables: VariablesState { values: self.caps.variables.clone() },
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(StoreBundle { store, write_profile: Box::new(|_| ()) })
    }

    fn request_timeout(&self) -> Duration {
        self.limits.request_timeout
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.limits.idle_instance_timeout
    }

    /// 1 by default: nothing a request leaves behind in linear memory can
    /// reach the next one.
    fn max_instance_reuse_count(&self) -> usize {
        self.limits.max_instance_reuse_count
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.limits.max_instance_concurrent_reuse_count
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
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("component {:?} imports something this runtime does not provide", caps.id))?;
    let pre = wasmtime_wasi_http::p3::bindings::ServicePre::new(pre).map_err(anyhow::Error::from).with_context(|| {
        format!("component {:?} does not export wasi:http/handler@0.3.0-rc-2026-03-15 (build it with spin-sdk 6)", caps.id)
    })?;
    let handler = ComponentHandler { engine: engine.clone(), caps, shared, limits };
    Ok(ProxyHandler::new(handler, ProxyPre::P3(pre)))
}
