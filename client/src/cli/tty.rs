//! Questions to the user at the terminal: a passphrase (not echoed) or a yes/no. Asked on
//! the controlling terminal (`/dev/tty`), like ssh and gpg do, so that a letter body piped
//! into `sealpost send` does not stop the question; and only when stderr is a terminal too,
//! so that a script never waits for an answer nobody will give.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;

/// Longest answer read.
const MAX_ANSWER_BYTES: u64 = 4096;

/// Whether there is someone to ask: stderr is a terminal and so is the process's
/// controlling terminal.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && open().is_ok()
}

fn open() -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
}

/// Reads one line from the terminal after `prompt` (without its line break).
fn read_line(tty: &File, prompt: &str) -> std::io::Result<String> {
    let mut w = tty;
    w.write_all(prompt.as_bytes())?;
    w.flush()?;
    let mut line = String::new();
    BufReader::new(tty.take(MAX_ANSWER_BYTES))
        .read_line(&mut line)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                std::io::Error::new(e.kind(), "the answer is not UTF-8")
            } else {
                e
            }
        })?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "end of input at the prompt",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks for a secret: the terminal does not echo it.
pub fn ask_secret(prompt: &str) -> std::io::Result<String> {
    let tty = open()?;
    let fd = tty.as_raw_fd();
    // SAFETY: tcgetattr/tcsetattr on a file descriptor we own, with a zeroed struct that
    // tcgetattr fills in.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        t
    };
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let answer = read_line(&tty, prompt);
    // SAFETY: as above; restores what we found, whatever the read did.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    answer
}

/// Asks a yes/no question; only "y" or "yes" is a yes.
pub fn ask_yes(prompt: &str) -> std::io::Result<bool> {
    let tty = open()?;
    let answer = read_line(&tty, prompt)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
