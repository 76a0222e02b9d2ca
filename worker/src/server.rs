//! The worker's own listener: `/health`, `/metrics`, and the password
//! hasher's `/internal/password/*` (see `hasher`; 404 while it is off).

use bytes_body::Full;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::hasher::Hashing;
use crate::metrics::Metrics;

mod bytes_body {
    pub type Full = http_body_util::Full<hyper::body::Bytes>;
}

/// A problem document (RFC 9457) as every reply of this listener that is
/// not a success has it: the status and its body.
pub(crate) fn problem(status: u16, code: &str, detail: &str) -> (u16, String) {
    let title = hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let body = serde_json::json!({ "type": "about:blank", "status": status, "title": title, "detail": detail, "code": code });
    (status, body.to_string())
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, hashing: Option<Arc<Hashing>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (metrics, hashing) = (metrics.clone(), hashing.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (metrics, hashing) = (metrics.clone(), hashing.clone());
                async move {
                    let (status, ctype, body) = match (req.uri().path(), &hashing) {
                        ("/health", _) => (200, "application/json", r#"{"status":"ok"}"#.to_owned()),
                        ("/metrics", _) => (200, "text/plain; version=0.0.4", metrics.render()),
                        (p, Some(h)) if p.starts_with("/internal/password/") => {
                            let (status, body) = h.answer(req).await;
                            let ctype = if status == 200 { "application/json" } else { "application/problem+json" };
                            (status, ctype, body)
                        }
                        _ => {
                            let (status, body) = problem(404, "not_found", "No such path.");
                            (status, "application/problem+json", body)
                        }
                    };
                    Response::builder().status(status).header("content-type", ctype).body(Full::from(body))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
