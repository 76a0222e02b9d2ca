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

/// Outbound HTTP (wasi:http 0.3's client): Spin lets a component reach only
/// the hosts its `allowed_outbound_hosts` lists.
pub(crate) mod outbound {
    use http_body_util::BodyExt;

    /// POSTs the JSON `body` to `url` with `Authorization: Bearer {bearer}`;
    /// the reply's status and body, refused past `limit` bytes.
    pub async fn post_json(url: &str, bearer: &str, body: Vec<u8>, limit: usize) -> Result<(u16, Vec<u8>), String> {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {bearer}"))
            .body(spin_sdk::http::FullBody::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = spin_sdk::http::send(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let mut body = std::pin::pin!(resp.into_body());
        let mut read = Vec::new();
        while let Some(frame) = body.as_mut().frame().await {
            if let Ok(data) = frame.map_err(|e| format!("{e:?}"))?.into_data() {
                if read.len() + data.len() > limit {
                    return Err(format!("a reply longer than {limit} bytes"));
                }
                read.extend_from_slice(&data);
            }
        }
        Ok((status, read))
    }
}
