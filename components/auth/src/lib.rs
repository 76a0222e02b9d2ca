//! `/auth/*`: registration with emailed codes, sign-in, token refresh and
//! logout, password reset, and `/auth/me`. Handlers parse the request into
//! domain types, call `lvd::auth::service`, and map the outcome to a reply;
//! [`problem_for`] is the one place an error becomes a status and a code.
//!
//! Every reply carries the per-IP `RateLimit-*` headers.

use lvd::auth::cookie;
use lvd::auth::email::Email;
use lvd::auth::otp::Code;
use lvd::auth::password::Password;
use lvd::auth::service::{Auth, AuthError, Keys, Tokens};
use lvd::input::Fields;
use lvd::limits::{self, Limit};
use lvd::problem::Problem;
use lvd_component::config::{self, Common};
use lvd_component::db::SpinDb;
use lvd_component::http::{self as h, Response};
use lvd_component::redis::SpinRedis;
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::{http_service, variables};

struct Ctx {
    db: SpinDb,
    redis: SpinRedis,
    keys: Keys,
    per_ip: Limit,
    trusted_proxies: Vec<std::net::IpAddr>,
}

impl Ctx {
    async fn load() -> Result<Self, variables::Error> {
        let Common { db, redis, jwt_secret, trusted_proxies } = Common::load().await?;
        Ok(Self {
            db,
            redis,
            keys: Keys { jwt_secret, otp_key: config::secret("otp_key").await? },
            per_ip: Limit { name: "auth_ip", max: config::number("rate_limit_auth_per_ip", 100).await?, window_secs: 60 },
            trusted_proxies,
        })
    }

    fn auth(&self) -> Auth<'_, SpinDb, SpinRedis> {
        Auth { db: &self.db, redis: &self.redis, keys: &self.keys }
    }
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let ctx = match Ctx::load().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("auth: missing or refused configuration: {e:?}");
            return h::problem(&Problem::internal());
        }
    };
    let ip = h::client_ip(&req, &ctx.trusted_proxies).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let decision = match limits::hit(&ctx.redis, ctx.per_ip, &ip).await {
        Ok(d) => d,
        Err(e) => return h::problem(&problem_for(&AuthError::Redis(e))),
    };
    let resp = if decision.allowed { route(req, &ctx).await } else { h::problem(&h::rate_limited()) };
    h::with_rate_limit(resp, &decision)
}

async fn route(req: Request, ctx: &Ctx) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let result = match (method, path.as_str()) {
        (Method::POST, "/auth/register") => register(req, ctx).await,
        (Method::POST, "/auth/verify") => verify(req, ctx).await,
        (Method::POST, "/auth/otp/resend") => resend(req, ctx).await,
        (Method::POST, "/auth/login") => login(req, ctx).await,
        (Method::POST, "/auth/refresh") => refresh(req, ctx).await,
        (Method::POST, "/auth/logout") => logout(req, ctx).await,
        (Method::POST, "/auth/password/forgot") => forgot(req, ctx).await,
        (Method::POST, "/auth/password/reset") => reset(req, ctx).await,
        (Method::GET, "/auth/me") => me(req, ctx).await,
        (_, "/auth/me") => Err(Problem::method_not_allowed("GET")),
        (_, "/auth/register" | "/auth/verify" | "/auth/otp/resend" | "/auth/login" | "/auth/refresh" | "/auth/logout"
            | "/auth/password/forgot" | "/auth/password/reset") => Err(Problem::method_not_allowed("POST")),
        _ => Err(Problem::not_found()),
    };
    result.unwrap_or_else(|p| h::problem(&p))
}

type Reply = Result<Response, Problem>;

async fn fields(req: Request) -> Result<Fields, Problem> {
    Fields::parse(&h::json_body(req).await?)
}

fn email(f: &mut Fields) -> Option<Email> {
    let raw = f.required_str("email");
    f.parsed("email", raw, |s| Email::parse(&s))
}

fn password(f: &mut Fields, name: &str) -> Option<Password> {
    let raw = f.required_str(name);
    f.parsed(name, raw, Password::parse)
}

fn code(f: &mut Fields) -> Option<Code> {
    let raw = f.required_str("code");
    f.parsed("code", raw, |s| Code::parse(&s))
}

async fn register(req: Request, ctx: &Ctx) -> Reply {
    let mut f = fields(req).await?;
    let (email, password) = (email(&mut f), password(&mut f, "password"));
    f.finish()?;
    let (email, password) = (email.unwrap(), password.unwrap());
    ctx.auth().register(&email, &password).await.map_err(|e| problem_for(&e))?;
    Ok(h::json(202, &serde_json::json!({ "status": "verification_sent" })))
}

async fn verify(req: Request, ctx: &Ctx) -> Reply {
    let secure = secure_cookie(&req, ctx);
    let mut f = fields(req).await?;
    let (email, code) = (email(&mut f), code(&mut f));
    f.finish()?;
    let tokens = ctx.auth().verify(&email.unwrap(), &code.unwrap(), now()).await.map_err(|e| problem_for(&e))?;
    Ok(token_reply(&tokens, secure))
}

async fn resend(req: Request, ctx: &Ctx) -> Reply {
    let mut f = fields(req).await?;
    let email = email(&mut f);
    f.finish()?;
    ctx.auth().resend(&email.unwrap()).await.map_err(|e| problem_for(&e))?;
    Ok(h::json(202, &serde_json::json!({ "status": "verification_sent" })))
}

async fn login(req: Request, ctx: &Ctx) -> Reply {
    let secure = secure_cookie(&req, ctx);
    let mut f = fields(req).await?;
    let (email, password) = (email(&mut f), password(&mut f, "password"));
    f.finish()?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let tokens = ctx.auth().login(&email.unwrap(), &password.unwrap(), now_ms).await.map_err(|e| problem_for(&e))?;
    Ok(token_reply(&tokens, secure))
}

/// The refresh token from the body, or from the cookie when the body has none.
async fn refresh_token(req: Request, ctx: &Ctx) -> Result<(Option<String>, bool), Problem> {
    let (cookie, secure) = (h::cookie(&req, cookie::NAME), secure_cookie(&req, ctx));
    let has_body = req.headers().contains_key(http::header::CONTENT_TYPE);
    let from_body = if has_body {
        let mut f = fields(req).await?;
        let t = f.optional_str("refresh_token");
        f.finish()?;
        t
    } else {
        None
    };
    Ok((from_body.or(cookie), secure))
}

async fn refresh(req: Request, ctx: &Ctx) -> Reply {
    let (token, secure) = refresh_token(req, ctx).await?;
    let token = token.ok_or_else(|| problem_for(&AuthError::InvalidToken))?;
    let tokens = ctx.auth().refresh(&token, now()).await.map_err(|e| problem_for(&e))?;
    Ok(token_reply(&tokens, secure))
}

async fn logout(req: Request, ctx: &Ctx) -> Reply {
    let bearer = h::bearer(&req);
    let (token, secure) = refresh_token(req, ctx).await?;
    let claims = match bearer {
        Some(b) => ctx.auth().authenticate(&b).await.ok(),
        None => None,
    };
    ctx.auth().logout(token.as_deref(), claims.as_ref(), now()).await.map_err(|e| problem_for(&e))?;
    let mut resp = h::empty(204);
    set_refresh_cookie(&mut resp, "", 0, secure);
    Ok(resp)
}

async fn forgot(req: Request, ctx: &Ctx) -> Reply {
    let mut f = fields(req).await?;
    let email = email(&mut f);
    f.finish()?;
    ctx.auth().forgot(&email.unwrap()).await.map_err(|e| problem_for(&e))?;
    Ok(h::json(202, &serde_json::json!({ "status": "reset_sent" })))
}

async fn reset(req: Request, ctx: &Ctx) -> Reply {
    let mut f = fields(req).await?;
    let (email, code, password) = (email(&mut f), code(&mut f), password(&mut f, "new_password"));
    f.finish()?;
    ctx.auth().reset(&email.unwrap(), &code.unwrap(), &password.unwrap()).await.map_err(|e| problem_for(&e))?;
    Ok(h::empty(204))
}

async fn me(req: Request, ctx: &Ctx) -> Reply {
    let token = h::bearer(&req).ok_or_else(|| problem_for(&AuthError::InvalidToken))?;
    let auth = ctx.auth();
    let claims = auth.authenticate(&token).await.map_err(|e| problem_for(&e))?;
    let me = auth.me(&claims).await.map_err(|e| problem_for(&e))?;
    Ok(h::json(
        200,
        &serde_json::json!({ "id": me.id, "email": me.email, "created_at": me.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }),
    ))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn token_reply(tokens: &Tokens, secure: bool) -> Response {
    let mut resp = h::json(200, tokens);
    set_refresh_cookie(&mut resp, &tokens.refresh_token, lvd::auth::tokens::REFRESH_TTL_SECS, secure);
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// Whether this request's refresh cookie is `Secure`: over https, directly
/// or as a trusted proxy's `X-Forwarded-Proto` says, and by default
/// everywhere but loopback (`lvd::auth::cookie`).
fn secure_cookie(req: &Request, ctx: &Ctx) -> bool {
    let origin = cookie::Origin {
        full_url: h::spin_header(req, "spin-full-url"),
        peer: h::spin_header(req, "spin-client-addr").and_then(|v| v.parse::<std::net::SocketAddr>().ok()).map(|a| a.ip()),
        forwarded_proto: req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()),
    };
    cookie::secure(&origin, &ctx.trusted_proxies)
}

fn set_refresh_cookie(resp: &mut Response, value: &str, max_age: i64, secure: bool) {
    let cookie = cookie::set_cookie(value, max_age, secure);
    resp.headers_mut().append(http::header::SET_COOKIE, cookie.parse().expect("a valid cookie"));
}

/// The one mapping from account errors to replies. Faults of PostgreSQL or
/// Redis are logged with their cause and answered without it.
fn problem_for(e: &AuthError) -> Problem {
    match e {
        AuthError::InvalidCredentials => Problem::new(401, "invalid_credentials", "Email or password is wrong."),
        AuthError::EmailNotVerified => Problem::new(403, "email_not_verified", "Verify your email before signing in."),
        AuthError::AccountLocked(secs) => {
            Problem::new(429, "account_locked", format!("Too many failed sign-ins; try again in {secs} seconds."))
                .with_retry_after(*secs)
        }
        AuthError::InvalidCode => Problem::new(400, "invalid_code", "The code is wrong or no longer valid."),
        AuthError::CodeExpired => Problem::new(400, "code_expired", "The code has expired; ask for a new one."),
        AuthError::TooManyAttempts(None) => Problem::new(429, "too_many_attempts", "Too many wrong codes; ask for a new one."),
        AuthError::TooManyAttempts(Some(secs)) => {
            Problem::new(429, "too_many_attempts", format!("Too many wrong codes today; try again in {secs} seconds."))
                .with_retry_after(*secs)
        }
        AuthError::InvalidToken => Problem::new(401, "invalid_token", "The token is missing, expired, revoked or invalid."),
        AuthError::Db(lvd::db::DbError::Unavailable(cause)) | AuthError::Redis(lvd::kv::RedisError(cause)) => {
            eprintln!("auth: dependency unavailable: {cause}");
            Problem::unavailable("A service the app depends on is unavailable; try again shortly.")
        }
        AuthError::Db(cause) => {
            eprintln!("auth: database error: {cause}");
            Problem::internal()
        }
    }
}
