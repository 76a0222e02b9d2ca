//! What ingest reads before judging: the app an ingest key opens and the
//! rules of the events at hand, each read through the shared cache (see
//! `crate::cache`). A cache that cannot be reached is only slower: reads fall
//! back to PostgreSQL and failed writes are ignored.

use std::collections::HashMap;
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

/// The compiled rules of some of an app's events.
#[derive(Default)]
pub struct Plan(HashMap<EventName, (i64, Schema)>);

impl Plan {
    /// Loads the current rule of each of `events` that has one.
    pub async fn load<'a>(kv: &impl KeyValue, db: &impl Db, app: Uuid, events: impl IntoIterator<Item = &'a EventName>) -> Result<Self, PlanError> {
        let versions = versions(kv, db, app).await?;
        let mut plan = HashMap::new();
        for event in events {
            if plan.contains_key(event) {
                continue;
            }
            let Some(&version) = versions.get(event.as_str()) else { continue };
            let schema = schema(kv, db, app, event.as_str(), version).await?;
            let compiled = schema
                .as_ref()
                .and_then(|s| Schema::compile(s).ok())
                .ok_or_else(|| PlanError::Compile { app, event: event.as_str().to_owned(), version })?;
            plan.insert(event.clone(), (version, compiled));
        }
        Ok(Self(plan))
    }

    pub fn rule(&self, event: &EventName) -> Option<(i64, &Schema)> {
        self.0.get(event).map(|(v, s)| (*v, s))
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
