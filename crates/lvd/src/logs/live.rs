//! The live stream's parts: the per-app tail of invalid events that ingest
//! appends to (`keys::invalid_tail`), read by position, and Server-Sent
//! Events framing. Positions are the Redis stream ids, so a client's
//! `Last-Event-ID` says exactly where to resume.

use uuid::Uuid;

use crate::keys;
use crate::kv::{Redis, RedisError, Reply};

/// Whether `raw` is a Redis stream id (`<ms>-<seq>`), the only ids the
/// stream hands out; anything else in `Last-Event-ID` is ignored.
pub fn is_position(raw: &str) -> bool {
    raw.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty() && !seq.is_empty() && ms.len() <= 20 && seq.len() <= 20 && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

/// The position of the newest invalid event (`0-0` when there is none):
/// where a new client starts.
pub async fn latest(redis: &impl Redis, app: Uuid) -> Result<String, RedisError> {
    let reply = redis.execute("XREVRANGE", vec![keys::invalid_tail(app).into(), "+".into(), "-".into(), "COUNT".into(), 1i64.into()]).await?;
    Ok(reply.first().and_then(Reply::text).unwrap_or_else(|| "0-0".to_owned()))
}

/// Invalid events after `position`, oldest first, at most `count`: pairs of
/// position and the event's JSON (as `GET /api/logs` shows it).
pub async fn invalid_after(redis: &impl Redis, app: Uuid, position: &str, count: i64) -> Result<Vec<(String, String)>, RedisError> {
    let reply = redis
        .execute("XRANGE", vec![keys::invalid_tail(app).into(), format!("({position}").into(), "+".into(), "COUNT".into(), count.into()])
        .await?;
    // Spin flattens the nested reply: each entry is (id, field, value).
    Ok(reply.chunks_exact(3).filter_map(|e| Some((e[0].text()?, e[2].text()?))).collect())
}


/// One Server-Sent Event. `data` is JSON, so it holds no raw newline.
pub fn sse(event: &str, id: &str, data: &str) -> String {
    format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stream_ids_are_positions() {
        assert!(is_position("1795786427887-0"));
        assert!(!is_position("1795786427887"));
        assert!(!is_position("abc-1"));
        assert!(!is_position("1-2\nevent: x"));
    }

    #[test]
    fn events_are_framed_as_the_spec_says() {
        assert_eq!(sse("stats", "1-0", "{}"), "id: 1-0\nevent: stats\ndata: {}\n\n");
    }
}
