//! The value forms of `spin up`'s flags (`crates/trigger-http/src/lib.rs`),
//! so the same command line means the same thing to both runtimes: a count
//! or duration may be one value or a range `a..b` (a value picked at random
//! per instance), a duration is a number of seconds, and `--listen` takes a
//! host name or address.

use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// One value, or a half-open range to pick from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick<T> {
    Value(T),
    Between(T, T),
}

impl Pick<usize> {
    pub fn pick(self) -> usize {
        match self {
            Pick::Value(v) => v,
            Pick::Between(a, b) if b > a => a + (rand_u64() as usize) % (b - a),
            Pick::Between(a, _) => a,
        }
    }
}

impl Pick<Duration> {
    pub fn pick(self) -> Duration {
        match self {
            Pick::Value(v) => v,
            Pick::Between(a, b) if b > a => {
                let span = (b - a).as_nanos() as u64;
                a + Duration::from_nanos(rand_u64() % span)
            }
            Pick::Between(a, _) => a,
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

fn pick<T>(s: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<Pick<T>, String> {
    match s.split_once("..") {
        Some((a, b)) => Ok(Pick::Between(one(a)?, one(b)?)),
        None => one(s).map(Pick::Value),
    }
}

pub fn count(s: &str) -> Result<Pick<usize>, String> {
    pick(s, |v| v.parse().map_err(|e| format!("expected integer or range; got {s:?}; {e}")))
}

/// Seconds, bare or with `s`. Spin 4.0.2's parser also names `ms`, `us`,
/// `μs` and `ns`, but tests the `s` suffix first, so each of those fails
/// there ("250ms" is "250m" seconds): they fail here too.
pub fn duration(s: &str) -> Result<Pick<Duration>, String> {
    pick(s, |v| {
        let err = |e: std::num::ParseIntError| {
            format!("expected integer suffixed by `s`, `ms`, `us`, `μs`, or `ns`; got {s:?}; {e}")
        };
        match v.parse() {
            Ok(secs) => Ok(Duration::from_secs(secs)),
            Err(e) => match v.strip_suffix('s') {
                Some(n) => n.parse().map(Duration::from_secs).map_err(err),
                None => Err(err(e)),
            },
        }
    })
}

/// `--listen`: resolved, preferring 127.0.0.1 when a name means several.
pub fn listen(s: &str) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = s.to_socket_addrs().with_context(|| format!("invalid listen address {s:?}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() && a.ip() == Ipv4Addr::LOCALHOST)
        .or(addrs.first())
        .copied()
        .context("couldn't resolve address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_take_spins_forms() {
        assert_eq!(count("128"), Ok(Pick::Value(128)));
        assert_eq!(count("1..8"), Ok(Pick::Between(1, 8)));
        assert!(count("x").is_err());
        assert_eq!(duration("2"), Ok(Pick::Value(Duration::from_secs(2))));
        assert_eq!(duration("2s"), Ok(Pick::Value(Duration::from_secs(2))));
        assert!(duration("250ms").is_err(), "as in Spin 4.0.2");
        assert!(duration("5us").is_err(), "as in Spin 4.0.2");
        assert_eq!(duration("1..3s"), Ok(Pick::Between(Duration::from_secs(1), Duration::from_secs(3))));
        assert!(duration("2m").is_err());
        let picked = Pick::Between(4usize, 6).pick();
        assert!((4..6).contains(&picked));
    }

    #[test]
    fn listen_prefers_ipv4_loopback() {
        assert_eq!(listen("localhost:0").unwrap().ip(), Ipv4Addr::LOCALHOST);
        assert!(listen("no port").is_err());
    }
}
