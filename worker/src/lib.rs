//! The native worker: everything that runs outside the request path.
//!
//! For now it owns the database schema (`migrate`); later it drains the Redis
//! queues that components fill (email, reports, exports).

pub mod migrate;
