//! `lvd::kv::Redis` over Spin's outbound Redis.
//!
//! The connection is kept for the life of the component instance, which
//! Spin reuses for many requests in the wasi:http 0.3 build (128 by
//! default, 16 at once; a 0.2 instance serves one request): opening one
//! per request cost a TCP handshake and a Redis client setup each time. The
//! host makes each `open` its own multiplexed connection, so requests that
//! share it concurrently are safe, and nothing here uses per-connection
//! state (MULTI, SELECT, subscriptions). A connection that fails, or gives
//! no answer within [`deadline::REDIS`], is forgotten, so the next request
//! opens a fresh one.

use lvd::kv::{Arg, Redis, RedisError, Reply, Script};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::deadline;
use crate::scope::Scope;
use crate::host::redis::{self, RedisParameter, RedisResult};

thread_local! {
    /// Open connections of this instance, by address. Components are
    /// single-threaded; the map is only touched between awaits.
    static OPEN: RefCell<HashMap<String, Rc<redis::Connection>>> = RefCell::new(HashMap::new());
}

#[derive(Clone)]
pub struct SpinRedis {
    url: String,
    /// The request this handle serves, when it serves one: queue entries
    /// carry its id, and the key-value adapter over it notes cache reads.
    scope: Option<Scope>,
}

impl SpinRedis {
    pub fn new(url: String) -> Self {
        Self { url, scope: None }
    }

    /// This handle, carrying `scope` (see [`Scope`]).
    pub fn serving(self, scope: &Scope) -> Self {
        Self { scope: Some(scope.clone()), ..self }
    }

    /// Notes a read of the cache `cache` for the request's figures
    /// (`/metrics`), when this handle serves a request.
    pub fn note_cache(&self, cache: &str, hit: bool) {
        if let Some(scope) = &self.scope {
            scope.note_cache(cache, hit);
        }
    }

    async fn conn(&self) -> Result<Rc<redis::Connection>, RedisError> {
        if let Some(c) = OPEN.with(|open| open.borrow().get(&self.url).cloned()) {
            return Ok(c);
        }
        let c = Rc::new(redis::open(&self.url).await.map_err(|e| RedisError(format!("{e:?}").into()))?);
        OPEN.with(|open| open.borrow_mut().insert(self.url.clone(), c.clone()));
        Ok(c)
    }

    /// Whether a connection to Redis is open or opens now (within
    /// [`deadline::REDIS`]); it is kept for the calls that follow.
    pub async fn reachable(&self) -> Result<(), RedisError> {
        match deadline::within(deadline::REDIS, self.conn()).await {
            Some(result) => result.map(drop),
            None => Err(RedisError(format!("no connection within {:?}", deadline::REDIS).into())),
        }
    }

    fn forget(&self) {
        OPEN.with(|open| open.borrow_mut().remove(&self.url));
    }
}

impl Redis for SpinRedis {
    fn request_id(&self) -> Option<&str> {
        self.scope.as_ref().map(Scope::id)
    }

    fn pending(&self) -> Option<&dyn lvd::metrics::Pending> {
        self.scope.as_ref().and_then(Scope::pending)
    }

    async fn execute(&self, command: &str, args: Vec<Arg>) -> Result<Vec<Reply>, RedisError> {
        self.within_deadline(async {
            let conn = self.conn().await?;
            self.run(&conn, command, params(args)).await.map_err(|e| self.failed(e))
        })
        .await
    }

    /// `EVALSHA` first; the script's text only when Redis answers NOSCRIPT
    /// (that error leaves the connection as it was).
    async fn eval(&self, script: &Script, args: Vec<Arg>) -> Result<Vec<Reply>, RedisError> {
        self.within_deadline(async {
            let conn = self.conn().await?;
            let mut params = params(args);
            params.insert(0, RedisParameter::Binary(script.sha1().as_bytes().to_vec()));
            let retry = params.clone();
            match self.run(&conn, "EVALSHA", params).await {
                Err(e) if lvd::kv::is_noscript(&e) => {
                    let mut params = retry;
                    params[0] = RedisParameter::Binary(script.text().as_bytes().to_vec());
                    self.run(&conn, "EVAL", params).await.map_err(|e| self.failed(e))
                }
                other => other.map_err(|e| self.failed(e)),
            }
        })
        .await
    }
}

fn params(args: Vec<Arg>) -> Vec<RedisParameter> {
    args.into_iter()
        .map(|a| match a {
            Arg::Int(n) => RedisParameter::Int64(n),
            Arg::Bytes(b) => RedisParameter::Binary(b),
        })
        .collect()
}

impl SpinRedis {
    async fn within_deadline(&self, call: impl Future<Output = Result<Vec<Reply>, RedisError>>) -> Result<Vec<Reply>, RedisError> {
        match deadline::within(deadline::REDIS, call).await {
            Some(result) => result,
            None => {
                self.forget();
                Err(RedisError(format!("no answer within {:?}", deadline::REDIS).into()))
            }
        }
    }

    /// A failed command: a script or command error leaves the connection
    /// fine, but telling those apart from a dead one is not worth the risk,
    /// so it is forgotten.
    fn failed(&self, error: String) -> RedisError {
        self.forget();
        RedisError(error.into())
    }

    /// One command on `conn`; the host's error as text.
    async fn run(&self, conn: &redis::Connection, command: &str, params: Vec<RedisParameter>) -> Result<Vec<Reply>, String> {
        let replies = redis::execute(conn, command, params).await.map_err(|e| format!("{e:?}"))?;
        Ok(replies
            .into_iter()
            .map(|r| match r {
                RedisResult::Nil => Reply::Nil,
                RedisResult::Status(s) => Reply::Status(s),
                RedisResult::Int64(n) => Reply::Int(n),
                RedisResult::Binary(b) => Reply::Bytes(b),
            })
            .collect())
    }
}
