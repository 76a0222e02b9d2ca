//! `/api/apps`: a user's apps, their ingest keys, and their tracking-plan
//! rules. Another user's app answers 404 exactly like a missing one, on every
//! route. Every reply carries the binding `RateLimit-*` headers.

mod apps;
mod rules;

use lvd::cache::KvError;
use lvd::problem::Problem;
use lvd_component::api::{self, Gate};
use lvd_component::config::Common;
use lvd_component::http::{self as h, Response};
use lvd_component::kv::SpinKv;
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::{http_service, variables};
use uuid::Uuid;

pub(crate) struct Ctx {
    common: Common,
    kv: SpinKv,
}

impl Ctx {
    async fn load() -> Result<Self, variables::Error> {
        Ok(Self { common: Common::load().await?, kv: SpinKv::default() })
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
    let gate = Gate::for_api(&ctx.common).await;
    let (claims, decision) = match api::admit(&gate, &req).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp,
    };
    let resp = route(req, &ctx, claims.sub).await.unwrap_or_else(|p| h::problem(&p));
    h::with_rate_limit(resp, &decision)
}

async fn route(req: Request, ctx: &Ctx, owner: Uuid) -> Result<Response, Problem> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    // Segments after "/api/apps", percent-decoded one by one (an event name
    // may hold an encoded '/').
    let segments: Vec<String> = path.split('/').skip(3).map(h::decode_segment).collect::<Option<_>>().ok_or_else(Problem::not_found)?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::POST, []) => apps::create(req, ctx, owner).await,
        (Method::GET, []) => apps::list(ctx, owner).await,
        (Method::GET, [id]) => apps::get(ctx, owner, id).await,
        (Method::DELETE, [id]) => apps::delete(ctx, owner, id).await,
        (Method::POST, [id, "keys", "rotate"]) => apps::rotate(ctx, owner, id).await,
        (Method::GET, [id, "rules"]) => rules::list(ctx, owner, id).await,
        (Method::PUT, [id, "rules", event]) => rules::put(req, ctx, owner, id, event).await,
        (Method::GET, [id, "rules", event]) => rules::get(&req, ctx, owner, id, event).await,
        (Method::DELETE, [id, "rules", event]) => rules::delete(ctx, owner, id, event).await,
        (Method::GET, [id, "rules", event, "versions"]) => rules::history(ctx, owner, id, event).await,
        (Method::POST, [id, "rules", event, "test"]) => rules::test(req, ctx, owner, id, event).await,
        (Method::GET, [id, "quarantine"]) => apps::quarantine(&req, ctx, owner, id).await,
        (_, []) => Err(Problem::method_not_allowed("GET, POST")),
        (_, [_]) => Err(Problem::method_not_allowed("GET, DELETE")),
        (_, [_, "rules", _]) => Err(Problem::method_not_allowed("GET, PUT, DELETE")),
        (_, [_, "keys", "rotate"] | [_, "rules", _, "test"]) => Err(Problem::method_not_allowed("POST")),
        (_, [_, "rules"] | [_, "rules", _, "versions"] | [_, "quarantine"]) => Err(Problem::method_not_allowed("GET")),
        _ => Err(Problem::not_found()),
    }
}

/// The user's app named by a path segment; anything else (another user's
/// app, a missing one, a malformed id) is 404.
pub(crate) async fn owned_app(ctx: &Ctx, owner: Uuid, raw: &str) -> Result<lvd::apps::store::App, Problem> {
    let id: Uuid = raw.parse().map_err(|_| Problem::not_found())?;
    lvd::apps::store::get(&ctx.common.db, owner, id).await.map_err(db_problem)?.ok_or_else(Problem::not_found)
}

pub(crate) use h::db_problem;

/// A change committed but its cache entry could not be dropped: 503, so the
/// client retries and the change is not assumed to be live everywhere.
pub(crate) fn kv_problem(e: KvError) -> Problem {
    eprintln!("apps: key-value store error: {e}");
    Problem::unavailable("The change was saved but could not be made live everywhere; retry the request.")
}
