//! The sender checks when DNS does not answer: a UDP socket on loopback that takes every
//! query and never replies (and a TCP listener that never answers either). The checks end
//! as a temporary failure (451 4.4.3 at end of data) within their deadline, and the
//! single-threaded runtime that asked them keeps running its other tasks meanwhile.

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sealpost_gateway::auth::{Action, AuthConfig, DnsServer, Verifier};
use sealpost_gateway::label::Arrival;

#[test]
fn a_silent_dns_server_defers_the_message_without_blocking_the_session_runtime() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    // The same port on TCP, so that a fallback to TCP is not refused at once either.
    let _tcp = TcpListener::bind(addr).ok();
    let cfg = AuthConfig {
        dns: DnsServer::At(addr),
        dns_timeout: Duration::from_millis(300),
        deadline: Duration::from_secs(2),
        cache_entries: 100,
        threads: 1,
    };
    let verifier = Verifier::new(&cfg, "gw.test").unwrap();
    let arrival = Arrival {
        mail_from: "carol@legacy.test".into(),
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "mx.legacy.test".into(),
        tls: false,
        received_at: 1_700_000_000,
    };
    let message = Arc::new(b"From: carol@legacy.test\r\nSubject: hi\r\n\r\nhello\r\n".to_vec());

    // The session's runtime has one thread: a ticker on it must keep running while the
    // checks wait for DNS.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    rt.spawn(async move {
        loop {
            t.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let started = Instant::now();
    let verdict = rt.block_on(verifier.check(&arrival, message));
    let took = started.elapsed();

    assert!(
        matches!(verdict.action(), Action::TempFail(_)),
        "{verdict:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        ticks.load(Ordering::Relaxed) >= 5,
        "the session runtime was held: {} ticks in {took:?}",
        ticks.load(Ordering::Relaxed)
    );
    // The queries did reach the silent server.
    udp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    assert!(udp.recv_from(&mut buf).is_ok(), "no DNS query was sent");
    drop(rt);
    drop(verifier);
}
