//! Logging set-up shared by the examples: to stderr (stdout carries their
//! parseable output), filtered by `RUST_LOG`, warnings by default.

/// Installs the examples' log subscriber.
pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}
