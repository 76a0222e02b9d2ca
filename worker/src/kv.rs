//! `lvd::kv::Redis` over the `redis` crate, so the worker can call the
//! domain code that puts entries on queues (`lvd::queues`, `lvd::jobs`)
//! exactly as components do.

use lvd::kv::{Arg, Redis, RedisError, Reply};
use redis::aio::ConnectionManager;

#[derive(Clone)]
pub struct WorkerRedis(pub ConnectionManager);

impl Redis for WorkerRedis {
    async fn execute(&self, command: &str, args: Vec<Arg>) -> Result<Vec<Reply>, RedisError> {
        let mut cmd = redis::cmd(command);
        for a in args {
            match a {
                Arg::Int(n) => cmd.arg(n),
                Arg::Bytes(b) => cmd.arg(b),
            };
        }
        let value: redis::Value = cmd.query_async(&mut self.0.clone()).await.map_err(|e| RedisError(Box::new(e)))?;
        let mut out = Vec::new();
        flatten(value, &mut out);
        Ok(out)
    }
}

/// Flattens a reply as Spin's `execute` does (see `lvd::kv`).
fn flatten(v: redis::Value, out: &mut Vec<Reply>) {
    match v {
        redis::Value::Nil => out.push(Reply::Nil),
        redis::Value::Int(n) => out.push(Reply::Int(n)),
        redis::Value::BulkString(b) => out.push(Reply::Bytes(b)),
        redis::Value::SimpleString(s) => out.push(Reply::Status(s)),
        redis::Value::Okay => out.push(Reply::Status("OK".into())),
        redis::Value::Array(items) | redis::Value::Set(items) => items.into_iter().for_each(|i| flatten(i, out)),
        other => out.push(Reply::Bytes(format!("{other:?}").into_bytes())),
    }
}
