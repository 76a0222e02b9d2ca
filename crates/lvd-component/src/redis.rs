//! `lvd::kv::Redis` over Spin's outbound Redis. Opens on first use.

use lvd::kv::{Arg, Redis, RedisError, Reply};
use spin_sdk::redis::{self, RedisParameter, RedisResult};

pub struct SpinRedis {
    url: String,
    conn: std::cell::OnceCell<redis::Connection>,
}

impl SpinRedis {
    pub fn new(url: String) -> Self {
        Self { url, conn: std::cell::OnceCell::new() }
    }

    async fn conn(&self) -> Result<&redis::Connection, RedisError> {
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let c = redis::Connection::open(&self.url).await.map_err(|e| RedisError(format!("{e:?}")))?;
        Ok(self.conn.get_or_init(|| c))
    }
}

impl Redis for SpinRedis {
    async fn execute(&self, command: &str, args: Vec<Arg>) -> Result<Vec<Reply>, RedisError> {
        let conn = self.conn().await?;
        let args = args
            .into_iter()
            .map(|a| match a {
                Arg::Int(n) => RedisParameter::Int64(n),
                Arg::Bytes(b) => RedisParameter::Binary(b),
            })
            .collect::<Vec<_>>();
        let replies = conn.execute(command, args).await.map_err(|e| RedisError(format!("{e:?}")))?;
        Ok(replies
            .into_iter()
            .map(|r| match r {
                RedisResult::Nil => Reply::Nil,
                RedisResult::Status(s) => Reply::Status(s),
                RedisResult::Int64(n) => Reply::Int(n),
                RedisResult::Binary(b) => Reply::Bytes(b),
            })
            .collect())
    }
}
