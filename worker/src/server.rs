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

const NOT_FOUND: &str = r#"{"type":"about:blank","status":404,"title":"Not Found","detail":"No such path.","code":"not_found"}"#;

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
                        _ => (404, "application/problem+json", NOT_FOUND.to_owned()),
                    };
                    Response::builder().status(status).header("content-type", ctype).body(Full::from(body))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
