//! What every component's entry point does, written once: load the
//! component's configuration (one failure answers 500, logged), run its
//! handler, and turn the handler's error into the contract's problem reply,
//! logging the whole cause chain of every 5xx. A component is then its route
//! table ([`crate::routes`]), its handlers, and one function mapping its
//! error enum to problems.
//!
//! Every component's entry point has this shape (`components/logs`):
//!
//! ```text
//! lvd_component::entry!(handle);
//!
//! async fn handle(req: Request) -> Reply {
//!     serve::<Ctx, _>(NAME, req, async |req, ctx| answer(NAME, route(req, ctx).await, problem)).await
//! }
//! ```
//!
//! and builds for either ABI unchanged (see [`crate::host`]).

use lvd::cause::chain;
use lvd::db::DbError;
use lvd::kv::RedisError;
use lvd::problem::Problem;
use std::pin::Pin;

use crate::host::{BodySink, Request, variables};
use crate::http::{self as h, Response};

/// What a component answers: a whole response, or a response whose body a
/// task writes after the headers have gone out (a live stream).
pub enum Reply {
    Whole(Response),
    Streamed(http::Response<()>, Box<dyn FnOnce(BodySink) -> Pin<Box<dyn Future<Output = ()>>>>),
}

impl From<Response> for Reply {
    fn from(resp: Response) -> Self {
        Self::Whole(resp)
    }
}

/// A reply with `head`'s status and headers whose body `task` writes, chunk
/// by chunk, until it returns or the client goes.
pub fn streamed<F: Future<Output = ()> + 'static>(head: http::Response<()>, task: impl FnOnce(BodySink) -> F + 'static) -> Reply {
    Reply::Streamed(head, Box::new(move |sink| Box::pin(task(sink))))
}

/// A component's configuration, read from its Spin variables once per
/// request, before any handler runs.
#[allow(async_fn_in_trait)]
pub trait Config: Sized {
    async fn load() -> Result<Self, variables::Error>;
}

/// A component with nothing to load (health, pages).
impl Config for () {
    async fn load() -> Result<Self, variables::Error> {
        Ok(())
    }
}

/// Loads `C` and runs `handle` with it. A configuration that cannot be
/// loaded (a missing variable, a secret too short) is logged with the
/// reason, every time, and answered 500: a component cannot refuse to start.
pub async fn serve<C: Config, R: Into<Reply>>(component: &str, req: Request, handle: impl AsyncFnOnce(Request, &C) -> R) -> Reply {
    match C::load().await {
        Ok(config) => handle(req, &config).await.into(),
        Err(e) => {
            eprintln!("{component}: configuration refused: {e:?}");
            h::problem(&Problem::internal()).into()
        }
    }
}

/// A handler's reply: its response, or its error as `problem` maps it. A
/// 5xx is logged with the error's cause chain (the client sees only the
/// problem's words).
pub fn answer<E: std::error::Error + 'static>(component: &str, result: Result<Response, E>, problem: fn(&E) -> Problem) -> Response {
    match result {
        Ok(resp) => resp,
        Err(e) => {
            let p = problem(&e);
            if p.status >= 500 {
                eprintln!("{component}: {} {}: {}", p.status, p.code, chain(&e));
            }
            h::problem(&p)
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
