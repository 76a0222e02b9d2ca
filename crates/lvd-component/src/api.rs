//! The gate every `/api` request passes: the per-IP limit, a valid Bearer
//! token, then the per-user limit. Limits live in Redis, so they hold across
//! every runtime instance; the decision that binds goes into the reply's
//! `RateLimit-*` headers.

use lvd::auth::service::{AuthError, authenticate};
use lvd::auth::tokens::Claims;
use lvd::limits::{self, Decision, Limit};
use lvd::problem::Problem;
use spin_sdk::http::Request;

use crate::http::{self as h, Response};
use crate::redis::SpinRedis;

pub struct Gate<'a> {
    pub redis: &'a SpinRedis,
    pub jwt_secret: &'a [u8],
    pub per_ip: Limit,
    pub per_user: Limit,
    pub trusted_proxies: &'a [std::net::IpAddr],
}

/// Either the caller and the binding limit decision, or the reply to send.
pub async fn admit(gate: &Gate<'_>, req: &Request) -> Result<(Claims, Decision), Response> {
    let ip = h::client_ip(req, gate.trusted_proxies).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let by_ip = limits::hit(gate.redis, gate.per_ip, &ip).await.map_err(|_| unavailable())?;
    if !by_ip.allowed {
        return Err(h::with_rate_limit(h::problem(&h::rate_limited()), &by_ip));
    }
    let claims = match h::bearer(req) {
        Some(token) => authenticate(gate.redis, gate.jwt_secret, &token).await,
        None => Err(AuthError::InvalidToken),
    };
    let claims = match claims {
        Ok(c) => c,
        Err(AuthError::Redis(_)) => return Err(unavailable()),
        Err(_) => {
            let p = Problem::new(401, "invalid_token", "The token is missing, expired, revoked or invalid.");
            return Err(h::with_rate_limit(h::problem(&p), &by_ip));
        }
    };
    let by_user = limits::hit(gate.redis, gate.per_user, &claims.sub.to_string()).await.map_err(|_| unavailable())?;
    let binding = if by_user.remaining <= by_ip.remaining { by_user } else { by_ip };
    if !by_user.allowed {
        return Err(h::with_rate_limit(h::problem(&h::rate_limited()), &by_user));
    }
    Ok((claims, binding))
}

fn unavailable() -> Response {
    h::problem(&Problem::unavailable("A service the app depends on is unavailable; try again shortly."))
}
