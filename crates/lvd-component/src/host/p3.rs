//! The wasi:http 0.3 build: spin-sdk 6, every host call asynchronous.

use futures::SinkExt;
use spin_sdk::http::{FromRequest, IntoResponse};
use spin_sdk::wasip3::http::types;
use std::time::Duration;

use super::Closed;
use crate::serve::{Kind, Reply};

#[doc(hidden)]
pub use spin_sdk as sdk;

/// An incoming request; its body is read with `http_body`.
pub type Request = spin_sdk::http::Request;

/// Exports `$handle` (`async fn(Request) -> Reply`) as the component's
/// wasi:http 0.3 handler.
#[macro_export]
macro_rules! entry {
    ($handle:ident) => {
        mod __lvd_entry {
            struct Entry;
            $crate::host::sdk::wasip3::http::service::export!(Entry);

            impl $crate::host::sdk::wasip3::exports::http::handler::Guest for Entry {
                async fn handle(
                    request: $crate::host::sdk::wasip3::http::types::Request,
                ) -> Result<$crate::host::sdk::wasip3::http::types::Response, $crate::host::sdk::wasip3::http::types::ErrorCode> {
                    $crate::host::respond(request, super::$handle).await
                }
            }
        }
    };
}

/// Runs a component's handler on one request and hands its reply to the
/// host; a streamed body, and the reply's `after` work, run as tasks that
/// outlive the call (the instance lives until they end).
#[doc(hidden)]
pub async fn respond<F: Future<Output = Reply>>(
    request: types::Request,
    handle: impl FnOnce(Request) -> F,
) -> Result<types::Response, types::ErrorCode> {
    let Reply { kind, after } = handle(Request::from_request(request)?).await;
    if let Some(after) = after {
        spin_sdk::wasip3::spawn(after);
    }
    match kind {
        Kind::Whole(resp) => resp.into_response(),
        Kind::Streamed(head, task) => {
            let (tx, body) = spin_sdk::http::body::stream::<bytes::Bytes>();
            spin_sdk::wasip3::spawn(task(BodySink(tx)));
            let (parts, ()) = head.into_parts();
            http::Response::from_parts(parts, body).into_response()
        }
    }
}

/// Where a streamed reply's body goes.
pub struct BodySink(futures::channel::mpsc::Sender<bytes::Bytes>);

impl BodySink {
    /// Sends one chunk (text or bytes); [`Closed`] once the client has gone.
    pub async fn send(&mut self, chunk: impl Into<bytes::Bytes>) -> Result<(), Closed> {
        self.0.send(chunk.into()).await.map_err(|_| Closed)
    }
}

/// Waits without holding the instance: other requests run meanwhile.
pub async fn sleep(duration: Duration) {
    spin_sdk::time::sleep(duration).await;
}

/// The component's Spin variables.
pub mod variables {
    pub use spin_sdk::variables::Error;

    pub async fn get(name: &str) -> Result<String, Error> {
        spin_sdk::variables::get(name).await
    }
}

pub(crate) mod pg {
    pub use spin_sdk::pg::{Connection, DbValue, ParameterValue, PgError, QueryError};

    fn flat(e: spin_sdk::pg::Error) -> PgError {
        match e {
            spin_sdk::pg::Error::PgError(e) => e,
            other => PgError::Other(other.to_string()),
        }
    }

    pub async fn open(url: &str) -> Result<Connection, PgError> {
        Connection::open(url).await.map_err(flat)
    }

    /// Every row of the statement's result.
    pub async fn query(conn: &Connection, sql: &str, params: Vec<ParameterValue>) -> Result<Vec<Vec<DbValue>>, PgError> {
        let mut result = conn.query(sql, params).await.map_err(flat)?;
        let mut rows = Vec::new();
        while let Some(row) = result.rows().next().await {
            rows.push(row);
        }
        result.result().await.map_err(flat)?;
        Ok(rows)
    }

    pub async fn execute(conn: &Connection, sql: &str, params: Vec<ParameterValue>) -> Result<u64, PgError> {
        conn.execute(sql, params).await.map_err(flat)
    }
}

pub(crate) mod kv {
    pub use spin_sdk::key_value::{Error, Store};

    pub async fn open_default() -> Result<Store, Error> {
        Store::open_default().await
    }

    pub async fn get(store: &Store, key: &str) -> Result<Option<Vec<u8>>, Error> {
        store.get(key).await
    }

    pub async fn set(store: &Store, key: &str, value: &[u8]) -> Result<(), Error> {
        store.set(key, value).await
    }

    pub async fn delete(store: &Store, key: &str) -> Result<(), Error> {
        store.delete(key).await
    }
}

pub(crate) mod redis {
    pub use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

    pub async fn open(url: &str) -> Result<Connection, Error> {
        Connection::open(url).await
    }

    pub async fn execute(conn: &Connection, command: &str, args: Vec<RedisParameter>) -> Result<Vec<RedisResult>, Error> {
        conn.execute(command, args).await
    }
}
