//! A reliable queue on a Redis stream with a consumer group.
//!
//! An entry is delivered to one worker and stays pending until that worker
//! acknowledges it. A worker that dies mid-job leaves its entries pending;
//! after `reclaim_idle` another worker claims them (XAUTOCLAIM), so nothing
//! accepted is lost. Failures wait out a backoff in a sorted set and come back;
//! after too many, or when they can never succeed, they are parked in a
//! dead-letter stream. Each move between structures is one Lua script, so a
//! crash between steps cannot drop or duplicate an entry.

use anyhow::{Context, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};
use std::time::Duration;

use lvd::keys::{FIELD, GROUP, dead_letter, delayed};

/// Entries a dead-letter stream keeps, about (trimmed as it grows).
pub const DEAD_LETTER_CAP: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// The job's JSON as the producer wrote it.
    pub job: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The request that made the entry, when it came from one: the worker's
    /// log lines about the entry name it.
    pub request_id: Option<String>,
}

#[derive(Clone)]
pub struct Queue {
    pub key: String,
    consumer: String,
    /// For everything but the blocking read. Multiplexed, so shared freely.
    conn: ConnectionManager,
    /// Only for XREADGROUP BLOCK, which would stall a shared connection.
    reader: ConnectionManager,
}

impl Queue {
    pub async fn open(client: &redis::Client, key: &str, consumer: &str) -> Result<Self> {
        let quick = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(10));
        let conn = client.get_connection_manager_with_config(quick).await.context("failed to connect to Redis")?;
        let slow = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(60));
        let reader = client.get_connection_manager_with_config(slow).await.context("failed to connect to Redis")?;
        let q = Self { key: key.to_owned(), consumer: consumer.to_owned(), conn, reader };
        q.ensure_group().await?;
        Ok(q)
    }

    /// Creates the consumer group (from the stream's start, so entries added
    /// before any worker existed are delivered too).
    pub async fn ensure_group(&self) -> Result<()> {
        let r: redis::RedisResult<()> = self.conn.clone().xgroup_create_mkstream(&self.key, GROUP, "0").await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e).context("failed to create the consumer group"),
        }
    }

    /// New entries for this consumer, waiting up to `block` for some.
    pub async fn read(&self, count: usize, block: Duration) -> Result<Vec<Entry>> {
        let opts = StreamReadOptions::default().group(GROUP, &self.consumer).count(count).block(block.as_millis() as usize);
        let reply: Option<StreamReadReply> =
            self.reader.clone().xread_options(&[&self.key], &[">"], &opts).await.context("XREADGROUP failed")?;
        Ok(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).map(entry).collect())
    }

    /// Entries another consumer took but has not acknowledged for `min_idle`.
    pub async fn reclaim(&self, min_idle: Duration, count: usize) -> Result<Vec<Entry>> {
        let reply: StreamAutoClaimReply = self
            .conn
            .clone()
            .xautoclaim_options(&self.key, GROUP, &self.consumer, min_idle.as_millis() as u64, "0-0", StreamAutoClaimOptions::default().count(count))
            .await
            .context("XAUTOCLAIM failed")?;
        Ok(reply.claimed.into_iter().map(entry).collect())
    }

    /// Claims the entry for this consumer again, resetting its idle time: a
    /// long job's heartbeat, so no other worker takes it for abandoned.
    pub async fn touch(&self, e: &Entry) -> Result<()> {
        redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(&e.id)
            .arg("JUSTID")
            .query_async::<redis::Value>(&mut self.conn.clone())
            .await
            .context("XCLAIM failed")?;
        Ok(())
    }

    pub async fn ack(&self, e: &Entry) -> Result<()> {
        let script = Script::new("redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2]); return 1");
        script.key(&self.key).arg(GROUP).arg(&e.id).invoke_async::<i64>(&mut self.conn.clone()).await.context("ack failed")?;
        Ok(())
    }

    /// Acknowledges and removes many entries in one round trip.
    pub async fn ack_all(&self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let script = Script::new(
            "for i = 2, #ARGV do redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]); redis.call('XDEL', KEYS[1], ARGV[i]) end return #ARGV - 1",
        );
        let mut invocation = script.key(&self.key);
        invocation.arg(GROUP);
        for e in entries {
            invocation.arg(&e.id);
        }
        invocation.invoke_async::<i64>(&mut self.conn.clone()).await.context("ack failed")?;
        Ok(())
    }

    /// Takes the entry off the stream and schedules it again at `due_ms`.
    pub async fn retry_at(&self, e: &Entry, due_ms: i64) -> Result<()> {
        let payload = serde_json::json!({ "job": e.job, "attempts": e.attempts + 1, "request_id": e.request_id.as_deref().unwrap_or("") }).to_string();
        let script = Script::new(
            "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4]); redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2]); return 1",
        );
        script
            .key(&self.key)
            .key(delayed(&self.key))
            .arg(GROUP)
            .arg(&e.id)
            .arg(due_ms)
            .arg(payload)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .context("scheduling a retry failed")?;
        Ok(())
    }

    /// Parks the entry in the dead-letter stream with the reason. The stream
    /// keeps about the newest [`DEAD_LETTER_CAP`] entries (`MAXLEN ~`), so a
    /// flood of poison cannot fill Redis; its length is in `/health/ready`.
    pub async fn dead_letter(&self, e: &Entry, reason: &str) -> Result<()> {
        let script = Script::new(
            "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'job', ARGV[3], 'attempts', ARGV[4], 'error', ARGV[5], 'request_id', ARGV[7]); redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); redis.call('XDEL', KEYS[1], ARGV[2]); return 1",
        );
        script
            .key(&self.key)
            .key(dead_letter(&self.key))
            .arg(GROUP)
            .arg(&e.id)
            .arg(&e.job)
            .arg(e.attempts + 1)
            .arg(reason)
            .arg(DEAD_LETTER_CAP)
            .arg(e.request_id.as_deref().unwrap_or(""))
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .context("dead-lettering failed")?;
        Ok(())
    }

    /// Moves retries whose backoff has passed back onto the stream.
    pub async fn promote_due(&self, now_ms: i64) -> Result<usize> {
        let script = Script::new(
            r#"local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100)
               for _, p in ipairs(due) do
                 local d = cjson.decode(p)
                 if d.request_id and d.request_id ~= '' then
                   redis.call('XADD', KEYS[1], '*', ARGV[2], d.job, 'attempts', d.attempts, ARGV[3], d.request_id)
                 else
                   redis.call('XADD', KEYS[1], '*', ARGV[2], d.job, 'attempts', d.attempts)
                 end
                 redis.call('ZREM', KEYS[2], p)
               end
               return #due"#,
        );
        let n: i64 = script
            .key(&self.key)
            .key(delayed(&self.key))
            .arg(now_ms)
            .arg(FIELD)
            .arg(lvd::keys::REQUEST_ID_FIELD)
            .invoke_async(&mut self.conn.clone())
            .await
            .context("promoting retries failed")?;
        Ok(n as usize)
    }

    /// Entries waiting: in the stream (delivered or not) plus in backoff.
    pub async fn depth(&self) -> Result<u64> {
        let mut c = self.conn.clone();
        let stream: u64 = c.xlen(&self.key).await?;
        let waiting: u64 = c.zcard(delayed(&self.key)).await?;
        Ok(stream + waiting)
    }

    pub async fn dead_letters(&self) -> Result<u64> {
        Ok(self.conn.clone().xlen(dead_letter(&self.key)).await?)
    }
}

fn entry(id: StreamId) -> Entry {
    let text = |k: &str| id.get::<String>(k);
    Entry {
        job: text(FIELD).unwrap_or_default(),
        attempts: text("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
        request_id: text(lvd::keys::REQUEST_ID_FIELD),
        id: id.id,
    }
}
