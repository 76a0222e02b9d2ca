//! An app's alerts (`lvd::alerts`): create, list, read, change, delete, and
//! the history of their firings. The worker evaluates them and notifies;
//! nothing here reaches a webhook (the URL is only checked, with the
//! operator's allow list, `alert_webhook_allow_hosts`).

use lvd::alerts::store::{self, Alert, CreateError, Secret};
use lvd::alerts::{MAX_PER_APP, Settings, new_webhook_secret};
use lvd::problem::Problem;
use lvd::webhook::AllowList;
use lvd_component::Request;
use lvd_component::http::{self as h, Response};
use lvd_component::variables;
use serde_json::json;
use uuid::Uuid;

use crate::{Ctx, Error, owned_app};

type Reply = Result<Response, Error>;

/// What a path names: the caller, the app, and the alert when there is one.
pub struct On<'a> {
    pub owner: Uuid,
    pub app: &'a str,
    pub alert: &'a str,
}

async fn allow_list() -> Result<AllowList, Error> {
    let raw = variables::get("alert_webhook_allow_hosts").await.map_err(|e| Error::Config(e.to_string()))?;
    Ok(AllowList::parse(&raw))
}

fn alert_id(raw: &str) -> Result<Uuid, Error> {
    raw.parse().map_err(|_| Error::NotFound)
}

/// A reply that shows a webhook secret must never be cached.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// 201 with the alert, and its webhook secret (shown this once) when it
/// has a webhook.
pub async fn create(req: Request, ctx: &Ctx, on: &On<'_>) -> Reply {
    let body = h::json_body(req).await?;
    let app = owned_app(ctx, on.owner, on.app).await?;
    let settings = Settings::apply(&body, None, &allow_list().await?)?;
    let secret = settings.webhook_url.as_ref().map(|_| new_webhook_secret());
    let alert = store::create(&ctx.common.db, on.owner, app.id, &settings, secret.as_deref()).await.map_err(|e| match e {
        CreateError::AtCap => Error::Rejected(Problem::new(409, "too_many_alerts", format!("An app has at most {MAX_PER_APP} alerts; delete one first."))),
        CreateError::Db(e) => Error::Db(e),
    })?;
    let mut view = alert.view();
    if let Some(secret) = secret {
        view["webhook_secret"] = json!(secret);
    }
    let mut resp = h::json(201, &view);
    let location = format!("/api/apps/{}/alerts/{}", app.id, alert.id);
    resp.headers_mut().insert(http::header::LOCATION, location.parse().expect("a valid header"));
    Ok(no_store(resp))
}

/// The app's alerts, newest first, `limit` and `cursor` as every list.
pub async fn list(req: &Request, ctx: &Ctx, on: &On<'_>) -> Reply {
    let (limit, before) = lvd::input::page(req.uri().query().unwrap_or(""), |c| c.parse::<Uuid>().ok())?;
    let app = owned_app(ctx, on.owner, on.app).await?;
    let (alerts, more) = store::list(&ctx.common.db, on.owner, app.id, before, limit).await?;
    let next = if more { alerts.last().map(|a| a.id.to_string()) } else { None };
    Ok(h::json(200, &json!({ "items": alerts.iter().map(Alert::view).collect::<Vec<_>>(), "next_cursor": next })))
}

/// The app's id from the path: the alert statements take the owner and
/// the app, so another user's (or a missing) app finds no alert without a
/// look at `apps` first.
fn app_id(raw: &str) -> Result<Uuid, Error> {
    raw.parse().map_err(|_| Error::NotFound)
}

async fn owned(ctx: &Ctx, on: &On<'_>) -> Result<Alert, Error> {
    store::get(&ctx.common.db, on.owner, app_id(on.app)?, alert_id(on.alert)?).await?.ok_or(Error::NotFound)
}

pub async fn get(ctx: &Ctx, on: &On<'_>) -> Reply {
    Ok(h::json(200, &owned(ctx, on).await?.view()))
}

/// Changes any of the create fields and `enabled`. A new `webhook_url`
/// gets a new secret, shown in this reply only; removing it drops the
/// secret.
pub async fn update(req: Request, ctx: &Ctx, on: &On<'_>) -> Reply {
    let body = h::json_body(req).await?;
    let current = owned(ctx, on).await?;
    let settings = Settings::apply(&body, Some(&current.settings), &allow_list().await?)?;
    let secret = match (&current.settings.webhook_url, &settings.webhook_url) {
        (_, None) => Secret::Clear,
        (Some(old), Some(new)) if old == new => Secret::Keep,
        (_, Some(_)) => Secret::Set(new_webhook_secret()),
    };
    let shown = match &secret {
        Secret::Set(s) => Some(s.clone()),
        _ => None,
    };
    let alert = store::update(&ctx.common.db, on.owner, current.app_id, current.id, &settings, secret).await?.ok_or(Error::NotFound)?;
    let mut view = alert.view();
    if let Some(secret) = shown {
        view["webhook_secret"] = json!(secret);
    }
    Ok(no_store(h::json(200, &view)))
}

pub async fn delete(ctx: &Ctx, on: &On<'_>) -> Reply {
    if !store::delete(&ctx.common.db, on.owner, app_id(on.app)?, alert_id(on.alert)?).await? {
        return Err(Error::NotFound);
    }
    Ok(h::empty(204))
}

/// Its changes of state, newest first: `{state, at, value, threshold}`.
pub async fn history(req: &Request, ctx: &Ctx, on: &On<'_>) -> Reply {
    let (limit, before) = lvd::input::page(req.uri().query().unwrap_or(""), |c| c.parse::<Uuid>().ok())?;
    let (changes, more) =
        store::history(&ctx.common.db, on.owner, app_id(on.app)?, alert_id(on.alert)?, before, limit).await?.ok_or(Error::NotFound)?;
    let next = if more { changes.last().map(|c| c.id.to_string()) } else { None };
    Ok(h::json(200, &json!({ "items": changes.iter().map(store::Change::view).collect::<Vec<_>>(), "next_cursor": next })))
}
