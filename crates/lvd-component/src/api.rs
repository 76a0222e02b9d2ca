//! The gate every `/api` request passes: the per-IP limit, a valid Bearer
//! token, then the per-user limit. Limits live in Redis, so they hold across
//! every runtime instance; the decision that binds goes into the reply's
//! `RateLimit-*` headers.

use lvd::auth::tokens::{self, Claims};
use lvd::limits::{self, Decision, Limit};
use lvd::problem::Problem;
use crate::host::Request;

use crate::config::{self, Common};
use crate::http::{self as h, Response};
use crate::redis::SpinRedis;

pub struct Gate<'a> {
    pub redis: &'a SpinRedis,
    pub jwt_secret: &'a [u8],
    pub per_ip: Limit,
    pub per_user: Limit,
    pub trusted_proxies: &'a [std::net::IpAddr],
}

impl<'a> Gate<'a> {
    /// The `/api` gate, its limits read from the component's variables
    /// (`rate_limit_api_per_ip`, `rate_limit_api_per_user`).
    pub async fn for_api(common: &'a Common) -> Self {
        let max = async |name: &str, default: u64| config::number(name, default).await.unwrap_or(default);
        Self {
            redis: &common.redis,
            jwt_secret: &common.jwt_secret,
            per_ip: Limit { name: "api_ip", max: max("rate_limit_api_per_ip", 1000).await, window_secs: 60 },
            per_user: Limit { name: "api_user", max: max("rate_limit_api_per_user", 200).await, window_secs: 60 },
            trusted_proxies: &common.trusted_proxies,
        }
    }
}

/// Either the caller and the binding limit decision, or the reply to send.
/// The token's signature and expiry are checked here; the per-IP limit, the
/// deny-list and the per-user limit in one Redis round trip.
pub async fn admit(gate: &Gate<'_>, req: &Request) -> Result<(Claims, Decision), Response> {
    admit_probing(gate, req, None).await.map(|(claims, decision, _)| (claims, decision))
}

/// [`admit`], reading in the same round trip the cached reply under
/// `probe` (`lvd::logs::stats::cache`): its body comes back when the caller
/// passes and it is theirs, already counted in the deployment's figures as
/// a 200 (see `lvd::limits::gate`), so it must be the reply.
pub async fn admit_probing(gate: &Gate<'_>, req: &Request, probe: Option<&str>) -> Result<(Claims, Decision, Option<String>), Response> {
    let ip = h::client_ip(req, gate.trusted_proxies).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let claims = h::bearer(req).and_then(|token| tokens::verify_access(gate.jwt_secret, &token));
    let ids = claims.as_ref().map(|c| (c.jti.to_string(), c.sub.to_string()));
    let token = ids.as_ref().map(|(j, u)| (j.as_str(), u.as_str()));
    let decided = limits::gate(gate.redis, gate.per_ip, &ip, token, gate.per_user, probe)
        .await
        .map_err(|e| crate::serve::noted(unavailable(), format!("api gate: 503: {}", lvd::cause::chain(&e))))?;
    if !decided.ip.allowed {
        return Err(h::problem(&Problem::rate_limited(decided.ip)));
    }
    let (Some(claims), false, Some(by_user)) = (claims, decided.denied, decided.user) else {
        let p = Problem::new(401, "invalid_token", "The token is missing, expired, revoked or invalid.");
        return Err(h::problem(&p.with_rate_limit(decided.ip)));
    };
    if !by_user.allowed {
        return Err(h::problem(&Problem::rate_limited(by_user)));
    }
    let binding = if by_user.remaining <= decided.ip.remaining { by_user } else { decided.ip };
    Ok((claims, binding, decided.cached))
}

fn unavailable() -> Response {
    h::problem(&Problem::unavailable("A service the app depends on is unavailable; try again shortly."))
}
