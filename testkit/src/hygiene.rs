//! Process hygiene for everything a test or benchmark starts: child processes die with the
//! process that started them, and temporary directories kept in statics are removed at exit.
//!
//! Children are spawned from one long-lived thread with `PR_SET_PDEATHSIG` (which fires
//! when the *thread* that forked exits, so a per-test thread would be too short-lived), and
//! an `atexit` handler SIGKILLs and reaps whatever is still registered and removes the
//! registered directories (statics are never dropped).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};

struct Registry {
    pids: Vec<i32>,
    dirs: Vec<PathBuf>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    let reg = REG.get_or_init(|| {
        extern "C" fn cleanup() {
            let Some(reg) = REG.get() else { return };
            if let Ok(reg) = reg.try_lock() {
                for pid in &reg.pids {
                    // SAFETY: signalling and reaping child processes we started; reaping
                    // here keeps them from lingering as zombies of an init that does not.
                    unsafe {
                        libc::kill(*pid, libc::SIGKILL);
                        libc::waitpid(*pid, std::ptr::null_mut(), 0);
                    }
                }
                for d in &reg.dirs {
                    let _ = std::fs::remove_dir_all(d);
                }
            }
        }
        // SAFETY: registers a plain function without captured state.
        unsafe { libc::atexit(cleanup) };
        Mutex::new(Registry {
            pids: Vec::new(),
            dirs: Vec::new(),
        })
    });
    // A test that panicked while holding the lock leaves consistent data (plain pushes).
    reg.lock().unwrap_or_else(|p| p.into_inner())
}

fn register_pid(pid: u32) {
    registry().pids.push(pid as i32);
}

fn unregister_pid(pid: u32) {
    registry().pids.retain(|p| *p != pid as i32);
}

/// Registers `dir` for removal at exit (for directories that outlive their owner).
pub fn remove_at_exit(dir: &Path) {
    registry().dirs.push(dir.to_path_buf());
}

/// A temporary directory `sealpost-PREFIX-XXXX`, removed on drop and, for fixtures kept in
/// statics, at exit.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let t = tempfile::Builder::new()
            .prefix(&format!("sealpost-{prefix}-"))
            .tempdir()
            .expect("create a temporary directory");
        remove_at_exit(t.path());
        TempDir(t)
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` (stdio already set by the caller) from a thread that lives as long as the
/// process, with `PR_SET_PDEATHSIG`, and registers it for the exit handler. Pair with
/// [`reaped`] once the child has been waited for.
pub fn spawn_tied(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: prctl in the child between fork and exec; async-signal-safe.
                    unsafe {
                        cmd.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .expect("invariant: the spawner thread lives as long as the process");
    let child = reply_rx
        .recv()
        .expect("invariant: the spawner thread answers every request")?;
    register_pid(child.id());
    Ok(child)
}

/// Forgets a child that has been waited for (its pid may be reused from now on).
pub fn reaped(child: &Child) {
    unregister_pid(child.id());
}

/// SIGKILL and wait: no shutdown code runs, as in a crash or a power cut of the process.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    reaped(child);
}
