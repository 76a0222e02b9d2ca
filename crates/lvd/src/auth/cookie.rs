//! The refresh-token cookie (`lvd_refresh`) and when it is `Secure`.
//!
//! Must never: leave `Secure` off for a client that reached us over https,
//! whether directly or through a TLS-terminating proxy. The cookie goes
//! without `Secure` only when a trusted proxy says the client used plain
//! http, or when nothing says so and the request is local (a loopback
//! client asking for a loopback host: development, where browsers refuse a
//! `Secure` cookie over http). Outside loopback, the default is `Secure`.

use std::net::IpAddr;

pub const NAME: &str = "lvd_refresh";

/// What the request says about how the client reached us.
pub struct Origin<'a> {
    /// The URL the runtime received (Spin's `spin-full-url`).
    pub full_url: Option<&'a str>,
    /// The peer's address (Spin's `spin-client-addr`).
    pub peer: Option<IpAddr>,
    /// `X-Forwarded-Proto`, believed only from a trusted proxy.
    pub forwarded_proto: Option<&'a str>,
}

/// Whether the refresh cookie must be `Secure` for this request.
pub fn secure(origin: &Origin<'_>, trusted_proxies: &[IpAddr]) -> bool {
    let url = origin.full_url.unwrap_or_default();
    if url.starts_with("https://") {
        return true;
    }
    if let Some(peer) = origin.peer
        && trusted_proxies.contains(&peer)
        // The client-facing proxy's value comes first when proxies append.
        && let Some(proto) = origin.forwarded_proto.and_then(|v| v.split(',').next()).map(str::trim).filter(|p| !p.is_empty())
    {
        return !proto.eq_ignore_ascii_case("http");
    }
    let local = origin.peer.is_some_and(|p| p.is_loopback()) && host(url).is_some_and(is_loopback_host);
    !local
}

/// The host of `scheme://host[:port]/...`, without the port.
fn host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(authority.split_once(':').map_or(authority, |(h, _)| h))
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/auth, and
/// `Secure` as [`secure`] decided.
pub fn set_cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{NAME}={value}; HttpOnly; SameSite=Strict; Path=/auth; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin<'a>(url: &'a str, peer: &str, proto: Option<&'a str>) -> Origin<'a> {
        Origin { full_url: Some(url), peer: peer.parse().ok(), forwarded_proto: proto }
    }

    #[test]
    fn only_a_loopback_client_of_a_loopback_host_gets_a_cookie_without_secure() {
        for (url, peer) in [("http://127.0.0.1:3000/auth/login", "127.0.0.1"), ("http://localhost/auth/login", "::1"), ("http://[::1]:3000/auth", "127.0.0.1")] {
            assert!(!secure(&origin(url, peer, None), &[]), "{url} from {peer}");
        }
        for (url, peer) in [
            ("http://app.example.com/auth/login", "127.0.0.1"),
            ("http://127.0.0.1:3000/auth/login", "203.0.113.7"),
            ("http://10.0.0.5:3000/auth/login", "10.0.0.9"),
            ("https://127.0.0.1/auth/login", "127.0.0.1"),
        ] {
            assert!(secure(&origin(url, peer, None), &[]), "{url} from {peer}");
        }
        assert!(secure(&Origin { full_url: None, peer: None, forwarded_proto: None }, &[]), "nothing known: Secure");
    }

    #[test]
    fn x_forwarded_proto_is_believed_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let local = "http://127.0.0.1:3000/auth/login";
        assert!(secure(&origin(local, "127.0.0.1", Some("https")), &[proxy]));
        assert!(secure(&origin(local, "127.0.0.1", Some("HTTPS, http")), &[proxy]));
        assert!(!secure(&origin(local, "127.0.0.1", Some("https")), &[]), "untrusted: the header is ignored");
        assert!(!secure(&origin("http://app.example.com/auth", "127.0.0.1", Some("http")), &[proxy]), "a trusted proxy says http");
        assert!(secure(&origin("http://app.example.com/auth", "203.0.113.7", Some("http")), &[proxy]), "a client cannot ask for less");
    }

    #[test]
    fn the_cookie_has_the_contracts_attributes() {
        assert_eq!(set_cookie("t", 60, true), "lvd_refresh=t; HttpOnly; SameSite=Strict; Path=/auth; Max-Age=60; Secure");
        assert_eq!(set_cookie("", 0, false), "lvd_refresh=; HttpOnly; SameSite=Strict; Path=/auth; Max-Age=0");
    }
}
