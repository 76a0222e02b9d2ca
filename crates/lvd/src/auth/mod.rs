//! Accounts: registration with emailed one-time codes, sign-in, refresh-token
//! rotation with reuse detection, logout, password reset.

pub mod cookie;
pub mod email;
pub mod hasher;
pub mod otp;
pub mod password;
pub mod service;
pub mod store;
pub mod tokens;
