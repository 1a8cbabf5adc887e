//! rndpo-core: placeholder, filled in by the mining-core work.
#![forbid(unsafe_code)]

/// Crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
