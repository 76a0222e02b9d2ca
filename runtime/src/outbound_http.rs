//! Outbound `wasi:http` from guests: allowed only to hosts the component's
//! `allowed_outbound_hosts` names, refused with `HTTP-request-denied` otherwise.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::sync::Arc;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{RequestOptions, WasiHttpHooks};

use crate::allowed_hosts::AllowedHosts;

pub struct OutboundHttp {
    allowed: Arc<AllowedHosts>,
}

impl OutboundHttp {
    pub fn new(allowed: Arc<AllowedHosts>) -> Self {
        Self { allowed }
    }

    /// Requests to the app itself (relative URLs, Spin's `self`) are not
    /// supported here, so only absolute URLs can be allowed.
    fn permits(&self, uri: &http::Uri) -> bool {
        uri.host().is_some() && self.allowed.allows_url(&uri.to_string(), uri.scheme_str().unwrap_or("https"))
    }
}

type Body = UnsyncBoxBody<Bytes, ErrorCode>;
type IoFuture = Box<dyn Future<Output = Result<(), ErrorCode>> + Send>;

type SendResult = Result<(http::Response<Body>, IoFuture), wasmtime_wasi::TrappableError<ErrorCode>>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<Body>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        if !self.permits(request.uri()) {
            tracing::warn!(uri = %request.uri(), "outbound HTTP request denied by allowed_outbound_hosts");
            return Box::new(async { Err(ErrorCode::HttpRequestDenied.into()) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::p3::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}

/// The same rule for wasi:http 0.2 guests.
impl wasmtime_wasi_http::p2::WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        config: wasmtime_wasi_http::p2::types::OutgoingRequestConfig,
    ) -> wasmtime_wasi_http::p2::HttpResult<wasmtime_wasi_http::p2::types::HostFutureIncomingResponse> {
        if !self.permits(request.uri()) {
            tracing::warn!(uri = %request.uri(), "outbound HTTP request denied by allowed_outbound_hosts");
            return Err(wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::HttpRequestDenied.into());
        }
        Ok(wasmtime_wasi_http::p2::default_send_request(request, config))
    }
}
