//! What the CLI reads besides arguments: the passphrase (environment or file, never the
//! command line; asked at the terminal when neither is given), the letter body (stdin, or
//! $EDITOR on a terminal), key files.

use std::io::{IsTerminal, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sealpost_client::Error;
use sealpost_proto::limits::MAX_LETTER_BYTES;

/// Largest passphrase file read.
const MAX_PASSPHRASE_BYTES: u64 = 4096;
/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

/// `--passphrase-file` (first line) or `SEALPOST_PASSPHRASE`.
pub fn passphrase(file: Option<&Path>) -> Result<Option<String>, Error> {
    secret(file, "SEALPOST_PASSPHRASE")
}

/// The first line of `file`, else the environment variable `var`.
fn secret(file: Option<&Path>, var: &'static str) -> Result<Option<String>, Error> {
    if let Some(path) = file {
        let bytes = read_bounded(path, MAX_PASSPHRASE_BYTES)?;
        let text =
            String::from_utf8(bytes).map_err(|_| Error::input("passphrase file", "not UTF-8"))?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(Error::input(
                "passphrase file",
                format!("{} is empty", path.display()),
            ));
        }
        return Ok(Some(line));
    }
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(Some(p)),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::input(var, "not UTF-8")),
    }
}

/// How many times a wrong passphrase may be typed at the terminal.
pub const PASSPHRASE_TRIES: usize = 3;

fn tty_error(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::input(what, format!("cannot read it from the terminal: {e}"))
}

/// The passphrase of a backup: `--backup-passphrase-file` or `SEALPOST_BACKUP_PASSPHRASE`,
/// else asked at the terminal (twice for a new backup, `confirm`). None of them: an error.
pub fn backup_passphrase(file: Option<&Path>, confirm: bool) -> Result<String, Error> {
    if let Some(p) = secret(file, "SEALPOST_BACKUP_PASSPHRASE")? {
        return Ok(p);
    }
    if !super::tty::interactive() {
        return Err(Error::input(
            "backup passphrase",
            "set SEALPOST_BACKUP_PASSPHRASE or use --backup-passphrase-file (or run at a terminal to be asked)",
        ));
    }
    let ask = tty_error("backup passphrase");
    let first = super::tty::ask_secret("Passphrase of the backup: ").map_err(&ask)?;
    if first.is_empty() {
        return Err(Error::input("backup passphrase", "it is empty"));
    }
    if confirm {
        let again = super::tty::ask_secret("The same passphrase again: ").map_err(&ask)?;
        if again != first {
            return Err(Error::input(
                "backup passphrase",
                "the two passphrases differ; nothing was written",
            ));
        }
    }
    Ok(first)
}

/// The passphrase for `init`'s new key: `--passphrase-file` or `SEALPOST_PASSPHRASE`, else
/// asked twice at the terminal (empty: none). `Ok(None)` means no passphrase: `init` warns
/// afterwards. For an imported key (`import`) that is already locked, its passphrase is
/// asked once instead.
pub fn init_passphrase(
    file: Option<&Path>,
    import: Option<&Path>,
) -> Result<Option<String>, Error> {
    if let Some(p) = passphrase(file)? {
        return Ok(Some(p));
    }
    if !super::tty::interactive() {
        return Ok(None);
    }
    // A key file that does not read is reported by init itself.
    let import_locked = import
        .and_then(|p| read_key_file(p).ok())
        .and_then(|b| sealpost_proto::identity::SecretIdentity::from_bytes(&b).ok())
        .is_some_and(|id| id.is_locked());
    let ask = tty_error("passphrase");
    if import_locked {
        let p = super::tty::ask_secret("Passphrase of the imported key: ").map_err(&ask)?;
        return Ok(Some(p).filter(|p| !p.is_empty()));
    }
    let first = super::tty::ask_secret("Passphrase for your new secret key (empty for none): ")
        .map_err(&ask)?;
    if first.is_empty() {
        return Ok(None);
    }
    let again = super::tty::ask_secret("The same passphrase again: ").map_err(&ask)?;
    if again != first {
        return Err(Error::input(
            "passphrase",
            "the two passphrases differ; nothing was created",
        ));
    }
    Ok(Some(first))
}

/// Reads at most `max` bytes of `path` (`-` is stdin).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let err = |source| Error::ReadInput {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(err)?;
    } else {
        std::fs::File::open(path)
            .map_err(err)?
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(err)?;
    }
    if out.len() as u64 > max {
        return Err(Error::input(
            "file",
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(out)
}

pub fn read_key_file(path: &Path) -> Result<Vec<u8>, Error> {
    read_bounded(path, MAX_KEY_FILE_BYTES)
}

/// The body of a letter: stdin, or the editor when stdin is a terminal. `tmp` is a private
/// directory for the draft file.
pub fn body(tmp: &Path, quote: Option<&str>) -> Result<String, Error> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return edit(tmp, quote.unwrap_or(""));
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(MAX_LETTER_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::ReadInput {
            path: PathBuf::from("-"),
            source,
        })?;
    if bytes.len() > MAX_LETTER_BYTES {
        return Err(Error::input(
            "body",
            format!("more than {MAX_LETTER_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        Error::input(
            "body",
            "stdin is not UTF-8 text; send binary data with --attach",
        )
    })
}

fn edit(tmp: &Path, initial: &str) -> Result<String, Error> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".to_string());
    sealpost_client::fsutil::create_private_dir(tmp)?;
    let path = tmp.join(format!(
        "draft-{}-{:08x}.txt",
        std::process::id(),
        rand::random::<u32>()
    ));
    let fail = |reason: String| Error::Editor {
        editor: editor.clone(),
        reason,
    };
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::WriteOutput {
                path: path.clone(),
                source: e,
            })?;
        f.write_all(initial.as_bytes())
            .map_err(|e| Error::WriteOutput {
                path: path.clone(),
                source: e,
            })?;
    }
    // Through the shell, so that EDITOR may carry arguments ("code --wait").
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status();
    let result = match status {
        Ok(s) if s.success() => std::fs::read_to_string(&path).map_err(|e| fail(e.to_string())),
        Ok(s) => Err(fail(format!("exited with {s}"))),
        Err(e) => Err(fail(e.to_string())),
    };
    let _ = std::fs::remove_file(&path);
    let text = result?;
    if text.trim().is_empty() || text == initial {
        return Err(Error::input("body", "the draft is empty; nothing sent"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_file_first_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pw");
        std::fs::write(&p, "correct horse\nignored\n").unwrap();
        assert_eq!(
            passphrase(Some(&p)).unwrap().as_deref(),
            Some("correct horse")
        );
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(passphrase(Some(&p)).err().unwrap().exit_code(), 1);
        assert_eq!(
            passphrase(Some(&tmp.path().join("missing")))
                .err()
                .unwrap()
                .exit_code(),
            1
        );
    }

    #[test]
    fn bounded_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("k");
        std::fs::write(&p, vec![0u8; 10]).unwrap();
        assert_eq!(read_bounded(&p, 10).unwrap().len(), 10);
        assert!(read_bounded(&p, 9).is_err());
    }
}
