//! Names of the Redis streams that carry background work from the components
//! to the worker. Both sides read these names from here so they cannot drift.

/// Every queue with its Redis key: `(name shown in /health/ready, stream key)`.
pub const ALL: &[(&str, &str)] = &[("email", "lvd:queue:email"), ("jobs", "lvd:queue:jobs")];
