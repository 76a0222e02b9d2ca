//! The settings every data-handling component reads from its Spin variables:
//! where PostgreSQL and Redis are, the token key, and the trusted proxies.

use crate::host::variables;

use crate::db::SpinDb;
use crate::redis::SpinRedis;
use crate::scope::Scope;

pub struct Common {
    pub db: SpinDb,
    pub redis: SpinRedis,
    pub jwt_secret: Vec<u8>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Common {
    /// The settings, with a Redis handle that carries the request's `scope`.
    pub async fn load(scope: &Scope) -> Result<Self, variables::Error> {
        Ok(Self {
            db: SpinDb::new(variables::get("database_url").await?),
            redis: SpinRedis::new(variables::get("redis_url").await?).serving(scope),
            jwt_secret: secret("jwt_secret").await?,
            trusted_proxies: crate::http::parse_proxies(&variables::get("trusted_proxies").await?),
        })
    }
}

/// A secret variable (`jwt_secret`, `otp_key`) as a key. One shorter than
/// 32 bytes is an error naming the variable: a component cannot refuse to
/// start, so every request it serves logs that error and answers 500.
pub async fn secret(name: &str) -> Result<Vec<u8>, variables::Error> {
    lvd::auth::service::secret(name, variables::get(name).await?).map_err(variables::Error::Other)
}

/// A numeric variable, or `default` when it does not parse.
pub async fn number(name: &str, default: u64) -> Result<u64, variables::Error> {
    Ok(variables::get(name).await?.parse().unwrap_or(default))
}
