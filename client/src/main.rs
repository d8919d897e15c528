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

/// The error and its causes on one line; a cause whose text the line already holds (our
/// messages include their I/O cause) is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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
            let line = one_line(&err);
            eprintln!("sealpost: error: {line}");
            ExitCode::from(exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_is_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone\nreally");
        let e = sealpost_client::Error::ReadInput {
            path: "/x".into(),
            source: io,
        };
        let err = anyhow::Error::new(e).context("while sending");
        assert_eq!(one_line(&err), "while sending: cannot read /x: gone really");
        let p = sealpost_client::Error::from(sealpost_proto::Error::BadSignature);
        let err = anyhow::Error::new(p);
        assert_eq!(one_line(&err), "letter signature does not verify");
        assert_eq!(exit_code(&err), 3);
    }
}
