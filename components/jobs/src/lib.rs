//! Background jobs of an app: `POST /api/apps/{app}/reports` and
//! `/exports` record a job and queue it for the worker; `GET
//! /api/jobs/{job}` shows where it is, `GET /api/apps/{app}/jobs` lists the
//! app's jobs (the page's list); `GET /api/jobs/{job}/download`
//! streams its file, one stored part per query, so no instance ever holds a
//! whole file (`lvd::jobs` says where files live and why).
//!
//! Another user's app or job is 404 exactly like a missing one. A user has
//! at most `jobs_max_unfinished` jobs queued or running at once (429 with
//! `Retry-After` past that); files are kept `job_file_days` days.

use http::Method;
use lvd::db::DbError;
use lvd::jobs::store::{self, CreateError, Job};
use lvd::jobs::{self, Spec};
use lvd::kv::Redis as _;
use lvd::limits::Decision;
use lvd::problem::Problem;
use lvd_component::api::{self, Gate};
use lvd_component::config::{self, Common};
use lvd_component::db::SpinDb;
use lvd_component::host::BodySink;
use lvd_component::http::{self as h, Response};
use lvd_component::routes::{Route, Routes};
use lvd_component::serve::{self, Config, Reply, answer, serve};
use lvd_component::scope::Scope;
use lvd_component::{Request, log, variables};
use serde_json::json;
use uuid::Uuid;

const NAME: &str = "jobs";

#[derive(Clone, Copy)]
enum Op {
    Report,
    Export,
    List,
    Get,
    Download,
}

const ROUTES: Routes<Op> = Routes(&[
    Route { path: "/api/apps/{app}/reports", methods: &[(Method::POST, Op::Report)] },
    Route { path: "/api/apps/{app}/exports", methods: &[(Method::POST, Op::Export)] },
    Route { path: "/api/apps/{app}/jobs", methods: &[(Method::GET, Op::List)] },
    Route { path: "/api/jobs/{job}", methods: &[(Method::GET, Op::Get)] },
    Route { path: "/api/jobs/{job}/download", methods: &[(Method::GET, Op::Download)] },
]);

struct Ctx {
    common: Common,
    /// Jobs a user may have queued or running at once.
    max_unfinished: u64,
    /// Days a file is kept.
    file_days: u64,
}

impl Config for Ctx {
    async fn load(scope: &Scope) -> Result<Self, variables::Error> {
        Ok(Self {
            common: Common::load(scope).await?,
            max_unfinished: config::number("jobs_max_unfinished", jobs::DEFAULT_MAX_UNFINISHED).await?,
            file_days: config::number("job_file_days", jobs::DEFAULT_FILE_DAYS).await?,
        })
    }
}

lvd_component::entry!(handle);

async fn handle(req: Request) -> Reply {
    serve::<Ctx, _, _>(NAME, &ROUTES, req, async |req, ctx| {
        let (claims, decision) = match api::admit(&Gate::for_api(&ctx.common).await, &req).await {
            Ok(admitted) => admitted,
            Err(resp) => return resp.into(),
        };
        match route(req, ctx, claims.sub, &decision).await {
            Ok(reply) => reply,
            Err(e) => h::with_rate_limit(answer(NAME, Err(e), problem), &decision).into(),
        }
    })
    .await
}

async fn route(req: Request, ctx: &Ctx, owner: Uuid, decision: &Decision) -> Result<Reply, Error> {
    let at = ROUTES.find(req.method(), req.uri().path())?;
    let id = |name: &str| at.param(name).parse::<Uuid>().map_err(|_| Error::NotFound);
    let resp = match at.op {
        Op::Report => create(req, ctx, owner, id("app")?, Spec::report).await?,
        Op::Export => create(req, ctx, owner, id("app")?, Spec::export).await?,
        Op::List => list(&req, ctx, owner, id("app")?).await?,
        Op::Get => h::json(200, &owned(ctx, owner, id("job")?).await?.view()),
        Op::Download => return download(ctx, owner, id("job")?, decision).await,
    };
    Ok(h::with_rate_limit(resp, decision).into())
}

/// Records the job and queues it: 202 with where to watch it.
async fn create(req: Request, ctx: &Ctx, owner: Uuid, app: Uuid, parse: fn(&[u8]) -> Result<Spec, Problem>) -> Result<Response, Error> {
    let spec = parse(&h::json_body(req).await?)?;
    lvd::apps::store::get(&ctx.common.db, owner, app).await?.ok_or(Error::NotFound)?;
    let job = store::create(&ctx.common.db, owner, app, &spec, ctx.max_unfinished, ctx.file_days).await.map_err(|e| match e {
        CreateError::AtCap => Error::AtCap(ctx.max_unfinished),
        CreateError::Db(e) => Error::Db(e),
    })?;
    // The row is the job: if the entry cannot be queued now, the worker's
    // sweep queues it later (`store::requeue_stale`), so the 202 holds.
    if let Err(e) = jobs::enqueue(&ctx.common.redis, job.id).await {
        let why = format!("job {} recorded but not queued yet (the worker's sweep will): {}", job.id, lvd::cause::chain(&e));
        log::error(NAME, ctx.common.redis.request_id(), &why);
    }
    let mut resp = h::json(202, &json!({ "job_id": job.id, "status": job.status }));
    resp.headers_mut().insert(http::header::LOCATION, format!("/api/jobs/{}", job.id).parse().expect("a valid header"));
    Ok(resp)
}

/// The app's jobs, newest first: `limit` (1-500, default 50) and `cursor`
/// (the last id of the previous page).
async fn list(req: &Request, ctx: &Ctx, owner: Uuid, app: Uuid) -> Result<Response, Error> {
    let (limit, before) = lvd::input::page(req.uri().query().unwrap_or(""), |c| c.parse::<Uuid>().ok())?;
    lvd::apps::store::get(&ctx.common.db, owner, app).await?.ok_or(Error::NotFound)?;
    let (jobs, more) = store::list(&ctx.common.db, owner, app, before, limit).await?;
    let next = if more { jobs.last().map(|j| j.id.to_string()) } else { None };
    Ok(h::json(200, &json!({ "items": jobs.iter().map(Job::view).collect::<Vec<_>>(), "next_cursor": next })))
}

async fn owned(ctx: &Ctx, owner: Uuid, id: Uuid) -> Result<Job, Error> {
    store::get(&ctx.common.db, owner, id).await?.ok_or(Error::NotFound)
}

/// The file, streamed part by part with its length known up front.
async fn download(ctx: &Ctx, owner: Uuid, id: Uuid, decision: &Decision) -> Result<Reply, Error> {
    let job = owned(ctx, owner, id).await?;
    match job.status.as_str() {
        "done" if job.downloadable => {}
        "done" => return Err(Error::Expired),
        "failed" => return Err(Error::Failed(job.error.unwrap_or_default())),
        _ => return Err(Error::NotReady),
    }
    let parts = job.file_parts.unwrap_or(0);
    // The first part before the head goes out, so a file deleted meanwhile
    // is still a clean 410.
    let first = store::part(&ctx.common.db, id, 0).await?.ok_or(Error::Expired)?;
    let mut head = http::Response::new(());
    let headers = head.headers_mut();
    let value = |v: String| http::HeaderValue::from_str(&v).expect("an ASCII header");
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(job.format.content_type()));
    headers.insert(http::header::CONTENT_DISPOSITION, value(format!("attachment; filename=\"{}\"", job.file_name())));
    headers.insert(http::header::CONTENT_LENGTH, value(job.file_bytes.unwrap_or(0).to_string()));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("private, no-store"));
    headers.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    // A report is HTML a user's data went into: never let it run anything
    // or load anything, even if opened in place.
    headers.insert(http::header::CONTENT_SECURITY_POLICY, http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"));
    let db = ctx.common.db.another();
    let request_id = ctx.common.redis.request_id().map(str::to_owned);
    Ok(serve::streamed(h::with_rate_limit(head, decision), move |sink| send_parts(db, id, parts, first, sink, request_id)))
}

/// Sends the parts in order; stops when the client leaves or a part cannot
/// be read (the client then sees a body shorter than its length).
async fn send_parts(db: SpinDb, id: Uuid, parts: i64, first: Vec<u8>, mut sink: BodySink, request_id: Option<String>) {
    let fault = |why: String| log::error(NAME, request_id.as_deref(), &why);
    if sink.send(first).await.is_err() {
        return;
    }
    for part in 1..parts {
        match store::part(&db, id, part).await {
            Ok(Some(data)) => {
                if sink.send(data).await.is_err() {
                    return;
                }
            }
            Ok(None) => return fault(format!("job {id}: part {part} vanished mid-download")),
            Err(e) => return fault(format!("job {id}: part {part} unreadable: {}", lvd::cause::chain(&e))),
        }
    }
}

/// Everything a jobs request can fail with.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Rejected(#[from] Problem),
    #[error("at the cap of {0} unfinished jobs")]
    AtCap(u64),
    #[error("not done yet")]
    NotReady,
    #[error("the job failed: {0}")]
    Failed(String),
    #[error("the file has expired")]
    Expired,
    #[error(transparent)]
    Db(#[from] DbError),
}

fn problem(e: &Error) -> Problem {
    match e {
        Error::NotFound => Problem::not_found(),
        Error::Rejected(p) => p.clone(),
        Error::AtCap(n) => Problem::new(
            429,
            "rate_limited",
            format!("You already have {n} reports or exports queued or running; ask again when one has finished."),
        )
        .with_retry_after(jobs::CAP_RETRY_AFTER_SECS),
        Error::NotReady => Problem::new(409, "job_not_ready", "The job has not finished yet; its status says when it has."),
        Error::Failed(why) => Problem::new(409, "job_failed", format!("The job failed, so there is no file: {why}.")),
        Error::Expired => Problem::new(410, "job_expired", "The file has expired and was deleted; ask for the job again."),
        Error::Db(e) => serve::db_fault(e),
    }
}
