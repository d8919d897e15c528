//! Test helpers shared by the unit tests: a loopback stub node, records, and the node of
//! the spec's test vectors (a signed descriptor whose secret keys we have).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::SignedDescriptor;
use sealpost_proto::identity::{Keyring, SecretIdentity, cert_to_bytes};
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_proto::{Address, MailboxId, NodeUrl};

use crate::api::VerifiedNode;
use crate::now;

/// A node API handle for tests that never reach a node.
pub fn offline_net() -> crate::api::Net {
    crate::api::Net::new(crate::api::NetConfig::default()).unwrap()
}

/// What the stub answers, by path: status and body.
pub type Routes = Arc<Mutex<HashMap<String, (u16, Vec<u8>)>>>;

/// A loopback HTTP/1.1 server answering GETs from a table (path → status, body); other
/// paths get a node's `404 unknown_address`.
pub async fn stub() -> (NodeUrl, Routes) {
    let (url, routes, _) = stub_logged().await;
    (url, routes)
}

/// Requests a [`stub_logged`] received: method, path (with query) and body.
pub type Log = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// [`stub`] that also keeps every request in a [`Log`]; a route named `"METHOD path"` is
/// answered before one named by its path alone.
pub async fn stub_logged() -> (NodeUrl, Routes, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = NodeUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let routes: Routes = Arc::default();
    let log: Log = Arc::default();
    let (table, requests) = (routes.clone(), log.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (table, requests) = (table.clone(), requests.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < end + length {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("").to_string();
                let path = words.next().unwrap_or("").to_string();
                requests.lock().unwrap().push((
                    method.clone(),
                    path.clone(),
                    buf[end..end + length].to_vec(),
                ));
                let (status, body) = {
                    let t = table.lock().unwrap();
                    t.get(&format!("{method} {path}"))
                        .or_else(|| t.get(&path))
                        .cloned()
                        .unwrap_or((
                            404,
                            b"{\"error\":{\"code\":\"unknown_address\",\"message\":\"no\"}}"
                                .to_vec(),
                        ))
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, routes, log)
}

/// A record of `address` listing `homes` (node key `[1; 32]`, mailbox `[2; 16]`).
pub fn record(
    id: &SecretIdentity,
    address: &Address,
    homes: &[&NodeUrl],
    sequence: u64,
) -> SignedRecord {
    let homes = homes
        .iter()
        .map(|u| Home {
            url: (*u).clone(),
            node_key: [1; 32],
            mailbox: MailboxId([2; 16]),
        })
        .collect();
    record_with_homes(id, address, homes, sequence)
}

pub fn record_with_homes(
    id: &SecretIdentity,
    address: &Address,
    homes: Vec<Home>,
    sequence: u64,
) -> SignedRecord {
    let now = now();
    let body = MailboxRecord {
        address: address.clone(),
        cert: cert_to_bytes(&id.public_cert()),
        homes,
        created: now,
        expires: now + 3600,
        sequence,
    };
    SignedRecord::sign(&body, &id.unlock(None).unwrap()).unwrap()
}

/// A loopback URL where nothing listens (a port that was just free).
pub fn dead() -> NodeUrl {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    NodeUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()
}

fn vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

/// The node of `spec/vectors` (`http://beta.test:8080`): its signed descriptor, verified,
/// and the keys hop payloads to it are encrypted to.
pub fn vector_node() -> (VerifiedNode, Keyring) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("vectors.json")).unwrap())
            .unwrap();
    let signed = SignedDescriptor::decode(
        &hex::decode(v["descriptor"]["signed"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let (descriptor, cert) = signed.verify().unwrap();
    let secret = std::fs::read(vectors_dir().join("node-b.sec.asc")).unwrap();
    let keys = SecretIdentity::from_bytes(&secret)
        .unwrap()
        .unlock(None)
        .unwrap();
    (
        VerifiedNode {
            descriptor,
            cert,
            signed,
        },
        keys,
    )
}

/// What [`dns_stub`] answers for a name (lower case, no trailing dot).
#[derive(Clone, Debug)]
pub enum DnsAnswer {
    /// MX records: preference and host.
    Mx(Vec<(u16, String)>),
    /// `NOERROR` without records.
    Empty,
    /// `SERVFAIL`.
    ServFail,
}

/// A loopback UDP DNS server answering MX questions from `zone`; any other name is
/// `NXDOMAIN`. Returns its address (for `NetConfig::dns_server`).
pub async fn dns_stub(zone: Vec<(&'static str, DnsAnswer)>) -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let q = &buf[..n];
            // Header, then one question: labels, type, class.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < q.len() && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_lowercase());
                i += 1 + len;
            }
            let question_end = i + 5;
            let name = labels.join(".");
            let answer = zone
                .iter()
                .find(|(z, _)| *z == name)
                .map(|(_, a)| a.clone());
            let (rcode, records) = match answer {
                None => (3u8, Vec::new()),
                Some(DnsAnswer::ServFail) => (2, Vec::new()),
                Some(DnsAnswer::Empty) => (0, Vec::new()),
                Some(DnsAnswer::Mx(mx)) => (0, mx),
            };
            let mut r = Vec::new();
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, 0x80 | rcode]);
            r.extend_from_slice(&[0, 1, 0, records.len() as u8, 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..question_end]);
            for (pref, host) in records {
                let mut rdata = pref.to_be_bytes().to_vec();
                for l in host.split('.').filter(|l| !l.is_empty()) {
                    rdata.push(l.len() as u8);
                    rdata.extend_from_slice(l.as_bytes());
                }
                rdata.push(0);
                r.extend_from_slice(&[0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 60]);
                r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                r.extend_from_slice(&rdata);
            }
            let _ = sock.send_to(&r, peer).await;
        }
    });
    addr
}
