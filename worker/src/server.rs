//! The worker's own `/health` and `/metrics`.

use bytes_body::Full;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

mod bytes_body {
    pub type Full = http_body_util::Full<hyper::body::Bytes>;
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, ctype, body) = match req.uri().path() {
                        "/health" => (200, "application/json", r#"{"status":"ok"}"#.to_owned()),
                        "/metrics" => (200, "text/plain; version=0.0.4", metrics.render()),
                        _ => (404, "application/problem+json", r#"{"type":"about:blank","status":404,"title":"Not Found","detail":"No such path.","code":"not_found"}"#.to_owned()),
                    };
                    Response::builder().status(status).header("content-type", ctype).body(Full::from(body))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
