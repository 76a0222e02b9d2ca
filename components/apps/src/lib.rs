//! `/api/apps`: a user's apps, their ingest keys, their tracking-plan
//! rules and their alerts. Another user's app answers 404 exactly like a missing one, on every
//! route. Every reply carries the binding `RateLimit-*` headers.

mod alerts;
mod apps;
mod rules;

use http::Method;
use lvd::cache::KvError;
use lvd::db::DbError;
use lvd::problem::{FieldError, Problem};
use lvd_component::api::{self, Gate};
use lvd_component::config::Common;
use lvd_component::http::{self as h, Response};
use lvd_component::kv::SpinKv;
use lvd_component::routes::{Matched, Route, Routes};
use lvd_component::serve::{self, Config, answer, serve};
use lvd_component::scope::Scope;
use lvd_component::{Reply, Request, variables};
use uuid::Uuid;

const NAME: &str = "apps";

#[derive(Clone, Copy)]
enum Op {
    CreateApp,
    ListApps,
    GetApp,
    DeleteApp,
    RotateKey,
    Quarantine,
    ListRules,
    PutRule,
    GetRule,
    DeleteRule,
    RuleHistory,
    TestRule,
    ListAlerts,
    CreateAlert,
    GetAlert,
    UpdateAlert,
    DeleteAlert,
    AlertHistory,
}

const ROUTES: Routes<Op> = Routes(&[
    Route { path: "/api/apps", methods: &[(Method::GET, Op::ListApps), (Method::POST, Op::CreateApp)] },
    Route { path: "/api/apps/{app}", methods: &[(Method::GET, Op::GetApp), (Method::DELETE, Op::DeleteApp)] },
    Route { path: "/api/apps/{app}/keys/rotate", methods: &[(Method::POST, Op::RotateKey)] },
    Route { path: "/api/apps/{app}/quarantine", methods: &[(Method::GET, Op::Quarantine)] },
    Route { path: "/api/apps/{app}/rules", methods: &[(Method::GET, Op::ListRules)] },
    Route {
        path: "/api/apps/{app}/rules/{event}",
        methods: &[(Method::GET, Op::GetRule), (Method::PUT, Op::PutRule), (Method::DELETE, Op::DeleteRule)],
    },
    Route { path: "/api/apps/{app}/rules/{event}/versions", methods: &[(Method::GET, Op::RuleHistory)] },
    Route { path: "/api/apps/{app}/rules/{event}/test", methods: &[(Method::POST, Op::TestRule)] },
    Route { path: "/api/apps/{app}/alerts", methods: &[(Method::GET, Op::ListAlerts), (Method::POST, Op::CreateAlert)] },
    Route {
        path: "/api/apps/{app}/alerts/{alert}",
        methods: &[(Method::GET, Op::GetAlert), (Method::PATCH, Op::UpdateAlert), (Method::DELETE, Op::DeleteAlert)],
    },
    Route { path: "/api/apps/{app}/alerts/{alert}/history", methods: &[(Method::GET, Op::AlertHistory)] },
]);

pub(crate) struct Ctx {
    common: Common,
    kv: SpinKv,
}

impl Config for Ctx {
    async fn load(scope: &Scope) -> Result<Self, variables::Error> {
        let common = Common::load(scope).await?;
        Ok(Self { kv: SpinKv::new(&common.redis), common })
    }
}

lvd_component::entry!(handle);

async fn handle(req: Request) -> Reply {
    serve::<Ctx, _, _>(NAME, &ROUTES, req, async |req, ctx| {
        let (claims, decision) = match api::admit(&Gate::for_api(&ctx.common).await, &req).await {
            Ok(admitted) => admitted,
            Err(resp) => return resp,
        };
        h::with_rate_limit(answer(NAME, route(req, ctx, claims.sub).await, problem), &decision)
    })
    .await
}

async fn route(req: Request, ctx: &Ctx, owner: Uuid) -> Result<Response, Error> {
    let at = ROUTES.find(req.method(), req.uri().path())?;
    let app = || at.param("app");
    let alert = alerts::On { owner, app: at.param("app"), alert: at.param("alert") };
    let on = |m: &Matched<Op>| rules::On { owner, app: m.param("app").to_owned(), event: m.param("event").to_owned() };
    match at.op {
        Op::CreateApp => apps::create(req, ctx, owner).await,
        Op::ListApps => apps::list(ctx, owner).await,
        Op::GetApp => apps::get(ctx, owner, app()).await,
        Op::DeleteApp => apps::delete(ctx, owner, app()).await,
        Op::RotateKey => apps::rotate(ctx, owner, app()).await,
        Op::Quarantine => apps::quarantine(&req, ctx, owner, app()).await,
        Op::ListRules => rules::list(ctx, owner, app()).await,
        Op::PutRule => rules::put(req, ctx, &on(&at)).await,
        Op::GetRule => rules::get(&req, ctx, &on(&at)).await,
        Op::DeleteRule => rules::delete(ctx, &on(&at)).await,
        Op::RuleHistory => rules::history(ctx, &on(&at)).await,
        Op::TestRule => rules::test(req, ctx, &on(&at)).await,
        Op::ListAlerts => alerts::list(&req, ctx, &alert).await,
        Op::CreateAlert => alerts::create(req, ctx, &alert).await,
        Op::GetAlert => alerts::get(ctx, &alert).await,
        Op::UpdateAlert => alerts::update(req, ctx, &alert).await,
        Op::DeleteAlert => alerts::delete(ctx, &alert).await,
        Op::AlertHistory => alerts::history(&req, ctx, &alert).await,
    }
}

/// The user's app named by a path segment; anything else (another user's
/// app, a missing one, a malformed id) is 404.
pub(crate) async fn owned_app(ctx: &Ctx, owner: Uuid, raw: &str) -> Result<lvd::apps::store::App, Error> {
    let id: Uuid = raw.parse().map_err(|_| Error::NotFound)?;
    lvd::apps::store::get(&ctx.common.db, owner, id).await?.ok_or(Error::NotFound)
}

/// Everything an `/api/apps` request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No such app, rule or alert of this user.
    #[error("not found")]
    NotFound,
    /// Input the contract refuses (404/405 of the route table, 413, 415, 422).
    #[error(transparent)]
    Rejected(#[from] Problem),
    /// A rule's schema that does not compile, with where and why.
    #[error("schema does not compile")]
    InvalidSchema(Vec<FieldError>),
    /// A stored rule that no longer compiles (say, after a library upgrade).
    #[error("stored rule {0} does not compile")]
    StoredRule(String),
    #[error(transparent)]
    Db(#[from] DbError),
    /// A variable this route needs could not be read.
    #[error("variable: {0}")]
    Config(String),
    /// A change committed, but its cache entry could not be dropped.
    #[error("the change committed but its cache entry could not be dropped")]
    Stale(#[source] KvError),
}

/// The one mapping from this component's errors to replies.
fn problem(e: &Error) -> Problem {
    match e {
        Error::NotFound => Problem::not_found(),
        Error::Rejected(p) => p.clone(),
        Error::InvalidSchema(errors) => {
            Problem::new(422, "invalid_schema", "The schema does not compile as JSON Schema draft 2020-12.").with_errors(errors.clone())
        }
        Error::StoredRule(_) | Error::Config(_) => Problem::internal(),
        Error::Db(e) => serve::db_fault(e),
        // 503, so the client retries and the change is not assumed to be
        // live everywhere.
        Error::Stale(_) => Problem::unavailable("The change was saved but could not be made live everywhere; retry the request."),
    }
}
