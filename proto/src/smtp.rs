//! A sans-IO ESMTP server session for the gateway: bytes in, replies and events out.
//!
//! Commands are parsed with Stalwart's `smtp-proto`; the DATA phase uses its
//! `DataReceiver` (end of data only at `<CR><LF>.<CR><LF>`), and this module then refuses any
//! bare `<LF>` or `<CR>` in the message, which closes the SMTP smuggling holes
//! (CVE-2023-51764/5/6: `<LF>.<LF>` and friends). Message content sent before the `354`
//! (pipelined past `DATA`, RFC 2920 §3.1) is refused and the session closed, as Postfix
//! does; only the `MAIL` parameters that are advertised (`SIZE`, `BODY=7BIT|8BITMIME`) are
//! accepted. The driver (tokio, in the node) feeds
//! bytes, writes replies, answers recipient checks and deliveries, upgrades to TLS and
//! enforces timeouts. A session never blocks and never panics on input.

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::{
    Error as ParseError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MailFrom, RcptTo, Request,
};

/// Limits and identity of the SMTP service.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in bytes (advertised as SIZE).
    pub max_message_bytes: usize,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Longest command line, with CRLF (RFC 5321 §4.5.3.1.4 is 512; extensions need more).
    pub max_command_line: usize,
    /// Longest line in message data, with CRLF (RFC 5321 §4.5.3.1.6: 1000).
    pub max_data_line: usize,
    /// Whether STARTTLS is offered (the driver has a certificate).
    pub starttls: bool,
    /// Errors after which the session is closed.
    pub max_errors: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "localhost".into(),
            max_message_bytes: 20 * 1024 * 1024,
            max_recipients: 50,
            max_command_line: 1000,
            max_data_line: 1000,
            starttls: false,
            max_errors: 10,
        }
    }
}

/// One mail transaction, complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub helo: String,
    /// Reverse path; empty for `MAIL FROM:<>`.
    pub mail_from: String,
    /// Accepted recipients, as given.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, with CRLF line ends, without the final `.` line.
    pub data: Vec<u8>,
    /// Whether the message was declared `BODY=8BITMIME`.
    pub eight_bit: bool,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the client.
    Reply(Vec<u8>),
    /// Start TLS now (the `220` reply was already emitted); then call
    /// [`Session::tls_established`]. Buffered plaintext input has been discarded.
    StartTls,
    /// Decide whether this recipient is accepted; answer with [`Session::recipient_verdict`].
    CheckRecipient(String),
    /// Store this message durably; answer with [`Session::delivery_result`].
    Deliver(Transaction),
    /// Close the connection (after writing any replies before it).
    Close,
}

/// The driver's answer to [`Output::CheckRecipient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptVerdict {
    Accept,
    /// A local domain, but no such user.
    UnknownUser,
    /// Not a domain we receive for: refusing keeps us from being an open relay.
    RelayDenied,
    /// Try later (e.g. the directory is unavailable).
    TempFail,
}

/// The driver's answer to [`Output::Deliver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Stored durably; the id goes into the 250 reply.
    Stored(String),
    /// Storage is full or read-only: 452, the client retries later.
    NoStorage,
    /// Some other transient failure: 451.
    TempFail,
    /// Refused for good, with a reason for the 554 reply (one line, no CR/LF).
    Rejected(String),
    /// Refused by the sender domain's policy (DMARC `p=reject`): 550 5.7.1 with the reason.
    PolicyRejected(String),
    /// The sender checks could not finish (DNS down or slow): 451 4.4.3.
    DnsTempFail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for EHLO/HELO.
    Fresh,
    /// Greeted; no transaction.
    Ready,
    /// MAIL given.
    Mail,
    /// Receiving message data.
    Data,
    /// Waiting for the driver's answer to CheckRecipient.
    AwaitRcpt,
    /// Waiting for the driver's answer to Deliver.
    AwaitDelivery,
    /// QUIT or too many errors.
    Closed,
}

pub struct Session {
    cfg: SmtpConfig,
    state: State,
    inbuf: Vec<u8>,
    /// After an over-long command line: drop input up to the next LF.
    skipping_line: bool,
    helo: String,
    mail_from: String,
    eight_bit: bool,
    rcpt_to: Vec<String>,
    pending_rcpt: Option<String>,
    data_rx: DataReceiver,
    data: Vec<u8>,
    /// Message outgrew the limit: keep reading to the end, but store nothing.
    oversize: Option<DummyDataReceiver>,
    errors: usize,
    tls_active: bool,
    /// Submission mode (RFC 6409 with RFC 4954 AUTH): `None` for the gateway.
    auth: Option<Auth>,
}

/// Checks a user name and password (submission mode). Synchronous: the driver delays the
/// `535` reply against guessing.
pub type CredentialCheck = Box<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

struct Auth {
    check: CredentialCheck,
    done: bool,
    step: AuthStep,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AuthStep {
    None,
    /// `AUTH PLAIN` without an initial response: the next line is the response.
    Plain,
    /// `AUTH LOGIN`: the next line is the user name, then the password.
    LoginUser,
    LoginPass(Vec<u8>),
}

fn reply(code: u16, text: &str) -> Output {
    Output::Reply(format!("{code} {text}\r\n").into_bytes())
}

impl Session {
    /// A new session and its greeting.
    pub fn new(cfg: SmtpConfig) -> (Session, Output) {
        let greeting = reply(220, &format!("{} ESMTP Sealpost gateway", cfg.hostname));
        let s = Session {
            cfg,
            state: State::Fresh,
            inbuf: Vec::new(),
            skipping_line: false,
            helo: String::new(),
            mail_from: String::new(),
            eight_bit: false,
            rcpt_to: Vec::new(),
            pending_rcpt: None,
            data_rx: DataReceiver::new(),
            data: Vec::new(),
            oversize: None,
            errors: 0,
            tls_active: false,
            auth: None,
        };
        (s, greeting)
    }

    /// A submission session (RFC 6409): `AUTH PLAIN` and `AUTH LOGIN` (RFC 4954) are
    /// offered and required before `MAIL`; `check` decides the credentials.
    pub fn new_submission(cfg: SmtpConfig, check: CredentialCheck) -> (Session, Output) {
        let greeting = reply(220, &format!("{} ESMTP Sealpost submission", cfg.hostname));
        let (mut s, _) = Session::new(cfg);
        s.auth = Some(Auth {
            check,
            done: false,
            step: AuthStep::None,
        });
        (s, greeting)
    }

    /// Whether AUTH succeeded (always false outside submission mode).
    pub fn is_authenticated(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.done)
    }

    /// One line of an AUTH exchange (base64, or `*` to cancel).
    fn auth_line(&mut self, line: &[u8]) -> Output {
        use base64::Engine as _;
        let Some(auth) = self.auth.as_mut() else {
            return reply(503, "5.5.1 No AUTH in progress");
        };
        let step = std::mem::replace(&mut auth.step, AuthStep::None);
        let text = trim_crlf(line);
        if text == b"*" {
            return self.error(501, "5.7.0 AUTH cancelled");
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(text) else {
            return self.error(501, "5.5.2 Cannot decode the AUTH response");
        };
        match step {
            AuthStep::Plain => self.auth_plain(&decoded),
            AuthStep::LoginUser => {
                if let Some(a) = self.auth.as_mut() {
                    a.step = AuthStep::LoginPass(decoded);
                }
                reply(334, "UGFzc3dvcmQ6")
            }
            AuthStep::LoginPass(user) => self.auth_check(&user, &decoded),
            AuthStep::None => reply(503, "5.5.1 No AUTH in progress"),
        }
    }

    fn auth_plain(&mut self, msg: &[u8]) -> Output {
        let mut parts = msg.splitn(3, |b| *b == 0);
        match (parts.next(), parts.next(), parts.next()) {
            // Acting for another user (authzid) is not offered.
            (Some(authz), Some(user), Some(pass)) if authz.is_empty() || authz == user => {
                self.auth_check(user, pass)
            }
            _ => self.error(501, "5.5.2 Malformed AUTH PLAIN response"),
        }
    }

    fn auth_check(&mut self, user: &[u8], pass: &[u8]) -> Output {
        let ok = self.auth.as_ref().is_some_and(|a| (a.check)(user, pass));
        if ok {
            if let Some(a) = self.auth.as_mut() {
                a.done = true;
            }
            reply(235, "2.7.0 Authentication successful")
        } else {
            self.error(535, "5.7.8 Authentication credentials invalid")
        }
    }

    fn auth_command(&mut self, mechanism: u64, initial: &str) -> Output {
        use base64::Engine as _;
        let Some(auth) = self.auth.as_mut() else {
            return self.error(
                502,
                "5.5.1 AUTH not available: this gateway only receives mail for its users",
            );
        };
        if auth.done {
            return self.error(503, "5.5.1 Already authenticated");
        }
        if self.state == State::Fresh {
            return self.error(503, "5.5.1 Say EHLO first");
        }
        if self.state == State::Mail {
            return self.error(503, "5.5.1 AUTH not allowed inside a transaction");
        }
        let initial = initial.trim();
        let decoded = if initial.is_empty() || initial == "=" {
            None
        } else {
            match base64::engine::general_purpose::STANDARD.decode(initial) {
                Ok(d) => Some(d),
                Err(_) => return self.error(501, "5.5.2 Cannot decode the initial response"),
            }
        };
        match (mechanism, decoded) {
            (smtp_proto::AUTH_PLAIN, Some(d)) => self.auth_plain(&d),
            (smtp_proto::AUTH_PLAIN, None) => {
                auth.step = AuthStep::Plain;
                reply(334, "")
            }
            (smtp_proto::AUTH_LOGIN, Some(user)) => {
                auth.step = AuthStep::LoginPass(user);
                reply(334, "UGFzc3dvcmQ6")
            }
            (smtp_proto::AUTH_LOGIN, None) => {
                auth.step = AuthStep::LoginUser;
                reply(334, "VXNlcm5hbWU6")
            }
            _ => self.error(
                504,
                "5.5.4 Unrecognized authentication type: use PLAIN or LOGIN",
            ),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the session waits for the driver (a recipient check or a delivery).
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::AwaitRcpt | State::AwaitDelivery)
    }

    /// Feeds bytes from the client; returns what to do, in order.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Output> {
        if self.state == State::Closed {
            return Vec::new();
        }
        self.inbuf.extend_from_slice(input);
        let mut out = Vec::new();
        self.process(&mut out);
        out
    }

    /// Answers a [`Output::CheckRecipient`]; processing resumes with buffered input.
    pub fn recipient_verdict(&mut self, verdict: RcptVerdict) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(rcpt) = self.pending_rcpt.take() else {
            return out;
        };
        if self.state != State::AwaitRcpt {
            return out;
        }
        self.state = State::Mail;
        out.push(match verdict {
            RcptVerdict::Accept => {
                self.rcpt_to.push(rcpt);
                reply(250, "2.1.5 OK")
            }
            RcptVerdict::UnknownUser => self.error(550, "5.1.1 No such user here"),
            RcptVerdict::RelayDenied => self.error(
                550,
                "5.7.1 Relaying denied: not a domain this gateway serves",
            ),
            RcptVerdict::TempFail => reply(451, "4.3.0 Temporary failure, try again later"),
        });
        self.process(&mut out);
        out
    }

    /// Answers a [`Output::Deliver`]; processing resumes with buffered input.
    pub fn delivery_result(&mut self, result: DeliveryResult) -> Vec<Output> {
        let mut out = Vec::new();
        if self.state != State::AwaitDelivery {
            return out;
        }
        self.reset_transaction();
        self.state = State::Ready;
        out.push(match result {
            DeliveryResult::Stored(id) => {
                reply(250, &format!("2.0.0 OK: stored as {}", sanitize(&id)))
            }
            DeliveryResult::NoStorage => {
                reply(452, "4.3.1 Insufficient system storage, try again later")
            }
            DeliveryResult::TempFail => reply(451, "4.3.0 Temporary failure, try again later"),
            DeliveryResult::Rejected(why) => {
                reply(554, &format!("5.6.0 Message refused: {}", sanitize(&why)))
            }
            DeliveryResult::PolicyRejected(why) => {
                reply(550, &format!("5.7.1 Message refused: {}", sanitize(&why)))
            }
            DeliveryResult::DnsTempFail => reply(
                451,
                "4.4.3 Sender checks failed for a DNS error, try again later",
            ),
        });
        self.process(&mut out);
        out
    }

    /// The driver finished the TLS handshake: the session starts over (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        self.tls_active = true;
        self.reset_transaction();
        self.helo.clear();
        self.inbuf.clear();
        self.state = State::Fresh;
    }

    fn reset_transaction(&mut self) {
        self.mail_from.clear();
        self.eight_bit = false;
        self.rcpt_to.clear();
        self.pending_rcpt = None;
        self.data.clear();
        self.data_rx = DataReceiver::new();
        self.oversize = None;
    }

    fn too_big(&self) -> String {
        format!(
            "5.3.4 Message too big: the limit is {} bytes",
            self.cfg.max_message_bytes
        )
    }

    fn error(&mut self, code: u16, text: &str) -> Output {
        self.errors += 1;
        reply(code, text)
    }

    fn process(&mut self, out: &mut Vec<Output>) {
        loop {
            self.close_if_too_many_errors(out);
            let progressed = match self.state {
                State::Closed | State::AwaitRcpt | State::AwaitDelivery => false,
                State::Data => self.process_data(out),
                _ => self.process_line(out),
            };
            if !progressed {
                // The error that reached the limit is answered 421 at once, not at the
                // client's next command.
                self.close_if_too_many_errors(out);
                return;
            }
        }
    }

    fn close_if_too_many_errors(&mut self, out: &mut Vec<Output>) {
        if self.errors >= self.cfg.max_errors && self.state != State::Closed {
            out.push(reply(
                421,
                &format!(
                    "4.7.0 {} Error: too many errors, closing connection",
                    self.cfg.hostname
                ),
            ));
            out.push(Output::Close);
            self.state = State::Closed;
        }
    }

    /// Consumes data bytes; returns whether the end of data was reached.
    fn process_data(&mut self, out: &mut Vec<Output>) -> bool {
        let input = std::mem::take(&mut self.inbuf);
        let mut iter = input.iter();
        let done = if let Some(dummy) = self.oversize.as_mut() {
            dummy.ingest(&mut iter)
        } else {
            let done = self.data_rx.ingest(&mut iter, &mut self.data);
            if !done && self.data.len() > self.cfg.max_message_bytes {
                // Keep looking for the end of data, but stop storing.
                self.oversize = Some(DummyDataReceiver::new_data(&self.data_rx));
                self.data = Vec::new();
            }
            done
        };
        self.inbuf = iter.as_slice().to_vec();
        if !done {
            return false;
        }
        // The receiver was primed with a CRLF so that a `.` right after the 354 ends the
        // data (an empty message); that CRLF is not part of the message.
        if self.oversize.is_none() {
            self.data.drain(..self.data.len().min(2));
        }
        if self.oversize.is_some() || self.data.len() > self.cfg.max_message_bytes {
            self.reset_transaction();
            self.state = State::Ready;
            let text = self.too_big();
            out.push(self.error(552, &text));
            return true;
        }
        if let Some(problem) = check_line_endings(&self.data, self.cfg.max_data_line) {
            self.reset_transaction();
            self.state = State::Ready;
            out.push(self.error(problem.0, problem.1));
            return true;
        }
        let tx = Transaction {
            helo: self.helo.clone(),
            mail_from: self.mail_from.clone(),
            rcpt_to: self.rcpt_to.clone(),
            data: std::mem::take(&mut self.data),
            eight_bit: self.eight_bit,
        };
        self.state = State::AwaitDelivery;
        out.push(Output::Deliver(tx));
        true
    }

    /// Handles one command line; returns whether a line was consumed.
    fn process_line(&mut self, out: &mut Vec<Output>) -> bool {
        let Some(pos) = self.inbuf.iter().position(|&b| b == b'\n') else {
            if self.inbuf.len() > self.cfg.max_command_line {
                if !self.skipping_line {
                    out.push(self.error(500, "5.5.2 Line too long"));
                }
                self.skipping_line = true;
                self.inbuf.clear();
            }
            return false;
        };
        let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
        if std::mem::take(&mut self.skipping_line) {
            return true; // the tail of an over-long line, already answered
        }
        if line.len() > self.cfg.max_command_line {
            out.push(self.error(500, "5.5.2 Line too long"));
            return true;
        }
        if self.auth.as_ref().is_some_and(|a| a.step != AuthStep::None) {
            let o = self.auth_line(&line);
            out.push(o);
            return true;
        }
        if line.contains(&0) {
            out.push(self.error(501, "5.5.2 Syntax error: NUL character in command"));
            return true;
        }
        let oversize_declared = match declared_size(&line) {
            Ok(size) => size.is_some_and(|n| n > self.cfg.max_message_bytes as u128),
            Err(()) => {
                out.push(self.error(501, "5.5.4 Bad message size syntax"));
                return true;
            }
        };
        if oversize_declared && self.state == State::Ready {
            let text = self.too_big();
            out.push(self.error(552, &text));
            return true;
        }
        let parsed = Request::parse(&mut line.iter());
        let o = match parsed {
            // smtp-proto reads `<Postmaster>` as the empty path, like `<>`; RFC 5321
            // §4.5.1 wants it delivered, so the driver is told which one it was.
            Ok(Request::Rcpt { mut to }) if to.address.is_empty() && is_bare_postmaster(&line) => {
                to.address = "Postmaster".into();
                self.command(Request::Rcpt { to }, out)
            }
            Ok(req) => self.command(req, out),
            Err(ParseError::UnknownCommand) => self.error(500, "5.5.1 Unrecognized command"),
            Err(ParseError::InvalidSenderAddress) => {
                self.error(501, "5.1.7 Bad sender address syntax")
            }
            Err(ParseError::InvalidRecipientAddress) => {
                self.error(501, "5.1.3 Bad recipient address syntax")
            }
            Err(ParseError::SyntaxError { syntax }) => {
                self.error(501, &format!("5.5.4 Syntax: {syntax}"))
            }
            Err(ParseError::InvalidParameter { param }) => {
                self.error(501, &format!("5.5.4 Invalid parameter {}", sanitize(param)))
            }
            Err(ParseError::UnsupportedParameter { param }) => self.error(
                555,
                &format!("5.5.4 Unsupported parameter {}", sanitize(&param)),
            ),
            Err(_) => self.error(500, "5.5.2 Syntax error"),
        };
        // A command that already queued its outputs (RCPT) returns an empty reply.
        if o != Output::Reply(Vec::new()) {
            out.push(o);
        }
        true
    }

    fn command(
        &mut self,
        req: Request<std::borrow::Cow<'_, str>>,
        out: &mut Vec<Output>,
    ) -> Output {
        match req {
            Request::Ehlo { host } => {
                self.reset_transaction();
                self.helo = sanitize(&host);
                self.state = State::Ready;
                let mut lines = vec![
                    self.cfg.hostname.clone(),
                    "PIPELINING".into(),
                    format!("SIZE {}", self.cfg.max_message_bytes),
                    "8BITMIME".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                if self.cfg.starttls && !self.tls_active {
                    lines.push("STARTTLS".into());
                }
                if self.auth.as_ref().is_some_and(|a| !a.done) {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                let mut text = String::new();
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                    text.push_str(&format!("250{sep}{l}\r\n"));
                }
                Output::Reply(text.into_bytes())
            }
            Request::Helo { host } => {
                self.reset_transaction();
                self.helo = sanitize(&host);
                self.state = State::Ready;
                reply(250, &self.cfg.hostname)
            }
            Request::Lhlo { .. } => self.error(500, "5.5.1 This is SMTP, not LMTP"),
            Request::Mail { from } => {
                if self.state == State::Fresh {
                    return self.error(503, "5.5.1 Say EHLO first");
                }
                if self.state == State::Mail {
                    return self.error(503, "5.5.1 Nested MAIL command");
                }
                if self.auth.as_ref().is_some_and(|a| !a.done) {
                    return self.error(530, "5.7.0 Authentication required");
                }
                if let Some(param) = unsupported_mail_param(&from) {
                    return self.error(555, &format!("5.5.4 Unsupported option: {param}"));
                }
                if from.size > self.cfg.max_message_bytes {
                    return self.error(552, &self.too_big());
                }
                self.reset_transaction();
                self.mail_from = sanitize(&from.address);
                self.eight_bit = from.flags & MAIL_BODY_8BITMIME != 0;
                self.state = State::Mail;
                reply(250, "2.1.0 OK")
            }
            Request::Rcpt { to } => {
                if self.state != State::Mail {
                    return self.error(503, "5.5.1 Need MAIL before RCPT");
                }
                if self.rcpt_to.len() >= self.cfg.max_recipients {
                    return reply(452, "4.5.3 Too many recipients");
                }
                if to.address.is_empty() {
                    return self.error(501, "5.1.3 Bad recipient address syntax");
                }
                if let Some(param) = unsupported_rcpt_param(&to) {
                    return self.error(555, &format!("5.5.4 Unsupported option: {param}"));
                }
                self.pending_rcpt = Some(to.address.to_string());
                self.state = State::AwaitRcpt;
                // The verdict produces the reply; nothing to send yet.
                out.push(Output::CheckRecipient(to.address.to_string()));
                Output::Reply(Vec::new())
            }
            Request::Data => {
                if self.state != State::Mail {
                    return self.error(503, "5.5.1 Need MAIL before DATA");
                }
                if self.rcpt_to.is_empty() {
                    return self.error(554, "5.5.1 No valid recipients");
                }
                if !self.inbuf.is_empty() {
                    // The client sent message content before it saw the 354: it does not
                    // follow the dialogue, and what it sent cannot be told apart from
                    // commands. Postfix answers the same and hangs up.
                    self.inbuf.clear();
                    self.state = State::Closed;
                    out.push(reply(554, "5.5.0 Error: SMTP protocol synchronization"));
                    return Output::Close;
                }
                self.state = State::Data;
                self.data.clear();
                self.data_rx = DataReceiver::new();
                // As if the DATA line's CRLF were part of the data: a `.` line right after
                // the 354 then ends an empty message (stripped again at the end).
                self.data_rx.ingest(&mut b"\r\n".iter(), &mut self.data);
                reply(354, "End data with <CR><LF>.<CR><LF>")
            }
            Request::Rset => {
                self.reset_transaction();
                if self.state != State::Fresh {
                    self.state = State::Ready;
                }
                reply(250, "2.0.0 OK")
            }
            Request::Noop { .. } => reply(250, "2.0.0 OK"),
            Request::Quit => {
                self.state = State::Closed;
                out.push(reply(221, "2.0.0 Bye"));
                Output::Close
            }
            Request::Vrfy { .. } => reply(
                252,
                "2.5.0 Cannot VRFY user; send mail and it will be delivered if the user exists",
            ),
            Request::Expn { .. } => reply(502, "5.5.1 EXPN not available"),
            Request::Help { .. } => reply(214, "2.0.0 See RFC 5321"),
            Request::StartTls => {
                if !self.cfg.starttls {
                    return self.error(502, "5.5.1 STARTTLS not available");
                }
                if self.tls_active {
                    return self.error(503, "5.5.1 TLS already active");
                }
                if self.state == State::Mail {
                    return self.error(503, "5.5.1 STARTTLS not allowed inside a transaction");
                }
                // Anything pipelined after STARTTLS was sent in the clear: drop it
                // (CVE-2011-0411 command injection).
                self.inbuf.clear();
                out.push(reply(220, "2.0.0 Ready to start TLS"));
                Output::StartTls
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth_command(mechanism, &initial_response),
            Request::Bdat { .. } => self.error(502, "5.5.1 CHUNKING not available"),
            _ => self.error(502, "5.5.1 Command not implemented"),
        }
    }
}

/// Whether a `RCPT` line names `<Postmaster>` (any case, no domain).
fn is_bare_postmaster(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    match (text.find('<'), text.find('>')) {
        (Some(a), Some(b)) if a < b => text[a + 1..b].trim().eq_ignore_ascii_case("postmaster"),
        _ => false,
    }
}

/// The `SIZE=` value of a `MAIL` line, read exactly: smtp-proto wraps values beyond
/// `usize` around to small numbers (`SIZE=99999999999999999999999` would pass). `Err` for a
/// value that is not digits; values past `u128` saturate (they are too big in any case).
fn declared_size(line: &[u8]) -> Result<Option<u128>, ()> {
    if line.len() < 5 || !line[..5].eq_ignore_ascii_case(b"MAIL ") {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(line);
    let Some(param) = text
        .split_ascii_whitespace()
        .skip(1)
        // Bytes, not `&str` slicing: a multi-byte character may straddle byte 5.
        .find(|p| p.len() >= 5 && p.as_bytes()[..5].eq_ignore_ascii_case(b"SIZE="))
    else {
        return Ok(None);
    };
    let digits = &param[5..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    Ok(Some(digits.bytes().fold(0u128, |n, d| {
        n.saturating_mul(10).saturating_add(u128::from(d - b'0'))
    })))
}

/// The first `MAIL` parameter this server does not advertise (RFC 5321 §4.1.1.11: a
/// parameter of an extension that was not offered is refused with 555).
fn unsupported_mail_param(from: &MailFrom<std::borrow::Cow<'_, str>>) -> Option<&'static str> {
    let advertised = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME;
    let flags = from.flags & !advertised;
    let named = [
        (smtp_proto::MAIL_SMTPUTF8, "SMTPUTF8"),
        (smtp_proto::MAIL_BODY_BINARYMIME, "BODY=BINARYMIME"),
        (smtp_proto::MAIL_REQUIRETLS, "REQUIRETLS"),
        (smtp_proto::MAIL_RET_FULL | smtp_proto::MAIL_RET_HDRS, "RET"),
        (smtp_proto::MAIL_CONPERM, "CONPERM"),
    ];
    if let Some((_, name)) = named.iter().find(|(bit, _)| flags & bit != 0) {
        return Some(name);
    }
    if flags != 0 || from.by != 0 {
        return Some("BY");
    }
    [
        (from.env_id.is_some(), "ENVID"),
        (from.trans_id.is_some(), "TRANSID"),
        (from.solicit.is_some(), "SOLICIT"),
        (from.mtrk.is_some(), "MTRK"),
        (from.auth.is_some(), "AUTH"),
        (from.hold_for != 0 || from.hold_until != 0, "FUTURERELEASE"),
        (from.mt_priority != 0, "MT-PRIORITY"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name))
}

/// The first `RCPT` parameter this server does not advertise (DSN, RRVS, CONNEG).
fn unsupported_rcpt_param(to: &RcptTo<std::borrow::Cow<'_, str>>) -> Option<&'static str> {
    if to.orcpt.is_some() {
        Some("ORCPT")
    } else if to.flags & 0b1111 != 0 {
        Some("NOTIFY")
    } else if to.flags & smtp_proto::RCPT_CONNEG != 0 {
        Some("CONNEG")
    } else if to.rrvs != 0 || to.flags != 0 {
        Some("RRVS")
    } else {
        None
    }
}

/// Checks CRLF discipline, NUL and line length. Returns the reply for the first problem.
fn check_line_endings(data: &[u8], max_line: usize) -> Option<(u16, &'static str)> {
    let mut line_len = 0usize;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                if data.get(i + 1) != Some(&b'\n') {
                    return Some((550, "5.5.2 Message refused: bare <CR> received"));
                }
                if line_len + 2 > max_line {
                    return Some((
                        550,
                        "5.5.2 Message refused: line longer than 998 characters",
                    ));
                }
                line_len = 0;
                i += 2;
                continue;
            }
            b'\n' => return Some((550, "5.5.2 Message refused: bare <LF> received")),
            // RFC 5322 text and RFC 6152 8-bit data exclude NUL: nothing downstream
            // (headers, labels, the client) should meet one.
            0 => return Some((550, "5.6.0 Message refused: NUL character received")),
            _ => line_len += 1,
        }
        i += 1;
    }
    if line_len + 2 > max_line {
        return Some((
            550,
            "5.5.2 Message refused: line longer than 998 characters",
        ));
    }
    None
}

/// Text from the client, made safe to echo in a reply or log: printable ASCII, bounded.
fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests;
