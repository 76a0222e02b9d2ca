//! `allowed_outbound_hosts`, parsed and matched by Spin 4.0.2's rules
//! (`crates/outbound-networking-config/src/allowed_hosts.rs`), refusals
//! included, so an entry Spin rejects fails here too and an address Spin
//! refuses is refused here.
//!
//! An entry is `<scheme>://<host>[:<port>]`:
//! - scheme: `*` or letters only (no lists);
//! - host: `*`, `*.<domain>`, a literal name or IP (compared after URL host
//!   parsing, so `127.1` is `127.0.0.1`), a CIDR block, or `self`/`self.alt`,
//!   which only ever allows relative URLs (never an absolute address);
//! - port: `*`, a number, `<from>..<to>` (to exclusive), or none — the
//!   default port of the *entry's* scheme, an error when it has none (so
//!   `*://host` is refused, as in Spin);
//! - no path. `*.spin.internal` stands for each component's own name.
//!
//! An address is allowed only if some entry matches its scheme (exactly:
//! `rediss` is not `redis`), host and port (its own, else its scheme's
//! default; an address with neither matches only `*` ports). Anything that
//! cannot be parsed is refused, never allowed.

use anyhow::{Context, Result, bail, ensure};
use std::ops::Range;
use url::Host;

const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Any,
    /// `*.example.com`, kept as `.example.com`.
    Subdomains(String),
    /// `self`: relative URLs only.
    ToSelf,
    Literal(Host),
    Network(ip_network::IpNetwork),
}

#[derive(Debug, Clone, PartialEq)]
enum PortPattern {
    Any,
    Port(u16),
    Range(Range<u16>),
}

#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<AllowedHost>);

pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("{entry:?} does not contain a scheme (e.g. 'http://' or '*://')");
        };
        let (host, rest) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match rest.split_once('/') {
            Some((port, path)) => {
                ensure!(path.is_empty(), "{entry:?} has a path but is not allowed to");
                port
            }
            None => rest,
        };
        let port = PortPattern::parse(port, scheme).with_context(|| format!("invalid allowed host port {port:?} in {entry:?}"))?;
        let scheme = match scheme {
            "*" => None,
            s if s.starts_with('{') => bail!("scheme lists are not supported in {entry:?}"),
            s if s.chars().any(|c| !c.is_alphabetic()) => bail!("invalid scheme {s:?} in {entry:?}: only letters are allowed"),
            s => Some(s.to_owned()),
        };
        let host = HostPattern::parse(host).with_context(|| format!("invalid allowed host {host:?} in {entry:?}"))?;
        Ok(Self { scheme, host, port })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.scheme.as_deref().is_none_or(|s| s == scheme) && self.host.allows(host) && self.port.allows(port, scheme)
    }
}

impl HostPattern {
    fn parse(host: &str) -> Result<Self> {
        let host = host.trim();
        match host {
            "*" => return Ok(Self::Any),
            "self" | "self.alt" => return Ok(Self::ToSelf),
            _ => {}
        }
        if host.starts_with('{') {
            bail!("host lists are not supported");
        }
        if let Ok(net) = ip_network::IpNetwork::from_str_truncate(host) {
            return Ok(Self::Network(net));
        }
        let host = host.trim_end_matches('/');
        ensure!(!host.contains('/'), "must not include a path");
        if let Some(domain) = host.strip_prefix("*.") {
            ensure!(!domain.contains('*'), "wildcards are allowed only as prefixes");
            return Ok(Self::Subdomains(format!(".{domain}")));
        }
        ensure!(!host.contains('*'), "wildcards are allowed only as subdomains");
        Ok(Self::Literal(Host::parse(host)?))
    }

    fn allows(&self, host: &str) -> bool {
        let Ok(host) = Host::parse(host) else { return false };
        match (self, host) {
            (Self::Any, _) => true,
            (Self::Subdomains(suffix), Host::Domain(d)) => d.ends_with(suffix.as_str()),
            (Self::Literal(l), h) => h == *l,
            (Self::Network(n), Host::Ipv4(ip)) => n.contains(ip),
            (Self::Network(n), Host::Ipv6(ip)) => n.contains(ip),
            _ => false,
        }
    }
}

impl PortPattern {
    fn parse(port: &str, scheme: &str) -> Result<Self> {
        if port.is_empty() {
            return default_port(scheme)
                .map(Self::Port)
                .with_context(|| format!("no port was given and the scheme {scheme:?} has no default port"));
        }
        if port == "*" {
            return Ok(Self::Any);
        }
        ensure!(!port.starts_with('{'), "port lists are not supported");
        if let Some((from, to)) = port.split_once("..") {
            let from = from.parse().with_context(|| format!("port range {port:?} contains a non-number"))?;
            let to = to.parse().with_context(|| format!("port range {port:?} contains a non-number"))?;
            return Ok(Self::Range(from..to));
        }
        Ok(Self::Port(port.parse().with_context(|| format!("port {port:?} is not a number"))?))
    }

    fn allows(&self, port: Option<u16>, scheme: &str) -> bool {
        let Some(port) = port.or_else(|| default_port(scheme)) else {
            return matches!(self, Self::Any);
        };
        match self {
            Self::Any => true,
            Self::Port(p) => *p == port,
            Self::Range(r) => r.contains(&port),
        }
    }
}

impl AllowedHosts {
    /// Parses a component's entries; `components` are the app's component
    /// ids, which `*.spin.internal` stands for.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>, components: &[String]) -> Result<Self> {
        let entries: Vec<&str> = entries.into_iter().collect();
        if entries == ["insecure:allow-all"] {
            bail!("'insecure:allow-all' is not allowed - use '*://*:*' instead if you really want to allow all outbound traffic");
        }
        let mut hosts = Vec::with_capacity(entries.len());
        for entry in entries {
            let host = AllowedHost::parse(entry)?;
            match &host.host {
                HostPattern::Subdomains(s) if s == SERVICE_CHAINING_SUFFIX => {
                    for c in components {
                        let domain = Host::Domain(format!("{c}{SERVICE_CHAINING_SUFFIX}"));
                        hosts.push(AllowedHost { host: HostPattern::Literal(domain), ..host.clone() });
                    }
                }
                _ => hosts.push(host),
            }
        }
        Ok(Self(hosts))
    }

    /// Whether an address such as `redis://user:pass@host:port/0` may be
    /// reached; `scheme` is the one assumed when the address has none.
    pub fn allows_url(&self, address: &str, scheme: &str) -> bool {
        let Some((scheme, host, port)) = parse_outbound(address, scheme) else { return false };
        self.0.iter().any(|h| h.allows(&scheme, &host, port))
    }
}

/// Scheme, host and port of an outbound address, as Spin's `OutboundUrl`
/// reads them: user information is percent-encoded first (passwords may hold
/// anything), and an address without a scheme is read with `scheme`.
fn parse_outbound(address: &str, scheme: &str) -> Option<(String, String, Option<u16>)> {
    let mut address = address.to_owned();
    if let Some(at) = address.find('@') {
        let start = address.find("://").map_or(0, |i| i + 3);
        let path = address[start..].find('/').map_or(usize::MAX, |i| i + start);
        if at < path {
            const USERINFO: &percent_encoding::AsciiSet =
                &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
            let encoded = percent_encoding::utf8_percent_encode(&address[start..at], USERINFO).to_string();
            address = format!("{}{encoded}{}", &address[..start], &address[at..]);
        }
    }
    let url = match url::Url::parse(&address) {
        Ok(u) if u.has_host() => u,
        first => match url::Url::parse(&format!("{scheme}://{address}")) {
            Ok(u) => u,
            Err(_) => first.ok()?,
        },
    };
    Some((url.scheme().to_owned(), url.host_str()?.to_owned(), url.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries.iter().copied(), &["api".to_owned()]).unwrap()
    }

    #[test]
    fn an_exact_entry_allows_only_its_scheme_host_and_default_port() {
        let h = hosts(&["redis://127.0.0.1"]);
        assert!(h.allows_url("redis://127.0.0.1:6379/1", "redis"));
        assert!(h.allows_url("redis://127.0.0.1/1", "redis"));
        assert!(h.allows_url("redis://127.1:6379", "redis"), "hosts compare after parsing");
        assert!(!h.allows_url("redis://127.0.0.1:6380", "redis"));
        assert!(!h.allows_url("redis://localhost:6379", "redis"));
        assert!(!h.allows_url("rediss://127.0.0.1:6379", "redis"), "rediss is another scheme");
        assert!(!h.allows_url("postgres://127.0.0.1:6379/db", "postgres"));
    }

    #[test]
    fn user_information_may_hold_anything() {
        let h = hosts(&["postgres://db.internal:5433"]);
        assert!(h.allows_url("postgres://u:p%40ss@db.internal:5433/x?sslmode=disable", "postgres"));
        assert!(h.allows_url("postgres://u:p@ss@db.internal:5433/x", "postgres"));
        assert!(h.allows_url("db.internal:5433", "postgres"), "no scheme: the interface's");
        assert!(!h.allows_url("postgres://u@db.internal/x", "postgres"));
        assert!(!h.allows_url("not a connection string ::", "postgres"));
    }

    #[test]
    fn wildcards_ranges_networks_and_ipv6_match_as_in_spin() {
        let h = hosts(&["*://*.example.com:8000..8010", "redis://10.0.0.0/8:6379", "redis://[::1]:6379"]);
        assert!(h.allows_url("redis://a.example.com:8009", "redis"));
        assert!(!h.allows_url("redis://a.example.com:8010", "redis"));
        assert!(!h.allows_url("redis://example.org:8001", "redis"));
        assert!(h.allows_url("redis://10.1.2.3:6379", "redis"));
        assert!(!h.allows_url("redis://11.1.2.3:6379", "redis"));
        assert!(h.allows_url("redis://[::1]:6379", "redis"));
    }

    #[test]
    fn self_never_allows_an_absolute_address_and_spin_internal_names_components() {
        let h = hosts(&["redis://self", "http://*.spin.internal"]);
        assert!(!h.allows_url("redis://self:6379", "redis"));
        assert!(h.allows_url("http://api.spin.internal", "http"));
        assert!(!h.allows_url("http://other.spin.internal", "http"));
    }

    #[test]
    fn entries_spin_refuses_are_refused() {
        assert!(!AllowedHosts::default().allows_url("redis://127.0.0.1:6379", "redis"));
        for bad in [
            "127.0.0.1:6379",
            "redis://a/b",
            "*://host",
            "*://*",
            "foo://host",
            "redis://{a,b}",
            "redis://a b",
            "re-dis://host",
            "redis://a.*.com",
            "redis://host:x",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(AllowedHosts::parse(["insecure:allow-all"], &[]).is_err());
        assert!(AllowedHost::parse("*://host:*").is_ok());
        assert!(AllowedHost::parse("foo://host:99").is_ok());
    }
}
