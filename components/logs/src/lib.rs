//! `/api/logs`. `POST` takes events from apps (`X-Api-Key`) and hands them
//! to `lvd::logs::service::Ingest`, which judges each against its rule and
//! stores them in one atomic Redis step; the reply is 202 once they are
//! safe. `GET` lists a user's stored events (Bearer token), newest first,
//! keyset-paginated.

use http::Method;
use lvd::cache::IngestApp;
use lvd::db::DbError;
use lvd::logs::plan::{Compiled, PlanError};
use lvd::logs::query::{self, LogQuery};
use lvd::logs::service::{Ingest, IngestError, Limits};
use lvd::problem::Problem;
use lvd_component::api::{self, Gate};
use lvd_component::config::{self, Common};
use lvd_component::http::{self as h, Response};
use lvd_component::kv::SpinKv;
use lvd_component::routes::{Route, Routes};
use lvd_component::serve::{self, Config, answer, serve};
use lvd_component::scope::Scope;
use lvd_component::{Reply, Request, variables};

const NAME: &str = "logs";

/// Compiled rules, kept while Spin reuses this instance (see `Compiled`).
static COMPILED: std::sync::LazyLock<Compiled> = std::sync::LazyLock::new(Compiled::default);

#[derive(Clone, Copy)]
enum Op {
    Ingest,
    List,
}

const ROUTES: Routes<Op> = Routes(&[Route { path: "/api/logs", methods: &[(Method::GET, Op::List), (Method::POST, Op::Ingest)] }]);

struct Ctx {
    common: Common,
    kv: SpinKv,
    limits: Limits,
}

impl Config for Ctx {
    async fn load(scope: &Scope) -> Result<Self, variables::Error> {
        let limits = Limits {
            per_key_per_minute: config::number("rate_limit_ingest_per_key", 60_000).await?,
            max_backlog: config::number("ingest_max_backlog", 1_000_000).await?,
            bad_keys_per_ip: config::number("rate_limit_ingest_bad_keys_per_ip", 30).await?,
        };
        let common = Common::load(scope).await?;
        Ok(Self { kv: SpinKv::new(&common.redis), common, limits })
    }
}

impl Ctx {
    fn ingest(&self) -> Ingest<'_, lvd_component::db::SpinDb, lvd_component::redis::SpinRedis, SpinKv> {
        Ingest { db: &self.common.db, redis: &self.common.redis, kv: &self.kv, compiled: &COMPILED, limits: self.limits }
    }
}

lvd_component::entry!(handle);

async fn handle(req: Request) -> Reply {
    serve::<Ctx, _, _>(NAME, &ROUTES, req, async |req, ctx| {
        let op = match ROUTES.find(req.method(), req.uri().path()) {
            Ok(m) => m.op,
            Err(p) => return h::problem(&p),
        };
        match op {
            Op::Ingest => answer(NAME, ingest(req, ctx).await, problem),
            Op::List => list(req, ctx).await,
        }
    })
    .await
}

async fn ingest(req: Request, ctx: &Ctx) -> Result<Response, Error> {
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().trim().to_owned();
    let ip = h::client_ip(&req, &ctx.common.trusted_proxies).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let service = ctx.ingest();
    let app: IngestApp = service.open(&key, &ip).await?;
    let body = h::json_body(req).await?;
    let receipt = service.accept(&app, &body, chrono::Utc::now()).await?;
    Ok(h::with_rate_limit(h::json(202, &receipt), &receipt.decision))
}

async fn list(req: Request, ctx: &Ctx) -> Response {
    let (claims, decision) = match api::admit(&Gate::for_api(&ctx.common).await, &req).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp,
    };
    let page = async {
        let q = LogQuery::parse(req.uri().query().unwrap_or_default())?;
        let app = lvd::apps::store::get(&ctx.common.db, claims.sub, q.app).await?.ok_or(Error::NotFound)?;
        let (items, next) = query::page(&ctx.common.db, &q, app.retention_days).await?;
        Ok::<_, Error>(h::json(200, &serde_json::json!({ "items": items, "next_cursor": next })))
    };
    h::with_rate_limit(answer(NAME, page.await, problem), &decision)
}

/// Everything a `/api/logs` request can fail with.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("no such app")]
    NotFound,
    #[error(transparent)]
    Rejected(#[from] Problem),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The one mapping from this component's errors to replies.
fn problem(e: &Error) -> Problem {
    match e {
        Error::Ingest(IngestError::UnknownKey(d)) => {
            Problem::new(401, "invalid_api_key", "The X-Api-Key header is missing, or the key is unknown or was rotated.").with_rate_limit(*d)
        }
        Error::Ingest(IngestError::RateLimited(d)) => Problem::rate_limited(*d),
        Error::Ingest(IngestError::Backlogged(d)) => {
            Problem::unavailable("Events are arriving faster than they can be stored; retry shortly.").with_rate_limit(*d)
        }
        Error::Ingest(IngestError::Malformed(errors)) => Problem::validation(errors.clone()),
        Error::Ingest(IngestError::Body(p)) | Error::Rejected(p) => p.clone(),
        Error::Ingest(IngestError::Db(e) | IngestError::Plan(PlanError::Db(e))) | Error::Db(e) => serve::db_fault(e),
        Error::Ingest(IngestError::Plan(PlanError::Compile { .. })) => Problem::internal(),
        Error::Ingest(IngestError::Redis(e)) => serve::redis_fault("Event storage", e),
        Error::NotFound => Problem::not_found(),
    }
}
