//! The one place the two builds of a component differ: how it is entered,
//! how it reads its request and writes its reply, and how it calls its
//! host's variables, key-value store, Redis and PostgreSQL. Everything else
//! (the adapters in `db`, `kv`, `redis`, the components, `lvd`) is written
//! once against what this module exports.
//!
//! - `p3` (the default): wasi:http 0.3 (`handler`) with spin-sdk 6 —
//!   `spin:variables|key-value|redis@3.0.0`, `spin:postgres@4.2.0`. Spin
//!   4.0 and later take it. Host calls are asynchronous, so a component
//!   serves many requests at once, and Spin reuses an instance for up to
//!   128 of them.
//! - `p2`: wasi:http 0.2 (`incoming-handler`) with spin-sdk 5 —
//!   `fermyon:spin/variables|key-value|redis@2.0.0`, `spin:postgres@4.0.0`.
//!   Spin 3.x, SpinKube's containerd-shim-spin (it embeds Spin 3.6.3) and
//!   Spin 4 take it. Every instance serves one request and is dropped, and
//!   every host call blocks the instance until it answers: a deadline
//!   cannot cut one short (see `deadline`).
//!
//! A component picks one with its `p3`/`p2` feature; the entry point is
//! [`entry!`](crate::entry).

#[cfg(all(feature = "p3", feature = "p2"))]
compile_error!("lvd-component: choose one ABI, `p3` or `p2`, not both");
#[cfg(not(any(feature = "p3", feature = "p2")))]
compile_error!("lvd-component: choose an ABI, `p3` (the default) or `p2`");

#[cfg(feature = "p2")]
mod p2;
#[cfg(feature = "p3")]
mod p3;

#[cfg(feature = "p2")]
pub use p2::*;
#[cfg(feature = "p3")]
pub use p3::*;

/// The client went away: a streamed body can take no more.
#[derive(Debug)]
pub struct Closed;
