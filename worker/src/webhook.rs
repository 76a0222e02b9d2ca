//! Delivering one alert webhook: a signed JSON `POST` to a user's URL.
//!
//! The URL is user input that makes the worker open a connection, so this
//! module must never reach a loopback, private, link-local or metadata
//! address the operator has not allowed ([`lvd::webhook::AllowList`]). The
//! URL is checked again before each attempt (the allow list may have changed
//! since it was saved), an IP literal by [`lvd::webhook::check_url`] and a
//! name by the resolver of the client, which refuses the whole name when any
//! address it resolves to is not public. The check sits in the resolver
//! because reqwest connects to exactly the addresses the resolver returns:
//! what is checked is what is dialled, with no second lookup a rebinding DNS
//! server could answer differently. Redirects are not followed (they could
//! aim anywhere), time is bounded, and no more than [`MAX_REPLY_BYTES`] of a
//! reply is read. One [`Sender::post`] is one attempt; retrying with backoff
//! is the caller's.

use anyhow::{Context, Result};
use lvd::webhook::{AllowList, DELIVERY_HEADER, SIGNATURE_HEADER, check_url, public_address, sign};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::CONTENT_TYPE;
use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};
use uuid::Uuid;

/// How long to wait for a connection (DNS included in [`TIMEOUT`]).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt may take in all, from DNS to the last byte read.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a reply's body is read: enough for a short acknowledgement to
/// complete (so its connection can be reused), never a receiver's flood.
pub const MAX_REPLY_BYTES: usize = 4096;

/// Posts webhooks. Holds two clients, as reqwest's resolver sees a name but
/// not its port while allow entries may name a port: `guarded` for every URL
/// the allow list does not cover (its resolver refuses non-public
/// addresses), `trusted` for those it does. Each keeps its own connection
/// pool; a pooled connection was checked when it was opened.
#[derive(Debug)]
pub struct Sender {
    allow: AllowList,
    guarded: reqwest::Client,
    trusted: reqwest::Client,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The reply's status, when a reply came.
    pub status: Option<u16>,
    /// Why the attempt failed, short and free of the secret: e.g. `timeout`,
    /// `connection refused`, `status 500`, `redirect not followed (status
    /// 302)`, `address not allowed: 10.0.0.1`, `DNS failure: …`.
    pub error: Option<String>,
}

impl Attempt {
    /// Whether the receiver took the notification (a 2xx reply).
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn failed(error: String) -> Attempt {
        Attempt { status: None, error: Some(error) }
    }
}

impl Sender {
    /// A sender that lets webhooks reach the hosts `allow` names even when
    /// they are local. Fails only if the TLS setup cannot be built.
    pub fn new(allow: AllowList) -> Result<Sender> {
        let client = |guard| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(TIMEOUT)
                .no_proxy()
                .user_agent(concat!("lvd-webhook/", env!("CARGO_PKG_VERSION_MAJOR")))
                .dns_resolver(Arc::new(Resolver { guard }))
                .build()
                .context("failed to build the webhook HTTP client")
        };
        Ok(Sender { allow, guarded: client(true)?, trusted: client(false)? })
    }

    /// Makes one attempt to post `body` (the notification's JSON) to `url`,
    /// signed with `secret` and labelled with `delivery`, which the caller
    /// keeps the same across retries of one notification.
    pub async fn post(&self, url: &str, secret: &[u8], body: &[u8], delivery: Uuid) -> Attempt {
        let url = match check_url(url, &self.allow) {
            Ok(url) => url,
            Err(why) => return Attempt::failed(refusal(url, &why)),
        };
        let allowed = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => self.allow.allows(host, port),
            _ => false,
        };
        let client = if allowed { &self.trusted } else { &self.guarded };
        let sent = client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(secret, body))
            .header(DELIVERY_HEADER, delivery.to_string())
            .body(body.to_vec())
            .send()
            .await;
        let mut reply = match sent {
            Ok(reply) => reply,
            Err(e) => return Attempt::failed(reason(&e)),
        };
        let status = reply.status();
        read_bounded(&mut reply).await;
        let error = if status.is_success() {
            None
        } else if status.is_redirection() {
            Some(format!("redirect not followed (status {})", status.as_u16()))
        } else {
            Some(format!("status {}", status.as_u16()))
        };
        Attempt { status: Some(status.as_u16()), error }
    }
}

/// Reads at most [`MAX_REPLY_BYTES`] of a reply's body, then stops: dropping
/// the reply unread closes its connection instead of draining it. The body
/// matters to no one, so a failure reading it is not one of the attempt's:
/// the receiver has already given its status.
async fn read_bounded(reply: &mut reqwest::Response) {
    let mut read = 0;
    while read < MAX_REPLY_BYTES
        && let Ok(Some(chunk)) = reply.chunk().await
    {
        read += chunk.len();
    }
}

/// Why [`check_url`] refused a URL. An IP literal outside the public internet
/// is named the way the resolver names a refused address, whichever rule
/// caught it first (a plain-http URL fails the https rule before its address
/// is looked at).
fn refusal(raw: &str, why: &str) -> String {
    let literal = Url::parse(raw).ok().and_then(|url| match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    });
    match literal {
        Some(ip) if !public_address(ip) => format!("address not allowed: {ip}"),
        _ => format!("webhook_url {why}"),
    }
}

/// A short reason for a failed request, from the innermost cause reqwest
/// reports. Never the URL (it is the user's) and never a header (one holds
/// the signature).
fn reason(e: &reqwest::Error) -> String {
    let causes: Vec<&(dyn std::error::Error + 'static)> = std::iter::successors(e.source(), |&c| c.source()).collect();
    if let Some(refused) = causes.iter().find_map(|c| c.downcast_ref::<Refused>()) {
        return refused.to_string();
    }
    if e.is_timeout() {
        return "timeout".into();
    }
    let connection_refused = |c: &&(dyn std::error::Error + 'static)| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    };
    if causes.iter().any(connection_refused) {
        return "connection refused".into();
    }
    let what = if e.is_connect() { "connection failed" } else { "request failed" };
    match causes.last() {
        Some(innermost) => format!("{what}: {innermost}"),
        None => what.into(),
    }
}

/// Resolves names with the system resolver (as tokio does) and, when
/// `guard` is set, refuses a name any of whose addresses is not public: one
/// bad address is enough, since the connector may try any of them.
struct Resolver {
    guard: bool,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await.map_err(Refused::Dns)?.collect();
            if guard && let Some(bad) = addrs.iter().find(|a| !public_address(a.ip())) {
                return Err(Refused::Address(bad.ip()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Why the resolver gave no addresses; found again in reqwest's error chain
/// by [`reason`].
#[derive(Debug)]
enum Refused {
    Address(IpAddr),
    Dns(std::io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Address(ip) => write!(f, "address not allowed: {ip}"),
            Refused::Dns(e) => write!(f, "DNS failure: {e}"),
        }
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
mod tests {
    use super::*;

    async fn resolve(guard: bool, name: &str) -> Result<Vec<SocketAddr>, String> {
        let resolving = Resolver { guard }.resolve(name.parse().unwrap());
        resolving.await.map(Iterator::collect).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn the_webhook_resolver_refuses_a_name_that_resolves_to_loopback() {
        let refused = resolve(true, "localhost").await.unwrap_err();
        assert!(refused.starts_with("address not allowed: "), "{refused}");
        assert!(!resolve(false, "localhost").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_webhook_resolver_reports_a_name_that_does_not_resolve() {
        let failed = resolve(true, "no-such-host.invalid").await.unwrap_err();
        assert!(failed.starts_with("DNS failure: "), "{failed}");
    }

    #[test]
    fn a_webhook_attempt_is_delivered_only_on_a_2xx() {
        let with = |status| Attempt { status, error: None };
        assert!(with(Some(200)).delivered());
        assert!(with(Some(204)).delivered());
        assert!(!with(Some(302)).delivered());
        assert!(!with(Some(500)).delivered());
        assert!(!with(None).delivered());
    }
}
