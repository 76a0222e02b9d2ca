//! Read-through caching in the key-value store, shared by every runtime
//! instance (Spin's key-value API, backed by Redis). Spin's API has no
//! expiry, so each entry carries its own deadline and a stale one reads as a
//! miss. Writers invalidate by deleting the key after their change commits,
//! so the next request on any instance reads the new state.
//!
//! What is cached, and for how long (keys from `crate::keys::cache`):
//! - `app:<sha256 of the ingest key, hex>`: the app an ingest key opens with
//!   the current version of each of its event's rules ([`IngestApp`]: all
//!   ingest reads before judging, in one read), 5 minutes; deleted on key
//!   rotation, app deletion and every rule change.
//! - `rule:<app id>:<version>:<event>`: one version's schema. Versions never
//!   change, so this entry is never stale; it still expires so the store
//!   does not keep schemas of deleted rules forever.
//!
//! An app's live figures are cached too, for a second, but in outbound
//! Redis (`crate::logs::stats::cache`), where the `/api` gate reads them in
//! the round trip it makes anyway.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

pub const APP_TTL_SECS: i64 = 300;
pub const RULES_TTL_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
#[error("key-value store unavailable")]
pub struct KvError(#[source] pub crate::cause::Cause);

/// The seam to a key-value store: Spin's in components.
#[allow(async_fn_in_trait)]
pub trait KeyValue {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Notes what a cache read found (`cache` is the key's prefix: `app`,
    /// `rules`, `rule`, `stats`), for `/metrics`; nothing by default.
    fn note(&self, _cache: &str, _hit: bool) {}
}

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    /// Unix seconds after which the entry is stale.
    exp: i64,
    v: T,
}

/// The value under `key` unless missing, stale or unreadable.
/// A read the store could not answer counts as a miss.
pub async fn get<T: DeserializeOwned>(kv: &impl KeyValue, key: &str) -> Result<Option<T>, KvError> {
    let found = kv.get(key).await.map(|bytes| {
        bytes.and_then(|b| serde_json::from_slice::<Entry<T>>(&b).ok()).filter(|e| e.exp > now()).map(|e| e.v)
    });
    kv.note(key.split(':').next().unwrap_or(key), matches!(found, Ok(Some(_))));
    found
}

pub async fn put<T: Serialize>(kv: &impl KeyValue, key: &str, value: &T, ttl_secs: i64) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(&Entry { exp: now() + ttl_secs, v: value }).expect("a cache entry serializes");
    kv.set(key, &bytes).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What ingest needs to know about the app an ingest key opens. An entry
/// cached before `rules` joined it fails to parse, so it reads as a miss.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestApp {
    pub id: Uuid,
    pub retention_days: i64,
    /// The current version of each event's rule.
    pub rules: RuleVersions,
}

/// The current rule version of each event of an app.
pub type RuleVersions = HashMap<String, i64>;
