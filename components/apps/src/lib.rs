//! `/api/apps`: create, list, read and delete a user's apps, and rotate their
//! ingest keys. Another user's app answers 404 exactly like a missing one.
//! Every reply carries the binding `RateLimit-*` headers.

use lvd::apps::{self, AppName, RetentionDays, store};
use lvd::db::DbError;
use lvd::input::Fields;
use lvd::limits::Limit;
use lvd::problem::Problem;
use lvd_component::api::{self, Gate};
use lvd_component::config::{self, Common};
use lvd_component::http::{self as h, Response};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::{http_service, variables};
use uuid::Uuid;

struct Ctx {
    common: Common,
    per_ip: u64,
    per_user: u64,
}

impl Ctx {
    async fn load() -> Result<Self, variables::Error> {
        Ok(Self {
            common: Common::load().await?,
            per_ip: config::number("rate_limit_api_per_ip", 1000).await?,
            per_user: config::number("rate_limit_api_per_user", 200).await?,
        })
    }
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let ctx = match Ctx::load().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("apps: missing configuration: {e:?}");
            return h::problem(&Problem::internal());
        }
    };
    let gate = Gate {
        redis: &ctx.common.redis,
        jwt_secret: &ctx.common.jwt_secret,
        per_ip: Limit { name: "api_ip", max: ctx.per_ip, window_secs: 60 },
        per_user: Limit { name: "api_user", max: ctx.per_user, window_secs: 60 },
        trusted_proxies: &ctx.common.trusted_proxies,
    };
    let (claims, decision) = match api::admit(&gate, &req).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp,
    };
    let resp = route(req, &ctx, claims.sub).await.unwrap_or_else(|p| h::problem(&p));
    h::with_rate_limit(resp, &decision)
}

async fn route(req: Request, ctx: &Ctx, owner: Uuid) -> Result<Response, Problem> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(3).collect(); // after "/api/apps"
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::POST, []) => create(req, ctx, owner).await,
        (Method::GET, []) => list(ctx, owner).await,
        (Method::GET, [id]) => get(ctx, owner, id).await,
        (Method::DELETE, [id]) => delete(ctx, owner, id).await,
        (Method::POST, [id, "keys", "rotate"]) => rotate(ctx, owner, id).await,
        (_, [] | [_] | [_, "keys", "rotate"]) => Err(Problem::method_not_allowed()),
        _ => Err(Problem::not_found()),
    }
}

/// An app id from the path; anything that is not a UUID names no app.
fn app_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse().map_err(|_| Problem::not_found())
}

fn view(app: &store::App) -> Value {
    json!({
        "id": app.id,
        "name": app.name,
        "retention_days": app.retention_days,
        "created_at": app.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

async fn create(req: Request, ctx: &Ctx, owner: Uuid) -> Result<Response, Problem> {
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
    let app = store::create(&ctx.common.db, owner, &name.unwrap(), retention.unwrap(), hash).await.map_err(db_problem)?;
    let mut body = view(&app);
    body["ingest_key"] = json!(key);
    let mut resp = h::json(201, &body);
    resp.headers_mut().insert(http::header::LOCATION, format!("/api/apps/{}", app.id).parse().unwrap());
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn list(ctx: &Ctx, owner: Uuid) -> Result<Response, Problem> {
    let apps = store::list(&ctx.common.db, owner).await.map_err(db_problem)?;
    Ok(h::json(200, &json!({ "items": apps.iter().map(view).collect::<Vec<_>>(), "next_cursor": null })))
}

async fn get(ctx: &Ctx, owner: Uuid, id: &str) -> Result<Response, Problem> {
    let app = store::get(&ctx.common.db, owner, app_id(id)?).await.map_err(db_problem)?.ok_or_else(Problem::not_found)?;
    Ok(h::json(200, &view(&app)))
}

async fn delete(ctx: &Ctx, owner: Uuid, id: &str) -> Result<Response, Problem> {
    if store::delete(&ctx.common.db, owner, app_id(id)?).await.map_err(db_problem)? { Ok(h::empty(204)) } else { Err(Problem::not_found()) }
}

async fn rotate(ctx: &Ctx, owner: Uuid, id: &str) -> Result<Response, Problem> {
    let (key, hash) = apps::new_ingest_key();
    if !store::rotate_key(&ctx.common.db, owner, app_id(id)?, hash).await.map_err(db_problem)? {
        return Err(Problem::not_found());
    }
    let mut resp = h::json(200, &json!({ "ingest_key": key }));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Database faults: 503 when it is unreachable, an opaque 500 otherwise.
fn db_problem(e: DbError) -> Problem {
    eprintln!("apps: database error: {e}");
    match e {
        DbError::Unavailable(_) => Problem::unavailable("The database is unavailable; try again shortly."),
        _ => Problem::internal(),
    }
}
