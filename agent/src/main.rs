//! The bosun binary: load the config, set up logging, run the agent.

use std::process::ExitCode;

fn main() -> ExitCode {
    bosun::memory::single_arena();
    let cfg = match bosun::config::load(std::env::args_os()) {
        Ok(c) => c,
        // --help, --version of clap, and flag errors with their usage text.
        Err(bosun::config::ConfigError::Flags(e)) => e.exit(),
        Err(e) => {
            eprintln!("bosun: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.show_version {
        println!("{}", bosun::version::version_string());
        return ExitCode::SUCCESS;
    }
    bosun::logging::init(cfg.logging.verbosity, cfg.logging.format);
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bosun: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bosun::app::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("bosun: {e:#}");
            ExitCode::FAILURE
        }
    }
}
