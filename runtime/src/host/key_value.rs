//! `spin:key-value/key-value@3.0.0` (spin-sdk 6) and
//! `fermyon:spin/key-value@2.0.0` (spin-sdk 5, Spin 3.x: the same store
//! operations, called without concurrency) with the stores
//! `runtime-config.toml` declares, as Spin 4.0.2 hosts them (`crates/factor-key-value`,
//! `key-value-redis`, `key-value-spin`). A component may open only the
//! labels its manifest entry lists in `key_value_stores` (`access-denied`
//! otherwise), and a listed label with no store stops the app at start
//! (`KvStores::check_labels`), so `no-such-store` is never seen on `open`.
//! A store connects on its first `open` (a failure fails that `open`) and
//! keeps the connection for the app's life; a value over Spin's 128 MiB
//! buffer limit fails the `get`.
//!
//! Redis stores keep keys unprefixed in the database their URL names, exactly
//! like Spin's Redis backend, so `get-keys` lists that whole database: keep
//! other Redis data (queues, counters) in another database. SQLite stores
//! keep each label's keys apart in one `spin_key_value` table, Spin's schema.
//!
//! Like Spin's, a Redis store is a redis `ConnectionManager` with its default
//! settings and no timeouts: while Redis is down, a call waits (for ever,
//! unless Redis returns) — components bound their calls themselves. On the
//! strict side of Spin: an instance may hold 16 stores open (Spin: 2^32).

use anyhow::Context;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, StreamReader};

use super::table::Table;
use crate::bindings::fermyon::spin::key_value as kv2;
use crate::bindings::spin::key_value::key_value::{self as kv, Error};
use crate::runtime_config::StoreConfig;

const MAX_STORES_PER_INSTANCE: usize = 16;
/// Spin's `MAX_HOST_BUFFERED_BYTES`.
const MAX_RESULT_BYTES: usize = 128 << 20;

/// A configured store, shared by every instance that opens its label.
pub struct Store {
    label: String,
    backend: Backend,
}

enum Backend {
    Redis {
        client: redis::Client,
        /// Established by the first `open`; a failed attempt is retried by
        /// the next.
        conn: OnceCell<ConnectionManager>,
    },
    /// SQLite. The mutex serialises access to the one connection; it is
    /// only taken inside `spawn_blocking`.
    Sqlite { path: Option<PathBuf>, conn: OnceCell<Arc<Mutex<rusqlite::Connection>>> },
}

/// An open store: the label and its live connection.
#[derive(Clone)]
enum Open {
    Redis(ConnectionManager),
    Sqlite { label: Arc<str>, conn: Arc<Mutex<rusqlite::Connection>> },
}

impl Store {
    fn new(label: &str, config: &StoreConfig) -> anyhow::Result<Self> {
        let backend = match config {
            StoreConfig::Redis { url } => Backend::Redis {
                client: redis::Client::open(url.as_str()).context("invalid key-value Redis URL")?,
                conn: OnceCell::new(),
            },
            StoreConfig::Sqlite { path } => Backend::Sqlite { path: path.clone(), conn: OnceCell::new() },
        };
        Ok(Self { label: label.to_owned(), backend })
    }

    /// What `open` does in Spin: connect once, then hand out the connection.
    async fn open(&self) -> Result<Open, Error> {
        match &self.backend {
            Backend::Redis { client, conn } => {
                let manager = conn.get_or_try_init(|| client.get_connection_manager()).await.map_err(other)?;
                // Spin pings on every open and ignores the outcome (a broken
                // connection starts reconnecting); the wait is the point.
                let _ = manager.clone().ping::<()>().await;
                Ok(Open::Redis(manager.clone()))
            }
            Backend::Sqlite { path, conn } => {
                let path = path.clone();
                let conn = conn
                    .get_or_try_init(|| async move {
                        tokio::task::spawn_blocking(move || open_sqlite(path.as_deref()))
                            .await
                            .map_err(|e| Error::Other(e.to_string()))?
                            .map(|c| Arc::new(Mutex::new(c)))
                            .map_err(|e| Error::Other(format!("{e:?}")))
                    })
                    .await?;
                Ok(Open::Sqlite { label: self.label.as_str().into(), conn: conn.clone() })
            }
        }
    }
}

impl Open {
    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        let value = match self {
            Open::Redis(c) => c.clone().get::<_, Option<Vec<u8>>>(key).await.map_err(other)?,
            Open::Sqlite { label, conn } => {
                let label = label.clone();
                sqlite(conn, move |c| {
                    c.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .query_map(rusqlite::params![&*label, key], |r| r.get::<_, Vec<u8>>(0))?
                        .next()
                        .transpose()
                })
                .await?
            }
        };
        if std::mem::size_of::<Option<Vec<u8>>>() + value.as_ref().map_or(0, Vec::len) > MAX_RESULT_BYTES {
            return Err(Error::Other(format!("query result exceeds limit of {MAX_RESULT_BYTES} bytes")));
        }
        Ok(value)
    }

    async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        match self {
            Open::Redis(c) => c.clone().set(key, value).await.map_err(other),
            Open::Sqlite { label, conn } => {
                let label = label.clone();
                sqlite(conn, move |c| {
                    c.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(rusqlite::params![&*label, key, value])
                    .map(drop)
                })
                .await
            }
        }
    }

    async fn delete(&self, key: String) -> Result<(), Error> {
        match self {
            Open::Redis(c) => c.clone().del(key).await.map_err(other),
            Open::Sqlite { label, conn } => {
                let label = label.clone();
                sqlite(conn, move |c| {
                    c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .execute(rusqlite::params![&*label, key])
                        .map(drop)
                })
                .await
            }
        }
    }

    async fn exists(&self, key: String) -> Result<bool, Error> {
        match self {
            Open::Redis(c) => c.clone().exists(key).await.map_err(other),
            Open::Sqlite { label, conn } => {
                let label = label.clone();
                sqlite(conn, move |c| {
                    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2)")?
                        .query_row(rusqlite::params![&*label, key], |r| r.get(0))
                })
                .await
            }
        }
    }

    async fn keys(&self) -> Result<Vec<String>, Error> {
        match self {
            Open::Redis(c) => {
                let mut c = c.clone();
                // SCAN, not KEYS: it does not block Redis on a large database.
                let mut cursor = 0u64;
                let mut keys = Vec::new();
                loop {
                    let (next, batch): (u64, Vec<String>) =
                        redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query_async(&mut c).await.map_err(other)?;
                    keys.extend(batch);
                    if next == 0 {
                        return Ok(keys);
                    }
                    cursor = next;
                }
            }
            Open::Sqlite { label, conn } => {
                let label = label.clone();
                sqlite(conn, move |c| {
                    c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?
                        .query_map([&*label], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .await
            }
        }
    }
}

fn open_sqlite(path: Option<&std::path::Path>) -> rusqlite::Result<rusqlite::Connection> {
    let c = match path {
        Some(p) => rusqlite::Connection::open(p)?,
        None => rusqlite::Connection::open_in_memory()?,
    };
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
         PRIMARY KEY (store, key))",
    )?;
    Ok(c)
}

async fn sqlite<T: Send + 'static>(
    db: &Arc<Mutex<rusqlite::Connection>>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Error> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db.lock().unwrap()))
        .await
        .map_err(|e| Error::Other(e.to_string()))?
        // Spin reports SQLite errors in their Debug form.
        .map_err(|e| Error::Other(format!("{e:?}")))
}

fn other(e: redis::RedisError) -> Error {
    Error::Other(e.to_string())
}

/// Every configured store, by label.
pub struct KvStores(BTreeMap<String, Arc<Store>>);

impl KvStores {
    pub fn new(configs: &BTreeMap<String, StoreConfig>) -> anyhow::Result<Self> {
        configs
            .iter()
            .map(|(label, c)| {
                Store::new(label, c).with_context(|| format!("key-value store {label:?}")).map(|s| (label.clone(), Arc::new(s)))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Spin refuses to start an app one of whose components lists a label
    /// no store is configured for.
    pub fn check_labels<'a>(&self, component: &str, labels: impl IntoIterator<Item = &'a String>) -> anyhow::Result<()> {
        for label in labels {
            anyhow::ensure!(
                self.0.contains_key(label),
                "unknown key_value_stores label {label:?} for component {component:?}"
            );
        }
        Ok(())
    }
}

pub struct KvState {
    allowed: Arc<HashSet<String>>,
    stores: Arc<KvStores>,
    open: Table<Open>,
}

impl KvState {
    pub fn new(allowed: Arc<HashSet<String>>, stores: Arc<KvStores>) -> Self {
        Self { allowed, stores, open: Table::new(MAX_STORES_PER_INSTANCE) }
    }

    fn store(&self, rep: u32) -> Result<Open, Error> {
        self.open.get(rep).cloned().ok_or(Error::NoSuchStore)
    }
}

pub struct KvData;

impl HasData for KvData {
    type Data<'a> = &'a mut KvState;
}

impl kv::Host for KvState {
    fn convert_error(&mut self, err: Error) -> wasmtime::Result<Error> {
        Ok(err)
    }
}

impl kv::HostStore for KvState {
    async fn drop(&mut self, store: Resource<kv::Store>) -> wasmtime::Result<()> {
        self.open.remove(store.rep());
        Ok(())
    }
}

impl kv::HostStoreWithStore for KvData {
    async fn open<T>(accessor: &Accessor<T, Self>, label: String) -> Result<Resource<kv::Store>, Error> {
        let store = accessor.with(|mut a| {
            let s = a.get();
            if !s.allowed.contains(&label) {
                return Err(Error::AccessDenied);
            }
            s.stores.0.get(&label).cloned().ok_or(Error::NoSuchStore)
        })?;
        let open = store.open().await?;
        accessor.with(|mut a| a.get().open.push(open).map(Resource::new_own).map_err(|()| Error::StoreTableFull))
    }

    async fn get<T>(accessor: &Accessor<T, Self>, store: Resource<kv::Store>, key: String) -> Result<Option<Vec<u8>>, Error> {
        let s = accessor.with(|mut a| a.get().store(store.rep()))?;
        s.get(key).await
    }

    async fn set<T>(accessor: &Accessor<T, Self>, store: Resource<kv::Store>, key: String, value: Vec<u8>) -> Result<(), Error> {
        let s = accessor.with(|mut a| a.get().store(store.rep()))?;
        s.set(key, value).await
    }

    async fn delete<T>(accessor: &Accessor<T, Self>, store: Resource<kv::Store>, key: String) -> Result<(), Error> {
        let s = accessor.with(|mut a| a.get().store(store.rep()))?;
        s.delete(key).await
    }

    async fn exists<T>(accessor: &Accessor<T, Self>, store: Resource<kv::Store>, key: String) -> Result<bool, Error> {
        let s = accessor.with(|mut a| a.get().store(store.rep()))?;
        s.exists(key).await
    }

    async fn get_keys<T>(
        accessor: &Accessor<T, Self>,
        store: Resource<kv::Store>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let s = accessor.with(|mut a| a.get().store(store.rep()));
        let (keys, result) = match s {
            Ok(s) => match s.keys().await {
                Ok(keys) => (keys, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            },
            Err(e) => (Vec::new(), Err(e)),
        };
        accessor.with(|mut a| {
            let keys = StreamReader::new(&mut a, keys)?;
            let done = FutureReader::new(&mut a, async move { Ok::<_, wasmtime::Error>(result) })?;
            Ok((keys, done))
        })
    }
}

/// The 2.0.0 interface's error for the 3.0.0 one's: the same variants.
fn v2(e: Error) -> kv2::Error {
    match e {
        Error::StoreTableFull => kv2::Error::StoreTableFull,
        Error::NoSuchStore => kv2::Error::NoSuchStore,
        Error::AccessDenied => kv2::Error::AccessDenied,
        Error::Other(m) => kv2::Error::Other(m),
    }
}

impl kv2::Host for KvState {
    fn convert_error(&mut self, err: kv2::Error) -> wasmtime::Result<kv2::Error> {
        Ok(err)
    }
}

impl kv2::HostStore for KvState {
    async fn open(&mut self, label: String) -> Result<Resource<kv2::Store>, kv2::Error> {
        if !self.allowed.contains(&label) {
            return Err(kv2::Error::AccessDenied);
        }
        let store = self.stores.0.get(&label).cloned().ok_or(kv2::Error::NoSuchStore)?;
        let open = store.open().await.map_err(v2)?;
        self.open.push(open).map(Resource::new_own).map_err(|()| kv2::Error::StoreTableFull)
    }

    async fn get(&mut self, store: Resource<kv2::Store>, key: String) -> Result<Option<Vec<u8>>, kv2::Error> {
        self.store(store.rep()).map_err(v2)?.get(key).await.map_err(v2)
    }

    async fn set(&mut self, store: Resource<kv2::Store>, key: String, value: Vec<u8>) -> Result<(), kv2::Error> {
        self.store(store.rep()).map_err(v2)?.set(key, value).await.map_err(v2)
    }

    async fn delete(&mut self, store: Resource<kv2::Store>, key: String) -> Result<(), kv2::Error> {
        self.store(store.rep()).map_err(v2)?.delete(key).await.map_err(v2)
    }

    async fn exists(&mut self, store: Resource<kv2::Store>, key: String) -> Result<bool, kv2::Error> {
        self.store(store.rep()).map_err(v2)?.exists(key).await.map_err(v2)
    }

    async fn get_keys(&mut self, store: Resource<kv2::Store>) -> Result<Vec<String>, kv2::Error> {
        self.store(store.rep()).map_err(v2)?.keys().await.map_err(v2)
    }

    async fn drop(&mut self, store: Resource<kv2::Store>) -> wasmtime::Result<()> {
        self.open.remove(store.rep());
        Ok(())
    }
}
