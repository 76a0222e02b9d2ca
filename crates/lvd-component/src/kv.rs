//! `lvd::cache::KeyValue` over Spin's key-value API (the `default` store,
//! which runtime-config.toml backs with Redis). Opens on first use; every
//! call gives up after [`deadline::KEY_VALUE`] (Spin's store waits for as
//! long as Redis is down, and a while after), and the instance then leaves
//! the store alone for a few seconds.
//!
//! Before the store is opened, the instance's outbound Redis connection
//! must open: Spin's store waits for as long as Redis is down, and in the
//! wasi:http 0.2 build nothing can cut that wait short (see `deadline`),
//! while a refused connection fails at once. The connection is the one the
//! request's own Redis calls then use, so this costs nothing extra. It
//! stands for the store's Redis only where runtime-config.toml backs the
//! store with the same server as `redis_url`, as the shipped one does.

use lvd::cache::{KeyValue, KvError};

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::deadline;
use crate::host::kv::{self, Store};
use crate::redis::SpinRedis;

/// After a call gets no answer, the store is left alone this long by this
/// instance: Spin's store stays silent for a minute or two after Redis
/// comes back (its reconnect backs off; measured 100 s), and every cached
/// read or write paying the full deadline meanwhile would add seconds to
/// each request. Callers treat the store's failure as a cache miss.
const REST_AFTER_SILENCE: Duration = Duration::from_secs(5);

thread_local! {
    /// When this instance may call the store again. Instance health, not
    /// request state: any request may set it, every request obeys it.
    static RESTING_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs one store call against the deadline, unless the store is resting.
async fn timed<T>(call: impl Future<Output = Result<T, kv::Error>>) -> Result<T, KvError> {
    if RESTING_UNTIL.get().is_some_and(|until| Instant::now() < until) {
        return Err(KvError("resting after a call that got no answer".into()));
    }
    match deadline::within(deadline::KEY_VALUE, call).await {
        Some(result) => result.map_err(|e| KvError(format!("{e:?}").into())),
        None => {
            RESTING_UNTIL.set(Some(Instant::now() + REST_AFTER_SILENCE));
            Err(KvError(format!("no answer within {:?}", deadline::KEY_VALUE).into()))
        }
    }
}

pub struct SpinKv {
    /// The Redis that backs the store, reached first (see above).
    redis: SpinRedis,
    store: std::cell::OnceCell<Store>,
}

impl SpinKv {
    /// The store, reached only once `redis` connects (see above).
    pub fn new(redis: &SpinRedis) -> Self {
        Self { redis: redis.clone(), store: std::cell::OnceCell::new() }
    }

    async fn store(&self) -> Result<&Store, KvError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        self.redis.reachable().await.map_err(|e| KvError(format!("Redis is unreachable: {}", e.0).into()))?;
        let s = timed(kv::open_default()).await?;
        Ok(self.store.get_or_init(|| s))
    }
}

impl KeyValue for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        timed(kv::get(self.store().await?, key)).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        timed(kv::set(self.store().await?, key, value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        timed(kv::delete(self.store().await?, key)).await
    }

    fn note(&self, cache: &str, hit: bool) {
        self.redis.note_cache(cache, hit);
    }
}
