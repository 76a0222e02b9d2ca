//! The wasi:http 0.2 build: spin-sdk 5's Spin 3.x interfaces, whose calls
//! block the instance until they answer, and wasi:http 0.2's request and
//! response resources driven by spin-executor's poll loop.

use bytes::Bytes;
use spin_executor_p2::{CancelOnDropToken, push_waker_and_get_token};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use wasi_p2::clocks::monotonic_clock;
use wasi_p2::http::types::{Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme};
use wasi_p2::io::streams::{InputStream, OutputStream, StreamError};

use super::Closed;
use crate::serve::{Kind, Reply};

#[doc(hidden)]
pub use wasi_p2 as wasi;

/// An incoming request; its body is read with `http_body`.
pub type Request = http::Request<Body>;

/// Exports `$handle` (`async fn(Request) -> Reply`) as the component's
/// wasi:http 0.2 `incoming-handler`.
#[macro_export]
macro_rules! entry {
    ($handle:ident) => {
        mod __lvd_entry {
            struct Entry;
            $crate::host::wasi::http::proxy::export!(Entry with_types_in $crate::host::wasi);

            impl $crate::host::wasi::exports::http::incoming_handler::Guest for Entry {
                fn handle(
                    request: $crate::host::wasi::http::types::IncomingRequest,
                    out: $crate::host::wasi::http::types::ResponseOutparam,
                ) {
                    $crate::host::respond(request, out, super::$handle)
                }
            }
        }
    };
}

/// Runs a component's handler on one request and writes its reply,
/// streamed bodies included, then the reply's `after` work (the body is
/// finished first, so the client has its reply), before the instance is
/// dropped.
#[doc(hidden)]
pub fn respond<F: Future<Output = Reply>>(request: IncomingRequest, out: ResponseOutparam, handle: impl FnOnce(Request) -> F) {
    spin_executor_p2::run(async move {
        let Some(request) = incoming(request) else {
            ResponseOutparam::set(out, Err(wasi_p2::http::types::ErrorCode::HttpRequestUriInvalid));
            return;
        };
        let Reply { kind, after } = handle(request).await;
        let after = async move {
            if let Some(after) = after {
                after.await;
            }
        };
        match kind {
            Kind::Whole(resp) => {
                let (head, body) = resp.into_parts();
                if let Some(mut sink) = start(out, head) {
                    let _ = sink.send(body).await;
                }
                after.await;
            }
            Kind::Streamed(head, task) => match start(out, head.into_parts().0) {
                Some(sink) => drop(futures::join!(task(sink), after)),
                None => after.await,
            },
        }
    });
}

/// The request as `http` types; `None` when its URI or a header is not
/// one `http` accepts (the host has already parsed both).
fn incoming(req: IncomingRequest) -> Option<Request> {
    let mut uri = http::Uri::builder();
    if let Some(scheme) = req.scheme() {
        let scheme = match scheme {
            Scheme::Http => "http".to_owned(),
            Scheme::Https => "https".to_owned(),
            Scheme::Other(other) => other,
        };
        uri = uri.scheme(scheme.as_str());
    }
    if let Some(authority) = req.authority() {
        uri = uri.authority(authority);
    }
    uri = uri.path_and_query(req.path_with_query().unwrap_or_else(|| "/".to_owned()));
    let method = match req.method() {
        wasi_p2::http::types::Method::Get => http::Method::GET,
        wasi_p2::http::types::Method::Head => http::Method::HEAD,
        wasi_p2::http::types::Method::Post => http::Method::POST,
        wasi_p2::http::types::Method::Put => http::Method::PUT,
        wasi_p2::http::types::Method::Delete => http::Method::DELETE,
        wasi_p2::http::types::Method::Connect => http::Method::CONNECT,
        wasi_p2::http::types::Method::Options => http::Method::OPTIONS,
        wasi_p2::http::types::Method::Trace => http::Method::TRACE,
        wasi_p2::http::types::Method::Patch => http::Method::PATCH,
        wasi_p2::http::types::Method::Other(other) => http::Method::from_bytes(other.as_bytes()).ok()?,
    };
    let mut builder = http::Request::builder().method(method).uri(uri.build().ok()?);
    for (name, value) in req.headers().entries() {
        builder = builder.header(name, value);
    }
    let body = req.consume().ok()?;
    let stream = body.stream().ok()?;
    builder.body(Body { waiting: None, stream: Some(stream), _body: body }).ok()
}

/// Sends the status and headers; the sink then writes the body. A head the
/// host refuses (a header it forbids) is answered as the host's internal
/// error, never left unset.
fn start(out: ResponseOutparam, head: http::response::Parts) -> Option<BodySink> {
    let outgoing = || {
        let headers: Vec<(String, Vec<u8>)> = head.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect();
        let response = OutgoingResponse::new(Fields::from_list(&headers).map_err(|e| format!("header refused: {e:?}"))?);
        response.set_status_code(head.status.as_u16()).map_err(|()| format!("status {} refused", head.status))?;
        let body = response.body().map_err(|()| "no body".to_owned())?;
        let stream = body.write().map_err(|()| "no body stream".to_owned())?;
        Ok::<_, String>((response, body, stream))
    };
    match outgoing() {
        Ok((response, body, stream)) => {
            ResponseOutparam::set(out, Ok(response));
            Some(BodySink { stream: Some(stream), body: Some(body) })
        }
        Err(why) => {
            ResponseOutparam::set(out, Err(wasi_p2::http::types::ErrorCode::InternalError(Some(why))));
            None
        }
    }
}

/// A request body, read 16 KiB at a time as the client sends it. Fields
/// drop in order: the wait, the stream, then the body it belongs to.
pub struct Body {
    waiting: Option<CancelOnDropToken>,
    stream: Option<InputStream>,
    _body: IncomingBody,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(stream) = &this.stream else { return Poll::Ready(None) };
        match stream.read(16 << 10) {
            Ok(chunk) if chunk.is_empty() => {
                this.waiting = Some(push_waker_and_get_token(stream.subscribe(), cx.waker().clone()).into());
                Poll::Pending
            }
            Ok(chunk) => Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(chunk))))),
            Err(StreamError::Closed) => {
                this.stream = None;
                Poll::Ready(None)
            }
            Err(StreamError::LastOperationFailed(e)) => Poll::Ready(Some(Err(std::io::Error::other(e.to_debug_string())))),
        }
    }
}

/// Where a reply's body goes. Writes block the instance until the client
/// takes them, which in this build is only ever this request's. Dropping
/// the sink finishes the body.
pub struct BodySink {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl BodySink {
    /// Sends one chunk (text or bytes); [`Closed`] once the client has gone.
    pub async fn send(&mut self, chunk: impl Into<Bytes>) -> Result<(), Closed> {
        let stream = self.stream.as_ref().ok_or(Closed)?;
        // The most one blocking write may carry.
        for part in chunk.into().chunks(4096) {
            stream.blocking_write_and_flush(part).map_err(|_| Closed)?;
        }
        Ok(())
    }
}

impl Drop for BodySink {
    fn drop(&mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

/// Waits on the host's clock. Nothing else runs in the instance meanwhile
/// but this request's own other futures.
pub async fn sleep(duration: Duration) {
    let until = monotonic_clock::now().saturating_add(duration.as_nanos().try_into().unwrap_or(u64::MAX));
    Sleep { until, waiting: None }.await;
}

struct Sleep {
    until: monotonic_clock::Instant,
    /// The clock's pollable for this wait; dropping it cancels the wait.
    waiting: Option<CancelOnDropToken>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.until {
            return Poll::Ready(());
        }
        // The executor polls again after any pollable fires: subscribe anew.
        self.waiting = Some(push_waker_and_get_token(monotonic_clock::subscribe_instant(self.until), cx.waker().clone()).into());
        Poll::Pending
    }
}

/// The component's Spin variables.
pub mod variables {
    pub use spin_sdk_p2::variables::Error;

    pub async fn get(name: &str) -> Result<String, Error> {
        spin_sdk_p2::variables::get(name)
    }
}

pub(crate) mod pg {
    pub use spin_sdk_p2::pg4::{Connection, DbValue, ParameterValue, PgError, QueryError};

    pub async fn open(url: &str) -> Result<Connection, PgError> {
        Connection::open(url)
    }

    /// Every row of the statement's result.
    ///
    /// Spin 4.0.x's synchronous `query` never returns when the statement
    /// matches no rows (spinframework/spin#3671, fixed after 4.0.2): the
    /// instance waits for ever. So every statement is asked for one row at
    /// least: its own rows, each after `true`, or, when it has none, one
    /// filler (`false`, then NULLs) that is dropped here. A data-modifying
    /// statement is fine inside the `WITH`; one that itself holds a
    /// data-modifying `WITH` is not (PostgreSQL refuses it), and no query
    /// of the app's does that (`execute` is not wrapped).
    pub async fn query(conn: &Connection, sql: &str, params: Vec<ParameterValue>) -> Result<Vec<Vec<DbValue>>, PgError> {
        let sql = format!(
            "WITH q AS ({sql}) SELECT true, q.* FROM q \
             UNION ALL SELECT false, q.* FROM (SELECT) AS one LEFT JOIN q ON false WHERE NOT EXISTS (SELECT FROM q)"
        );
        let rows = conn.query(&sql, &params)?.rows;
        Ok(rows
            .into_iter()
            .filter_map(|mut row| match row.first() {
                Some(DbValue::Boolean(true)) => {
                    row.remove(0);
                    Some(row)
                }
                _ => None,
            })
            .collect())
    }

    pub async fn execute(conn: &Connection, sql: &str, params: Vec<ParameterValue>) -> Result<u64, PgError> {
        conn.execute(sql, &params)
    }
}

pub(crate) mod kv {
    pub use spin_sdk_p2::key_value::{Error, Store};

    pub async fn open_default() -> Result<Store, Error> {
        Store::open_default()
    }

    pub async fn get(store: &Store, key: &str) -> Result<Option<Vec<u8>>, Error> {
        store.get(key)
    }

    pub async fn set(store: &Store, key: &str, value: &[u8]) -> Result<(), Error> {
        store.set(key, value)
    }

    pub async fn delete(store: &Store, key: &str) -> Result<(), Error> {
        store.delete(key)
    }
}

pub(crate) mod redis {
    pub use spin_sdk_p2::redis::{Connection, Error, RedisParameter, RedisResult};

    pub async fn open(url: &str) -> Result<Connection, Error> {
        Connection::open(url)
    }

    pub async fn execute(conn: &Connection, command: &str, args: Vec<RedisParameter>) -> Result<Vec<RedisResult>, Error> {
        conn.execute(command, &args)
    }
}

/// Outbound HTTP (wasi:http 0.2's `outgoing-handler`, driven by
/// spin-executor's poll loop, so a deadline can cut it short): Spin lets a
/// component reach only the hosts its `allowed_outbound_hosts` lists.
pub(crate) mod outbound {
    /// POSTs the JSON `body` to `url` with `Authorization: Bearer {bearer}`;
    /// the reply's status and body, refused past `limit` bytes.
    pub async fn post_json(url: &str, bearer: &str, body: Vec<u8>, limit: usize) -> Result<(u16, Vec<u8>), String> {
        let req = spin_sdk_p2::http::Request::post(url, body)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {bearer}"))
            .build();
        let resp: spin_sdk_p2::http::Response = spin_sdk_p2::http::send(req).await.map_err(|e| e.to_string())?;
        if resp.body().len() > limit {
            return Err(format!("a reply longer than {limit} bytes"));
        }
        Ok((*resp.status(), resp.body().to_vec()))
    }
}
