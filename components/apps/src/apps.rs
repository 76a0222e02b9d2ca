//! Apps and their ingest keys.

use lvd::apps::{self, AppName, RetentionDays, store};
use lvd::cache::KeyValue;
use lvd::keys;
use lvd::input::Fields;
use lvd_component::http::{self as h, Response};
use serde_json::{Value, json};
use lvd_component::Request;
use uuid::Uuid;

use crate::{Ctx, Error, owned_app};

type Reply = Result<Response, Error>;

fn view(app: &store::App) -> Value {
    json!({
        "id": app.id,
        "name": app.name,
        "retention_days": app.retention_days,
        "created_at": app.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Replies that show an ingest key must never be cached by a proxy.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

pub async fn create(req: Request, ctx: &Ctx, owner: Uuid) -> Reply {
    let mut f = Fields::parse(&h::json_body(req).await?)?;
    let raw_name = f.required_str("name");
    let name = f.parsed("name", raw_name, AppName::parse);
    let retention = match f.optional_int("retention_days") {
        Some(Some(n)) => f.parsed("retention_days", Some(n), RetentionDays::parse),
        Some(None) => Some(RetentionDays::DEFAULT),
        None => None,
    };
    f.finish()?;
    let (key, hash) = apps::new_ingest_key();
    let app = store::create(&ctx.common.db, owner, &name.unwrap(), retention.unwrap(), hash).await?;
    let mut body = view(&app);
    body["ingest_key"] = json!(key);
    let mut resp = h::json(201, &body);
    resp.headers_mut().insert(http::header::LOCATION, format!("/api/apps/{}", app.id).parse().unwrap());
    Ok(no_store(resp))
}

pub async fn list(ctx: &Ctx, owner: Uuid) -> Reply {
    let apps = store::list(&ctx.common.db, owner).await?;
    Ok(h::json(200, &json!({ "items": apps.iter().map(view).collect::<Vec<_>>(), "next_cursor": null })))
}

pub async fn get(ctx: &Ctx, owner: Uuid, id: &str) -> Reply {
    Ok(h::json(200, &view(&owned_app(ctx, owner, id).await?)))
}

pub async fn delete(ctx: &Ctx, owner: Uuid, id: &str) -> Reply {
    let id: Uuid = id.parse().map_err(|_| Error::NotFound)?;
    let hash = store::delete(&ctx.common.db, owner, id).await?.ok_or(Error::NotFound)?;
    ctx.kv.delete(&keys::cache::app(&hash)).await.map_err(Error::Stale)?;
    Ok(h::empty(204))
}

/// The old key stops working at once: the database no longer matches it and
/// its cache entry, shared by every instance, is gone before the reply.
pub async fn rotate(ctx: &Ctx, owner: Uuid, id: &str) -> Reply {
    let id: Uuid = id.parse().map_err(|_| Error::NotFound)?;
    let (key, hash) = apps::new_ingest_key();
    let old = store::rotate_key(&ctx.common.db, owner, id, hash).await?.ok_or(Error::NotFound)?;
    ctx.kv.delete(&keys::cache::app(&old)).await.map_err(Error::Stale)?;
    Ok(no_store(h::json(200, &json!({ "ingest_key": key }))))
}

/// Rows of the app's accepted events that PostgreSQL refused, with why.
pub async fn quarantine(req: &Request, ctx: &Ctx, owner: Uuid, id: &str) -> Reply {
    let page = lvd::logs::quarantine::Page::parse(req.uri().query().unwrap_or(""))?;
    let app = owned_app(ctx, owner, id).await?;
    let (items, next) = lvd::logs::quarantine::page(&ctx.common.db, app.id, &page).await?;
    Ok(h::json(200, &json!({ "items": items, "next_cursor": next })))
}
