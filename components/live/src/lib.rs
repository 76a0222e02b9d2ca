//! Live figures of an app: `GET /api/apps/{app}/stats?window=15m|1h|24h|7d`,
//! read from the counters ingest keeps in Redis (`lvd::events::stats`),
//! never from PostgreSQL.
//!
//! Figures are cached for a second in the key-value store, shared by every
//! instance, so a dashboard polled by many viewers costs one Redis read per
//! app and window per second, and an event still shows within 2 s of its
//! 202. A cached entry carries its app's owner, so a hit is checked against
//! the caller without a database query. Hits and misses are counted in
//! Redis (`lvd:metrics:cache:stats:{hit,miss}`) for `/metrics`.

use lvd::cache;
use lvd::db::DbError;
use lvd::events::stats::{self, Window};
use lvd::kv::Redis;
use lvd::limits::Limit;
use lvd::problem::{FieldError, Problem};
use lvd_component::api::{self, Gate};
use lvd_component::config::{self, Common};
use lvd_component::http::{self as h, Response};
use lvd_component::kv::SpinKv;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;
use uuid::Uuid;

/// Seconds figures stay cached.
const STATS_TTL_SECS: i64 = 1;

#[derive(Serialize, Deserialize)]
struct Cached {
    owner: Uuid,
    body: String,
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let common = match Common::load().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("live: missing configuration: {e:?}");
            return h::problem(&Problem::internal());
        }
    };
    let gate = Gate {
        redis: &common.redis,
        jwt_secret: &common.jwt_secret,
        per_ip: Limit { name: "api_ip", max: config::number("rate_limit_api_per_ip", 1000).await.unwrap_or(1000), window_secs: 60 },
        per_user: Limit { name: "api_user", max: config::number("rate_limit_api_per_user", 200).await.unwrap_or(200), window_secs: 60 },
        trusted_proxies: &common.trusted_proxies,
    };
    let (claims, decision) = match api::admit(&gate, &req).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp,
    };
    let resp = route(&req, &common, claims.sub).await.unwrap_or_else(|p| h::problem(&p));
    h::with_rate_limit(resp, &decision)
}

async fn route(req: &Request, common: &Common, caller: Uuid) -> Result<Response, Problem> {
    let app: Uuid = req
        .headers()
        .get("spin-path-match-app")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(Problem::not_found)?;
    let is_stats = req.uri().path().trim_end_matches('/').ends_with("/stats");
    match (req.method(), is_stats) {
        (&Method::GET, true) => figures(req, common, caller, app).await,
        (_, true) => Err(Problem::method_not_allowed()),
        _ => Err(Problem::not_found()),
    }
}

async fn figures(req: &Request, common: &Common, caller: Uuid, app: Uuid) -> Result<Response, Problem> {
    let window = match h::query_param(req, "window") {
        None => Window::H1,
        Some(raw) => Window::parse(&raw)
            .ok_or_else(|| Problem::validation(vec![FieldError::new("/window", "must be one of 15m, 1h, 24h, 7d")]))?,
    };
    let kv = SpinKv::default();
    let key = format!("stats:{app}:{}", window.as_str());
    if let Ok(Some(hit)) = cache::get::<Cached>(&kv, &key).await
        && hit.owner == caller
    {
        count(&common.redis, "hit").await;
        return Ok(json_text(hit.body));
    }
    count(&common.redis, "miss").await;
    lvd::apps::store::get(&common.db, caller, app).await.map_err(db_problem)?.ok_or_else(Problem::not_found)?;
    let figures = stats::read(&common.redis, app, window, chrono::Utc::now()).await.map_err(|e| {
        eprintln!("live: redis error: {e}");
        Problem::unavailable("Live figures are unavailable; try again shortly.")
    })?;
    let body = serde_json::to_string(&figures).expect("figures serialize");
    let _ = cache::put(&kv, &key, &Cached { owner: caller, body: body.clone() }, STATS_TTL_SECS).await;
    Ok(json_text(body))
}

fn json_text(body: String) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

async fn count(redis: &impl Redis, outcome: &str) {
    let _ = redis.execute("INCR", vec![format!("lvd:metrics:cache:stats:{outcome}").into()]).await;
}

fn db_problem(e: DbError) -> Problem {
    eprintln!("live: database error: {e}");
    match e {
        DbError::Unavailable(_) => Problem::unavailable("The database is unavailable; try again shortly."),
        _ => Problem::internal(),
    }
}
