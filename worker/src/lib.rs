//! The native worker: everything that runs outside the request path. It owns
//! the database schema (`migrate`) and works the Redis queues that
//! components fill (`run`): email (`delivery`), the ingest stream into
//! `log_entries` (`ingest`), and reports and exports (`jobs`), the queues
//! worked by `runner`; and it keeps `log_entries`' daily partitions ahead of
//! time. It evaluates alerts and sends their notifications (`alerts`, with
//! webhooks through the guarded `webhook` sender). Beside the queues it
//! hashes passwords for the auth component at native speed (`hasher`), and
//! brings the old application's SQLite database over (`import`). Its
//! SQL and Redis keys come from `lvd`.

pub mod alerts;
pub mod delivery;
pub mod hasher;
pub mod import;
pub mod ingest;
pub mod jobs;
pub mod kv;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod partitions;
pub mod queue;
pub mod runner;
pub mod server;
pub mod webhook;
