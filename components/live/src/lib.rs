//! Live figures of an app: `GET /api/apps/{app}/stats?window=15m|1h|24h|7d`,
//! read from the counters ingest keeps in Redis (`lvd::events::stats`),
//! never from PostgreSQL; and `GET /api/apps/{app}/live`, the same figures
//! as Server-Sent Events every second (`event: stats`) with each new invalid
//! event as it arrives (`event: invalid`).
//!
//! Every message's `id` is a position in the app's tail of invalid events,
//! so a reconnect with `Last-Event-ID` resumes right after the last invalid
//! event the client saw. A stream ends after [`STREAM_SECS`] (runtimes stop
//! long requests) with a `retry:` hint; clients reconnect and resume.
//!
//! A stream is not a one-time check: every [`RECHECK`] it looks again at
//! what admitted it — the token's expiry and the logout deny-list, and that
//! the app still exists and is the caller's — and ends the response the
//! moment any of them no longer holds.
//!
//! Figures are cached for a second in the key-value store, shared by every
//! instance, so a dashboard polled by many viewers costs one Redis read per
//! app and window per second, and an event still shows within 2 s of its
//! 202. A cached entry carries its app's owner, so a hit is checked against
//! the caller without a database query. Hits and misses are counted in
//! Redis (`lvd:metrics:cache:stats:{hit,miss}`) for `/metrics`.

use lvd::auth::tokens::Claims;
use lvd::cache;
use lvd::events::live;
use lvd::events::stats::{self, Window};
use lvd::kv::{Redis, RedisError};
use lvd::limits::Decision;
use lvd::problem::{FieldError, Problem};
use lvd_component::api::{self, Gate};
use lvd_component::config::Common;
use lvd_component::http::{self as h, Response, db_problem};
use lvd_component::kv::SpinKv;
use lvd_component::redis::SpinRedis;
use futures::SinkExt;
use spin_sdk::http::body::stream;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::wasip3::http::types;
use spin_sdk::http_service;
use uuid::Uuid;

/// Seconds figures stay cached.
const STATS_TTL_SECS: i64 = 1;
/// How long one live response lasts before the client reconnects, unless
/// the `live_stream_seconds` variable says otherwise.
const STREAM_SECS: u64 = 45;
/// How often the stream looks for new invalid events.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// How often it sends the figures (the contract asks for at least every 2 s).
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a stream re-checks the token and the app that admitted it.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
struct Cached {
    owner: Uuid,
    body: String,
}

#[http_service]
async fn handle(req: Request) -> Wasi {
    let common = match Common::load().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("live: missing configuration: {e:?}");
            return h::problem(&Problem::internal()).into_response();
        }
    };
    let gate = Gate::for_api(&common).await;
    let (claims, decision) = match api::admit(&gate, &req).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp.into_response(),
    };
    match route(&req, &common, &claims, &decision).await {
        Ok(reply) => reply,
        Err(p) => h::with_rate_limit(h::problem(&p), &decision).into_response(),
    }
}

/// A reply converted for the host: the stream's body type cannot be named.
type Wasi = Result<types::Response, types::ErrorCode>;

async fn route(req: &Request, common: &Common, claims: &Claims, decision: &Decision) -> Result<Wasi, Problem> {
    let caller = claims.sub;
    let app: Uuid = h::spin_header(req, "spin-path-match-app").and_then(|v| v.parse().ok()).ok_or_else(Problem::not_found)?;
    let path = req.uri().path().trim_end_matches('/');
    match (req.method(), path.rsplit('/').next()) {
        (&Method::GET, Some("stats")) => Ok(h::with_rate_limit(figures(req, common, caller, app).await?, decision).into_response()),
        (&Method::GET, Some("live")) => Ok(h::with_rate_limit(live(req, common, claims, app).await?, decision).into_response()),
        (_, Some("stats" | "live")) => Err(Problem::method_not_allowed("GET")),
        _ => Err(Problem::not_found()),
    }
}

fn window(req: &Request) -> Result<Window, Problem> {
    match h::query_param(req, "window") {
        None => Ok(Window::H1),
        Some(raw) => {
            Window::parse(&raw).ok_or_else(|| Problem::validation(vec![FieldError::new("/window", "must be one of 15m, 1h, 24h, 7d")]))
        }
    }
}

async fn figures(req: &Request, common: &Common, caller: Uuid, app: Uuid) -> Result<Response, Problem> {
    let window = window(req)?;
    let kv = SpinKv::default();
    if let Some(body) = cached(&kv, &common.redis, app, window, caller).await {
        return Ok(json_text(body));
    }
    lvd::apps::store::get(&common.db, caller, app).await.map_err(db_problem)?.ok_or_else(Problem::not_found)?;
    let body = fresh(&kv, &common.redis, app, window, caller).await.map_err(redis_problem)?;
    Ok(json_text(body))
}

/// The cached figures, when the entry is fresh and belongs to `caller`.
async fn cached(kv: &SpinKv, redis: &SpinRedis, app: Uuid, window: Window, caller: Uuid) -> Option<String> {
    let hit = cache::get::<Cached>(kv, &stats_key(app, window)).await.ok().flatten().filter(|c| c.owner == caller);
    count(redis, if hit.is_some() { "hit" } else { "miss" }).await;
    hit.map(|c| c.body)
}

/// Reads the figures from the counters and caches them. The caller must
/// already be known to own the app.
async fn fresh(kv: &SpinKv, redis: &SpinRedis, app: Uuid, window: Window, owner: Uuid) -> Result<String, RedisError> {
    let figures = stats::read(redis, app, window, chrono::Utc::now()).await?;
    let body = serde_json::to_string(&figures).expect("figures serialize");
    let _ = cache::put(kv, &stats_key(app, window), &Cached { owner, body: body.clone() }, STATS_TTL_SECS).await;
    Ok(body)
}

fn stats_key(app: Uuid, window: Window) -> String {
    format!("stats:{app}:{}", window.as_str())
}

async fn live(
    req: &Request,
    common: &Common,
    claims: &Claims,
    app: Uuid,
) -> Result<http::Response<impl http_body::Body<Data = bytes::Bytes, Error = anyhow::Error> + 'static>, Problem> {
    let (caller, window) = (claims.sub, window(req)?);
    lvd::apps::store::get(&common.db, caller, app).await.map_err(db_problem)?.ok_or_else(Problem::not_found)?;
    let resume = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|id| live::is_position(id));
    let redis = common.redis.clone();
    let start = match resume {
        Some(id) => id.to_owned(),
        None => live::latest(&redis, app).await.map_err(redis_problem)?,
    };
    let stream_secs = lvd_component::config::number("live_stream_seconds", STREAM_SECS).await.map_err(|e| {
        eprintln!("live: live_stream_seconds: {e:?}");
        Problem::internal()
    })?;
    let (mut tx, body) = stream::<String>();
    let (db, claims) = (common.db.another(), claims.clone());
    spin_sdk::wasip3::spawn(async move {
        let kv = SpinKv::default();
        let started = std::time::Instant::now();
        let mut position = start;
        let mut last_stats: Option<std::time::Instant> = None;
        let mut last_check = std::time::Instant::now();
        let _ = tx.send("retry: 1000\n\n".to_owned()).await;
        while started.elapsed().as_secs() < stream_secs {
            if last_check.elapsed() >= RECHECK {
                if !still_admitted(&db, &redis, &claims, app).await {
                    return; // ends the response; a reconnect meets the gate again
                }
                last_check = std::time::Instant::now();
            }
            let mut out = String::new();
            match live::invalid_after(&redis, app, &position, 100).await {
                Ok(events) => {
                    for (id, json) in events {
                        out.push_str(&live::sse("invalid", &id, &json));
                        position = id;
                    }
                }
                Err(e) => eprintln!("live: reading invalid events failed: {e}"),
            }
            if last_stats.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
                let figures = match cached(&kv, &redis, app, window, caller).await {
                    Some(body) => Ok(body),
                    None => fresh(&kv, &redis, app, window, caller).await,
                };
                match figures {
                    Ok(body) => out.push_str(&live::sse("stats", &position, &body)),
                    Err(e) => eprintln!("live: reading figures failed: {e}"),
                }
                last_stats = Some(std::time::Instant::now());
            }
            if !out.is_empty() && tx.send(out).await.is_err() {
                return; // the client left
            }
            spin_sdk::time::sleep(POLL).await;
        }
    });
    let mut resp = http::Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    Ok(resp)
}

/// Whether what admitted a stream still holds: the token has not expired
/// nor been logged out, and the app is still the caller's. A check that
/// cannot be made (Redis or PostgreSQL down) ends the stream too: the
/// reconnect then gets the gate's own answer.
async fn still_admitted(db: &lvd_component::db::SpinDb, redis: &SpinRedis, claims: &Claims, app: Uuid) -> bool {
    if claims.exp <= chrono::Utc::now().timestamp() {
        return false;
    }
    if !matches!(lvd::limits::is_denied(redis, &claims.jti.to_string()).await, Ok(false)) {
        return false;
    }
    matches!(lvd::apps::store::get(db, claims.sub, app).await, Ok(Some(_)))
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

fn redis_problem(e: RedisError) -> Problem {
    eprintln!("live: redis error: {e}");
    Problem::unavailable("Live figures are unavailable; try again shortly.")
}

