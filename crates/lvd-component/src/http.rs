//! The contract's HTTP conventions, once for every component.

use bytes::Bytes;
use http_body_util::BodyExt;
use lvd::limits::Decision;
use lvd::problem::{self, Problem};
use serde::Serialize;
use spin_sdk::http::Request;
use std::net::IpAddr;

pub type Response = http::Response<String>;

/// The contract's body limit.
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub fn json<T: Serialize>(status: u16, body: &T) -> Response {
    let mut resp = Response::new(serde_json::to_string(body).expect("a reply serializes"));
    *resp.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

pub fn empty(status: u16) -> Response {
    let mut resp = Response::new(String::new());
    *resp.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    resp
}

pub fn problem(p: &Problem) -> Response {
    let mut resp = json(p.status, p);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(problem::CONTENT_TYPE));
    let retry = p.retry_after.or((p.status == 503).then_some(u64::from(lvd::health::RETRY_AFTER_SECS)));
    if let Some(secs) = retry {
        resp.headers_mut().insert(http::header::RETRY_AFTER, secs.into());
    }
    if let Some(allow) = p.allow {
        resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    }
    resp
}

/// Oversized bodies up to this size are read and dropped before the 413.
const DRAIN_LIMIT_BYTES: usize = 16 << 20;

/// Reads a JSON request body: 415 unless the media type is
/// `application/json` (parameters such as charset allowed), 413 past 1 MiB.
///
/// Spin has no request-body limit of its own, so this is the contract's.
/// A client still writing an oversized body would see a reset connection
/// rather than the 413 if the reply went out at once; so a body up to 16 MiB
/// is read to its end and dropped first (nothing past 1 MiB is kept), and
/// one declared larger than that is refused without reading.
pub async fn json_body(req: Request) -> Result<Bytes, Problem> {
    let is_json = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Problem::unsupported_media_type());
    }
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        if declared.is_some_and(|n| n <= DRAIN_LIMIT_BYTES as u64) {
            drain(std::pin::pin!(req.into_body()), DRAIN_LIMIT_BYTES).await;
        }
        return Err(Problem::payload_too_large());
    }
    let mut body = std::pin::pin!(req.into_body());
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = body.as_mut().frame().await {
        let Ok(frame) = frame else {
            return Err(Problem::new(400, "bad_request", "The request body could not be read."));
        };
        let Ok(data) = frame.into_data() else { continue };
        if kept.len() + data.len() > MAX_BODY_BYTES {
            drain(body, DRAIN_LIMIT_BYTES.saturating_sub(kept.len() + data.len())).await;
            return Err(Problem::payload_too_large());
        }
        kept.extend_from_slice(&data);
    }
    Ok(kept.freeze())
}

/// Reads and drops up to `budget` more bytes of a body.
async fn drain<B: http_body::Body>(mut body: std::pin::Pin<&mut B>, mut budget: usize) {
    while let Some(Ok(frame)) = body.as_mut().frame().await {
        let n = frame.data_ref().map_or(0, bytes::Buf::remaining);
        if n >= budget {
            return;
        }
        budget -= n;
    }
}

/// A header Spin sets (`spin-client-addr`, `spin-full-url`,
/// `spin-path-match-*`): its last value. Spin 4.0.2 hands the guest the
/// client's headers first and appends its own, so a client that sends
/// `spin-client-addr: 6.6.6.6:1` leaves two values — the first is the
/// client's forgery, the last is Spin's. Never read these with `get`.
pub fn spin_header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get_all(name).iter().next_back().and_then(|v| v.to_str().ok())
}

/// The client's IP: the runtime's peer address, or the first hop of
/// `X-Forwarded-For` when the peer is one of `trusted_proxies`.
pub fn client_ip(req: &Request, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer: IpAddr = spin_header(req, "spin-client-addr").and_then(|v| v.parse::<std::net::SocketAddr>().ok())?.ip();
    if trusted_proxies.contains(&peer)
        && let Some(forwarded) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(forwarded);
    }
    Some(peer)
}

/// Parses a comma-separated list of proxy addresses (a Spin variable).
pub fn parse_proxies(list: &str) -> Vec<IpAddr> {
    list.split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

/// A path segment, percent-decoded; `None` when it is not UTF-8.
pub fn decode_segment(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw).decode_utf8().ok().map(|s| s.into_owned())
}

/// The first value of a query parameter, decoded.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(req: &Request) -> Option<String> {
    let v = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// A cookie's value from the request.
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers().get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|header| {
        header.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    })
}

/// Adds `RateLimit-*` headers (and `Retry-After` when refused).
pub fn with_rate_limit<B>(mut resp: http::Response<B>, d: &Decision) -> http::Response<B> {
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", d.limit.into());
    h.insert("ratelimit-remaining", d.remaining.into());
    h.insert("ratelimit-reset", d.reset_secs.into());
    if !d.allowed {
        h.insert(http::header::RETRY_AFTER, d.reset_secs.into());
    }
    resp
}

/// Database faults: 503 when it is unreachable, an opaque 500 otherwise;
/// the cause goes to the log, never to the client.
pub fn db_problem(e: lvd::db::DbError) -> Problem {
    eprintln!("database error: {e}");
    match e {
        lvd::db::DbError::Unavailable(_) => Problem::unavailable("The database is unavailable; try again shortly."),
        _ => Problem::internal(),
    }
}

pub fn rate_limited() -> Problem {
    Problem::new(429, "rate_limited", "Too many requests; retry after the time in Retry-After.")
}
