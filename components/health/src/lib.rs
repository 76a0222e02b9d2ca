//! `GET /health` (liveness, touches nothing) and `GET /health/ready`
//! (PostgreSQL and Redis reachable through Spin's interfaces).
//!
//! Readiness must answer within 2 s even when a dependency hangs, so every
//! probe races a deadline; it never reports driver text, only a verdict.

use futures::future::{Either, select};
use lvd::health::{Probe, RETRY_AFTER_SECS, Readiness};
use lvd::problem::{self, Problem};
use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};
use spin_sdk::{http_service, pg, redis, variables};
use std::collections::BTreeMap;
use std::pin::pin;
use std::time::Duration;

/// Each probe's budget; both run at once, so the reply comes well within 2 s.
const PROBE_DEADLINE: Duration = Duration::from_millis(1500);

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path();
    if req.method() != Method::GET {
        return problem_response(&Problem::method_not_allowed("GET"));
    }
    match path {
        "/health" => json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
        "/health/ready" => ready().await,
        _ => problem_response(&Problem::not_found()),
    }
}

async fn ready() -> Response {
    let (postgres, (redis, queue_depth, dead_letters)) =
        futures::join!(within_deadline(probe_postgres()), probe_redis_and_queues());
    let (postgres, quarantined_rows) = match postgres {
        Ok(Ok(n)) => (Probe::Ok, Some(n)),
        Ok(Err(())) => (Probe::Unreachable, None),
        Err(p) => (p, None),
    };
    let report = Readiness { postgres: postgres.describe(), redis: redis.describe(), queue_depth, dead_letters, quarantined_rows };
    let body = serde_json::to_vec(&report).expect("readiness serializes");
    let mut resp = json(StatusCode::from_u16(report.status()).unwrap(), body);
    if !report.is_ready() {
        resp.headers_mut().insert("retry-after", RETRY_AFTER_SECS.into());
    }
    resp
}

/// PostgreSQL answers, and how many accepted rows it refused.
async fn probe_postgres() -> Result<u64, ()> {
    let url = variables::get("database_url").await.map_err(|_| ())?;
    let conn = pg::Connection::open(url).await.map_err(|_| ())?;
    let rows = conn.query("SELECT count(*) FROM quarantined_rows", &[]).await.map_err(|_| ())?;
    let rows = rows.collect().await.map_err(|_| ())?;
    match rows.first().map(|r| &r[0]) {
        Some(pg::DbValue::Int64(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
        _ => Err(()),
    }
}

/// Redis answers; each queue's depth and dead-letter size.
async fn probe_redis_and_queues() -> (Probe, BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let probe = async {
        let url = variables::get("redis_url").await.map_err(|_| ())?;
        let conn = redis::Connection::open(url).await.map_err(|_| ())?;
        let xlen = async |key: &str| {
            let reply = conn.execute("XLEN", vec![redis::RedisParameter::Binary(key.as_bytes().to_vec())]).await.map_err(|_| ())?;
            Ok::<_, ()>(match reply.first() {
                Some(redis::RedisResult::Int64(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            })
        };
        let (mut depths, mut dead) = (BTreeMap::new(), BTreeMap::new());
        for (name, key) in lvd::queues::ALL {
            depths.insert((*name).to_owned(), xlen(key).await?);
            dead.insert((*name).to_owned(), xlen(&lvd::queues::dead_letter(key)).await?);
        }
        Ok::<_, ()>((depths, dead))
    };
    match within_deadline(probe).await {
        Ok(Ok((depths, dead))) => (Probe::Ok, depths, dead),
        Ok(Err(())) => (Probe::Unreachable, BTreeMap::new(), BTreeMap::new()),
        Err(p) => (p, BTreeMap::new(), BTreeMap::new()),
    }
}

/// Races `fut` against [`PROBE_DEADLINE`]: its output, or `TimedOut`.
async fn within_deadline<T>(fut: impl Future<Output = T>) -> Result<T, Probe> {
    let sleep = pin!(spin_sdk::time::sleep(PROBE_DEADLINE));
    match select(pin!(fut), sleep).await {
        Either::Left((out, _)) => Ok(out),
        Either::Right(_) => Err(Probe::TimedOut),
    }
}

type Response = http::Response<String>;

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let body = String::from_utf8(body).expect("serde_json writes UTF-8");
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp
}

fn problem_response(p: &Problem) -> Response {
    let mut resp = json(StatusCode::from_u16(p.status).unwrap(), p.to_json());
    resp.headers_mut().insert("content-type", problem::CONTENT_TYPE.parse().unwrap());
    if let Some(allow) = p.allow {
        resp.headers_mut().insert("allow", allow.parse().unwrap());
    }
    resp
}
