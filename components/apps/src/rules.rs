//! Tracking-plan rules of an app: versioned JSON Schemas per event, and the
//! dry-run `/test`. Every change drops the app's cached rule versions, so the
//! next event on any instance is judged by the new rule.

use lvd::cache::KeyValue;
use lvd::input::Fields;
use lvd::keys;
use lvd::logs::ingest::judge;
use lvd::logs::{EventName, Incoming};
use lvd::problem::{FieldError, Problem};
use lvd::rules::{Schema, store};
use lvd_component::http::{self as h, Response};
use serde_json::{Map, Value, json};
use lvd_component::Request;
use uuid::Uuid;

use crate::{Ctx, Error, owned_app};

type Reply = Result<Response, Error>;

/// The rule a path names: the caller, and the app and event segments.
pub struct On {
    pub owner: Uuid,
    pub app: String,
    pub event: String,
}

fn view(rule: &store::Rule) -> Value {
    json!({
        "event": rule.event,
        "version": rule.version,
        "schema": rule.schema,
        "description": rule.description,
        "updated_at": lvd::logs::rfc3339(rule.updated_at),
    })
}

/// An event name from the path: on a write a bad one is 422; on a read it
/// names no rule, so 404.
fn event_name(raw: &str) -> Result<EventName, String> {
    EventName::parse(raw.to_owned()).map_err(str::to_owned)
}

pub async fn list(ctx: &Ctx, owner: Uuid, app: &str) -> Reply {
    let app = owned_app(ctx, owner, app).await?;
    let rules = store::current(&ctx.common.db, app.id).await?;
    Ok(h::json(200, &json!({ "items": rules.iter().map(view).collect::<Vec<_>>(), "next_cursor": null })))
}

pub async fn put(req: Request, ctx: &Ctx, on: &On) -> Reply {
    let app = owned_app(ctx, on.owner, &on.app).await?;
    let mut f = Fields::parse(&h::json_body(req).await?)?;
    let event = event_name(&on.event).map_err(|m| f.error("event", format!("(the path segment) {m}"))).ok();
    let schema = f.take("schema");
    let description = f.optional_str("description");
    if description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        f.error("description", "must be at most 1000 characters");
    }
    if description.as_ref().is_some_and(|d| d.contains('\0')) {
        f.error("description", "must not contain the NUL character (\\u0000)");
    }
    match &schema {
        None => f.error("schema", "is required"),
        Some(s) => {
            if let Err(errors) = Schema::compile(s) {
                f.finish()?;
                let errors = errors.into_iter().map(|e| FieldError::new(&format!("/schema{}", e.pointer), e.message)).collect();
                return Err(Error::InvalidSchema(errors));
            }
        }
    }
    f.finish()?;
    let (event, schema) = (event.unwrap(), schema.unwrap());
    let rule = store::put(&ctx.common.db, app.id, &event, &schema, description.as_deref()).await?;
    forget_ingest_entry(ctx, app.id).await?;
    Ok(h::json(200, &view(&rule)))
}

pub async fn get(req: &Request, ctx: &Ctx, on: &On) -> Reply {
    let app = owned_app(ctx, on.owner, &on.app).await?;
    let version = match h::query_param(req, "version") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Problem::validation(vec![FieldError::new("/version", "must be a positive integer")])
        })?),
    };
    let event = event_name(&on.event).map_err(|_| Error::NotFound)?;
    let rule = store::get(&ctx.common.db, app.id, &event, version).await?.ok_or(Error::NotFound)?;
    Ok(h::json(200, &view(&rule)))
}

pub async fn history(ctx: &Ctx, on: &On) -> Reply {
    let app = owned_app(ctx, on.owner, &on.app).await?;
    let event = event_name(&on.event).map_err(|_| Error::NotFound)?;
    let versions = store::history(&ctx.common.db, app.id, &event).await?;
    if versions.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(h::json(200, &json!({ "items": versions.iter().map(view).collect::<Vec<_>>(), "next_cursor": null })))
}

pub async fn delete(ctx: &Ctx, on: &On) -> Reply {
    let app = owned_app(ctx, on.owner, &on.app).await?;
    let event = event_name(&on.event).map_err(|_| Error::NotFound)?;
    if !store::delete(&ctx.common.db, app.id, &event).await? {
        return Err(Error::NotFound);
    }
    forget_ingest_entry(ctx, app.id).await?;
    Ok(h::empty(204))
}

/// Judges `properties` as ingest would, against the current rule; stores
/// nothing. An event without a rule is `unplanned`.
pub async fn test(req: Request, ctx: &Ctx, on: &On) -> Reply {
    let app = owned_app(ctx, on.owner, &on.app).await?;
    let mut f = Fields::parse(&h::json_body(req).await?)?;
    let event = event_name(&on.event).map_err(|m| f.error("event", format!("(the path segment) {m}"))).ok();
    let properties = match f.take("properties") {
        None | Some(Value::Null) => Some(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => {
            f.error("properties", "must be an object");
            None
        }
    };
    f.finish()?;
    let (event, properties) = (event.unwrap(), properties.unwrap());
    let rule = store::get(&ctx.common.db, app.id, &event, None).await?;
    let compiled = match &rule {
        Some(r) => Some((r.version, Schema::compile(&r.schema).map_err(|_| Error::StoredRule(format!("{} v{}", r.event, r.version)))?)),
        None => None,
    };
    let incoming = Incoming { event, properties, timestamp: None, message_id: None, context: None };
    let judged = judge(incoming, compiled.as_ref().map(|(v, s)| (*v, s)), chrono::Utc::now());
    Ok(h::json(200, &json!({ "status": judged.status, "errors": judged.errors, "rule_version": judged.rule_version })))
}

/// Deletes the app's ingest cache entry, which carries its rules' current
/// versions, so the next event on any instance reads the new ones.
async fn forget_ingest_entry(ctx: &Ctx, app: Uuid) -> Result<(), Error> {
    if let Some(hash) = lvd::apps::store::key_hash(&ctx.common.db, app).await? {
        ctx.kv.delete(&keys::cache::app(&hash)).await.map_err(Error::Stale)?;
    }
    Ok(())
}
