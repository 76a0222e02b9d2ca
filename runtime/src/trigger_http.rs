//! The HTTP trigger: accepts connections, routes each request as Spin does,
//! hands it to a fresh instance of the matched component through
//! `wasi:http/handler`, and streams the response back (so Server-Sent Events
//! flow as the guest writes them).
//!
//! Replies the runtime makes itself (no route, body too large, component
//! failure) are problem documents; a component failure never exposes its cause.

use anyhow::Result;
use bytes::Bytes;
use futures::channel::oneshot;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::handler::{Proxy, ProxyHandler};
use wasmtime_wasi_http::p3::WasiHttpView;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use crate::engine::{ComponentHandler, InstanceState};
use crate::router::Router;

type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// Components by id. Watch mode swaps an entry in place; requests already
/// running keep the `Arc` of the handler they started with, so a swap never
/// drops one. `std` lock: held only to clone or replace an `Arc`.
pub type Components = Arc<RwLock<HashMap<String, Arc<ProxyHandler<ComponentHandler>>>>>;

/// Oversized bodies up to this size are read and dropped before the 413.
const DRAIN_LIMIT_BYTES: u64 = 16 << 20;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct HttpTrigger {
    pub router: Router,
    pub components: Components,
    pub max_body_bytes: usize,
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
                async move { Ok::<_, std::convert::Infallible>(this.handle(req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
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

    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let (route, component, resp) = self.dispatch(req, client).await;
        tracing::info!(
            target: "access",
            %method, path, route, component, status = resp.status().as_u16(),
            ms = format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3),
        );
        resp
    }

    async fn dispatch(&self, req: Request<Incoming>, client: SocketAddr) -> (String, String, Response<Body>) {
        let path = req.uri().path().to_owned();
        let Some(m) = self.router.route(&path) else {
            return ("-".into(), "-".into(), problem(StatusCode::NOT_FOUND, "not_found", "No route matches this path."));
        };
        let (route, component) = (m.raw_route().to_owned(), m.component().to_owned());
        if let Some(len) = req.body().size_hint().exact()
            && len > self.max_body_bytes as u64
        {
            // A client still writing its body would see a reset connection,
            // not the 413, if we closed now: read and discard a moderately
            // oversized body first (a far larger one is not worth reading).
            if len <= DRAIN_LIMIT_BYTES {
                let mut body = req.into_body();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while let Some(Ok(_)) = body.frame().await {} }).await;
            }
            return (route, component, too_large(self.max_body_bytes));
        }
        let handler = self.components.read().unwrap().get(&component).cloned();
        let Some(handler) = handler else {
            return (route, component, problem(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Internal error."));
        };

        let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let full_url = format!("http://{host}{pq}");
        let spin_headers = m.spin_headers(&full_url, client);
        let (mut parts, body) = req.into_parts();
        // Spin rebuilds the URI as absolute; guests read scheme and authority from it.
        if let Ok(uri) = full_url.parse() {
            parts.uri = uri;
        }
        for (k, v) in spin_headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                parts.headers.insert(k, v);
            }
        }
        let limit = self.max_body_bytes;
        let body = Limited::new(body, limit).map_err(move |e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ErrorCode::HttpRequestBodySize(Some(limit as u64))
            } else {
                ErrorCode::InternalError(Some(e.to_string()))
            }
        });
        let req = Request::from_parts(parts, body);
        let resp = match execute(&handler, req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(component, "request failed: {e:?}");
                problem(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Internal error.")
            }
        };
        (route, component, resp)
    }
}

/// Runs one request in a fresh instance and returns the response as soon as
/// its head is ready; the instance lives on until the body has been read.
async fn execute<B>(handler: &ProxyHandler<ComponentHandler>, req: Request<B>) -> Result<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes, Error = ErrorCode> + Send + 'static,
{
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

fn too_large(limit: usize) -> Response<Body> {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("The request body exceeds the limit of {limit} bytes."),
    )
}

/// An RFC 9457 problem document made by the runtime itself.
pub fn problem(status: StatusCode, code: &str, detail: &str) -> Response<Body> {
    let body = serde_json::json!({
        "type": "about:blank",
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or("Error"),
        "detail": detail,
        "code": code,
    });
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/problem+json")
        .body(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed_unsync())
        .expect("a static response is valid")
}
