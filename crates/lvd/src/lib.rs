//! Domain logic of the Live Validation Dashboard, shared by every Spin
//! component and by the native worker.
//!
//! This crate must stay free of host-specific I/O: it compiles both for
//! `wasm32-wasip2` (inside components) and natively (worker, tests). Every
//! SQL statement and every Redis key of the product lives here; components
//! and the worker bring their own clients through the [`db::Db`],
//! [`kv::Redis`] and [`cache::KeyValue`] seams and call in. The `native`
//! feature adds [`db::postgres::PgDb`], the tokio-postgres adapter the worker
//! and tests use.

pub mod alerts;
pub mod apps;
pub mod auth;
pub mod cache;
pub mod cause;
pub mod db;
pub mod health;
pub mod input;
pub mod jobs;
pub mod keys;
pub mod kv;
#[cfg(feature = "native")]
pub mod legacy;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod problem;
pub mod queues;
pub mod request_id;
pub mod rules;
pub mod secret;
pub mod webhook;
