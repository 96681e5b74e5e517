//! Logs through tracing to stderr: text by default, JSON on request; `--v` mapped to levels.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `--v`: 0-1 info, 2-3 debug for bosun, 4+ trace. `RUST_LOG` overrides.
pub fn init(verbosity: u8, format: LogFormat) {
    let default = match verbosity {
        0..=1 => "info",
        2..=3 => "info,bosun=debug,bosun_cri=debug",
        _ => "debug,bosun=trace,bosun_cri=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        _ => builder.init(),
    }
}
