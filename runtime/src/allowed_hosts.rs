//! `allowed_outbound_hosts`, checked the way Spin checks it: an entry is
//! `<scheme>://<host>[:<port>]`, each part either literal or `*` (hosts also
//! `*.<domain>`, ports also `<from>..<to>`); a missing port means the scheme's
//! default. An address is allowed only if some entry matches scheme, host and
//! port. Anything this module cannot parse is refused, never allowed.

use anyhow::{Context, Result, bail, ensure};

#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Any,
    Exact(String),
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq)]
enum PortPattern {
    Any,
    Range(u16, u16),
    /// No port written: the default port of the scheme being checked.
    SchemeDefault,
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
        let (scheme, rest) = entry
            .split_once("://")
            .with_context(|| format!("{entry:?} has no scheme (e.g. 'postgres://')"))?;
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => Some(s.to_owned()),
            s => bail!("invalid scheme {s:?} in {entry:?}"),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        ensure!(!rest.contains('/'), "{entry:?} has a path but is not allowed to");
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let host = match host {
            "*" => HostPattern::Any,
            h if h.starts_with("*.") => HostPattern::Subdomains(h[1..].to_ascii_lowercase()),
            h if !h.is_empty() && !h.contains('*') => HostPattern::Exact(h.to_ascii_lowercase()),
            h => bail!("invalid host {h:?} in {entry:?}"),
        };
        let port = match port {
            None => PortPattern::SchemeDefault,
            Some("*") => PortPattern::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => {
                    let (a, b): (u16, u16) = (a.parse()?, b.parse()?);
                    ensure!(a < b, "empty port range {p:?} in {entry:?}");
                    PortPattern::Range(a, b - 1)
                }
                None => {
                    let n: u16 = p.parse().with_context(|| format!("invalid port {p:?} in {entry:?}"))?;
                    PortPattern::Range(n, n)
                }
            },
        };
        if port == PortPattern::SchemeDefault {
            if let Some(s) = &scheme {
                ensure!(default_port(s).is_some(), "{entry:?} needs a port: {s} has no default");
            }
        }
        Ok(Self { scheme, host, port })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => *h == host,
            HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Range(a, b) => (a..=b).contains(&port),
            PortPattern::SchemeDefault => default_port(scheme) == Some(port),
        };
        scheme_ok && host_ok && port_ok
    }
}

impl AllowedHosts {
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        entries.into_iter().map(AllowedHost::parse).collect::<Result<_>>().map(Self)
    }

    /// Whether `scheme://host:port` may be reached.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.0.iter().any(|h| h.allows(scheme, host, port))
    }

    /// Checks a URL address such as `redis://host:port/0`.
    pub fn allows_url(&self, address: &str, scheme: &str) -> bool {
        let Ok(url) = url::Url::parse(address) else { return false };
        if url.scheme() != scheme && !(scheme == "redis" && url.scheme() == "rediss") {
            return false;
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port().or_else(|| default_port(scheme))) else {
            return false;
        };
        self.allows(scheme, host.trim_start_matches('[').trim_end_matches(']'), port)
    }

    /// Checks every TCP host of a PostgreSQL connection string (URL or
    /// key/value form), as Spin's outbound PostgreSQL does.
    pub fn allows_postgres(&self, address: &str) -> bool {
        let Ok(config) = address.parse::<tokio_postgres::Config>() else { return false };
        let ports = config.get_ports();
        let hosts = config.get_hosts();
        !hosts.is_empty()
            && hosts.iter().enumerate().all(|(i, host)| match host {
                tokio_postgres::config::Host::Tcp(h) => {
                    let port = ports.get(i).or(if ports.len() == 1 { ports.first() } else { None });
                    self.allows("postgres", h, port.copied().unwrap_or(5432))
                }
                // Unix sockets are not network destinations Spin can allow.
                #[allow(unreachable_patterns)]
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries.iter().copied()).unwrap()
    }

    #[test]
    fn an_exact_entry_allows_only_its_scheme_host_and_default_port() {
        let h = hosts(&["redis://127.0.0.1"]);
        assert!(h.allows_url("redis://127.0.0.1:6379/1", "redis"));
        assert!(h.allows_url("redis://127.0.0.1/1", "redis"));
        assert!(!h.allows_url("redis://127.0.0.1:6380", "redis"));
        assert!(!h.allows_url("redis://localhost:6379", "redis"));
        assert!(!h.allows_postgres("postgres://127.0.0.1:6379/db"));
    }

    #[test]
    fn postgres_addresses_are_checked_in_both_forms() {
        let h = hosts(&["postgres://db.internal:5433"]);
        assert!(h.allows_postgres("postgres://u@db.internal:5433/x?sslmode=disable"));
        assert!(h.allows_postgres("host=db.internal port=5433 user=u"));
        assert!(!h.allows_postgres("postgres://u@db.internal/x"));
        assert!(!h.allows_postgres("not a connection string ::"));
    }

    #[test]
    fn wildcards_and_ranges_match_as_in_spin() {
        let h = hosts(&["*://*.example.com:8000..8010"]);
        assert!(h.allows("redis", "a.example.com", 8009));
        assert!(!h.allows("redis", "a.example.com", 8010));
        assert!(!h.allows("redis", "example.org", 8001));
    }

    #[test]
    fn nothing_is_allowed_by_an_empty_list_or_a_bad_entry() {
        assert!(!AllowedHosts::default().allows("redis", "127.0.0.1", 6379));
        assert!(AllowedHost::parse("127.0.0.1:6379").is_err());
        assert!(AllowedHost::parse("redis://a/b").is_err());
        assert!(AllowedHost::parse("foo://host").is_err());
    }
}
