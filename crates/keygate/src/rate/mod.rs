//! Rate limits: per-key policies, and the limiter that enforces them.

mod policy;

pub use policy::{InvalidRatePolicy, MAX_PERIOD, MAX_REQUESTS, RateLimit, RatePolicy};
