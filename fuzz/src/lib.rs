//! The checks behind framehub's fuzz targets (`fuzz_targets/*.rs`), one
//! function per target; see `docs/fuzzing.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod checks;
pub mod config;
pub mod seeds;

/// The binary's exit code for a bad config, which its config module names
/// as `crate::EXIT_BAD_CONFIG`.
const EXIT_BAD_CONFIG: u8 = 64;
