//! The native worker: everything that runs outside the request path. It owns
//! the database schema (`migrate`) and drains the Redis queues that components
//! fill (`run`): email, and the ingest stream into `log_entries`; and it keeps
//! `log_entries`' daily partitions ahead of time.

pub mod delivery;
pub mod drain;
pub mod partitions;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod queue;
pub mod server;
