//! `/auth/*`: registration with emailed codes, sign-in, token refresh and
//! logout, password reset, and `/auth/me`. Handlers parse the request into
//! domain types, call `lvd::auth::service`, and map the outcome to a reply;
//! [`problem`] is the one place an error becomes a status and a code.
//!
//! Every reply carries the per-IP `RateLimit-*` headers.

use http::Method;
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
use lvd_component::hasher::Sidecar;
use lvd_component::http::{self as h, Response};
use lvd_component::redis::SpinRedis;
use lvd_component::routes::{Route, Routes};
use lvd_component::serve::{Config, answer, serve};
use lvd_component::scope::Scope;
use lvd_component::{Request, variables};

const NAME: &str = "auth";

#[derive(Clone, Copy)]
enum Op {
    Register,
    Verify,
    Resend,
    Login,
    Refresh,
    Logout,
    Forgot,
    Reset,
    Me,
}

const ROUTES: Routes<Op> = Routes(&[
    Route { path: "/auth/register", methods: &[(Method::POST, Op::Register)] },
    Route { path: "/auth/verify", methods: &[(Method::POST, Op::Verify)] },
    Route { path: "/auth/otp/resend", methods: &[(Method::POST, Op::Resend)] },
    Route { path: "/auth/login", methods: &[(Method::POST, Op::Login)] },
    Route { path: "/auth/refresh", methods: &[(Method::POST, Op::Refresh)] },
    Route { path: "/auth/logout", methods: &[(Method::POST, Op::Logout)] },
    Route { path: "/auth/password/forgot", methods: &[(Method::POST, Op::Forgot)] },
    Route { path: "/auth/password/reset", methods: &[(Method::POST, Op::Reset)] },
    Route { path: "/auth/me", methods: &[(Method::GET, Op::Me)] },
]);

struct Ctx {
    db: SpinDb,
    redis: SpinRedis,
    keys: Keys,
    per_ip: Limit,
    trusted_proxies: Vec<std::net::IpAddr>,
    /// The worker's password hasher, else this component's own.
    hasher: Sidecar,
}

impl Config for Ctx {
    async fn load(scope: &Scope) -> Result<Self, variables::Error> {
        let Common { db, redis, jwt_secret, trusted_proxies } = Common::load(scope).await?;
        Ok(Self {
            db,
            redis,
            keys: Keys { jwt_secret, otp_key: config::secret("otp_key").await? },
            per_ip: Limit { name: "auth_ip", max: config::number("rate_limit_auth_per_ip", 100).await?, window_secs: 60 },
            trusted_proxies,
            hasher: Sidecar::load(scope.id()).await?,
        })
    }
}

impl Ctx {
    fn auth(&self) -> Auth<'_, SpinDb, SpinRedis, Sidecar> {
        Auth { db: &self.db, redis: &self.redis, keys: &self.keys, hasher: &self.hasher }
    }
}

lvd_component::entry!(handle);

async fn handle(req: Request) -> lvd_component::Reply {
    serve::<Ctx, _, _>(NAME, &ROUTES, req, async |req, ctx| {
        let ip = h::client_ip(&req, &ctx.trusted_proxies).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let decision = match limits::hit(&ctx.redis, ctx.per_ip, &ip).await {
            Ok(d) => d,
            Err(e) => return answer(NAME, Err(Error::Auth(AuthError::Redis(e))), problem),
        };
        if !decision.allowed {
            return h::problem(&Problem::rate_limited(decision));
        }
        h::with_rate_limit(answer(NAME, route(req, ctx).await, problem), &decision)
    })
    .await
}

async fn route(req: Request, ctx: &Ctx) -> Reply {
    match ROUTES.find(req.method(), req.uri().path())?.op {
        Op::Register => register(req, ctx).await,
        Op::Verify => verify(req, ctx).await,
        Op::Resend => resend(req, ctx).await,
        Op::Login => login(req, ctx).await,
        Op::Refresh => refresh(req, ctx).await,
        Op::Logout => logout(req, ctx).await,
        Op::Forgot => forgot(req, ctx).await,
        Op::Reset => reset(req, ctx).await,
        Op::Me => me(req, ctx).await,
    }
}

type Reply = Result<Response, Error>;

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
    ctx.auth().register(&email, &password).await?;
    Ok(h::json(202, &serde_json::json!({ "status": "verification_sent" })))
}

async fn verify(req: Request, ctx: &Ctx) -> Reply {
    let secure = secure_cookie(&req, ctx);
    let mut f = fields(req).await?;
    let (email, code) = (email(&mut f), code(&mut f));
    f.finish()?;
    let tokens = ctx.auth().verify(&email.unwrap(), &code.unwrap(), now()).await?;
    Ok(token_reply(&tokens, secure))
}

async fn resend(req: Request, ctx: &Ctx) -> Reply {
    let mut f = fields(req).await?;
    let email = email(&mut f);
    f.finish()?;
    ctx.auth().resend(&email.unwrap()).await?;
    Ok(h::json(202, &serde_json::json!({ "status": "verification_sent" })))
}

async fn login(req: Request, ctx: &Ctx) -> Reply {
    let secure = secure_cookie(&req, ctx);
    let mut f = fields(req).await?;
    let (email, password) = (email(&mut f), password(&mut f, "password"));
    f.finish()?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let tokens = ctx.auth().login(&email.unwrap(), &password.unwrap(), now_ms).await?;
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
    let token = token.ok_or(AuthError::InvalidToken)?;
    let tokens = ctx.auth().refresh(&token, now()).await?;
    Ok(token_reply(&tokens, secure))
}

async fn logout(req: Request, ctx: &Ctx) -> Reply {
    let bearer = h::bearer(&req);
    let (token, secure) = refresh_token(req, ctx).await?;
    let claims = match bearer {
        Some(b) => ctx.auth().authenticate(&b).await.ok(),
        None => None,
    };
    ctx.auth().logout(token.as_deref(), claims.as_ref(), now()).await?;
    let mut resp = h::empty(204);
    set_refresh_cookie(&mut resp, "", 0, secure);
    Ok(resp)
}

async fn forgot(req: Request, ctx: &Ctx) -> Reply {
    let mut f = fields(req).await?;
    let email = email(&mut f);
    f.finish()?;
    ctx.auth().forgot(&email.unwrap()).await?;
    Ok(h::json(202, &serde_json::json!({ "status": "reset_sent" })))
}

async fn reset(req: Request, ctx: &Ctx) -> Reply {
    let mut f = fields(req).await?;
    let (email, code, password) = (email(&mut f), code(&mut f), password(&mut f, "new_password"));
    f.finish()?;
    ctx.auth().reset(&email.unwrap(), &code.unwrap(), &password.unwrap()).await?;
    Ok(h::empty(204))
}

async fn me(req: Request, ctx: &Ctx) -> Reply {
    let token = h::bearer(&req).ok_or(AuthError::InvalidToken)?;
    let auth = ctx.auth();
    let claims = auth.authenticate(&token).await?;
    let me = auth.me(&claims).await?;
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

/// Everything an `/auth` request can fail with.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Input the contract refuses (404/405 of the route table, 413, 415, 422).
    #[error(transparent)]
    Rejected(#[from] Problem),
}

/// The one mapping from account errors to replies. Faults of PostgreSQL or
/// Redis are answered without their cause (`serve::answer` logs it).
fn problem(e: &Error) -> Problem {
    let e = match e {
        Error::Rejected(p) => return p.clone(),
        Error::Auth(e) => e,
    };
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
        AuthError::Db(lvd::db::DbError::Unavailable(_)) | AuthError::Redis(_) => {
            Problem::unavailable("A service the app depends on is unavailable; try again shortly.")
        }
        AuthError::Db(_) => Problem::internal(),
    }
}
