//! Log setup: human-readable lines by default, one JSON object per line on request, on stderr
//! (journald adds its own timestamps and keeps both).

use crate::config::LogFormat;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Install the global subscriber. Our own crates log at `level`; dependencies (the AWS SDK, hyper)
/// at most at WARN, so a debug session does not fill the journal with HTTP internals.
pub fn init(format: LogFormat, level: LevelFilter) {
    let filter = Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target("lifecycle_agent", level)
        .with_target("runner_lifecycle", level);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A subscriber already installed (tests) is fine: keep it.
    let _ = result;
}
