//! `/api/logs`. `POST` takes events from apps (`X-Api-Key`), judges each
//! against its rule and hands them to storage in one atomic Redis step (see
//! `lvd::events::ingest`); the reply is 202 once they are safe. `GET` lists
//! a user's stored events (Bearer token), newest first, keyset-paginated.
//!
//! Ingest is limited per ingest key, not per client IP: one server-side
//! sender may carry many users' events from one address. Unknown keys are
//! the exception: each costs a PostgreSQL query, so failures are limited per
//! client IP (`rate_limit_ingest_bad_keys_per_ip` a minute); a key the
//! shared cache knows passes whatever its address did.

use lvd::cache::IngestApp;
use lvd::events::ingest::{self, Judged, Outcome, Settings};
use lvd::events::plan::{self, CachedKey, Plan, PlanError};
use lvd::events::query::{self, LogQuery};
use lvd::events::{Body, Incoming};
use lvd::limits::{self, Decision, Limit};
use lvd::problem::{FieldError, Problem};
use lvd_component::api::{self, Gate};
use lvd_component::config::{self, Common};
use lvd_component::http::{self as h, Response, db_problem};
use lvd_component::kv::SpinKv;
use serde::Serialize;
use serde_json::json;
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::{http_service, variables};

/// Compiled rules, kept while Spin reuses this instance (see `Compiled`).
static COMPILED: std::sync::LazyLock<plan::Compiled> = std::sync::LazyLock::new(plan::Compiled::default);

struct Ctx {
    common: Common,
    kv: SpinKv,
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let ctx = match Common::load().await {
        Ok(common) => Ctx { common, kv: SpinKv::default() },
        Err(e) => {
            eprintln!("logs: missing configuration: {e:?}");
            return h::problem(&Problem::internal());
        }
    };
    let result = match *req.method() {
        Method::POST => ingest(req, &ctx).await,
        Method::GET => list(req, &ctx).await,
        _ => Err(Problem::method_not_allowed("GET, POST")),
    };
    result.unwrap_or_else(|p| h::problem(&p))
}

async fn ingest(req: Request, ctx: &Ctx) -> Result<Response, Problem> {
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().trim().to_owned();
    let ip = h::client_ip(&req, &ctx.common.trusted_proxies).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let app = match plan::cached_app_for_key(&ctx.kv, &key).await {
        CachedKey::App(app) => app,
        CachedKey::Malformed => return Ok(unknown_key(ctx, &ip).await),
        CachedKey::Uncached => match uncached_key(ctx, &ip, &key).await? {
            Ok(app) => app,
            Err(resp) => return Ok(resp),
        },
    };
    let settings = settings(&app).await.map_err(|_| Problem::internal())?;
    let body = h::json_body(req).await?;
    let received_at = chrono::Utc::now();
    let parsed = match Body::parse(&body)? {
        Body::Single(Ok(event)) => vec![Ok(event)],
        Body::Single(Err(errors)) => return Err(lone_malformed(ctx, &app, &settings, errors).await),
        Body::Batch(events) => events,
    };
    let names = parsed.iter().filter_map(|e| e.as_ref().ok()).map(|e| &e.event);
    let plan = Plan::load(&ctx.kv, &ctx.common.db, &COMPILED, app.id, names).await.map_err(plan_problem)?;
    let mut judged: Vec<Judged> = Vec::with_capacity(parsed.len());
    let mut slots: Vec<Result<usize, Vec<FieldError>>> = Vec::with_capacity(parsed.len());
    for event in parsed {
        slots.push(event.map(|e: Incoming| {
            let rule = plan.rule(&e.event);
            judged.push(ingest::judge(e, rule, received_at));
            judged.len() - 1
        }));
    }
    match ingest::store(&ctx.common.redis, app.id, &judged, received_at, settings).await.map_err(redis_problem)? {
        Outcome::Stored { decision, duplicates } => {
            let reply = receipt(&judged, &slots, &duplicates);
            Ok(h::with_rate_limit(h::json(202, &reply), &decision))
        }
        Outcome::RateLimited(decision) => Ok(h::with_rate_limit(h::problem(&h::rate_limited()), &decision)),
        Outcome::Backlogged(decision) => Ok(h::with_rate_limit(
            h::problem(&Problem::unavailable("Events are arriving faster than they can be stored; retry shortly.")),
            &decision,
        )),
    }
}

/// The per-IP limit on unknown ingest keys.
async fn bad_key_limit() -> Limit {
    let max = config::number("rate_limit_ingest_bad_keys_per_ip", 30).await.unwrap_or(30);
    Limit { name: "ingest_bad_key_ip", max, window_secs: 60 }
}

/// A key the cache does not know: an IP already over its limit of unknown
/// keys is refused before the PostgreSQL query (even a good key: it is
/// cached after its first use, so a working sender is rarely here), then
/// PostgreSQL says.
async fn uncached_key(ctx: &Ctx, ip: &str, key: &str) -> Result<Result<IngestApp, Response>, Problem> {
    let limit = bad_key_limit().await;
    let now = limits::peek(&ctx.common.redis, limit, ip).await.map_err(redis_problem)?;
    if !now.allowed {
        return Ok(Err(h::with_rate_limit(h::problem(&h::rate_limited()), &now)));
    }
    match plan::stored_app_for_key(&ctx.kv, &ctx.common.db, key).await.map_err(db_problem)? {
        Some(app) => Ok(Ok(app)),
        None => Ok(Err(unknown_key(ctx, ip).await)),
    }
}

/// 401 for a key that opens nothing, counted against the client's IP; the
/// failure past the limit is already 429.
async fn unknown_key(ctx: &Ctx, ip: &str) -> Response {
    let invalid = Problem::new(401, "invalid_api_key", "The X-Api-Key header is missing, or the key is unknown or was rotated.");
    match limits::hit(&ctx.common.redis, bad_key_limit().await, ip).await {
        Ok(d) if !d.allowed => h::with_rate_limit(h::problem(&h::rate_limited()), &d),
        Ok(d) => h::with_rate_limit(h::problem(&invalid), &d),
        Err(e) => h::problem(&redis_problem(e)),
    }
}

/// The 202 body: one result per event, in the order sent.
#[derive(Serialize)]
struct Receipt<'a> {
    accepted: usize,
    duplicates: usize,
    results: Vec<ItemResult<'a>>,
}

#[derive(Serialize)]
struct ItemResult<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<uuid::Uuid>,
    status: &'static str,
    errors: Errors<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_version: Option<i64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Errors<'a> {
    Rejected(&'a [FieldError]),
    Judged(&'a [lvd::rules::Violation]),
}

fn receipt<'a>(judged: &'a [Judged], slots: &'a [Result<usize, Vec<FieldError>>], duplicates: &[bool]) -> Receipt<'a> {
    let results = slots
        .iter()
        .enumerate()
        .map(|(index, slot)| match slot {
            Err(errors) => ItemResult { index, id: None, status: "rejected", errors: Errors::Rejected(errors), rule_version: None },
            Ok(i) if duplicates[*i] => ItemResult { index, id: None, status: "duplicate", errors: Errors::Rejected(&[]), rule_version: None },
            Ok(i) => {
                let e = &judged[*i];
                ItemResult { index, id: Some(e.id), status: e.status.as_str(), errors: Errors::Judged(&e.errors), rule_version: e.rule_version }
            }
        })
        .collect();
    let dup = duplicates.iter().filter(|d| **d).count();
    Receipt { accepted: judged.len() - dup, duplicates: dup, results }
}

/// A lone malformed event is 422; it still counts against the key's limit.
async fn lone_malformed(ctx: &Ctx, app: &IngestApp, settings: &Settings, errors: Vec<FieldError>) -> Problem {
    let limit = Limit { name: "ingest_key", max: settings.per_key_per_minute, window_secs: 60 };
    match limits::hit(&ctx.common.redis, limit, &app.id.to_string()).await {
        Ok(Decision { allowed: false, .. }) => h::rate_limited(),
        _ => Problem::validation(errors),
    }
}

async fn settings(app: &IngestApp) -> Result<Settings, variables::Error> {
    Ok(Settings {
        per_key_per_minute: config::number("rate_limit_ingest_per_key", 60_000).await?,
        dedup_secs: Settings::dedup_secs_for(app.retention_days),
        max_backlog: config::number("ingest_max_backlog", 1_000_000).await?,
    })
}

async fn list(req: Request, ctx: &Ctx) -> Result<Response, Problem> {
    let gate = Gate::for_api(&ctx.common).await;
    let (claims, decision) = match api::admit(&gate, &req).await {
        Ok(admitted) => admitted,
        Err(resp) => return Ok(resp),
    };
    let resp = async {
        let q = LogQuery::parse(req.uri().query().unwrap_or_default())?;
        let app = lvd::apps::store::get(&ctx.common.db, claims.sub, q.app).await.map_err(db_problem)?.ok_or_else(Problem::not_found)?;
        let (items, next) = query::page(&ctx.common.db, &q, app.retention_days).await.map_err(db_problem)?;
        Ok::<_, Problem>(h::json(200, &json!({ "items": items, "next_cursor": next })))
    }
    .await
    .unwrap_or_else(|p| h::problem(&p));
    Ok(h::with_rate_limit(resp, &decision))
}

fn plan_problem(e: PlanError) -> Problem {
    match e {
        PlanError::Db(e) => db_problem(e),
        other => {
            eprintln!("logs: {other}");
            Problem::internal()
        }
    }
}

fn redis_problem(e: lvd::kv::RedisError) -> Problem {
    eprintln!("logs: redis error: {e}");
    Problem::unavailable("Event storage is unavailable; try again shortly.")
}
