//! `limits.max_connections`: beyond the limit, a connection waits (in the listen backlog)
//! until another closes, and is then served.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::*;
use sealpost_server::config::Secs;

/// Sends one request on a kept-alive connection and returns the body of the answer.
fn request(conn: &mut BufReader<TcpStream>, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: node\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_their_turn() {
    let mut node = TestNode::start(|c| {
        c.limits.max_connections = 1;
        c.limits.header_timeout = Secs::from_secs(60);
    })
    .await;
    let addr = node.addr;
    let mut first = BufReader::new(TcpStream::connect(addr).unwrap());
    assert_eq!(
        tokio::task::block_in_place(|| request(&mut first, "/healthz")),
        "ok\n"
    );

    let api = Api::default();
    let url = node.url.clone();
    let second = tokio::spawn(async move {
        api.http
            .get(url.join("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    // While the first connection stays open, the second is not accepted.
    for _ in 0..20 {
        let metrics = tokio::task::block_in_place(|| request(&mut first, "/metrics"));
        assert!(
            metrics.contains("sealpost_connections_total 1\n"),
            "{metrics}"
        );
        assert!(
            !second.is_finished(),
            "a second connection was served beyond the limit"
        );
    }
    drop(first);
    assert_eq!(
        tokio::time::timeout(DEADLINE, second)
            .await
            .unwrap()
            .unwrap(),
        "ok\n"
    );
    node.stop().await;
}
