//! IMAP4rev1 for mail apps: [`session`] answers parsed commands; [`serve_connection`]
//! drives imap-next's sans-IO server over any byte stream (plain TCP on loopback, or TLS).

pub mod session;

use std::sync::Arc;
use std::time::Duration;

use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::core::Text;
use imap_next::imap_types::response::{
    Code, CommandContinuationRequest, Greeting, Response, Status,
};
use imap_next::server::{Error as ServerError, Event, Options, Server};
use imap_next::{Interrupt, Io, State};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth;
use crate::shared::Shared;
use session::{After, Reply, Session};

/// Largest literal (APPEND) a client may send; beyond it the command is refused.
pub const MAX_LITERAL: u32 = crate::store::MAX_MESSAGE as u32;
/// Largest command, literals included.
pub const MAX_COMMAND: u32 = MAX_LITERAL + 64 * 1024;
/// An idle connection is closed after this long (RFC 3501 5.4: at least 30 minutes).
pub const AUTOLOGOUT: Duration = Duration::from_secs(31 * 60);

fn server() -> Server {
    let mut options = Options::default();
    options.max_literal_size = MAX_LITERAL;
    options.max_command_size = MAX_COMMAND;
    let greeting = Greeting::ok(
        Some(Code::Capability(session::capabilities(false))),
        "Sealpost Bridge ready",
    )
    .expect("invariant: greeting text is valid");
    Server::new(options, greeting)
}

fn enqueue(server: &mut Server, responses: Vec<Response<'static>>) {
    for r in responses {
        match r {
            Response::Data(d) => {
                server.enqueue_data(d);
            }
            Response::Status(s) => {
                server.enqueue_status(s);
            }
            Response::CommandContinuationRequest(c) => {
                server.enqueue_continuation_request(c);
            }
        }
    }
}

/// Why a connection ended, when not by LOGOUT or the client closing it.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A sans-IO step: everything the server has to say after `input`, for the fuzz target and
/// tests. Returns the bytes written and whether the session wants to close.
pub struct Harness {
    server: Server,
    session: Session,
    auth_tag: Option<imap_next::imap_types::core::Tag<'static>>,
    idle_tag: Option<imap_next::imap_types::core::Tag<'static>>,
    closing: bool,
}

impl Harness {
    pub fn new(shared: Arc<Shared>) -> Harness {
        Harness {
            server: server(),
            session: Session::new(shared),
            auth_tag: None,
            idle_tag: None,
            closing: false,
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn is_idling(&self) -> bool {
        self.idle_tag.is_some()
    }

    pub fn feed(&mut self, input: &[u8]) {
        self.server.enqueue_input(input);
    }

    /// Runs the state machine until it needs input; returns bytes to send and whether a
    /// failed login asks for the delay before them.
    pub fn step(&mut self) -> (Vec<u8>, bool) {
        let mut output = Vec::new();
        let mut delay = false;
        loop {
            match self.server.next() {
                Ok(event) => {
                    if let Some(reply) = self.event(event) {
                        match reply.after {
                            After::Continue => {}
                            After::Delay => delay = true,
                            After::Close => {
                                delay |= !self.session.is_authenticated();
                                self.closing = true;
                            }
                        }
                        enqueue(&mut self.server, reply.responses);
                    }
                }
                Err(Interrupt::Io(Io::Output(bytes))) => output.extend_from_slice(&bytes),
                Err(Interrupt::Io(Io::NeedMoreInput)) => return (output, delay),
                Err(Interrupt::Error(e)) => {
                    let why = match e {
                        ServerError::LiteralTooLong { .. } => continue,
                        ServerError::CommandTooLong { .. } => "Command too long",
                        ServerError::ExpectedCrlfGotLf { .. } => "Lines must end in CRLF",
                        ServerError::MalformedMessage { .. } => "Could not parse the command",
                    };
                    let status = Status::bad(None, None, why).expect("invariant: valid text");
                    self.server.enqueue_status(status);
                }
            }
        }
    }

    /// Unsolicited updates while idling (new mail, flags, expunges).
    pub fn idle_updates(&mut self) {
        if self.idle_tag.is_some() {
            let mut out = Vec::new();
            self.session.updates(false, &mut out);
            enqueue(&mut self.server, out);
        }
    }

    fn event(&mut self, event: Event) -> Option<Reply> {
        match event {
            Event::GreetingSent { .. } | Event::ResponseSent { .. } => None,
            Event::CommandReceived { command } => Some(self.session.handle(command)),
            Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                let tag = command_authenticate.tag;
                if command_authenticate.mechanism != AuthMechanism::Plain
                    || self.session.is_authenticated()
                {
                    let st = Status::no(Some(tag), None, "Only AUTHENTICATE PLAIN, once")
                        .expect("invariant: text");
                    let _ = self.server.authenticate_finish(st);
                    return None;
                }
                match command_authenticate.initial_response {
                    Some(ir) => {
                        let reply = self.plain(tag, ir.declassify().as_ref());
                        Some(self.finish_auth(reply))
                    }
                    None => {
                        self.auth_tag = Some(tag);
                        let ccr = CommandContinuationRequest::basic(None, Text::unvalidated(" "))
                            .or_else(|_| CommandContinuationRequest::basic(None, "go on"))
                            .expect("invariant: valid text");
                        let _ = self.server.authenticate_continue(ccr);
                        None
                    }
                }
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let tag = self.auth_tag.take()?;
                match authenticate_data {
                    AuthenticateData::Continue(data) => {
                        let reply = self.plain(tag, data.declassify().as_ref());
                        Some(self.finish_auth(reply))
                    }
                    AuthenticateData::Cancel => {
                        let st = Status::bad(Some(tag), None, "AUTHENTICATE cancelled")
                            .expect("invariant: text");
                        let _ = self.server.authenticate_finish(st);
                        None
                    }
                }
            }
            Event::IdleCommandReceived { tag } => {
                if self.session.is_selected() {
                    let ccr =
                        CommandContinuationRequest::basic(None, "idling").expect("invariant: text");
                    let _ = self.server.idle_accept(ccr);
                    self.idle_tag = Some(tag);
                    self.idle_updates();
                } else {
                    let st = Status::bad(Some(tag), None, "Select a mailbox first")
                        .expect("invariant: text");
                    let _ = self.server.idle_reject(st);
                }
                None
            }
            Event::IdleDoneReceived => {
                let tag = self.idle_tag.take()?;
                let mut out = Vec::new();
                self.session.updates(false, &mut out);
                out.push(Response::Status(
                    Status::ok(Some(tag), None, "IDLE done").expect("invariant: text"),
                ));
                Some(Reply {
                    responses: out,
                    after: After::Continue,
                })
            }
        }
    }

    fn plain(&mut self, tag: imap_next::imap_types::core::Tag<'static>, msg: &[u8]) -> Reply {
        match auth::sasl_plain(msg) {
            Some((user, pass)) => self.session.authenticate(tag, user, pass),
            None => self.session.authenticate(tag, b"", b""),
        }
    }

    /// AUTHENTICATE ends through imap-next's own call, which sends the tagged status.
    fn finish_auth(&mut self, mut reply: Reply) -> Reply {
        if let Some(Response::Status(st)) = reply.responses.pop()
            && let Err(st) = self.server.authenticate_finish(st)
        {
            reply.responses.push(Response::Status(st));
        }
        reply
    }
}

/// Serves one connection until LOGOUT, the client closes, or `AUTOLOGOUT` of silence.
pub async fn serve_connection<S>(mut io: S, shared: Arc<Shared>) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut changes = shared.subscribe();
    let mut h = Harness::new(shared);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (out, delay) = h.step();
        if delay {
            tokio::time::sleep(auth::FAILURE_DELAY).await;
        }
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
        }
        if h.is_closing() {
            let _ = io.shutdown().await;
            return Ok(());
        }
        tokio::select! {
            n = io.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                h.feed(&buf[..n]);
            }
            r = changes.changed(), if h.is_idling() => {
                if r.is_err() {
                    return Ok(());
                }
                changes.borrow_and_update();
                h.idle_updates();
            }
            _ = tokio::time::sleep(AUTOLOGOUT) => {
                let bye = Status::bye(None, "Autologout").expect("invariant: text");
                h.server.enqueue_status(bye);
                h.closing = true;
            }
        }
    }
}
