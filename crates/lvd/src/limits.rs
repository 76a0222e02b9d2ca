//! Counters that must hold across every runtime instance, so they live in
//! Redis: request rate limits, the login lockout, the one-code-per-minute
//! resend rule, the tries at one-time codes, and the access-token deny-list. Each is one atomic command
//! or Lua script, so concurrent instances cannot race past a limit.
//!
//! Keys come from `crate::keys`; every fixed window is its `window_hit!`.

use crate::keys;
use crate::kv::{Arg, Redis, RedisError, Reply, Script};

/// A limit of `max` requests per `window_secs`, per subject.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub name: &'static str,
    pub max: u64,
    pub window_secs: u64,
}

/// What a limiter decided, with the figures for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

/// Fixed window, started by the first request: INCR, set the expiry on the
/// first hit, report the count and the time left.
static WINDOW_SCRIPT: Script = Script::new(concat!(crate::window_hit!(), "return {hit(KEYS[1], ARGV[1])}"));

pub async fn hit(redis: &impl Redis, limit: Limit, subject: &str) -> Result<Decision, RedisError> {
    let key = keys::rate_limit(limit.name, subject);
    let reply = redis
        .eval(&WINDOW_SCRIPT, vec![Arg::Int(1), key.into(), Arg::Int(limit.window_secs as i64)])
        .await?;
    let count = reply.first().and_then(Reply::int).unwrap_or(i64::MAX) as u64;
    let ttl = reply.get(1).and_then(Reply::int).unwrap_or(limit.window_secs as i64).max(1) as u64;
    Ok(Decision {
        allowed: count <= limit.max,
        limit: limit.max,
        remaining: limit.max.saturating_sub(count),
        reset_secs: ttl,
    })
}

/// The count and time left of a fixed window, without counting.
static PEEK_SCRIPT: Script = Script::new(r#"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
return {c, redis.call('TTL', KEYS[1])}
"#);

/// Whether one more would still be within `limit`, without counting it:
/// for limits on failures, checked before the costly step that may fail.
pub async fn peek(redis: &impl Redis, limit: Limit, subject: &str) -> Result<Decision, RedisError> {
    let key = keys::rate_limit(limit.name, subject);
    let reply = redis.eval(&PEEK_SCRIPT, vec![Arg::Int(1), key.into()]).await?;
    let count = reply.first().and_then(Reply::int).unwrap_or(0).max(0) as u64;
    let ttl = reply.get(1).and_then(Reply::int).filter(|t| *t > 0).unwrap_or(limit.window_secs as i64) as u64;
    Ok(Decision { allowed: count < limit.max, limit: limit.max, remaining: limit.max.saturating_sub(count), reset_secs: ttl })
}

/// What the `/api` gate decided, in one round trip: the per-IP limit, then
/// (for a token that verified) the deny-list and the per-user limit, and,
/// when asked, a cached reply for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub ip: Decision,
    /// The token was revoked (logout).
    pub denied: bool,
    /// `None` when the per-user limit was not reached: no verified token,
    /// the IP was over its limit, or the token is revoked.
    pub user: Option<Decision>,
    /// The probed cache entry's body ([`gate`]'s `probe`), when the caller
    /// passed every limit and the entry is theirs. The script has then
    /// counted the request (status 200, a hit of the `stats` cache) in the
    /// deployment's figures: the reply must be that body, with 200.
    pub cached: Option<String>,
}

/// The per-IP window, then EXISTS on the deny-list and the per-user window,
/// each step only when the one before let the request through: exactly what
/// three separate calls did, in one script. Then, for a caller within every
/// limit, the probed entry (`KEYS[4]`, `<owner>\n<body>`) when it is theirs
/// (`ARGV[5]`); a request that gets it back is counted here (from `ARGV[7]`,
/// see `crate::metrics::count_request!`), as ingest counts its own.
static GATE_SCRIPT: Script = Script::new(concat!(
    crate::window_hit!(),
    crate::count_request!(),
    r#"
local ip, ip_ttl = hit(KEYS[1], ARGV[1])
if ip > tonumber(ARGV[2]) or KEYS[2] == '' then return {ip, ip_ttl, 0, -1, 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {ip, ip_ttl, 1, -1, 0} end
local user, user_ttl = hit(KEYS[3], ARGV[3])
if KEYS[4] ~= '' and user <= tonumber(ARGV[4]) then
  local entry = redis.call('GET', KEYS[4])
  local owner = ARGV[5] .. '\n'
  if entry and string.sub(entry, 1, #owner) == owner then
    if ARGV[7] ~= '' then
      count_request(7, '200')
      redis.call('HINCRBY', KEYS[tonumber(ARGV[6]) + 2], 'stats\thit', 1)
    end
    return {ip, ip_ttl, 0, user, user_ttl, string.sub(entry, #owner + 1)}
  end
end
return {ip, ip_ttl, 0, user, user_ttl}
"#
));

/// Runs the gate. `token` is the verified token's `(jti, user)`, if any;
/// `probe`, the key of a cached reply (`crate::logs::stats::cache`) to hand
/// back when the caller passes and it is theirs.
pub async fn gate(
    redis: &impl Redis,
    per_ip: Limit,
    ip: &str,
    token: Option<(&str, &str)>,
    per_user: Limit,
    probe: Option<&str>,
) -> Result<Gate, RedisError> {
    let (deny_key, user_key, user) = match token {
        Some((jti, user)) => (keys::denied(jti), keys::rate_limit(per_user.name, user), user),
        None => (String::new(), String::new(), ""),
    };
    let probe = probe.filter(|_| token.is_some()).unwrap_or_default();
    let mut args = vec![Arg::Int(7), keys::rate_limit(per_ip.name, ip).into(), deny_key.into(), user_key.into(), probe.into()];
    args.extend(crate::metrics::KEYS.map(Arg::from));
    args.extend([
        Arg::Int(per_ip.window_secs as i64),
        per_ip.max.into(),
        Arg::Int(per_user.window_secs as i64),
        per_user.max.into(),
        user.into(),
    ]);
    let pending = redis.pending().filter(|_| !probe.is_empty());
    match pending {
        Some(p) => args.extend(crate::metrics::script_args(&p.sample(), 5)),
        None => args.extend([Arg::from(""), "".into(), Arg::Int(0), Arg::Int(0), Arg::Int(0)]),
    }
    let reply = redis.eval(&GATE_SCRIPT, args).await?;
    let int = |i: usize| reply.get(i).and_then(Reply::int);
    let decision = |limit: Limit, count: Option<i64>, ttl: Option<i64>| {
        let count = count.unwrap_or(i64::MAX) as u64;
        Decision {
            allowed: count <= limit.max,
            limit: limit.max,
            remaining: limit.max.saturating_sub(count),
            reset_secs: ttl.unwrap_or(limit.window_secs as i64).max(1) as u64,
        }
    };
    let cached = match reply.get(5) {
        Some(Reply::Bytes(body)) => String::from_utf8(body.clone()).ok(),
        _ => None,
    };
    if let (Some(p), Some(_)) = (pending, &cached) {
        p.counted();
    }
    Ok(Gate {
        ip: decision(per_ip, int(0), int(1)),
        denied: int(2) == Some(1),
        user: int(3).filter(|c| *c >= 0).map(|c| decision(per_user, Some(c), int(4))),
        cached,
    })
}

/// Failed logins counted per email over a sliding window; reaching the
/// threshold sets a lock that lasts a full window from that failure.
static FAILURE_SCRIPT: Script = Script::new(r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then redis.call('SET', KEYS[2], '1', 'PX', window) end
return n
"#);

pub const LOCKOUT_THRESHOLD: u64 = 10;
pub const LOCKOUT_WINDOW_SECS: u64 = 15 * 60;

pub async fn record_login_failure(redis: &impl Redis, email: &str, now_ms: i64) -> Result<(), RedisError> {
    let member = format!("{now_ms}-{}", uuid::Uuid::new_v4().simple());
    redis
        .eval(
            &FAILURE_SCRIPT,
            vec![
                Arg::Int(2),
                keys::login_failures(email).into(),
                keys::login_lock(email).into(),
                Arg::Int(now_ms),
                Arg::Int((LOCKOUT_WINDOW_SECS * 1000) as i64),
                Arg::Int(LOCKOUT_THRESHOLD as i64),
                member.into(),
            ],
        )
        .await
        .map(drop)
}

/// Seconds the account stays locked, or `None`.
pub async fn login_locked_for(redis: &impl Redis, email: &str) -> Result<Option<u64>, RedisError> {
    let reply = redis.execute("PTTL", vec![keys::login_lock(email).into()]).await?;
    Ok(match reply.first().and_then(Reply::int) {
        Some(ms) if ms > 0 => Some((ms as u64).div_ceil(1000)),
        _ => None,
    })
}

pub async fn clear_login_failures(redis: &impl Redis, email: &str) -> Result<(), RedisError> {
    redis.execute("DEL", vec![keys::login_failures(email).into()]).await.map(drop)
}

/// Claims the right to start a new code of `purpose` for `email` now, and
/// when it is granted gives that email and purpose a fresh allowance of
/// [`CODE_TRIES`]. `false` when a code was started less than `interval_secs`
/// ago. The service runs this for every email, with or without an account,
/// so that wrong tries answer alike whether or not a code was sent.
static CLAIM_SCRIPT: Script = Script::new(r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"#);

pub async fn claim_code_send(redis: &impl Redis, purpose: &str, email: &str, interval_secs: i64) -> Result<bool, RedisError> {
    let reply = redis
        .eval(
            &CLAIM_SCRIPT,
            vec![
                Arg::Int(2),
                keys::code_sent(purpose, email).into(),
                keys::code_tries(purpose, email).into(),
                Arg::Int(interval_secs),
            ],
        )
        .await?;
    Ok(reply.first().and_then(Reply::int) == Some(1))
}

/// Tries at a code of one email and purpose between two new codes: the
/// contract's "after 5 wrong tries the code is dead".
pub const CODE_TRIES: u64 = 5;
/// Wrong codes of one email and purpose in [`CODE_FAILURE_WINDOW_SECS`],
/// whatever the number of new codes (ASVS 2.2.1): with a new code a minute
/// and 5 tries each, an attacker had 7,200 guesses a day; now 20. This caps
/// codes only: the password still signs in, so a stranger who spends an
/// account's tries cannot lock its owner out.
pub const CODE_FAILURES_PER_WINDOW: u64 = 20;
pub const CODE_FAILURE_WINDOW_SECS: u64 = 24 * 3600;

/// Whether a try at a code may be checked.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeTry {
    /// Counted as a failure until [`code_try_succeeded`] takes it back.
    Allowed { member: String },
    /// The code's tries are spent: a new code gives new ones.
    CodeSpent,
    /// The long window's failures are spent: none until this many seconds pass.
    WindowSpent { retry_after_secs: u64 },
}

/// Counts a try before it is checked, so concurrent tries cannot race past
/// either limit: the per-code count (reset by [`claim_code_send`]) and a
/// sliding window of failures. A refused try counts for neither.
static TRY_SCRIPT: Script = Script::new(r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[3]) then return {0, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('PEXPIRE', KEYS[2], window)
return {1, 0}
"#);

fn code_try_keys(purpose: &str, email: &str) -> (String, String) {
    (keys::code_tries(purpose, email), keys::code_failures(purpose, email))
}

/// Takes one try at a code of `purpose` for `email`. `code_ttl_secs` bounds
/// how long the per-code count outlives its last try (a code's lifetime).
pub async fn begin_code_try(
    redis: &impl Redis,
    purpose: &str,
    email: &str,
    now_ms: i64,
    code_ttl_secs: i64,
) -> Result<CodeTry, RedisError> {
    let (tries, failures) = code_try_keys(purpose, email);
    let member = format!("{now_ms}-{}", uuid::Uuid::new_v4().simple());
    let reply = redis
        .eval(
            &TRY_SCRIPT,
            vec![
                Arg::Int(2),
                tries.into(),
                failures.into(),
                Arg::Int(now_ms),
                Arg::Int((CODE_FAILURE_WINDOW_SECS * 1000) as i64),
                CODE_TRIES.into(),
                CODE_FAILURES_PER_WINDOW.into(),
                member.clone().into(),
                Arg::Int(code_ttl_secs),
            ],
        )
        .await?;
    let int = |i: usize| reply.get(i).and_then(Reply::int);
    Ok(match (int(0), int(1)) {
        (Some(1), _) => CodeTry::Allowed { member },
        (_, Some(ms)) if ms > 0 => CodeTry::WindowSpent { retry_after_secs: (ms as u64).div_ceil(1000) },
        _ => CodeTry::CodeSpent,
    })
}

/// Takes back a try whose code was right: it was no failure. The code is
/// used up either way, so its per-code count goes too.
pub async fn code_try_succeeded(redis: &impl Redis, purpose: &str, email: &str, member: &str) -> Result<(), RedisError> {
    let (tries, failures) = code_try_keys(purpose, email);
    static SUCCEEDED_SCRIPT: Script = Script::new("redis.call('DEL', KEYS[1]); redis.call('ZREM', KEYS[2], ARGV[1]); return 1");
    redis
        .eval(&SUCCEEDED_SCRIPT, vec![Arg::Int(2), tries.into(), failures.into(), member.into()])
        .await
        .map(drop)
}

/// Puts an access token on the deny-list until it would have expired anyway.
/// (Outbound Redis rather than the key-value API: Spin's key-value has no
/// expiry, so denied ids would pile up forever.)
pub async fn deny_token(redis: &impl Redis, jti: &str, ttl_secs: i64) -> Result<(), RedisError> {
    if ttl_secs <= 0 {
        return Ok(());
    }
    redis.execute("SET", vec![keys::denied(jti).into(), "1".into(), "EX".into(), Arg::Int(ttl_secs)]).await.map(drop)
}

pub async fn is_denied(redis: &impl Redis, jti: &str) -> Result<bool, RedisError> {
    let reply = redis.execute("EXISTS", vec![keys::denied(jti).into()]).await?;
    Ok(reply.first().and_then(Reply::int) == Some(1))
}
