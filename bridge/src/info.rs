//! What `sealpost-bridge info` prints: the settings a mail app needs, and a Thunderbird
//! autoconfig file (the `clientConfig` format of Mozilla's ISPDB).

use std::net::SocketAddr;

/// The settings of one bridge.
pub struct Settings<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub imap: SocketAddr,
    pub smtp: SocketAddr,
    pub tls: bool,
}

impl Settings<'_> {
    pub fn text(&self) -> String {
        let security = if self.tls {
            "SSL/TLS"
        } else {
            "none (loopback only)"
        };
        format!(
            "Mail app settings for {user}\n\
             \n\
             Incoming (IMAP):   server {ih}  port {ip}  security {security}\n\
             Outgoing (SMTP):   server {sh}  port {sp}  security {security}\n\
             User name:         {user}\n\
             Password:          {pass}   (the bridge password, not your passphrase)\n\
             Authentication:    normal password\n",
            user = self.user,
            ih = self.imap.ip(),
            ip = self.imap.port(),
            sh = self.smtp.ip(),
            sp = self.smtp.port(),
            pass = self.password,
        )
    }

    /// A Thunderbird autoconfig file (`config-v1.1.xml`). The password is not in it.
    pub fn autoconfig(&self) -> String {
        let domain = self
            .user
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("sealpost");
        let socket = if self.tls { "SSL" } else { "plain" };
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="{domain}">
    <domain>{domain}</domain>
    <displayName>Sealpost ({user})</displayName>
    <displayShortName>Sealpost</displayShortName>
    <incomingServer type="imap">
      <hostname>{ih}</hostname>
      <port>{ip}</port>
      <socketType>{socket}</socketType>
      <authentication>password-cleartext</authentication>
      <username>{user}</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{sh}</hostname>
      <port>{sp}</port>
      <socketType>{socket}</socketType>
      <authentication>password-cleartext</authentication>
      <username>{user}</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"#,
            domain = esc(domain),
            user = esc(self.user),
            ih = self.imap.ip(),
            ip = self.imap.port(),
            sh = self.smtp.ip(),
            sp = self.smtp.port(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoconfig_names_both_servers_and_not_the_password() {
        let s = Settings {
            user: "bob@beta.test",
            password: "secret-pw",
            imap: "127.0.0.1:1143".parse().unwrap(),
            smtp: "127.0.0.1:1025".parse().unwrap(),
            tls: false,
        };
        let xml = s.autoconfig();
        assert!(xml.contains("<port>1143</port>") && xml.contains("<port>1025</port>"));
        assert!(xml.contains("<username>bob@beta.test</username>"));
        assert!(!xml.contains("secret-pw"));
        assert!(s.text().contains("secret-pw"));
    }
}
