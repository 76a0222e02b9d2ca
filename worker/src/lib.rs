//! The native worker: everything that runs outside the request path. It owns
//! the database schema (`migrate`) and drains the Redis queues that components
//! fill (`run`): today the email queue.

pub mod delivery;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod queue;
pub mod server;
