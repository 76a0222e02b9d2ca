//! The native worker: everything that runs outside the request path. It owns
//! the database schema (`migrate`) and works the Redis queues that
//! components fill (`run`): email (`delivery`), and the ingest stream into
//! `log_entries` (`ingest`); and it keeps `log_entries`' daily partitions
//! ahead of time. Its SQL and Redis keys come from `lvd`.

pub mod delivery;
pub mod ingest;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod partitions;
pub mod queue;
pub mod server;
