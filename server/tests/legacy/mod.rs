//! A legacy (SMTP) sender for tests of the node's gateway: one message per session, over
//! plain TCP, with the replies read as the client sees them.

#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How one SMTP transaction ended.
#[derive(Debug)]
pub enum Smtp {
    /// `250` after the data: the gateway has stored the message.
    Stored,
    /// Another reply code at some step, and its text.
    Refused(u16, String),
    /// The connection broke before the final reply.
    NoAnswer,
}

/// A small legacy message from `sender@legacy.test` to `rcpt`; `subject` names it.
pub fn message(rcpt: &str, subject: &str) -> String {
    format!(
        "From: Legacy Sender <sender@legacy.test>\r\nTo: {rcpt}\r\n\
         Subject: {subject}\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <{}@legacy.test>\r\n\r\nThis is {subject}.\r\n",
        subject.replace(' ', "-")
    )
}

async fn reply(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<(u16, String)> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.push_str(&line);
        let code = line.get(..3).and_then(|c| c.parse().ok());
        match (code, line.as_bytes().get(3)) {
            (Some(c), Some(b' ')) => return Ok((c, all)),
            (Some(_), Some(b'-')) => continue,
            _ => return Err(std::io::Error::other(format!("bad reply {line:?}"))),
        }
    }
}

/// Sends [`message`]`(rcpt, subject)` in one session.
pub async fn send(addr: SocketAddr, rcpt: &str, subject: &str) -> Smtp {
    let session = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let steps: [(String, u16); 5] = [
            (String::new(), 220),
            ("EHLO legacy.test\r\n".into(), 250),
            ("MAIL FROM:<sender@legacy.test>\r\n".into(), 250),
            (format!("RCPT TO:<{rcpt}>\r\n"), 250),
            ("DATA\r\n".into(), 354),
        ];
        for (command, want) in steps {
            w.write_all(command.as_bytes()).await?;
            let (code, text) = reply(&mut r).await?;
            if code != want {
                return Ok(Smtp::Refused(code, format!("{command:?}: {text}")));
            }
        }
        w.write_all(format!("{}.\r\n", message(rcpt, subject)).as_bytes())
            .await?;
        let (code, text) = reply(&mut r).await?;
        let _ = w.write_all(b"QUIT\r\n").await;
        Ok::<_, std::io::Error>(if code == 250 {
            Smtp::Stored
        } else {
            Smtp::Refused(code, text)
        })
    };
    session.await.unwrap_or(Smtp::NoAnswer)
}
