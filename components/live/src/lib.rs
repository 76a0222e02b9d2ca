//! Live figures of an app: `GET /api/apps/{app}/stats?window=15m|1h|24h|7d`,
//! read from the counters ingest keeps in Redis (`lvd::logs::stats`),
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
//! Figures are cached for a second in Redis (`lvd::logs::stats::cache`),
//! shared by every instance, so a dashboard polled by many viewers costs one
//! read of the counters per app and window per second, and an event still
//! shows within 2 s of its 202. A cached entry carries its app's owner, and
//! the `/api` gate reads it in the round trip it makes anyway
//! (`api::admit_probing`): a hit is one Redis call, the request's figures
//! included, with no database query. Each read is counted as a hit or a miss
//! of the `stats` cache in the request's figures (`lvd::metrics`).

use http::Method;
use lvd::auth::tokens::Claims;
use lvd::cause::chain;
use lvd::db::DbError;
use lvd::keys;
use lvd::kv::{Redis, RedisError};
use lvd::limits::Decision;
use lvd::logs::live;
use lvd::logs::stats::{self, Window};
use lvd::problem::{FieldError, Problem};
use lvd_component::api::{self, Gate};
use lvd_component::config::{self, Common};
use lvd_component::db::SpinDb;
use lvd_component::host::{self, BodySink};
use lvd_component::http::{self as h, Response};
use lvd_component::redis::SpinRedis;
use lvd_component::routes::{Matched, Route, Routes};
use lvd_component::serve::{self, Config, Reply, answer, serve};
use lvd_component::scope::Scope;
use lvd_component::{Request, log, variables};
use uuid::Uuid;

const NAME: &str = "live";

/// How long one live response lasts before the client reconnects, unless
/// the `live_stream_seconds` variable says otherwise.
const STREAM_SECS: u64 = 45;
/// How often the stream looks for new invalid events.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// How often it sends the figures (the contract asks for at least every 2 s).
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a stream re-checks the token and the app that admitted it.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone, Copy)]
enum Op {
    Figures,
    Live,
}

const ROUTES: Routes<Op> = Routes(&[
    Route { path: "/api/apps/{app}/stats", methods: &[(Method::GET, Op::Figures)] },
    Route { path: "/api/apps/{app}/live", methods: &[(Method::GET, Op::Live)] },
]);

struct Ctx {
    common: Common,
    /// How long one live response lasts (`live_stream_seconds`).
    stream_secs: u64,
}

impl Config for Ctx {
    async fn load(scope: &Scope) -> Result<Self, variables::Error> {
        Ok(Self { common: Common::load(scope).await?, stream_secs: config::number("live_stream_seconds", STREAM_SECS).await? })
    }
}

lvd_component::entry!(handle);

async fn handle(req: Request) -> Reply {
    serve::<Ctx, _, _>(NAME, &ROUTES, req, async |req, ctx| {
        // Routed once: the figures' cache key goes to the gate, the match to
        // the handler (whose 404/405/422 still answer after the gate's 401/429).
        let at = ROUTES.find(req.method(), req.uri().path());
        let probe = at.as_ref().ok().and_then(|at| figures_key(at, &req));
        let (claims, decision, cached) = match api::admit_probing(&Gate::for_api(&ctx.common).await, &req, probe.as_deref()).await {
            Ok(admitted) => admitted,
            Err(resp) => return resp.into(),
        };
        if let Some(body) = cached {
            return h::with_rate_limit(json_text(body), &decision).into();
        }
        match route(at, &req, ctx, &claims, &decision).await {
            Ok(reply) => reply,
            Err(e) => h::with_rate_limit(answer(NAME, Err(e), problem), &decision).into(),
        }
    })
    .await
}

async fn route(at: Result<Matched<Op>, Problem>, req: &Request, ctx: &Ctx, claims: &Claims, decision: &Decision) -> Result<Reply, Error> {
    let at = at?;
    let app: Uuid = at.param("app").parse().map_err(|_| Error::NotFound)?;
    Ok(match at.op {
        Op::Figures => h::with_rate_limit(figures(req, &ctx.common, claims.sub, app).await?, decision).into(),
        Op::Live => live(req, ctx, claims, decision, app).await?,
    })
}

/// The cache key of the figures a well-formed `GET .../stats` asks for.
fn figures_key(at: &Matched<Op>, req: &Request) -> Option<String> {
    if !matches!(at.op, Op::Figures) {
        return None;
    }
    let app: Uuid = at.param("app").parse().ok()?;
    Some(keys::stats_cache(app, window(req).ok()?.as_str()))
}

fn window(req: &Request) -> Result<Window, Error> {
    match h::query_param(req, "window") {
        None => Ok(Window::H1),
        Some(raw) => Window::parse(&raw).ok_or_else(|| {
            Error::Rejected(Problem::validation(vec![FieldError::new("/window", "must be one of 15m, 1h, 24h, 7d")]))
        }),
    }
}

/// The figures when the gate found none cached for the caller: the app must
/// be theirs (a database query), then the counters are read and cached.
async fn figures(req: &Request, common: &Common, caller: Uuid, app: Uuid) -> Result<Response, Error> {
    let window = window(req)?;
    common.redis.note_cache("stats", false);
    lvd::apps::store::get(&common.db, caller, app).await?.ok_or(Error::NotFound)?;
    let body = fresh(&common.redis, app, window, caller).await?;
    Ok(json_text(body))
}

/// Reads the figures from the counters and caches them. The caller must
/// already be known to own the app.
async fn fresh(redis: &SpinRedis, app: Uuid, window: Window, owner: Uuid) -> Result<String, RedisError> {
    let figures = stats::read(redis, app, window, chrono::Utc::now()).await?;
    let body = serde_json::to_string(&figures).expect("figures serialize");
    let _ = stats::cache(redis, app, window, owner, &body).await;
    Ok(body)
}

async fn live(req: &Request, ctx: &Ctx, claims: &Claims, decision: &Decision, app: Uuid) -> Result<Reply, Error> {
    let (caller, window) = (claims.sub, window(req)?);
    lvd::apps::store::get(&ctx.common.db, caller, app).await?.ok_or(Error::NotFound)?;
    let resume = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|id| live::is_position(id));
    let redis = ctx.common.redis.clone();
    let position = match resume {
        Some(id) => id.to_owned(),
        None => live::latest(&redis, app).await?,
    };
    let stream = Stream { db: ctx.common.db.another(), redis, claims: claims.clone(), app, window, position, secs: ctx.stream_secs };
    let mut head = http::Response::new(());
    let headers = head.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    Ok(serve::streamed(h::with_rate_limit(head, decision), move |sink| stream.run(sink)))
}

/// One live response's task: what it needs once the handler has returned.
struct Stream {
    db: SpinDb,
    redis: SpinRedis,
    claims: Claims,
    app: Uuid,
    window: Window,
    /// The last invalid event sent (a position in the app's tail).
    position: String,
    secs: u64,
}

impl Stream {
    /// Sends until the stream's time is up, the client leaves, or what
    /// admitted it no longer holds.
    async fn run(mut self, mut tx: BodySink) {
        let started = std::time::Instant::now();
        let (mut last_stats, mut last_check) = (None::<std::time::Instant>, std::time::Instant::now());
        let _ = tx.send("retry: 1000\n\n".to_owned()).await;
        while started.elapsed().as_secs() < self.secs {
            if last_check.elapsed() >= RECHECK {
                if !self.still_admitted().await {
                    return; // ends the response; a reconnect meets the gate again
                }
                last_check = std::time::Instant::now();
            }
            let mut out = self.invalid_events().await;
            if last_stats.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
                let figures = match stats::cached(&self.redis, self.app, self.window, self.claims.sub).await {
                    Ok(Some(body)) => Ok(body),
                    _ => fresh(&self.redis, self.app, self.window, self.claims.sub).await,
                };
                match figures {
                    Ok(body) => out.push_str(&live::sse("stats", &self.position, &body)),
                    Err(e) => log::error(NAME, self.redis.request_id(), &format!("reading figures failed: {}", chain(&e))),
                }
                last_stats = Some(std::time::Instant::now());
            }
            if !out.is_empty() && tx.send(out).await.is_err() {
                return; // the client left
            }
            host::sleep(POLL).await;
        }
    }

    /// The invalid events after the position, as SSE text; moves the position.
    async fn invalid_events(&mut self) -> String {
        let mut out = String::new();
        match live::invalid_after(&self.redis, self.app, &self.position, 100).await {
            Ok(events) => {
                for (id, json) in events {
                    out.push_str(&live::sse("invalid", &id, &json));
                    self.position = id;
                }
            }
            Err(e) => log::error(NAME, self.redis.request_id(), &format!("reading invalid events failed: {}", chain(&e))),
        }
        out
    }

    /// Whether what admitted the stream still holds: the token has not
    /// expired nor been logged out, and the app is still the caller's. A
    /// check that cannot be made (Redis or PostgreSQL down) ends the stream
    /// too: the reconnect then gets the gate's own answer.
    async fn still_admitted(&self) -> bool {
        if self.claims.exp <= chrono::Utc::now().timestamp() {
            return false;
        }
        if !matches!(lvd::limits::is_denied(&self.redis, &self.claims.jti.to_string()).await, Ok(false)) {
            return false;
        }
        matches!(lvd::apps::store::get(&self.db, self.claims.sub, self.app).await, Ok(Some(_)))
    }
}

fn json_text(body: String) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// Everything a live-figures request can fail with.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("no such app")]
    NotFound,
    #[error(transparent)]
    Rejected(#[from] Problem),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// The one mapping from this component's errors to replies.
fn problem(e: &Error) -> Problem {
    match e {
        Error::NotFound => Problem::not_found(),
        Error::Rejected(p) => p.clone(),
        Error::Db(e) => serve::db_fault(e),
        Error::Redis(e) => serve::redis_fault("Live figures", e),
    }
}
