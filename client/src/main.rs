//! `sealpost`: the command-line client. Errors are printed as one line
//! (`sealpost: error: ...`) and mapped to the exit codes documented in `--help`.
//!
//! Every `print!`/`println!`/`eprint!`/`eprintln!` of this binary is the quiet version
//! below (declared before `mod cli` so that they shadow std's in every module): a reader
//! that closed its end (`sealpost --json list | head -c1`) makes the rest of the output
//! vanish, never a panic. The command itself runs to its end and keeps its exit code.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// stdout / stderr was closed by its reader: nothing more is written there.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// Writes to stdout (or stderr); once the reader has gone, writes nothing more. Other write
/// errors are dropped as well: there is nowhere left to report them.
pub(crate) fn write_quietly(to_stderr: bool, args: std::fmt::Arguments<'_>) {
    let gone = if to_stderr {
        &STDERR_GONE
    } else {
        &STDOUT_GONE
    };
    if gone.load(Ordering::Relaxed) {
        return;
    }
    let result = if to_stderr {
        std::io::stderr().lock().write_fmt(args)
    } else {
        let mut out = std::io::stdout().lock();
        out.write_fmt(args).and_then(|()| out.flush())
    };
    if let Err(e) = result
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        gone.store(true, Ordering::Relaxed);
    }
}

macro_rules! print {
    ($($arg:tt)*) => { $crate::write_quietly(false, format_args!($($arg)*)) };
}
macro_rules! println {
    () => { $crate::write_quietly(false, format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_quietly(false, format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! eprintln {
    () => { $crate::write_quietly(true, format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_quietly(true, format_args!("{}\n", format_args!($($arg)*))) };
}

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::args::Cli;

/// Exit code of a command cut short by Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<cli::mail::Interrupted>().is_some() {
        return EXIT_INTERRUPTED;
    }
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

/// The first paragraph of a clap error on one line, without its "error: " prefix, pointing
/// to --help.
fn usage_line(rendered: &str) -> String {
    let paragraph: Vec<&str> = rendered
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let text = paragraph.join(" ");
    let text = text.trim_start_matches("error:").trim();
    let text = if text.is_empty() {
        "invalid arguments"
    } else {
        text
    };
    format!("{text} (see sealpost --help)")
}

fn main() -> ExitCode {
    sealpost_proto::no_library_backtraces();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as clap formats them and succeed.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // `sealpost` alone: the help, as a usage error.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(1);
        }
        // Usage errors are one line too, like every other error, and exit 1.
        Err(e) => {
            eprintln!("sealpost: error: {}", usage_line(&e.render().to_string()));
            return ExitCode::from(1);
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
    fn usage_errors_are_one_line() {
        let e = Cli::try_parse_from(["sealpost", "frobnicate"]).unwrap_err();
        let line = usage_line(&e.render().to_string());
        assert_eq!(
            line,
            "unrecognized subcommand 'frobnicate' (see sealpost --help)"
        );
        let e = Cli::try_parse_from(["sealpost", "send"]).unwrap_err();
        let line = usage_line(&e.render().to_string());
        assert!(line.contains("--to"), "{line}");
        assert!(!line.contains('\n'));
    }

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
