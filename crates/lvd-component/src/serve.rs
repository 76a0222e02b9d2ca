//! What every component's entry point does, written once: give the request
//! its id, load the component's configuration (one failure answers 500,
//! logged), run its handler, turn the handler's error into the contract's
//! problem reply, log the whole cause chain of every 5xx with the request's
//! id, and count the request in the deployment's figures. A component is then its route
//! table ([`crate::routes`]), its handlers, and one function mapping its
//! error enum to problems.
//!
//! Every component's entry point has this shape (`components/logs`):
//!
//! ```text
//! lvd_component::entry!(handle);
//!
//! async fn handle(req: Request) -> Reply {
//!     serve::<Ctx, _, _>(NAME, &ROUTES, req, async |req, ctx| answer(NAME, route(req, ctx).await, problem)).await
//! }
//! ```
//!
//! and builds for either ABI unchanged (see [`crate::host`]).

use lvd::cause::chain;
use lvd::db::DbError;
use lvd::kv::RedisError;
use lvd::problem::Problem;
use std::pin::Pin;
use std::time::Instant;

use crate::host::{BodySink, Request, variables};
use crate::http::{self as h, Response};
use crate::log;
use crate::redis::SpinRedis;
use crate::routes::Routes;
use crate::scope::{self, Scope};

/// Work that runs once the reply is with the host: off the client's clock.
pub type Task = Pin<Box<dyn Future<Output = ()>>>;

/// What a component answers: a whole response, or a response whose body a
/// task writes after the headers have gone out (a live stream); and what
/// to do once it is handed over.
pub struct Reply {
    pub(crate) kind: Kind,
    pub(crate) after: Option<Task>,
}

pub(crate) enum Kind {
    Whole(Response),
    Streamed(http::Response<()>, Box<dyn FnOnce(BodySink) -> Task>),
}

impl From<Response> for Reply {
    fn from(resp: Response) -> Self {
        Self { kind: Kind::Whole(resp), after: None }
    }
}

impl Reply {
    fn status(&self) -> u16 {
        match &self.kind {
            Kind::Whole(r) => r.status().as_u16(),
            Kind::Streamed(r, _) => r.status().as_u16(),
        }
    }

    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        match &mut self.kind {
            Kind::Whole(r) => r.headers_mut(),
            Kind::Streamed(r, _) => r.headers_mut(),
        }
    }

    fn take_note(&mut self) -> Option<Note> {
        match &mut self.kind {
            Kind::Whole(r) => r.extensions_mut().remove::<Note>(),
            Kind::Streamed(r, _) => r.extensions_mut().remove::<Note>(),
        }
    }
}

/// A reply with `head`'s status and headers whose body `task` writes, chunk
/// by chunk, until it returns or the client goes.
pub fn streamed<F: Future<Output = ()> + 'static>(head: http::Response<()>, task: impl FnOnce(BodySink) -> F + 'static) -> Reply {
    Reply { kind: Kind::Streamed(head, Box::new(move |sink| Box::pin(task(sink)))), after: None }
}

/// What a handler leaves on its response for [`serve`] to log with the
/// request's id: the cause of a 5xx (the client sees only the problem).
#[derive(Clone, Debug)]
pub struct Note(pub String);

/// `resp`, carrying `note` for the request's log line.
pub fn noted(mut resp: Response, note: String) -> Response {
    resp.extensions_mut().insert(Note(note));
    resp
}

/// A component's configuration, read from its Spin variables once per
/// request, before any handler runs. `scope` is the request's (its id, its
/// cache reads): adapters that serve the request carry it.
#[allow(async_fn_in_trait)]
pub trait Config: Sized {
    async fn load(scope: &Scope) -> Result<Self, variables::Error>;
}

/// A component with nothing to load (health, pages).
impl Config for () {
    async fn load(_: &Scope) -> Result<Self, variables::Error> {
        Ok(())
    }
}

/// Serves one request: gives it an id (a valid `X-Request-Id` is kept),
/// loads `C` and runs `handle` with it; returns the id in `X-Request-Id`,
/// logs what the handler noted (one JSON line with the id, method, route and
/// status), and once the reply is with the host, adds the request to the
/// deployment's figures (`lvd::metrics`) unless `request_metrics` is `off`
/// or a script the request ran has counted it already (ingest's does, so an
/// event costs no round trip for its figures).
/// A configuration that cannot be loaded (a missing variable, a secret too
/// short) is logged with the reason, every time, and answered 500: a
/// component cannot refuse to start.
pub async fn serve<C: Config, R: Into<Reply>, Op>(
    component: &'static str,
    routes: &Routes<Op>,
    req: Request,
    handle: impl AsyncFnOnce(Request, &C) -> R,
) -> Reply {
    let started = Instant::now();
    let id = scope::request_id(req.headers().get("x-request-id").and_then(|v| v.to_str().ok()));
    let method = req.method().as_str().to_owned();
    let route = routes.pattern(req.uri().path()).unwrap_or("unmatched");
    let counting = !variables::get("request_metrics").await.is_ok_and(|v| v.trim() == "off");
    let scope = Scope::new(id, &method, route, counting);
    let mut reply = match C::load(&scope).await {
        Ok(config) => handle(req, &config).await.into(),
        Err(e) => Reply::from(noted(h::problem(&Problem::internal()), format!("configuration refused: {e:?}"))),
    };
    let seconds = started.elapsed().as_secs_f64();
    let status = reply.status();
    if let Ok(id) = http::HeaderValue::from_str(scope.id()) {
        reply.headers_mut().insert("x-request-id", id);
    }
    if let Some(Note(message)) = reply.take_note() {
        log::request(component, scope.id(), &method, route, status, &message);
    }
    reply.after = Some(Box::pin(async move {
        // Not counted, or counted already by a script it ran (ingest's)?
        let Some(sample) = scope.figures(status, seconds) else { return };
        let Ok(url) = variables::get("redis_url").await else { return };
        // Figures are best effort: a request is never failed for them.
        let _ = lvd::metrics::record(&SpinRedis::new(url), &sample).await;
    }));
    reply
}

/// A handler's reply: its response, or its error as `problem` maps it. A
/// 5xx carries the error's cause chain for the request's log line (the
/// client sees only the problem's words).
pub fn answer<E: std::error::Error + 'static>(component: &str, result: Result<Response, E>, problem: fn(&E) -> Problem) -> Response {
    match result {
        Ok(resp) => resp,
        Err(e) => {
            let p = problem(&e);
            let resp = h::problem(&p);
            if p.status >= 500 { noted(resp, format!("{component}: {} {}: {}", p.status, p.code, chain(&e))) } else { resp }
        }
    }
}

/// The problem for a database fault: 503 while it is unreachable, an opaque
/// 500 otherwise.
pub fn db_fault(e: &DbError) -> Problem {
    match e {
        DbError::Unavailable(_) => Problem::unavailable("The database is unavailable; try again shortly."),
        _ => Problem::internal(),
    }
}

/// The problem for a Redis fault, naming what is unavailable (`"Event
/// storage"`, `"Live figures"`).
pub fn redis_fault(what: &str, _: &RedisError) -> Problem {
    Problem::unavailable(format!("{what} is unavailable; try again shortly."))
}
