//! `sealpost`: the command-line client. Errors are printed as one line
//! (`sealpost: error: ...`) and mapped to the exit codes documented in `--help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::args::Cli;

fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<sealpost_client::Error>())
        .map(|e| e.exit_code())
        .unwrap_or(1)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; every usage error exits 1.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sealpost: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let line: String = format!("{err:#}")
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            eprintln!("sealpost: error: {line}");
            ExitCode::from(exit_code(&err))
        }
    }
}
