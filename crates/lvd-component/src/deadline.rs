//! Every call a component makes to its host's PostgreSQL, Redis and
//! key-value interfaces runs against a deadline.
//!
//! Spin 4.0.2 gives none of its clients a timeout: a PostgreSQL or Redis
//! that accepts connections but does not answer holds a request for ever,
//! and its key-value store (a redis `ConnectionManager` reconnecting) holds
//! every call for as long as Redis is down — measured: a `get` with Redis
//! killed was still waiting after 150 s, and answered 4 s after Redis came
//! back. The contract wants a 503 instead, so the component gives up first:
//! the call's future is dropped (cancelling the host call) and the adapter
//! reports the backend unavailable.
//!
//! Only the wasi:http 0.3 build can do this. In the 0.2 build every host
//! call blocks the instance until it answers, so the deadline is checked
//! only between calls (a body read, a sleep): a backend that hangs holds
//! that request for as long as the host's own client waits.

use futures::future::{Either, select};
use std::pin::pin;
use std::time::Duration;

/// A key-value call (a cache read or write): normally well under 10 ms.
pub const KEY_VALUE: Duration = Duration::from_secs(1);
/// An outbound Redis call, opening the connection included. Longer than the
/// key-value one: an ingest script that outlived a shorter wait may still
/// have committed, and a client retrying then leans on `message_id` dedup.
pub const REDIS: Duration = Duration::from_secs(5);
/// A call to the worker's password hasher (`hasher`): a hash takes ~20 ms
/// there, so this only trips when the worker hangs or is swamped; the
/// component then hashes in itself.
pub const HASHER: Duration = Duration::from_secs(3);
/// A PostgreSQL statement, connecting and reading every row included.
pub const POSTGRES: Duration = Duration::from_secs(10);

/// `fut`'s output, or `None` once `limit` has passed.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    match select(pin!(fut), pin!(crate::host::sleep(limit))).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}
