//! `GET /health` (liveness, touches nothing) and `GET /health/ready`
//! (PostgreSQL and Redis reachable through Spin's interfaces).
//!
//! Readiness must answer within 2 s even when a dependency hangs, so every
//! probe races a deadline; it never reports driver text, only a verdict.

use http::Method;
use lvd::health::{Probe, RETRY_AFTER_SECS, Readiness};
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
}

const ROUTES: Routes<Op> = Routes(&[
    Route { path: "/health", methods: &[(Method::GET, Op::Live)] },
    Route { path: "/health/ready", methods: &[(Method::GET, Op::Ready)] },
]);

lvd_component::entry!(handle);

/// Nothing to load up front: liveness touches nothing, and readiness reads
/// where the dependencies are only when asked (a variable it cannot read is
/// then a dependency it cannot reach).
async fn handle(req: Request) -> Reply {
    serve::<(), _>(NAME, req, async |req, _| match ROUTES.find(req.method(), req.uri().path()) {
        Ok(at) => match at.op {
            Op::Live => h::json(200, &serde_json::json!({ "status": "ok" })),
            Op::Ready => ready().await,
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
