//! What ingest reads before judging: the app an ingest key opens with its
//! rules' current versions (one cache read), and the schemas of the events
//! at hand (compiled once per instance), each read through the shared cache
//! (see `crate::cache`). A cache that cannot be reached is only slower: reads fall
//! back to PostgreSQL and failed writes are ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use super::EventName;
use crate::apps::{self, store as apps_store};
use crate::cache::{self, IngestApp, KeyValue};
use crate::keys;
use crate::db::{Db, DbError};
use crate::rules::{Schema, store as rules_store};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored schema no longer compiles (say, after a library upgrade).
    #[error("stored rule {event} v{version} of app {app} does not compile")]
    Compile { app: Uuid, event: String, version: i64 },
}

/// Where an ingest key stands in the shared cache: the app it opens, a key
/// that cannot open anything (neither our key format nor a legacy key's), or not known to the
/// cache, so only PostgreSQL can say ([`stored_app_for_key`]).
pub enum CachedKey {
    App(IngestApp),
    Malformed,
    Uncached,
}

/// The app an ingest key opens, as far as the shared cache knows. Ingest
/// asks this first: a cache miss costs a PostgreSQL query, which is what
/// unknown keys are limited per client IP for.
pub async fn cached_app_for_key(kv: &impl KeyValue, key: &str) -> CachedKey {
    if !apps::may_open(key) {
        return CachedKey::Malformed;
    }
    match cache::get::<IngestApp>(kv, &keys::cache::app(&apps::ingest_key_hash(key))).await {
        Ok(Some(app)) => CachedKey::App(app),
        _ => CachedKey::Uncached,
    }
}

/// The app an ingest key opens, from PostgreSQL, cached for the next
/// request; `None` for a key that opens nothing.
pub async fn stored_app_for_key(kv: &impl KeyValue, db: &impl Db, key: &str) -> Result<Option<IngestApp>, DbError> {
    let hash = apps::ingest_key_hash(key);
    let app = apps_store::by_key_hash(db, &hash).await?;
    if let Some(app) = &app {
        let _ = cache::put(kv, &keys::cache::app(&hash), app, cache::APP_TTL_SECS).await;
    }
    Ok(app)
}

/// Compiled schemas by `(app, event, version)`, kept for the life of a
/// component instance (Spin reuses one for many requests in the wasi:http
/// 0.3 build; a 0.2 instance serves one request, so there it only spares a
/// batch compiling a rule twice). Safe to keep:
/// a version's schema never changes, and which version is current is read
/// through the shared cache on every request. Compiling is the costly part
/// of judging (the `jsonschema` crate checks each schema against the
/// draft's meta-schema, rebuilt per call on wasm), so this is what makes
/// ingest fast.
///
/// Bounded by entries and by size (the schemas' JSON text), evicting the
/// least recently used, and no app may hold more than [`Compiled::APP_SHARE`]
/// of either: an app with many rules, or huge ones, evicts its own entries
/// before anyone else's, so one tenant cannot make every tenant recompile.
///
/// One `Mutex` over the whole: a lookup also reorders the recency list, so
/// even reads write; the lock is held for map operations only, never while
/// compiling.
#[derive(Default)]
pub struct Compiled(Mutex<Lru>);

type Key = (Uuid, String, i64);

struct Lru {
    /// Every entry, most recently used first, with its size in bytes.
    entries: lru::LruCache<Key, (Arc<Schema>, usize)>,
    /// Total size of `entries`.
    size: usize,
    /// Entries and size per app, for the per-app share.
    apps: HashMap<Uuid, (usize, usize)>,
}

impl Default for Lru {
    fn default() -> Self {
        Self { entries: lru::LruCache::unbounded(), size: 0, apps: HashMap::new() }
    }
}

impl Compiled {
    /// Entries kept at most.
    pub const MAX_ENTRIES: usize = 512;
    /// Bytes of schema text kept at most (a compiled schema's memory grows
    /// with its text): 8 MiB.
    pub const MAX_BYTES: usize = 8 << 20;
    /// The most of either bound one app may hold, as a fraction 1/APP_SHARE.
    pub const APP_SHARE: usize = 4;

    fn get(&self, key: &Key) -> Option<Arc<Schema>> {
        self.0.lock().ok()?.entries.get(key).map(|(s, _)| s.clone())
    }

    /// Keeps `schema`, whose text is `bytes` long, evicting first the app's
    /// own least recently used entries while it is over its share, then
    /// anyone's while the whole is over its bounds.
    fn insert(&self, key: Key, schema: Arc<Schema>, bytes: usize) {
        let Ok(mut lru) = self.0.lock() else { return };
        let app = key.0;
        if let Some((_, old)) = lru.entries.pop(&key) {
            lru.forget(app, old);
        }
        lru.size += bytes;
        let mine = lru.apps.entry(app).or_default();
        *mine = (mine.0 + 1, mine.1 + bytes);
        lru.entries.push(key, (schema, bytes));
        loop {
            let (n, size) = lru.apps.get(&app).copied().unwrap_or_default();
            if n <= 1 || (n <= Self::MAX_ENTRIES / Self::APP_SHARE && size <= Self::MAX_BYTES / Self::APP_SHARE) {
                break;
            }
            // The app's least recently used entry: the list is short (512).
            let Some(oldest) = lru.entries.iter().rev().find(|(k, _)| k.0 == app).map(|(k, _)| k.clone()) else { break };
            if let Some((_, b)) = lru.entries.pop(&oldest) {
                lru.forget(app, b);
            }
        }
        while lru.entries.len() > 1 && (lru.entries.len() > Self::MAX_ENTRIES || lru.size > Self::MAX_BYTES) {
            let Some((k, (_, b))) = lru.entries.pop_lru() else { break };
            lru.forget(k.0, b);
        }
    }

    #[cfg(test)]
    fn contains(&self, key: &Key) -> bool {
        self.0.lock().unwrap().entries.contains(key)
    }
}

impl Lru {
    fn forget(&mut self, app: Uuid, bytes: usize) {
        self.size -= bytes;
        if let Some(mine) = self.apps.get_mut(&app) {
            *mine = (mine.0 - 1, mine.1 - bytes);
            if mine.0 == 0 {
                self.apps.remove(&app);
            }
        }
    }
}

/// The compiled rules of some of an app's events.
#[derive(Default)]
pub struct Plan(HashMap<EventName, (i64, Arc<Schema>)>);

impl Plan {
    /// Loads the current rule of each of `events` that has one (the
    /// versions `app` carries, read with it).
    pub async fn load<'a>(
        kv: &impl KeyValue,
        db: &impl Db,
        compiled: &Compiled,
        app: &IngestApp,
        events: impl IntoIterator<Item = &'a EventName>,
    ) -> Result<Self, PlanError> {
        let (versions, app) = (&app.rules, app.id);
        let mut plan = HashMap::new();
        for event in events {
            if plan.contains_key(event) {
                continue;
            }
            let Some(&version) = versions.get(event.as_str()) else { continue };
            let key = (app, event.as_str().to_owned(), version);
            let schema = match compiled.get(&key) {
                Some(s) => s,
                None => {
                    let raw = schema(kv, db, app, event.as_str(), version).await?;
                    let bytes = raw.as_ref().map_or(0, |s| s.to_string().len());
                    let schema = raw
                        .as_ref()
                        .and_then(|s| Schema::compile(s).ok())
                        .map(Arc::new)
                        .ok_or_else(|| PlanError::Compile { app, event: event.as_str().to_owned(), version })?;
                    compiled.insert(key, schema.clone(), bytes);
                    schema
                }
            };
            plan.insert(event.clone(), (version, schema));
        }
        Ok(Self(plan))
    }

    pub fn rule(&self, event: &EventName) -> Option<(i64, &Schema)> {
        self.0.get(event).map(|(v, s)| (*v, s.as_ref()))
    }
}

async fn schema(kv: &impl KeyValue, db: &impl Db, app: Uuid, event: &str, version: i64) -> Result<Option<serde_json::Value>, DbError> {
    let key = keys::cache::rule(app, version, event);
    if let Ok(Some(s)) = cache::get(kv, &key).await {
        return Ok(Some(s));
    }
    let s = rules_store::schema(db, app, event, version).await?;
    if let Some(s) = &s {
        let _ = cache::put(kv, &key, s, cache::RULES_TTL_SECS).await;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::compile(&json!({"type": "object"})).unwrap())
    }

    #[test]
    fn one_app_with_many_rules_evicts_its_own_entries_not_other_apps() {
        let compiled = Compiled::default();
        let quiet = Uuid::new_v4();
        compiled.insert((quiet, "signup".into(), 1), schema(), 100);

        let noisy = Uuid::new_v4();
        for i in 0..(Compiled::MAX_ENTRIES * 2) as i64 {
            compiled.insert((noisy, "e".into(), i), schema(), 100);
        }

        assert!(compiled.contains(&(quiet, "signup".into(), 1)), "the quiet app's schema survived");
        let kept = (0..(Compiled::MAX_ENTRIES * 2) as i64).filter(|i| compiled.contains(&(noisy, "e".into(), *i))).count();
        assert_eq!(kept, Compiled::MAX_ENTRIES / Compiled::APP_SHARE);
        assert!(compiled.contains(&(noisy, "e".into(), (Compiled::MAX_ENTRIES * 2 - 1) as i64)), "the newest is kept");
    }

    #[test]
    fn the_least_recently_used_entry_goes_first_and_size_counts() {
        let compiled = Compiled::default();
        let apps: Vec<Uuid> = (0..Compiled::APP_SHARE * 2).map(|_| Uuid::new_v4()).collect();
        let big = Compiled::MAX_BYTES / Compiled::APP_SHARE / 2;
        for app in &apps[..Compiled::APP_SHARE * 2 - 1] {
            compiled.insert((*app, "e".into(), 1), schema(), big);
        }
        // The first app's entry is used again, so the second's is the oldest.
        assert!(compiled.get(&(apps[0], "e".into(), 1)).is_some());
        compiled.insert((apps[Compiled::APP_SHARE * 2 - 1], "e".into(), 1), schema(), big + 1);

        assert!(compiled.contains(&(apps[0], "e".into(), 1)));
        assert!(!compiled.contains(&(apps[1], "e".into(), 1)), "the least recently used went, to bring the size under its bound");
        assert!(compiled.contains(&(apps[2], "e".into(), 1)));
    }
}
