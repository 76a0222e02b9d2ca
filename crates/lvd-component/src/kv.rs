//! `lvd::cache::KeyValue` over Spin's key-value API (the `default` store,
//! which runtime-config.toml backs with Redis). Opens on first use.

use lvd::cache::{KeyValue, KvError};
use spin_sdk::key_value::Store;

#[derive(Default)]
pub struct SpinKv {
    store: std::cell::OnceCell<Store>,
}

impl SpinKv {
    async fn store(&self) -> Result<&Store, KvError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = Store::open_default().await.map_err(|e| KvError(format!("{e:?}")))?;
        Ok(self.store.get_or_init(|| s))
    }
}

impl KeyValue for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store().await?.get(key).await.map_err(|e| KvError(format!("{e:?}")))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.store().await?.set(key, value).await.map_err(|e| KvError(format!("{e:?}")))
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store().await?.delete(key).await.map_err(|e| KvError(format!("{e:?}")))
    }
}
