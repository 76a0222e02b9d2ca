//! Shared by every component and nothing else: the adapters that let the
//! domain library reach PostgreSQL, Redis and the key-value store through
//! Spin's interfaces (`db`, `redis`, `kv`), the HTTP plumbing of the
//! contract (problem replies, JSON bodies, client address, rate-limit
//! headers), and the kit every component is built from: `serve` (load the
//! configuration once, answer errors, log every 5xx with its cause),
//! `routes` (404 and 405 with `Allow`) and `api` (the `/api` gate). Holds no
//! domain logic. Built for wasi:http 0.3 (`p3`, the default) or 0.2 (`p2`):
//! [`host`] is the one place the two differ.

pub mod api;
pub mod config;
pub mod db;
pub mod deadline;
pub mod hasher;
pub mod host;
pub mod http;
pub mod kv;
pub mod log;
pub mod redis;
pub mod routes;
pub mod scope;
pub mod serve;

pub use host::{Request, variables};
pub use serve::Reply;
