//! What ingest reads before judging: the app an ingest key opens and the
//! rules of the events at hand, each read through the shared cache (see
//! `crate::cache`). A cache that cannot be reached is only slower: reads fall
//! back to PostgreSQL and failed writes are ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use super::EventName;
use crate::apps::{self, store as apps_store};
use crate::cache::{self, IngestApp, KeyValue, RuleVersions};
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

/// The app an ingest key opens, or `None` for a key that opens nothing.
pub async fn app_for_key(kv: &impl KeyValue, db: &impl Db, key: &str) -> Result<Option<IngestApp>, DbError> {
    if !key.starts_with(apps::KEY_PREFIX) {
        return Ok(None);
    }
    let hash = apps::ingest_key_hash(key);
    let cache_key = cache::app_key(&hash);
    if let Ok(Some(app)) = cache::get::<IngestApp>(kv, &cache_key).await {
        return Ok(Some(app));
    }
    let app = apps_store::by_key_hash(db, &hash).await?;
    if let Some(app) = &app {
        let _ = cache::put(kv, &cache_key, app, cache::APP_TTL_SECS).await;
    }
    Ok(app)
}

/// Compiled schemas by `(app, event, version)`, kept for the life of a
/// component instance (Spin reuses one for many requests). Safe to keep:
/// a version's schema never changes, and which version is current is read
/// through the shared cache on every request. Compiling is the costly part
/// of judging (the `jsonschema` crate checks each schema against the
/// draft's meta-schema, rebuilt per call on wasm), so this is what makes
/// ingest fast.
#[derive(Default)]
pub struct Compiled(Mutex<HashMap<(Uuid, String, i64), Arc<Schema>>>);

impl Compiled {
    /// Entries kept before the map starts over, bounding an instance's memory.
    const MAX_ENTRIES: usize = 512;

    fn get(&self, key: &(Uuid, String, i64)) -> Option<Arc<Schema>> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn insert(&self, key: (Uuid, String, i64), schema: Arc<Schema>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= Self::MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, schema);
        }
    }
}

/// The compiled rules of some of an app's events.
#[derive(Default)]
pub struct Plan(HashMap<EventName, (i64, Arc<Schema>)>);

impl Plan {
    /// Loads the current rule of each of `events` that has one.
    pub async fn load<'a>(
        kv: &impl KeyValue,
        db: &impl Db,
        compiled: &Compiled,
        app: Uuid,
        events: impl IntoIterator<Item = &'a EventName>,
    ) -> Result<Self, PlanError> {
        let versions = versions(kv, db, app).await?;
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
                    let schema = raw
                        .as_ref()
                        .and_then(|s| Schema::compile(s).ok())
                        .map(Arc::new)
                        .ok_or_else(|| PlanError::Compile { app, event: event.as_str().to_owned(), version })?;
                    compiled.insert(key, schema.clone());
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

async fn versions(kv: &impl KeyValue, db: &impl Db, app: Uuid) -> Result<RuleVersions, DbError> {
    let key = cache::rules_key(app);
    if let Ok(Some(v)) = cache::get::<RuleVersions>(kv, &key).await {
        return Ok(v);
    }
    let v: RuleVersions = rules_store::versions(db, app).await?.into_iter().collect();
    let _ = cache::put(kv, &key, &v, cache::RULES_TTL_SECS).await;
    Ok(v)
}

async fn schema(kv: &impl KeyValue, db: &impl Db, app: Uuid, event: &str, version: i64) -> Result<Option<serde_json::Value>, DbError> {
    let key = cache::rule_key(app, version, event);
    if let Ok(Some(s)) = cache::get(kv, &key).await {
        return Ok(Some(s));
    }
    let s = rules_store::schema(db, app, event, version).await?;
    if let Some(s) = &s {
        let _ = cache::put(kv, &key, s, cache::RULES_TTL_SECS).await;
    }
    Ok(s)
}
