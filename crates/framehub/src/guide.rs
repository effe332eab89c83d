//! The library guide, `docs/library.md`, included here so that its examples
//! are compiled (and the self-contained one run) by
//! `cargo test -p framehub --doc`; the README's and
//! `docs/stage-and-commands.md`'s and `docs/tls.md`'s Rust examples are
//! compiled the same way.
//!
#![doc = include_str!("../../../docs/library.md")]

/// `README.md`, for its Rust examples (built only by doctest runs).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;

/// `docs/stage-and-commands.md`, for its Rust examples (built only by
/// doctest runs).
#[cfg(doctest)]
#[doc = include_str!("../../../docs/stage-and-commands.md")]
pub struct StageAndCommandsExamples;

/// `docs/tls.md`, for its Rust example (built only by doctest runs).
#[cfg(doctest)]
#[doc = include_str!("../../../docs/tls.md")]
pub struct TlsExamples;
