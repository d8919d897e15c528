//! A private Dovecot (Debian's dovecot-imapd) on loopback: the reference IMAP server of the
//! bridge's tests and benchmark. Its own config in a temp dir, passwd-file auth with one
//! account, Maildir, a free port, run in the foreground (`dovecot -F -c CONF`) and killed on
//! drop. Mail processes run as `nobody` (Dovecot never runs them as root).

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Dovecot instance with its own config, run in the foreground (`-F -c CONF`).
pub struct Dovecot {
    pub port: u16,
    pub user: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

/// A free loopback port (bound and released; Dovecot binds it right after).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Dovecot {
    pub fn start(user: &str, password: &str) -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        std::fs::create_dir_all(d.join("run")).unwrap();
        std::fs::create_dir_all(d.join("home")).unwrap();
        // Dovecot never runs mail processes as root: the mail user (nobody) owns the homes.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            let ok = Command::new("chown")
                .arg("nobody:nogroup")
                .arg(d.join("home"))
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the Dovecot home");
        }
        std::fs::write(
            d.join("passwd"),
            format!("{user}:{{PLAIN}}{password}::::::\n"),
        )
        .unwrap();
        let p = |x: &str| d.join(x).display().to_string();
        let conf = format!(
            r#"protocols = imap
listen = 127.0.0.1
base_dir = {run}
state_dir = {run}/state
log_path = {log}
info_log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{home}/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={home}/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \Sent
    auto = create
  }}
  mailbox Drafts {{
    special_use = \Drafts
    auto = create
  }}
  mailbox Trash {{
    special_use = \Trash
    auto = create
  }}
  mailbox Archive {{
    special_use = \Archive
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
"#,
            run = p("run"),
            log = p("dovecot.log"),
            home = p("home"),
            passwd = p("passwd"),
        );
        let conf_path = d.join("dovecot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dovecot runs (scripts/deps.sh installs dovecot-imapd)");
        let dc = Dovecot {
            port,
            user: user.to_owned(),
            dir,
            child,
        };
        wait_for_greeting(port, &dc.dir.path().join("dovecot.log"));
        dc
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir
            .path()
            .join("home")
            .join(&self.user)
            .join("Maildir")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until the port answers with an IMAP greeting (deadline 20 s).
pub fn wait_for_greeting(port: u16, log: &Path) {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf)
                && buf[..n].starts_with(b"* OK")
            {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "no IMAP greeting on {port}; log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
