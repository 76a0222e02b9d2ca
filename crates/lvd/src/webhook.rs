//! Outbound alert webhooks: the checks a user's `webhook_url` must pass and
//! the signature every delivery carries.
//!
//! A webhook URL is user input that makes the service open a connection, so
//! it is guarded like any such fetch: https only, and never a loopback,
//! private, link-local or metadata address unless the operator put the host
//! on the [`AllowList`]. [`check_url`] runs when a URL is saved and again
//! before each delivery; the worker's sender additionally checks every
//! address a name resolves to with [`public_address`], since a public-looking
//! name can resolve anywhere. This module does no I/O, so it compiles for
//! `wasm32-wasip2` too.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use subtle::ConstantTimeEq;
use url::{Host, Url};

/// The header holding `sha256=<hex HMAC-SHA256 of the body>`, keyed with the
/// alert's `webhook_secret`.
pub const SIGNATURE_HEADER: &str = "X-LVD-Signature";
/// The header holding a unique id per notification, the same on every retry,
/// so a receiver can drop a repeat.
pub const DELIVERY_HEADER: &str = "X-LVD-Delivery";
/// The longest `webhook_url` accepted.
pub const MAX_URL_LEN: usize = 2048;

/// The hosts the operator lets webhooks reach even though they are local
/// (plain http allowed, addresses unchecked), e.g. a receiver on the same
/// private network. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Entry>);

/// One allowed host: a lowercase name or a canonical IP address, and the one
/// port it is allowed on (any port when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: String,
    port: Option<u16>,
}

impl AllowList {
    /// Parses the operator's setting: entries separated by commas or
    /// whitespace, each `host`, `host:port`, `[ipv6]` or `[ipv6]:port`.
    /// An entry that cannot be read (a bad port, an empty host) is left out:
    /// a typo must never widen what is allowed.
    pub fn parse(raw: &str) -> AllowList {
        let entries = raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .filter_map(parse_entry)
            .collect();
        AllowList(entries)
    }

    /// Whether `host` (a name, an IP address, or a bracketed IPv6 address as
    /// [`Url::host_str`] gives it) on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        self.0.iter().any(|e| e.host == host && e.port.is_none_or(|p| p == port))
    }
}

fn parse_entry(raw: &str) -> Option<Entry> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else if raw.parse::<Ipv6Addr>().is_ok() {
        // A bare IPv6 address: its colons are not a port separator.
        (raw, None)
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = normalize_host(host);
    (!host.is_empty()).then_some(Entry { host, port })
}

/// One spelling per host: lowercase, no brackets or trailing dot, IP
/// addresses in their canonical form (so `[0:0::1]` matches `::1`).
fn normalize_host(host: &str) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// Checks a user's `webhook_url` and returns it without its fragment. The
/// `Err` is a message for the user (a 422), to follow the field's name.
///
/// Rules: at most [`MAX_URL_LEN`] characters; absolute; no user name or
/// password; a host; `https`, or `http` only for an allowed host. A host
/// that is not allowed must not be an IP address outside the public internet
/// ([`public_address`]), `localhost`, a `*.localhost` name or a name without
/// a dot: those resolve inside the operator's network. Names are checked
/// again, by address, when the worker resolves them.
pub fn check_url(raw: &str, allow: &AllowList) -> Result<Url, String> {
    let too_long = || format!("must be at most {MAX_URL_LEN} characters");
    if raw.chars().count() > MAX_URL_LEN {
        return Err(too_long());
    }
    let mut url = Url::parse(raw).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => "must be an absolute URL".to_owned(),
        e => format!("must be a valid URL ({e})"),
    })?;
    // Percent-encoding and punycode can lengthen it; the stored form must fit too.
    if url.as_str().len() > MAX_URL_LEN {
        return Err(too_long());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        // The parser already refuses an http(s) URL without a host.
        return Err("must be an https URL".into());
    };
    let allowed = allow.allows(url.host_str().unwrap_or_default(), port);
    match url.scheme() {
        "https" => {}
        "http" if allowed => {}
        _ => return Err("must be an https URL".into()),
    }
    if !allowed {
        let local = match host {
            Host::Ipv4(ip) => !public_address(IpAddr::V4(ip)),
            Host::Ipv6(ip) => !public_address(IpAddr::V6(ip)),
            Host::Domain(name) => {
                let name = name.strip_suffix('.').unwrap_or(name);
                name == "localhost" || name.ends_with(".localhost") || !name.contains('.')
            }
        };
        if local {
            return Err("must not point at a loopback, private or link-local address".into());
        }
    }
    url.set_fragment(None);
    Ok(url)
}

/// Whether `ip` is an address on the public internet, the only kind a webhook
/// may reach without the operator's leave. Written out range by range
/// because `IpAddr::is_global` is unstable. Addresses that embed an IPv4
/// address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by it.
pub fn public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

/// Whether `ip` lies in `net/len`.
fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn public_v4(ip: Ipv4Addr) -> bool {
    const NOT_PUBLIC: [([u8; 4], u32); 14] = [
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, holds the cloud metadata address
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
        ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, holds the broadcast address
    ];
    !NOT_PUBLIC.iter().any(|&(net, len)| in_v4(ip, net, len))
}

/// Whether `ip` lies in `net/len`.
fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn public_v6(ip: Ipv6Addr) -> bool {
    const NOT_PUBLIC: [([u16; 8], u32); 10] = [
        ([0, 0, 0, 0, 0, 0, 0, 0], 128),         // unspecified
        ([0, 0, 0, 0, 0, 0, 0, 1], 128),         // loopback
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // NAT64 for local use
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),     // Teredo: tunnels to an IPv4 address
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local, holds AWS's fd00:ec2::254
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link-local
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),     // site-local (deprecated, still private)
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
    ];
    if NOT_PUBLIC.iter().any(|&(net, len)| in_v6(ip, net, len)) {
        return false;
    }
    match embedded_v4(ip) {
        Some(v4) => public_v4(v4),
        None => true,
    }
}

/// The IPv4 address an IPv6 address stands for, if it is one that carries
/// one: IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64
/// `64:ff9b::/96` (last 32 bits), and 6to4 `2002::/16` (bits 16–48).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let last32 = Ipv4Addr::from(bits as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0; 8], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        Some(last32)
    } else if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body`: `sha256=` and the lowercase
/// hex of its HMAC-SHA256 keyed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `header` is the signature of `body` under `secret`, compared in
/// constant time so a forger learns nothing from how long a refusal takes.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    sign(secret, body).as_bytes().ct_eq(header.trim().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> bool {
        public_address(s.parse().unwrap())
    }

    fn v6(s: &str) -> bool {
        public_address(s.parse().unwrap())
    }

    #[test]
    fn public_ipv4_addresses_are_public() {
        for ip in ["1.1.1.1", "8.8.8.8", "93.184.216.34", "9.255.255.255", "11.0.0.0", "223.255.255.254"] {
            assert!(v4(ip), "{ip}");
        }
    }

    #[test]
    fn ipv4_this_network_is_not_public() {
        assert!(!v4("0.0.0.0"));
        assert!(!v4("0.255.255.255"));
    }

    #[test]
    fn ipv4_loopback_is_not_public() {
        assert!(!v4("127.0.0.1"));
        assert!(!v4("127.255.255.254"));
    }

    #[test]
    fn ipv4_private_ranges_are_not_public() {
        for ip in ["10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1", "192.168.255.255"] {
            assert!(!v4(ip), "{ip}");
        }
        assert!(v4("172.15.255.255"));
        assert!(v4("172.32.0.0"));
        assert!(v4("192.169.0.0"));
    }

    #[test]
    fn ipv4_carrier_grade_nat_is_not_public() {
        assert!(!v4("100.64.0.1"));
        assert!(!v4("100.127.255.255"));
        assert!(v4("100.63.255.255"));
        assert!(v4("100.128.0.0"));
    }

    #[test]
    fn ipv4_link_local_and_the_metadata_address_are_not_public() {
        assert!(!v4("169.254.169.254"));
        assert!(!v4("169.254.0.1"));
        assert!(v4("169.255.0.1"));
    }

    #[test]
    fn ipv4_protocol_assignments_are_not_public() {
        assert!(!v4("192.0.0.1"));
        assert!(!v4("192.0.0.255"));
        assert!(v4("192.0.1.1"));
    }

    #[test]
    fn ipv4_documentation_ranges_are_not_public() {
        for ip in ["192.0.2.1", "198.51.100.7", "203.0.113.255"] {
            assert!(!v4(ip), "{ip}");
        }
    }

    #[test]
    fn ipv4_benchmarking_range_is_not_public() {
        assert!(!v4("198.18.0.1"));
        assert!(!v4("198.19.255.255"));
        assert!(v4("198.20.0.0"));
    }

    #[test]
    fn ipv4_multicast_is_not_public() {
        assert!(!v4("224.0.0.1"));
        assert!(!v4("239.255.255.255"));
    }

    #[test]
    fn ipv4_reserved_and_broadcast_are_not_public() {
        assert!(!v4("240.0.0.1"));
        assert!(!v4("255.255.255.255"));
    }

    #[test]
    fn public_ipv6_addresses_are_public() {
        for ip in ["2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450::1"] {
            assert!(v6(ip), "{ip}");
        }
    }

    #[test]
    fn ipv6_unspecified_and_loopback_are_not_public() {
        assert!(!v6("::"));
        assert!(!v6("::1"));
    }

    #[test]
    fn ipv6_unique_local_and_the_aws_metadata_address_are_not_public() {
        assert!(!v6("fd00:ec2::254"));
        assert!(!v6("fc00::1"));
        assert!(!v6("fdff:ffff::1"));
    }

    #[test]
    fn ipv6_link_local_and_site_local_are_not_public() {
        assert!(!v6("fe80::1"));
        assert!(!v6("febf:ffff::1"));
        assert!(!v6("fec0::1"));
    }

    #[test]
    fn ipv6_multicast_is_not_public() {
        assert!(!v6("ff02::1"));
        assert!(!v6("ff0e::1"));
    }

    #[test]
    fn ipv6_documentation_is_not_public() {
        assert!(!v6("2001:db8::1"));
        assert!(!v6("2001:db8:ffff::1"));
    }

    #[test]
    fn ipv6_discard_prefix_is_not_public() {
        assert!(!v6("100::1"));
        assert!(v6("100:0:0:1::1"));
    }

    #[test]
    fn ipv6_teredo_is_not_public() {
        assert!(!v6("2001:0:4136:e378:8000:63bf:3fff:fdd2"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_judged_by_their_ipv4_address() {
        assert!(!v6("::ffff:127.0.0.1"));
        assert!(!v6("::ffff:169.254.169.254"));
        assert!(!v6("::ffff:10.0.0.1"));
        assert!(v6("::ffff:8.8.8.8"));
    }

    #[test]
    fn ipv4_compatible_addresses_are_judged_by_their_ipv4_address() {
        assert!(!v6("::127.0.0.1"));
        assert!(!v6("::192.168.1.1"));
        assert!(v6("::8.8.8.8"));
    }

    #[test]
    fn nat64_addresses_are_judged_by_their_ipv4_address() {
        assert!(!v6("64:ff9b::127.0.0.1"));
        assert!(!v6("64:ff9b::a9fe:a9fe"));
        assert!(v6("64:ff9b::8.8.8.8"));
        assert!(!v6("64:ff9b:1::8.8.8.8"));
    }

    #[test]
    fn six_to_four_addresses_are_judged_by_their_ipv4_address() {
        assert!(!v6("2002:7f00:1::1"));
        assert!(!v6("2002:a9fe:a9fe::1"));
        assert!(v6("2002:808:808::1"));
    }

    #[test]
    fn an_allow_list_reads_hosts_ports_and_bracketed_ipv6() {
        let allow = AllowList::parse(" Hooks.Internal, 10.0.0.5:8080\n[::1]:9000  [FD00::1] 127.0.0.1");
        assert!(allow.allows("hooks.internal", 443));
        assert!(allow.allows("HOOKS.internal.", 1));
        assert!(allow.allows("10.0.0.5", 8080));
        assert!(!allow.allows("10.0.0.5", 8081));
        assert!(allow.allows("[::1]", 9000));
        assert!(allow.allows("::1", 9000));
        assert!(allow.allows("[0:0::1]", 9000));
        assert!(!allow.allows("[::1]", 9001));
        assert!(allow.allows("[fd00::1]", 443));
        assert!(allow.allows("127.0.0.1", 1234));
        assert!(!allow.allows("127.0.0.2", 1234));
        assert!(!allow.allows("internal", 443));
    }

    #[test]
    fn an_unreadable_allow_entry_allows_nothing() {
        let allow = AllowList::parse("bad:port, :80, [::1, [::2]x, ,,");
        assert_eq!(allow, AllowList::default());
        assert!(AllowList::parse("::1").allows("[::1]", 80));
    }

    #[test]
    fn the_default_allow_list_is_empty() {
        assert!(!AllowList::default().allows("localhost", 80));
        assert_eq!(AllowList::parse(""), AllowList::default());
    }

    fn check(raw: &str) -> Result<String, String> {
        check_url(raw, &AllowList::default()).map(String::from)
    }

    #[test]
    fn a_public_https_url_passes_without_its_fragment() {
        assert_eq!(check("https://hooks.example.com/a?b=c#frag"), Ok("https://hooks.example.com/a?b=c".into()));
        assert_eq!(check("https://8.8.8.8:8443/x"), Ok("https://8.8.8.8:8443/x".into()));
        assert_eq!(check("https://[2606:4700::1111]/"), Ok("https://[2606:4700::1111]/".into()));
    }

    #[test]
    fn a_url_must_be_https() {
        for raw in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "file:///etc/passwd",
            "mailto:a@example.com",
            "data:text/plain,x",
        ] {
            assert_eq!(check(raw), Err("must be an https URL".into()), "{raw}");
        }
    }

    #[test]
    fn a_url_must_be_absolute_and_well_formed() {
        assert_eq!(check("/hooks"), Err("must be an absolute URL".into()));
        assert_eq!(check("hooks.example.com/x"), Err("must be an absolute URL".into()));
        assert!(check("https://").unwrap_err().starts_with("must be a valid URL"));
        assert!(check("https://exa mple.com/").unwrap_err().starts_with("must be a valid URL"));
    }

    #[test]
    fn a_url_must_not_carry_credentials() {
        assert_eq!(check("https://user@hooks.example.com/"), Err("must not carry a user name or password".into()));
        assert_eq!(check("https://:pw@hooks.example.com/"), Err("must not carry a user name or password".into()));
    }

    #[test]
    fn a_url_must_be_at_most_2048_characters() {
        let base = "https://hooks.example.com/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert!(check(&fits).is_ok());
        assert_eq!(check(&format!("{fits}a")), Err("must be at most 2048 characters".into()));
        let spaces = format!("{base}{}x", " ".repeat(MAX_URL_LEN - base.len() - 1));
        assert_eq!(check(&spaces), Err("must be at most 2048 characters".into()), "encoded as %20");
    }

    #[test]
    fn a_url_must_not_point_inside_the_network() {
        for raw in [
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.1.2.3/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[fd00:ec2::254]/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            "https://redis/",
            "https://metadata./",
        ] {
            assert_eq!(check(raw), Err("must not point at a loopback, private or link-local address".into()), "{raw}");
        }
    }

    #[test]
    fn an_allowed_host_may_be_local_and_plain_http() {
        let allow = AllowList::parse("127.0.0.1:8080, receiver, [::1]");
        assert!(check_url("http://127.0.0.1:8080/hook", &allow).is_ok());
        assert!(check_url("https://127.0.0.1:8080/hook", &allow).is_ok());
        assert!(check_url("http://receiver/hook", &allow).is_ok());
        assert!(check_url("http://[::1]:1/hook", &allow).is_ok());
        assert_eq!(check_url("http://127.0.0.1:8081/", &allow), Err("must be an https URL".into()));
        assert_eq!(
            check_url("https://127.0.0.1:8081/", &allow),
            Err("must not point at a loopback, private or link-local address".into())
        );
        // An allowed host's default port is the scheme's.
        assert!(check_url("http://127.0.0.1/", &AllowList::parse("127.0.0.1:80")).is_ok());
    }

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_in_lowercase_hex() {
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn only_the_right_signature_verifies() {
        let sig = sign(b"secret", b"{\"a\":1}");
        assert!(verify(b"secret", b"{\"a\":1}", &sig));
        assert!(!verify(b"secret", b"{\"a\":2}", &sig));
        assert!(!verify(b"other", b"{\"a\":1}", &sig));
        assert!(!verify(b"secret", b"{\"a\":1}", sig.trim_start_matches("sha256=")));
        assert!(!verify(b"secret", b"{\"a\":1}", ""));
    }
}
