//! The operator's routes: `GET /health` (liveness, touches nothing),
//! `GET /health/ready` (PostgreSQL and Redis reachable through Spin's
//! interfaces) and `GET /metrics` (the whole deployment's figures, read
//! from Redis and PostgreSQL: `lvd::metrics`). They share a component
//! because they share their audience and their reach.
//!
//! `/metrics` is open to a caller on loopback that came through no proxy
//! (no `X-Forwarded-For` nor `Forwarded`), and otherwise needs
//! `Authorization: Bearer <metrics_token>` (a Spin variable; unset, only
//! loopback may read). A scrape answers within 2 s whatever hangs: each
//! side races a deadline, and what it could not read is left out and
//! reported by `lvd_dependency_up`.
//!
//! Readiness must answer within 2 s even when a dependency hangs, so every
//! probe races a deadline; it never reports driver text, only a verdict.

use http::Method;
use lvd::health::{Probe, RETRY_AFTER_SECS, Readiness};
use lvd::metrics::{Format, Snapshot};
use lvd::problem::Problem;
use lvd_component::db::SpinDb;
use lvd_component::deadline;
use lvd_component::http::{self as h, Response};
use lvd_component::redis::SpinRedis;
use lvd_component::routes::{Route, Routes};
use lvd_component::serve::serve;
use lvd_component::{Reply, Request, variables};
use std::collections::BTreeMap;
use std::time::Duration;

const NAME: &str = "health";

/// Each probe's budget; both run at once, so the reply comes well within 2 s.
const PROBE_DEADLINE: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy)]
enum Op {
    Live,
    Ready,
    Metrics,
}

const ROUTES: Routes<Op> = Routes(&[
    Route { path: "/health", methods: &[(Method::GET, Op::Live)] },
    Route { path: "/health/ready", methods: &[(Method::GET, Op::Ready)] },
    Route { path: "/metrics", methods: &[(Method::GET, Op::Metrics)] },
]);

lvd_component::entry!(handle);

/// Nothing to load up front: liveness touches nothing, and readiness and
/// metrics read where the dependencies are only when asked (a variable it cannot read is
/// then a dependency it cannot reach).
async fn handle(req: Request) -> Reply {
    serve::<(), _, _>(NAME, &ROUTES, req, async |req, _| match ROUTES.find(req.method(), req.uri().path()) {
        Ok(at) => match at.op {
            Op::Live => h::json(200, &serde_json::json!({ "status": "ok" })),
            Op::Ready => ready().await,
            Op::Metrics => metrics(&req).await,
        },
        Err(p) => h::problem(&p),
    })
    .await
}

async fn ready() -> Response {
    let (postgres, (redis, queue_depth, dead_letters)) = futures::join!(probe_postgres(), probe_redis());
    let (postgres, quarantined_rows) = match postgres {
        Ok(n) => (Probe::Ok, Some(n)),
        Err(p) => (p, None),
    };
    let report = Readiness { postgres: postgres.describe(), redis: redis.describe(), queue_depth, dead_letters, quarantined_rows };
    let mut resp = h::json(report.status(), &report);
    if !report.is_ready() {
        resp.headers_mut().insert(http::header::RETRY_AFTER, RETRY_AFTER_SECS.into());
    }
    resp
}

/// PostgreSQL answers, and how many accepted rows it refused.
async fn probe_postgres() -> Result<u64, Probe> {
    let probe = async {
        let db = SpinDb::new(variables::get("database_url").await.map_err(|_| Probe::Unreachable)?);
        lvd::logs::quarantine::count(&db).await.map_err(|_| Probe::Unreachable)
    };
    deadline::within(PROBE_DEADLINE, probe).await.unwrap_or(Err(Probe::TimedOut))
}

/// Redis answers; each queue's depth and dead-letter size.
async fn probe_redis() -> (Probe, BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let probe = async {
        let redis = SpinRedis::new(variables::get("redis_url").await.map_err(|_| Probe::Unreachable)?);
        lvd::health::queue_lengths(&redis).await.map_err(|_| Probe::Unreachable)
    };
    match deadline::within(PROBE_DEADLINE, probe).await.unwrap_or(Err(Probe::TimedOut)) {
        Ok((depths, dead)) => (Probe::Ok, depths, dead),
        Err(p) => (p, BTreeMap::new(), BTreeMap::new()),
    }
}

/// The deployment's figures, for a caller allowed to read them.
async fn metrics(req: &Request) -> Response {
    if !may_read_metrics(req).await {
        let mut resp = h::problem(&Problem::new(401, "invalid_token", "Metrics need the metrics token, or a request from loopback."));
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return resp;
    }
    let mut snap = Snapshot::default();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let redis = async {
        let mut part = Snapshot::default();
        let Ok(url) = variables::get("redis_url").await else { return part };
        let redis = SpinRedis::new(url);
        let read = lvd::metrics::read_redis(&redis, &mut part, now_ms);
        if deadline::within(PROBE_DEADLINE, read).await.is_none_or(|r| r.is_err()) {
            part = Snapshot::default();
        }
        part
    };
    let postgres = async {
        let mut part = Snapshot::default();
        let Ok(url) = variables::get("database_url").await else { return part };
        let db = SpinDb::new(url);
        let read = lvd::metrics::read_postgres(&db, &mut part);
        if deadline::within(PROBE_DEADLINE, read).await.is_none_or(|r| r.is_err()) {
            part = Snapshot::default();
        }
        part
    };
    let (from_redis, from_postgres) = futures::join!(redis, postgres);
    snap.merge(from_redis);
    snap.merge(from_postgres);
    let format = Format::from_accept(req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok()));
    let mut resp = Response::new(lvd::metrics::render(&snap, format));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(format.content_type()));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// A caller on loopback that no proxy forwarded, or one with the token.
async fn may_read_metrics(req: &Request) -> bool {
    let proxied = req.headers().contains_key("x-forwarded-for") || req.headers().contains_key(http::header::FORWARDED);
    let peer = h::spin_header(req, "spin-client-addr").and_then(|v| v.parse::<std::net::SocketAddr>().ok());
    if !proxied && peer.is_some_and(|p| p.ip().is_loopback()) {
        return true;
    }
    let token = variables::get("metrics_token").await.unwrap_or_default();
    lvd::metrics::token_allows(h::bearer(req).as_deref(), &token)
}
