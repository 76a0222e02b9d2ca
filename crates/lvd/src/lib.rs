//! Domain logic of the Live Validation Dashboard, shared by every Spin component
//! and by the native worker.
//!
//! This crate must stay free of host-specific I/O: it compiles both for
//! `wasm32-wasip2` (inside components) and natively (worker, tests). Components
//! and the worker bring their own database and Redis clients and call in here.

pub mod apps;
pub mod auth;
pub mod cache;
pub mod db;
pub mod events;
pub mod health;
pub mod input;
pub mod kv;
pub mod limits;
pub mod problem;
pub mod queues;
pub mod rules;
