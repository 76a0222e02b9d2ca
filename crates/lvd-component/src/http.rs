//! The contract's HTTP conventions, once for every component.

use bytes::Bytes;
use http_body_util::BodyExt;
use lvd::limits::Decision;
use lvd::problem::{self, Problem};
use serde::Serialize;
use crate::host::Request;
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
    if let Some(allow) = p.allow.as_deref().and_then(|a| http::HeaderValue::from_str(a).ok()) {
        resp.headers_mut().insert(http::header::ALLOW, allow);
    }
    match &p.rate_limit {
        Some(d) => with_rate_limit(resp, d),
        None => resp,
    }
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

/// The client's IP: the runtime's peer address or, when the peer is one of
/// `trusted_proxies`, the address [`forwarded_client`] finds in
/// `X-Forwarded-For`.
pub fn client_ip(req: &Request, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer: IpAddr = spin_header(req, "spin-client-addr").and_then(|v| v.parse::<std::net::SocketAddr>().ok())?.ip();
    let hops = req.headers().get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or(""));
    Some(forwarded_client(peer, hops, trusted_proxies))
}

/// Who a request came from, given the peer that handed it to us and the
/// `X-Forwarded-For` values in order. Proxies such as nginx and cloud load
/// balancers *append* the address they received from, so only the right
/// end of the list was written by hops we trust: walk it from the right
/// while each hop is a trusted proxy, and the first hop that is not one is
/// the client. Everything to its left was written by the client itself and
/// is never believed. A hop that is not an address ends the walk at the
/// trusted proxy that wrote it; a list of trusted proxies only names its
/// leftmost one.
pub fn forwarded_client<'a>(peer: IpAddr, values: impl Iterator<Item = &'a str>, trusted_proxies: &[IpAddr]) -> IpAddr {
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = values.flat_map(|v| v.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { return client };
        client = ip;
        if !trusted_proxies.contains(&ip) {
            break;
        }
    }
    client
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

#[cfg(test)]
mod tests {
    use super::forwarded_client;
    use std::net::IpAddr;

    fn client(peer: &str, xff: &[&str], trusted: &[&str]) -> String {
        let trusted: Vec<IpAddr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        forwarded_client(peer.parse().unwrap(), xff.iter().copied(), &trusted).to_string()
    }

    #[test]
    fn a_forged_first_hop_is_not_believed() {
        // nginx appends the address it received from: the client wrote the rest.
        assert_eq!(client("127.0.0.1", &["6.6.6.6, 203.0.113.7"], &["127.0.0.1"]), "203.0.113.7");
        assert_eq!(client("127.0.0.1", &["6.6.6.6", "203.0.113.7"], &["127.0.0.1"]), "203.0.113.7");
    }

    #[test]
    fn trusted_hops_are_walked_from_the_right() {
        let trusted = ["127.0.0.1", "10.0.0.2"];
        assert_eq!(client("127.0.0.1", &["6.6.6.6, 203.0.113.7, 10.0.0.2"], &trusted), "203.0.113.7");
        assert_eq!(client("127.0.0.1", &["10.0.0.2"], &trusted), "10.0.0.2", "only proxies: the leftmost");
    }

    #[test]
    fn the_header_is_ignored_from_an_untrusted_peer_and_garbage_stops_the_walk() {
        assert_eq!(client("192.0.2.1", &["203.0.113.7"], &["127.0.0.1"]), "192.0.2.1");
        assert_eq!(client("127.0.0.1", &["203.0.113.7, nonsense"], &["127.0.0.1"]), "127.0.0.1");
        assert_eq!(client("127.0.0.1", &[], &["127.0.0.1"]), "127.0.0.1");
    }
}
