//! The HTTP trigger, request for request as Spin 4.0.2's
//! (`crates/trigger-http/src/server.rs`, `headers.rs`, `wasi.rs`): HTTP/1
//! and cleartext HTTP/2 on one port; `/.well-known/spin/health` and `info`
//! answered before routing; routes matched as Spin does; the request's URI
//! made absolute from its `Host` (a request with none, a bad one, or one
//! that disagrees with an absolute URI is dropped with no reply, as hyper
//! does when Spin's handler fails); the client's headers, then Spin's
//! `spin-*` headers *appended* — so a client that sends its own
//! `spin-client-addr` leaves the guest two values, its own first (read the
//! last); and the matched component run through `wasi:http/handler`, its
//! response streamed back (so Server-Sent Events flow as the guest writes).
//!
//! Replies the runtime makes itself are Spin's: an empty 404 when no route
//! matches, an empty 500 when a component fails (or a header value is not
//! UTF-8). There is no body-size limit and, by default, no request timeout:
//! Spin has neither, so the app enforces its own.

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures::channel::oneshot;
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::handler::{Proxy, ProxyHandler, ProxyPre};
use wasmtime_wasi_http::p3::WasiHttpView;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use crate::engine::{ComponentHandler, InstanceState};
use crate::router::{RouteMatch, Router};

type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// Components by id. Watch mode swaps an entry in place; requests already
/// running keep the `Arc` of the handler they started with, so a swap never
/// drops one. `std` lock: held only to clone or replace an `Arc`.
pub type Components = Arc<RwLock<HashMap<String, Arc<ProxyHandler<ComponentHandler>>>>>;

const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

pub struct HttpTrigger {
    pub router: Router,
    pub components: Components,
    /// For `/.well-known/spin/info`.
    pub app_name: String,
    pub app_version: Option<String>,
}

impl HttpTrigger {
    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// (up to `drain`) before returning.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let this = this.clone();
                async move { this.handle(req, peer).await }
            });
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: waiting for in-flight requests");
        if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
            tracing::warn!("in-flight requests still open after {drain:?}; stopping anyway");
        }
        Ok(())
    }

    /// An `Err` makes hyper drop the connection without replying, which is
    /// what a client of Spin sees when Spin's handler fails.
    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Result<Response<Body>> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let asked_id = request_id(req.headers()).map(str::to_owned);
        let (route, component, resp) = match self.dispatch(req, client).await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(target: "access", %method, path, request_id = asked_id, "request refused: {e:#}");
                return Err(e);
            }
        };
        // The id the app gave the request (it keeps a valid incoming one).
        let id = request_id(resp.headers()).map(str::to_owned).or(asked_id);
        tracing::info!(
            target: "access",
            %method, path, route, component, status = resp.status().as_u16(), request_id = id,
            ms = format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3),
        );
        Ok(resp)
    }

    async fn dispatch(&self, mut req: Request<Incoming>, client: SocketAddr) -> Result<(String, String, Response<Body>)> {
        strip_service_chaining_host(&mut req);
        let path = req.uri().path().to_owned();
        if let Some(which) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return Ok(("-".into(), "-".into(), self.well_known(which)));
        }
        let Some(m) = self.router.route(&path) else {
            return Ok(("-".into(), "-".into(), empty(StatusCode::NOT_FOUND)));
        };
        let (route, component) = (m.raw_route().to_owned(), m.component().to_owned());
        set_absolute_uri(&mut req)?;
        let handler = self.components.read().unwrap().get(&component).cloned();
        let resp = match (handler, guest_request(req, &m, client)) {
            (Some(handler), Ok(req)) => match execute(&handler, req).await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::error!(component, "request failed: {e:?}");
                    empty(StatusCode::INTERNAL_SERVER_ERROR)
                }
            },
            (None, _) => empty(StatusCode::INTERNAL_SERVER_ERROR),
            (_, Err(e)) => {
                tracing::error!(component, "request refused before the component ran: {e:#}");
                empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
        };
        Ok((route, component, resp))
    }

    fn well_known(&self, which: &str) -> Response<Body> {
        match which {
            "health" => Response::new(full(Bytes::from_static(b"OK"))),
            "info" => {
                let mut info = serde_json::json!({ "name": self.app_name });
                if let Some(v) = &self.app_version {
                    info["version"] = v.as_str().into();
                }
                let body = serde_json::to_vec_pretty(&info).expect("JSON serializes");
                let mut resp = Response::new(full(Bytes::from(body)));
                resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp
            }
            _ => empty(StatusCode::NOT_FOUND),
        }
    }
}

/// The `X-Request-Id` of a request or reply, when it is text.
fn request_id(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

/// Spin drops a `Host` that names a `*.spin.internal` component (service
/// chaining), after which the request has no authority unless its URI does.
fn strip_service_chaining_host<B>(req: &mut Request<B>) {
    let chaining = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).is_some_and(|host| {
        let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
        name.split_once('.').is_some_and(|(_, rest)| rest == "spin.internal")
    });
    if chaining {
        req.headers_mut().remove(http::header::HOST);
    }
}

/// The request's URI made absolute (`http`, the authority of its `Host` or
/// its own URI), failing where Spin's `set_req_uri` fails.
fn set_absolute_uri<B>(req: &mut Request<B>) -> Result<()> {
    let header: Option<Authority> = req
        .headers()
        .get(http::header::HOST)
        .map(|h| -> Result<Authority> {
            let text = h.to_str().context("'Host' header is not valid UTF-8")?;
            text.parse().context("'Host' header contains an invalid authority")
        })
        .transpose()?;
    let mut parts = req.uri().clone().into_parts();
    let authority = match (header, parts.authority.take()) {
        (None, None) => bail!("no 'Host' header present in request"),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) if a == b => a,
        _ => bail!("authority in 'Host' header does not match authority in URI"),
    };
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    *req.uri_mut() = Uri::from_parts(parts)?;
    Ok(())
}

/// What the guest receives: every header the client sent, then Spin's own
/// appended. A header value that is not UTF-8 fails the request, as in Spin.
fn guest_request(req: Request<Incoming>, m: &RouteMatch<'_>, client: SocketAddr) -> Result<Request<GuestBody>> {
    let mut headers = Vec::with_capacity(req.headers().len() + 8);
    for (name, value) in req.headers() {
        let value = std::str::from_utf8(value.as_bytes()).with_context(|| format!("header {name} is not UTF-8"))?;
        headers.push((name.to_string(), value.to_owned()));
    }
    let host = match req.headers().get(http::header::HOST) {
        Some(h) => std::str::from_utf8(h.as_bytes())?.to_owned(),
        None => "localhost".to_owned(),
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let full_url = format!("{}://{host}{pq}", req.uri().scheme_str().unwrap_or("http"));
    headers.extend(m.spin_headers(&full_url, client));
    let (mut parts, body) = req.into_parts();
    parts.headers.clear();
    parts.headers.extend(headers.into_iter().filter_map(|(n, v)| {
        Some((n.parse::<HeaderName>().ok()?, HeaderValue::from_bytes(v.as_bytes()).ok()?))
    }));
    Ok(Request::from_parts(parts, body.map_err(body_error as fn(hyper::Error) -> ErrorCode)))
}

fn body_error(e: hyper::Error) -> ErrorCode {
    ErrorCode::InternalError(Some(e.to_string()))
}

type GuestBody = http_body_util::combinators::MapErr<Incoming, fn(hyper::Error) -> ErrorCode>;

/// Runs one request in an instance of the component (a reused one if one is
/// free, for wasi:http 0.3; a fresh one for 0.2) and returns the response as
/// soon as its head is ready; the instance lives on until the body has been
/// read.
async fn execute<B>(handler: &ProxyHandler<ComponentHandler>, req: Request<B>) -> Result<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes, Error = ErrorCode> + Send + 'static,
{
    if matches!(handler.instance_pre(), ProxyPre::P2(_)) {
        return execute_p2(handler, req).await;
    }
    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(req);
    let (tx, rx) = oneshot::channel();
    handler.spawn(
        None,
        Box::new(move |store: &Accessor<InstanceState>, guest: &Proxy| {
            Box::pin(async move {
                let result = async {
                    let Proxy::P3(guest) = guest else { anyhow::bail!("not a wasi:http@0.3 component") };
                    let request = store.with(|mut s| s.get().http().table.push(request))?;
                    let response = guest.wasi_http_handler().call_handle(store, request).await??;
                    let response = store.with(|mut s| s.get().http().table.delete(response))?;
                    let response = store.with(|mut s| response.into_http(&mut s, request_io))?;
                    let (done_tx, done_rx) = oneshot::channel();
                    let response = response.map(|b| NotifyOnDrop { inner: b.boxed_unsync(), done: Some(done_tx) }.boxed_unsync());
                    if tx.send(response).is_ok() {
                        // Keep the instance's event loop alive until the body is sent.
                        let _ = done_rx.await;
                    }
                    anyhow::Ok(())
                }
                .await;
                if let Err(e) = result {
                    tracing::error!("component error: {e:?}");
                }
            })
        }),
    );
    Ok(rx.await?)
}

/// [`execute`] for a wasi:http 0.2 component: the guest sets its response
/// through a `response-outparam` and may go on writing the body after. The
/// head is awaited here, outside the instance's task, as Spin does: a
/// guest blocked in a write (`blocking-write-and-flush`) blocks its whole
/// store, so a head forwarded from inside the task would never reach the
/// client whose reading would unblock the write. The task drives the call
/// to its end while the body streams, and keeps the instance until the
/// server is done with the body.
async fn execute_p2<B>(handler: &ProxyHandler<ComponentHandler>, req: Request<B>) -> Result<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes, Error = ErrorCode> + Send + 'static,
{
    use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode as P2ErrorCode, Scheme};
    let req = req.map(|b| b.map_err(|e| P2ErrorCode::InternalError(Some(format!("{e:?}")))));
    let (head_tx, mut head_rx) = tokio::sync::oneshot::channel();
    let (returned_tx, returned_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    handler.spawn(
        None,
        Box::new(move |store: &Accessor<InstanceState>, guest: &Proxy| {
            Box::pin(async move {
                let result = async {
                    let Proxy::P2(guest) = guest else { anyhow::bail!("not a wasi:http@0.2 component") };
                    let (request, out) = store.with(|mut s| {
                        let mut http = wasmtime_wasi_http::p2::WasiHttpView::http(s.get());
                        anyhow::Ok((http.new_incoming_request(Scheme::Http, req)?, http.new_response_outparam(head_tx)?))
                    })?;
                    guest.wasi_http_incoming_handler().call_handle(store, request, out).await?;
                    anyhow::Ok(())
                }
                .await;
                let _ = returned_tx.send(());
                match result {
                    Ok(()) => {
                        let _ = done_rx.await;
                    }
                    Err(e) => tracing::error!("component error: {e:?}"),
                }
            })
        }),
    );
    // The head as soon as the guest sets it; once the call has returned,
    // the head it set before returning, or none.
    let head = tokio::select! {
        biased;
        head = &mut head_rx => head.ok(),
        _ = returned_rx => head_rx.try_recv().ok(),
    };
    let response = match head {
        Some(Ok(response)) => response,
        Some(Err(code)) => anyhow::bail!("the component answered with an error: {code:?}"),
        None => anyhow::bail!("the component returned without setting a response"),
    };
    Ok(response.map(|b| {
        let inner = b.map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}")))).boxed_unsync();
        NotifyOnDrop { inner, done: Some(done_tx) }.boxed_unsync()
    }))
}

/// A body that signals when the server has finished with it (or dropped it).
struct NotifyOnDrop {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
}

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl hyper::body::Body for NotifyOnDrop {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// A reply the runtime makes itself: a status and nothing else, as Spin's.
fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp
}
