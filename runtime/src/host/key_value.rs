//! `spin:key-value/key-value@3.0.0` with the stores `runtime-config.toml`
//! declares. A component may open only the labels its manifest entry lists in
//! `key_value_stores` (`access-denied` otherwise, as in Spin); a listed label
//! with no configured store is `no-such-store`.
//!
//! Redis stores keep keys unprefixed in the database their URL names, exactly
//! like Spin's Redis backend, so `get-keys` lists that whole database: keep
//! other Redis data (queues, counters) in another database.

use anyhow::Context;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, StreamReader};

use super::table::Table;
use crate::bindings::spin::key_value::key_value::{self as kv, Error};
use crate::runtime_config::StoreConfig;

const MAX_STORES_PER_INSTANCE: usize = 16;

/// A configured store, shared by every instance that opens its label.
pub enum Store {
    Redis {
        client: redis::Client,
        /// Established on first use; a failed attempt is retried on the next.
        conn: OnceCell<ConnectionManager>,
    },
    /// Spin's default store: SQLite. The mutex serialises access to the one
    /// connection; it is only taken inside `spawn_blocking`.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
}

impl Store {
    fn open(config: &StoreConfig) -> anyhow::Result<Self> {
        Ok(match config {
            StoreConfig::Redis { url } => Store::Redis {
                client: redis::Client::open(url.as_str()).context("invalid key-value Redis URL")?,
                conn: OnceCell::new(),
            },
            StoreConfig::Sqlite { path } => Store::Sqlite(Arc::new(Mutex::new(open_sqlite(path)?))),
        })
    }

    async fn redis(client: &redis::Client, cell: &OnceCell<ConnectionManager>) -> Result<ConnectionManager, Error> {
        cell.get_or_try_init(|| async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(1))
                .set_response_timeout(Duration::from_secs(5))
                .set_number_of_retries(1);
            client.get_connection_manager_with_config(config).await
        })
        .await
        .cloned()
        .map_err(|e| Error::Other(e.to_string()))
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Store::Redis { client, conn } => Self::redis(client, conn).await?.get(key).await.map_err(other),
            Store::Sqlite(db) => sqlite(db, move |c| {
                c.query_row("SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?1", [key], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
            })
            .await,
        }
    }

    async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        match self {
            Store::Redis { client, conn } => Self::redis(client, conn).await?.set(key, value).await.map_err(other),
            Store::Sqlite(db) => sqlite(db, move |c| {
                c.execute(
                    "INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2)
                     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    rusqlite::params![key, value],
                )
                .map(drop)
            })
            .await,
        }
    }

    async fn delete(&self, key: String) -> Result<(), Error> {
        match self {
            Store::Redis { client, conn } => Self::redis(client, conn).await?.del(key).await.map_err(other),
            Store::Sqlite(db) => sqlite(db, move |c| {
                c.execute("DELETE FROM spin_key_value WHERE store = 'default' AND key = ?1", [key]).map(drop)
            })
            .await,
        }
    }

    async fn exists(&self, key: String) -> Result<bool, Error> {
        match self {
            Store::Redis { client, conn } => Self::redis(client, conn).await?.exists(key).await.map_err(other),
            Store::Sqlite(db) => sqlite(db, move |c| {
                c.query_row("SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE store = 'default' AND key = ?1)", [key], |r| r.get(0))
            })
            .await,
        }
    }

    async fn keys(&self) -> Result<Vec<String>, Error> {
        match self {
            Store::Redis { client, conn } => {
                let mut c = Self::redis(client, conn).await?;
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
            Store::Sqlite(db) => sqlite(db, |c| {
                let mut stmt = c.prepare("SELECT key FROM spin_key_value WHERE store = 'default'")?;
                let keys = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>();
                keys
            })
            .await,
        }
    }
}

fn open_sqlite(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let c = rusqlite::Connection::open(path).with_context(|| format!("failed to open {}", path.display()))?;
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
        .map_err(|e| Error::Other(e.to_string()))
}

fn other(e: redis::RedisError) -> Error {
    Error::Other(e.to_string())
}

/// Every configured store, by label.
pub struct KvStores(BTreeMap<String, Arc<Store>>);

impl KvStores {
    pub fn open(configs: &BTreeMap<String, StoreConfig>) -> anyhow::Result<Self> {
        configs
            .iter()
            .map(|(label, c)| {
                Store::open(c).with_context(|| format!("key-value store {label:?}")).map(|s| (label.clone(), Arc::new(s)))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }
}

pub struct KvState {
    allowed: Arc<HashSet<String>>,
    stores: Arc<KvStores>,
    open: Table<Arc<Store>>,
}

impl KvState {
    pub fn new(allowed: Arc<HashSet<String>>, stores: Arc<KvStores>) -> Self {
        Self { allowed, stores, open: Table::new(MAX_STORES_PER_INSTANCE) }
    }

    fn store(&self, rep: u32) -> Result<Arc<Store>, Error> {
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
        accessor.with(|mut a| {
            let s = a.get();
            if !s.allowed.contains(&label) {
                return Err(Error::AccessDenied);
            }
            let store = s.stores.0.get(&label).cloned().ok_or(Error::NoSuchStore)?;
            s.open.push(store).map(Resource::new_own).map_err(|()| Error::StoreTableFull)
        })
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
