//! One module per Spin interface this runtime hosts, like Spin's factors:
//! each holds its host implementation, its backend client and its allow-list
//! check. `crate::engine::InstanceState`, the store data of one instance
//! (which may serve many requests, as Spin reuses wasi:http 0.3 instances),
//! bundles them.

mod channel_stream;
pub mod key_value;
pub mod pg_types;
pub mod postgres;
pub mod redis;
mod table;
pub mod variables;
