//! Shared by every component and nothing else: the adapters that let the
//! domain library reach PostgreSQL and Redis through Spin's interfaces, and
//! the HTTP plumbing of the contract (problem replies, JSON bodies, limits,
//! client address, rate-limit headers). Holds no domain logic.

pub mod api;
pub mod config;
pub mod db;
pub mod deadline;
pub mod http;
pub mod kv;
pub mod redis;
