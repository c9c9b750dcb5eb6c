use std::process::ExitCode;

use clap::Parser;
use pivotwatch::cli::{self, Cli};
use pivotwatch::server::RawSettings;
use pivotwatch::telemetry::{self, OtlpSettings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The file is read again, and its mistakes reported, by the command itself.
    let raw = RawSettings::load(cli.config_file()).unwrap_or_default();
    let otlp = match OtlpSettings::from_settings(&|setting: &str| raw.get(setting)) {
        Ok(otlp) => otlp,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // Flushes the spans still queued when it goes out of scope, after the command.
    let _telemetry = match telemetry::init(&cli.log, otlp.as_ref()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };

    match cli::run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
