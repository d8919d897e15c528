//! Devices of the account (`spec/client.md` §Devices): this profile's own device key, the
//! device list on each home, and linking a new device with a one-time code.
//!
//! Each device signs in to every home with its own Ed25519 key (`device.key`, mode 0600),
//! so each home keeps a cursor per device and every device gets every letter. A profile
//! without a device key signs in with the account key, as before devices; `device add`
//! gives it one first (the account's first device key takes the account key's place).
//!
//! Linking: `device add` opens a one-time drop on the first trusted home and shows a code;
//! `device join CODE` on the new device runs SPAKE2 on it ([`sealpost_proto::link`]) and
//! sends its device key sealed under the agreed key; the existing device opens it (a wrong
//! code fails here, and the drop is aborted: nothing was sent), registers the new device on
//! every home, and leaves the account's key, contacts, pins and settings (a backup without
//! letters, [`crate::backup`]) sealed for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::SigningKey;
use reqwest::{Method, StatusCode};
use sealpost_proto::api;
use sealpost_proto::device::check_name;
use sealpost_proto::identity::Keyring;
use sealpost_proto::link::{LinkCode, Pake, Side, join_message, link_uri, split_join};
use sealpost_proto::{DeviceId, MailboxId, NodeUrl};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::Net;
use crate::backup;
use crate::client::{Client, Options};
use crate::error::{Error, Result};
use crate::fsutil;

/// This device's key, in the profile directory.
pub const DEVICE_FILE: &str = "device.key";
/// How often a waiting side asks the drop again.
const POLL: Duration = Duration::from_millis(250);
/// Largest link payload accepted (the node's default `devices.link_max_bytes`).
const MAX_PAYLOAD: usize = 16 << 20;

/// The device key of the profile in `dir`, if it has one.
pub fn load_key(dir: &Path) -> Result<Option<SigningKey>> {
    let path = dir.join(DEVICE_FILE);
    let Some(bytes) = fsutil::read_optional(&path)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::corrupt(&path, "not text"))?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret)
        .map_err(|_| Error::corrupt(&path, "expected 64 hex digits"))?;
    Ok(Some(SigningKey::from_bytes(&secret)))
}

fn save_key(dir: &Path, key: &SigningKey) -> Result<()> {
    fsutil::write_atomic(
        &dir.join(DEVICE_FILE),
        format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
    )
}

fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random())
}

fn device_id(key: &SigningKey) -> DeviceId {
    DeviceId::of_key(&key.verifying_key().to_bytes())
}

/// A device as a home lists it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub name: String,
    pub created: u64,
}

#[derive(Deserialize)]
struct DeviceList {
    you: DeviceId,
    devices: Vec<DeviceInfo>,
}

/// One home's answer to `device list`.
#[derive(Debug)]
pub struct HomeDevices {
    pub url: NodeUrl,
    /// The device this run signed in as there.
    pub you: Option<DeviceId>,
    pub devices: Result<Vec<DeviceInfo>>,
}

/// What the new device sends, sealed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Joiner {
    key: String,
    name: String,
}

/// What the existing device leaves for the new one, sealed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    /// A backup without letters ([`crate::backup`]), base64.
    backup: String,
    /// The passphrase of that backup (random; it travels sealed beside it).
    passphrase: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Node calls of devices and links.
impl Net {
    async fn authed_json(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let url = node.join(&path);
        let build = |token: &str| {
            let r = self.request(method.clone(), url.clone(), token);
            match &body {
                Some(b) => r
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string()),
                None => r,
            }
        };
        self.authed(node, mailbox, keys, &build).await
    }

    async fn authed_bytes(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        method: Method,
        path: String,
        body: Vec<u8>,
    ) -> Result<reqwest::Response> {
        let url = node.join(&path);
        let build = |token: &str| {
            self.request(method.clone(), url.clone(), token)
                .body(body.clone())
        };
        self.authed(node, mailbox, keys, &build).await
    }

    async fn list_devices(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
    ) -> Result<DeviceList> {
        let resp = self
            .authed_json(node, mailbox, keys, Method::GET, api::DEVICES.into(), None)
            .await?;
        self.json(node, resp).await
    }

    async fn add_device(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        key: &[u8; 32],
        name: &str,
    ) -> Result<()> {
        let body = json!({ "key": hex::encode(key), "name": name });
        self.authed_json(
            node,
            mailbox,
            keys,
            Method::POST,
            api::DEVICES.into(),
            Some(body),
        )
        .await?;
        Ok(())
    }

    async fn remove_device(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        id: &DeviceId,
    ) -> Result<()> {
        self.authed_json(node, mailbox, keys, Method::DELETE, api::device(id), None)
            .await?;
        Ok(())
    }

    /// An anonymous link request (the new device's side); `None` on `204`.
    async fn link_anonymous(
        &self,
        node: &NodeUrl,
        method: Method,
        path: String,
        secret: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Option<Vec<u8>>> {
        let mut req = self
            .http_client()
            .request(method, node.join(&path))
            .body(body)
            .timeout(self.config().timeout);
        if let Some(s) = secret {
            req = req.header(api::LINK_SECRET_HEADER, s);
        }
        let resp = self.check(node, self.send(node, req).await?).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = self
            .body(node, resp, MAX_PAYLOAD, &crate::progress::NoTransfer)
            .await?;
        Ok(Some(bytes.to_vec()))
    }
}

/// A link offered by this device: show `code` (or `uri`) to the new device, then
/// [`Client::device_complete`].
pub struct Offer {
    pub code: LinkCode,
    pub uri: String,
    /// Unix seconds after which the code no longer works.
    pub expires: u64,
    node: NodeUrl,
    mailbox: MailboxId,
    pake: Pake,
}

/// The device that joined.
#[derive(Clone, Debug)]
pub struct Joined {
    pub id: DeviceId,
    pub name: String,
    /// Homes where registering it failed (it cannot fetch there yet).
    pub failed: Vec<(NodeUrl, String)>,
}

#[derive(Deserialize)]
struct Opened {
    nameplate: String,
    expires: u64,
}

#[derive(Deserialize)]
struct JoinAnswer {
    secret: String,
}

impl Client {
    /// Gives this profile its own device key, registered on every trusted home, if it has
    /// none; answers its id. The first device key of an account takes the account key's
    /// place there: from then on the account key alone does not sign in.
    pub async fn ensure_device(&mut self, keys: &Keyring, name: &str) -> Result<DeviceId> {
        check_name(name).map_err(|e| Error::input("device name", e.to_string()))?;
        if let Some(key) = load_key(self.profile.dir())? {
            self.net.set_device(key.clone());
            return Ok(device_id(&key));
        }
        let key = new_key();
        let public = key.verifying_key().to_bytes();
        // Saved first: a crash after registering on a home leaves a key that home knows.
        save_key(self.profile.dir(), &key)?;
        for home in self.profile.config.trusted_homes() {
            self.net
                .add_device(&home.url, home.mailbox, keys, &public, name)
                .await?;
        }
        self.net.set_device(key.clone());
        Ok(device_id(&key))
    }

    /// Opens a link drop on the first trusted home (after [`Client::ensure_device`]).
    pub async fn device_offer(&mut self, keys: &Keyring, name: &str) -> Result<Offer> {
        self.ensure_device(keys, name).await?;
        let home = self
            .profile
            .config
            .trusted_homes()
            .next()
            .cloned()
            .ok_or_else(|| Error::input("homes", "the profile has no trusted home"))?;
        // The PAKE runs on the code's secret; the node names the drop after the first
        // message is in it.
        let code = LinkCode::generate(100_000).map_err(|e| Error::input("code", e.to_string()))?;
        let (pake, hello) = Pake::start(&code, Side::Existing);
        let resp = self
            .net
            .authed_bytes(
                &home.url,
                home.mailbox,
                keys,
                Method::POST,
                api::LINKS.into(),
                hello,
            )
            .await?;
        let opened: Opened = self.net.json(&home.url, resp).await?;
        let code = opened
            .nameplate
            .parse()
            .ok()
            .and_then(|n| code.with_nameplate(n).ok())
            .ok_or_else(|| Error::protocol(&home.url, "the link nameplate is not six digits"))?;
        Ok(Offer {
            uri: link_uri(&home.url, &code),
            code,
            expires: opened.expires,
            node: home.url.clone(),
            mailbox: home.mailbox,
            pake,
        })
    }
}

impl Client {
    /// Waits (until the code expires) for the new device, checks that it typed the same
    /// code, registers its key on every trusted home and leaves it the account's key,
    /// contacts, pins and settings. A wrong code aborts the drop: nothing is sent.
    pub async fn device_complete(&self, keys: &Keyring, offer: Offer) -> Result<Joined> {
        let Offer {
            code,
            expires,
            node,
            mailbox,
            pake,
            ..
        } = offer;
        let nameplate = code.nameplate;
        let join = loop {
            let resp = self
                .net
                .authed_json(
                    &node,
                    mailbox,
                    keys,
                    Method::GET,
                    api::link_step(nameplate, "reply"),
                    None,
                )
                .await?;
            if resp.status() != StatusCode::NO_CONTENT {
                break self
                    .net
                    .body(&node, resp, MAX_PAYLOAD, &crate::progress::NoTransfer)
                    .await?;
            }
            if crate::now() >= expires {
                return Err(Error::input(
                    "link code",
                    "it expired before a new device joined; run `sealpost device add` again",
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        let abort = || async {
            let _ = self
                .net
                .authed_json(
                    &node,
                    mailbox,
                    keys,
                    Method::DELETE,
                    api::link(nameplate),
                    None,
                )
                .await;
        };
        let opened = split_join(&join).and_then(|(msg, sealed)| {
            let key = pake.finish(msg)?;
            let plain = key.open(sealed)?;
            Ok((key, plain))
        });
        let (key, plain) = match opened {
            Ok(v) => v,
            Err(e) => {
                abort().await;
                return Err(Error::input(
                    "link code",
                    format!("{e}; nothing was sent. Run `sealpost device add` again"),
                ));
            }
        };
        let joiner: Joiner = match serde_json::from_slice(&plain) {
            Ok(j) => j,
            Err(e) => {
                abort().await;
                return Err(Error::protocol(
                    &node,
                    format!("the new device's message: {e}"),
                ));
            }
        };
        let mut public = [0u8; 32];
        if hex::decode_to_slice(&joiner.key, &mut public).is_err()
            || check_name(&joiner.name).is_err()
        {
            abort().await;
            return Err(Error::protocol(
                &node,
                "the new device sent a malformed key or name",
            ));
        }
        let mut failed = Vec::new();
        for home in self.profile.config.trusted_homes() {
            if let Err(e) = self
                .net
                .add_device(&home.url, home.mailbox, keys, &public, &joiner.name)
                .await
            {
                failed.push((home.url.clone(), e.to_string()));
            }
        }
        let passphrase = hex::encode(rand::random::<[u8; 32]>());
        let (bundle, _) = backup::create(&self.profile, false, &passphrase)?;
        let payload = serde_json::to_vec(&Payload {
            backup: b64().encode(&bundle),
            passphrase,
        })
        .map_err(|e| Error::input("link payload", e.to_string()))?;
        self.net
            .authed_bytes(
                &node,
                mailbox,
                keys,
                Method::PUT,
                api::link_step(nameplate, "payload"),
                key.seal(&payload),
            )
            .await?;
        Ok(Joined {
            id: DeviceId::of_key(&public),
            name: joiner.name,
            failed,
        })
    }

    /// The devices each trusted home lists.
    pub async fn device_list(&self, keys: &Keyring) -> Vec<HomeDevices> {
        let mut out = Vec::new();
        for home in self.profile.config.trusted_homes() {
            let r = self.net.list_devices(&home.url, home.mailbox, keys).await;
            let (you, devices) = match r {
                Ok(l) => (Some(l.you), Ok(l.devices)),
                Err(e) => (None, Err(e)),
            };
            out.push(HomeDevices {
                url: home.url.clone(),
                you,
                devices,
            });
        }
        out
    }

    /// Removes device `id` (a unique prefix of its hex id) on every trusted home; answers
    /// the full id and each home's outcome.
    pub async fn device_remove(
        &self,
        keys: &Keyring,
        prefix: &str,
    ) -> Result<(DeviceId, Vec<(NodeUrl, Result<()>)>)> {
        let prefix = prefix.trim().to_ascii_lowercase();
        let mut known: Vec<DeviceId> = Vec::new();
        for h in self.device_list(keys).await {
            for d in h.devices.into_iter().flatten() {
                if d.id.to_hex().starts_with(&prefix) && !known.contains(&d.id) {
                    known.push(d.id);
                }
            }
        }
        let id = match known.as_slice() {
            [id] => *id,
            [] => {
                return Err(Error::NotFound {
                    what: "device",
                    id: prefix,
                });
            }
            _ => {
                return Err(Error::Ambiguous {
                    what: "device",
                    id: prefix,
                });
            }
        };
        let mut out = Vec::new();
        for home in self.profile.config.trusted_homes() {
            let r = self
                .net
                .remove_device(&home.url, home.mailbox, keys, &id)
                .await;
            out.push((home.url.clone(), r));
        }
        Ok((id, out))
    }
}

/// Joins the account whose existing device shows `code`, through the drop on `node`:
/// creates the profile in `dir` (which must not hold one) with the account's key, contacts,
/// pins and settings, and this device's own key. A wrong, expired or used code is an error
/// and leaves nothing behind.
pub async fn join(
    dir: &Path,
    node: &NodeUrl,
    code: &LinkCode,
    name: &str,
    options: &Options,
) -> Result<Client> {
    check_name(name).map_err(|e| Error::input("device name", e.to_string()))?;
    if dir.join(crate::profile::CONFIG_FILE).exists() {
        return Err(Error::ProfileExists {
            dir: dir.to_path_buf(),
        });
    }
    let net = Net::new(options.net.clone())?;
    let n = code.nameplate;
    let hello = net
        .link_anonymous(node, Method::GET, api::link(n), None, Vec::new())
        .await?
        .ok_or_else(|| Error::protocol(node, "the link has no first message"))?;
    let (pake, msg) = Pake::start(code, Side::New);
    let key = pake
        .finish(&hello)
        .map_err(|e| Error::protocol(node, e.to_string()))?;
    let device = new_key();
    let joiner = serde_json::to_vec(&Joiner {
        key: hex::encode(device.verifying_key().to_bytes()),
        name: name.to_string(),
    })
    .map_err(|e| Error::input("device", e.to_string()))?;
    let answer = net
        .link_anonymous(
            node,
            Method::POST,
            api::link_step(n, "join"),
            None,
            join_message(&msg, &key.seal(&joiner)),
        )
        .await?
        .ok_or_else(|| Error::protocol(node, "the join had no answer"))?;
    let answer: JoinAnswer = serde_json::from_slice(&answer)
        .map_err(|e| Error::protocol(node, format!("join answer: {e}")))?;
    let sealed = loop {
        match net
            .link_anonymous(
                node,
                Method::GET,
                api::link_step(n, "payload"),
                Some(&answer.secret),
                Vec::new(),
            )
            .await?
        {
            Some(p) => break p,
            None => tokio::time::sleep(POLL).await,
        }
    };
    let plain = key.open(&sealed).map_err(|_| {
        Error::input(
            "link code",
            "the payload does not open under the agreed key (wrong code)",
        )
    })?;
    let payload: Payload = serde_json::from_slice(&plain)
        .map_err(|e| Error::protocol(node, format!("link payload: {e}")))?;
    let bundle = b64()
        .decode(&payload.backup)
        .map_err(|e| Error::protocol(node, format!("link payload: {e}")))?;
    let (profile, _) = backup::restore(dir, &PathBuf::from("link"), &bundle, &payload.passphrase)?;
    save_key(profile.dir(), &device)?;
    let client = Client::from_profile(profile, options)?;
    client.net.set_device(device);
    Ok(client)
}
