//! One IMAP session, sans-IO: a parsed [`Command`] in, the responses out. The state
//! (not authenticated, authenticated, selected) and the session's view of the selected
//! mailbox (sequence numbers ↔ UIDs, last flags shown) live here; the bytes are imap-next's.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::{FixedOffset, TimeZone, Utc};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Atom, IString, QuotedChar, Tag, Text, Vec1};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_next::imap_types::flag::{
    Flag, FlagFetch, FlagNameAttribute, FlagPerm, StoreResponse, StoreType,
};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{Capability, Code, CodeOther, Data, Response, Status};
use imap_next::imap_types::sequence::SequenceSet;
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};

use crate::auth;
use crate::error::Error;
use crate::message;
use crate::search::Candidate;
use crate::sequence::NumSet;
use crate::shared::Shared;
use crate::store::{self, DELIMITER, NewMessage};

/// What the connection driver does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send the responses after [`auth::FAILURE_DELAY`].
    Delay,
    /// Send the responses, then close.
    Close,
}

#[derive(Debug)]
struct Selected {
    name: String,
    read_only: bool,
    /// UIDs in sequence order (index + 1 = sequence number).
    uids: Vec<u32>,
    /// Flags as last shown to the client.
    flags: HashMap<u32, BTreeSet<String>>,
    /// Store version of the last look.
    version: u64,
}

#[derive(Debug)]
enum State {
    NotAuthenticated,
    Authenticated,
    Selected(Selected),
}

pub struct Session {
    shared: Arc<Shared>,
    state: State,
    failures: u32,
}

pub struct Reply {
    pub responses: Vec<Response<'static>>,
    pub after: After,
}

fn text(s: &str) -> Text<'static> {
    Text::try_from(s.to_owned()).unwrap_or_else(|_| Text::unvalidated("error".to_owned()))
}

fn ok(tag: Tag<'static>, code: Option<Code<'static>>, t: &str) -> Response<'static> {
    Response::Status(
        Status::ok(Some(tag), code, text(t)).expect("invariant: ok status with a valid text"),
    )
}
fn no(tag: Tag<'static>, code: Option<Code<'static>>, t: &str) -> Response<'static> {
    Response::Status(
        Status::no(Some(tag), code, text(t)).expect("invariant: no status with a valid text"),
    )
}
fn bad(tag: Tag<'static>, t: &str) -> Response<'static> {
    Response::Status(
        Status::bad(Some(tag), None, text(t)).expect("invariant: bad status with a valid text"),
    )
}
fn untagged_ok(code: Code<'static>, t: &str) -> Response<'static> {
    Response::Status(
        Status::ok(None, Some(code), text(t)).expect("invariant: ok status with a valid text"),
    )
}
fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

pub fn capabilities(authenticated: bool) -> Vec1<Capability<'static>> {
    let mut caps = vec![Capability::Imap4Rev1];
    if !authenticated {
        caps.push(Capability::Auth(
            imap_next::imap_types::auth::AuthMechanism::Plain,
        ));
        caps.push(Capability::SaslIr);
    }
    caps.extend([
        Capability::Idle,
        Capability::UidPlus,
        Capability::Move,
        Capability::Unselect,
        Capability::Namespace,
        Capability::Id,
        Capability::Enable,
        Capability::from(Atom::try_from("SPECIAL-USE").expect("invariant: atom")),
    ]);
    Vec1::try_from(caps).expect("invariant: IMAP4rev1 is always there")
}

pub fn flag_name(f: &Flag<'_>) -> Option<String> {
    Some(match f {
        Flag::Answered => "\\Answered".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Seen => "\\Seen".into(),
        Flag::Keyword(a) => a.inner().to_owned(),
        // Unknown system flags (`\Foo`) are not kept.
        Flag::Extension(_) => return None,
    })
}

fn to_flag(s: &str) -> Option<Flag<'static>> {
    Some(match s {
        "\\Answered" => Flag::Answered,
        "\\Deleted" => Flag::Deleted,
        "\\Draft" => Flag::Draft,
        "\\Flagged" => Flag::Flagged,
        "\\Seen" => Flag::Seen,
        k => Flag::Keyword(Atom::try_from(k.to_owned()).ok()?),
    })
}

fn flags_fetch(set: &BTreeSet<String>) -> Vec<FlagFetch<'static>> {
    set.iter()
        .filter_map(|s| to_flag(s))
        .map(FlagFetch::Flag)
        .collect()
}

fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".to_owned(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.inner().as_ref()).into_owned(),
    }
}

fn to_mailbox(name: &str) -> Mailbox<'static> {
    Mailbox::try_from(name.to_owned()).unwrap_or(Mailbox::Inbox)
}

fn internal_date(secs: i64) -> Option<DateTime> {
    let t = Utc
        .timestamp_opt(secs, 0)
        .single()?
        .with_timezone(&FixedOffset::east_opt(0)?);
    DateTime::try_from(t).ok()
}

fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let mut elems: Vec<UidElement> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        elems.push(if start == end {
            UidElement::Single(nz(start))
        } else {
            UidElement::Range(nz(start), nz(end))
        });
        i += 1;
    }
    Vec1::try_from(elems).ok().map(UidSet)
}

/// LIST pattern matching: `*` matches anything, `%` anything but the delimiter.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some((b'%', rest)) => {
            let stop = name
                .iter()
                .position(|c| *c == DELIMITER as u8)
                .unwrap_or(name.len());
            (0..=stop).any(|i| wildcard(rest, &name[i..]))
        }
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

impl Session {
    pub fn new(shared: Arc<Shared>) -> Session {
        Session {
            shared,
            state: State::NotAuthenticated,
            failures: 0,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        !matches!(self.state, State::NotAuthenticated)
    }

    pub fn is_selected(&self) -> bool {
        matches!(self.state, State::Selected(_))
    }

    /// Checks credentials (LOGIN or AUTHENTICATE PLAIN); on success the session is
    /// authenticated.
    pub fn authenticate(&mut self, tag: Tag<'static>, user: &[u8], pass: &[u8]) -> Reply {
        if self.is_authenticated() {
            return Reply {
                responses: vec![bad(tag, "Already authenticated")],
                after: After::Continue,
            };
        }
        if self.shared.credentials.check(user, pass) {
            self.state = State::Authenticated;
            let code = Code::Capability(capabilities(true));
            Reply {
                responses: vec![ok(tag, Some(code), "Logged in")],
                after: After::Continue,
            }
        } else {
            self.failures += 1;
            tracing::info!(failures = self.failures, "bridge IMAP login failed");
            let after = if self.failures >= auth::MAX_FAILURES {
                After::Close
            } else {
                After::Delay
            };
            Reply {
                responses: vec![no(
                    tag,
                    Some(Code::Other(CodeOther::unvalidated(
                        b"AUTHENTICATIONFAILED".as_slice(),
                    ))),
                    "Wrong user name or bridge password",
                )],
                after,
            }
        }
    }

    pub fn handle(&mut self, cmd: Command<'static>) -> Reply {
        let tag = cmd.tag;
        let mut out = Vec::new();
        let after = After::Continue;
        let authed = self.is_authenticated();
        let selected = self.is_selected();
        // Commands during which EXPUNGE may not be sent (RFC 3501 7.4.1).
        let mut defer_expunge = false;
        match cmd.body {
            CommandBody::Capability => {
                out.push(Response::Data(Data::Capability(capabilities(authed))));
                out.push(ok(tag, None, "CAPABILITY done"));
            }
            CommandBody::Noop | CommandBody::Check => out.push(ok(tag, None, "NOOP done")),
            CommandBody::Logout => {
                out.push(Response::Status(
                    Status::bye(None, text("Logging out")).expect("invariant: bye"),
                ));
                out.push(ok(tag, None, "LOGOUT done"));
                return Reply {
                    responses: out,
                    after: After::Close,
                };
            }
            CommandBody::Id { .. } => {
                let params = vec![(
                    IString::try_from("name").expect("invariant: quoted"),
                    message::nstring(Some("Sealpost Bridge")),
                )];
                out.push(Response::Data(Data::Id {
                    parameters: Some(params),
                }));
                out.push(ok(tag, None, "ID done"));
            }
            CommandBody::Enable { .. } if authed => {
                out.push(Response::Data(Data::Enabled {
                    capabilities: Vec::new(),
                }));
                out.push(ok(tag, None, "ENABLE done"));
            }
            CommandBody::Login { username, password } => {
                return self.authenticate(tag, username.as_ref(), password.declassify().as_ref());
            }
            _ if !authed => out.push(bad(tag, "Log in first")),
            CommandBody::Namespace => {
                let ns = Namespace {
                    prefix: IString::try_from("").expect("invariant: quoted"),
                    delimiter: Some(QuotedChar::unvalidated(DELIMITER)),
                    extensions: Vec::new(),
                };
                out.push(Response::Data(Data::Namespace {
                    personal: vec![ns],
                    other: Vec::new(),
                    shared: Vec::new(),
                }));
                out.push(ok(tag, None, "NAMESPACE done"));
            }
            CommandBody::Select { mailbox, .. } => {
                self.select(tag, &mailbox_name(&mailbox), false, &mut out)
            }
            CommandBody::Examine { mailbox, .. } => {
                self.select(tag, &mailbox_name(&mailbox), true, &mut out)
            }
            CommandBody::Create { mailbox } => {
                let r = self
                    .shared
                    .with_store(|s| s.create(&mailbox_name(&mailbox)));
                out.push(self.result(tag, r.map(|_| ()), "CREATE done"));
            }
            CommandBody::Delete { mailbox } => {
                let name = store::canonical(&mailbox_name(&mailbox));
                if matches!(&self.state, State::Selected(s) if s.name == name) {
                    self.state = State::Authenticated;
                }
                let r = self.shared.with_store(|s| s.delete(&name));
                out.push(self.result(tag, r, "DELETE done"));
            }
            CommandBody::Rename { from, to } => {
                let r = self
                    .shared
                    .with_store(|s| s.rename(&mailbox_name(&from), &mailbox_name(&to)));
                out.push(self.result(tag, r, "RENAME done"));
            }
            // Every mailbox counts as subscribed; LSUB lists them all.
            CommandBody::Subscribe { .. } | CommandBody::Unsubscribe { .. } => {
                out.push(ok(tag, None, "done"))
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                self.list(&reference, &mailbox_wildcard, false, &mut out);
                out.push(ok(tag, None, "LIST done"));
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                self.list(&reference, &mailbox_wildcard, true, &mut out);
                out.push(ok(tag, None, "LSUB done"));
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(tag, &mailbox, &item_names, &mut out),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let name = mailbox_name(&mailbox);
                let flags: BTreeSet<String> = flags.iter().filter_map(flag_name).collect();
                let date = date
                    .map(|d| d.as_ref().timestamp())
                    .unwrap_or(crate::now() as i64);
                let bytes = match &message {
                    imap_next::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.data().to_vec()
                    }
                    imap_next::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.to_vec()
                    }
                };
                let r = self.shared.with_store(|s| {
                    let uids = s.append(
                        &name,
                        &[NewMessage {
                            bytes: &bytes,
                            flags,
                            date,
                            source_id: None,
                        }],
                    )?;
                    let v = s.mailbox(&name).map(|m| m.uidvalidity).unwrap_or(1);
                    Ok::<_, Error>((v, uids[0]))
                });
                match r {
                    Ok((v, uid)) => out.push(ok(
                        tag,
                        Some(Code::AppendUid {
                            uid_validity: nz(v),
                            uid: nz(uid),
                        }),
                        "APPEND done",
                    )),
                    Err(Error::NoMailbox(_)) => {
                        out.push(no(tag, Some(Code::TryCreate), "No such mailbox"))
                    }
                    Err(e) => out.push(self.result(tag, Err(e), "")),
                }
            }
            _ if !selected => out.push(bad(tag, "Select a mailbox first")),
            CommandBody::Unselect => {
                self.state = State::Authenticated;
                out.push(ok(tag, None, "UNSELECT done"));
                return Reply {
                    responses: out,
                    after,
                };
            }
            CommandBody::Close => {
                let _ = self.expunge_deleted(None, &mut Vec::new());
                self.state = State::Authenticated;
                out.push(ok(tag, None, "CLOSE done"));
                return Reply {
                    responses: out,
                    after,
                };
            }
            CommandBody::Expunge => match self.expunge_deleted(None, &mut out) {
                Ok(()) => out.push(ok(tag, None, "EXPUNGE done")),
                Err(e) => out.push(self.result(tag, Err(e), "")),
            },
            CommandBody::ExpungeUid { sequence_set } => {
                match self.expunge_deleted(Some(&sequence_set), &mut out) {
                    Ok(()) => out.push(ok(tag, None, "UID EXPUNGE done")),
                    Err(e) => out.push(self.result(tag, Err(e), "")),
                }
            }
            CommandBody::Search { criteria, uid, .. } => {
                defer_expunge = !uid;
                let hits = self.search(criteria.as_ref(), uid);
                out.push(Response::Data(Data::Search(
                    hits.into_iter().map(nz).collect(),
                )));
                out.push(ok(tag, None, "SEARCH done"));
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                defer_expunge = !uid;
                self.fetch(&sequence_set, macro_or_item_names, uid, &mut out);
                out.push(ok(tag, None, "FETCH done"));
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                defer_expunge = !uid;
                match self.store_flags(&sequence_set, kind, response, &flags, uid, &mut out) {
                    Ok(()) => out.push(ok(tag, None, "STORE done")),
                    Err(e) => out.push(self.result(tag, Err(e), "")),
                }
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                defer_expunge = !uid;
                let r = self.copy(&sequence_set, &mailbox_name(&mailbox), uid, false, &mut out);
                out.push(match r {
                    Ok(code) => ok(tag, code, "COPY done"),
                    Err(Error::NoMailbox(_)) => no(tag, Some(Code::TryCreate), "No such mailbox"),
                    Err(e) => self.result(tag, Err(e), ""),
                });
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                let r = self.copy(&sequence_set, &mailbox_name(&mailbox), uid, true, &mut out);
                out.push(match r {
                    Ok(_) => ok(tag, None, "MOVE done"),
                    Err(Error::NoMailbox(_)) => no(tag, Some(Code::TryCreate), "No such mailbox"),
                    Err(e) => self.result(tag, Err(e), ""),
                });
            }
            _ => out.push(bad(tag, "Command not supported")),
        }
        // Changes by other sessions (or the importer) go before the tagged reply.
        if let State::Selected(_) = self.state {
            let last = out.pop();
            self.updates(defer_expunge, &mut out);
            out.extend(last);
        }
        Reply {
            responses: out,
            after,
        }
    }

    fn result(&self, tag: Tag<'static>, r: Result<(), Error>, done: &str) -> Response<'static> {
        match r {
            Ok(()) => ok(tag, None, done),
            Err(e @ (Error::Io { .. } | Error::Corrupt { .. })) => {
                tracing::error!(error = %e, "bridge store failed");
                no(
                    tag,
                    Some(Code::Other(CodeOther::unvalidated(b"SERVERBUG".as_slice()))),
                    "The bridge could not write its store",
                )
            }
            Err(e @ Error::TooBig { .. }) => no(tag, Some(Code::TooBig), &e.to_string()),
            Err(e) => no(tag, None, &e.to_string()),
        }
    }

    fn select(
        &mut self,
        tag: Tag<'static>,
        name: &str,
        read_only: bool,
        out: &mut Vec<Response<'static>>,
    ) {
        self.state = State::Authenticated;
        let view = self.shared.with_store(|s| {
            let mb = s.mailbox(name)?;
            let unseen = mb
                .messages
                .iter()
                .position(|m| !m.has("\\Seen"))
                .map(|i| i as u32 + 1);
            Some((
                mb.name.clone(),
                mb.uidvalidity,
                mb.uidnext,
                mb.messages
                    .iter()
                    .map(|m| (m.uid, m.flags.clone()))
                    .collect::<Vec<_>>(),
                unseen,
                s.version(),
            ))
        });
        let Some((name, validity, uidnext, msgs, unseen, version)) = view else {
            out.push(no(tag, None, "No such mailbox"));
            return;
        };
        let system = [
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Seen,
            Flag::Draft,
        ];
        out.push(Response::Data(Data::Flags(system.to_vec())));
        out.push(Response::Data(Data::Exists(msgs.len() as u32)));
        out.push(Response::Data(Data::Recent(0)));
        if let Some(u) = unseen {
            out.push(untagged_ok(Code::Unseen(nz(u)), "First unseen"));
        }
        let mut perm: Vec<FlagPerm<'static>> = system.into_iter().map(FlagPerm::Flag).collect();
        perm.push(FlagPerm::Asterisk);
        out.push(untagged_ok(
            Code::PermanentFlags(if read_only { Vec::new() } else { perm }),
            "Flags permitted",
        ));
        out.push(untagged_ok(Code::UidValidity(nz(validity)), "UIDs valid"));
        out.push(untagged_ok(
            Code::UidNext(nz(uidnext)),
            "Predicted next UID",
        ));
        let uids = msgs.iter().map(|(u, _)| *u).collect();
        let flags = msgs.into_iter().collect();
        self.state = State::Selected(Selected {
            name,
            read_only,
            uids,
            flags,
            version,
        });
        let code = if read_only {
            Code::ReadOnly
        } else {
            Code::ReadWrite
        };
        out.push(ok(
            tag,
            Some(code),
            if read_only {
                "EXAMINE done"
            } else {
                "SELECT done"
            },
        ));
    }

    fn list(
        &self,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
        out: &mut Vec<Response<'static>>,
    ) {
        let reference = match reference {
            Mailbox::Inbox => "INBOX".to_owned(),
            Mailbox::Other(o) => String::from_utf8_lossy(o.inner().as_ref()).into_owned(),
        };
        let pattern = match pattern {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        };
        let delimiter = Some(QuotedChar::unvalidated(DELIMITER));
        if pattern.is_empty() && !lsub {
            // The hierarchy delimiter query (RFC 3501 6.3.8).
            out.push(Response::Data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: Mailbox::try_from("").unwrap_or(Mailbox::Inbox),
            }));
            return;
        }
        let full = format!("{reference}{pattern}");
        let entries: Vec<(String, Option<store::SpecialUse>, bool)> = self.shared.with_store(|s| {
            let names = s.names();
            names
                .iter()
                .map(|n| {
                    let prefix = format!("{n}{DELIMITER}");
                    let children = names.iter().any(|c| c.starts_with(&prefix));
                    (
                        n.to_string(),
                        s.mailbox(n).and_then(|m| m.special),
                        children,
                    )
                })
                .collect()
        });
        for (name, special, children) in entries {
            let hit = wildcard(full.as_bytes(), name.as_bytes())
                || (name == "INBOX" && wildcard(full.to_ascii_uppercase().as_bytes(), b"INBOX"));
            if !hit {
                continue;
            }
            let mut items = vec![FlagNameAttribute::from(
                Atom::try_from(if children {
                    "HasChildren"
                } else {
                    "HasNoChildren"
                })
                .expect("invariant: atom"),
            )];
            if let Some(su) = special {
                items.push(FlagNameAttribute::from(
                    Atom::try_from(su.attribute()).expect("invariant: atom"),
                ));
            }
            let mailbox = to_mailbox(&name);
            out.push(Response::Data(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            }));
        }
    }

    fn status(
        &self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        names: &[StatusDataItemName],
        out: &mut Vec<Response<'static>>,
    ) {
        let name = mailbox_name(mailbox);
        let items = self.shared.with_store(|s| {
            let mb = s.mailbox(&name)?;
            let items: Vec<StatusDataItem> = names
                .iter()
                .filter_map(|n| match n {
                    StatusDataItemName::Messages => {
                        Some(StatusDataItem::Messages(mb.messages.len() as u32))
                    }
                    StatusDataItemName::Recent => Some(StatusDataItem::Recent(0)),
                    StatusDataItemName::UidNext => Some(StatusDataItem::UidNext(nz(mb.uidnext))),
                    StatusDataItemName::UidValidity => {
                        Some(StatusDataItem::UidValidity(nz(mb.uidvalidity)))
                    }
                    StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(
                        mb.messages.iter().filter(|m| !m.has("\\Seen")).count() as u32,
                    )),
                    _ => None,
                })
                .collect();
            Some(items)
        });
        match items {
            Some(items) => {
                out.push(Response::Data(Data::Status {
                    mailbox: to_mailbox(&name),
                    items: items.into(),
                }));
                out.push(ok(tag, None, "STATUS done"));
            }
            None => out.push(no(tag, None, "No such mailbox")),
        }
    }

    /// The (sequence number, UID) pairs a set names.
    fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<(u32, u32)> {
        let State::Selected(sel) = &self.state else {
            return Vec::new();
        };
        let largest = if uid {
            sel.uids.last().copied().unwrap_or(0)
        } else {
            sel.uids.len() as u32
        };
        let ns = NumSet::new(set, largest);
        sel.uids
            .iter()
            .enumerate()
            .map(|(i, u)| (i as u32 + 1, *u))
            .filter(|(seq, u)| ns.contains(if uid { *u } else { *seq }))
            .collect()
    }

    fn search(
        &self,
        criteria: &[imap_next::imap_types::search::SearchKey<'_>],
        uid: bool,
    ) -> Vec<u32> {
        let State::Selected(sel) = &self.state else {
            return Vec::new();
        };
        let key = match criteria {
            [one] => one.clone(),
            many => imap_next::imap_types::search::SearchKey::And(
                Vec1::try_from(many.to_vec()).expect("invariant: SEARCH has at least one key"),
            ),
        };
        let largest_seq = sel.uids.len() as u32;
        let largest_uid = sel.uids.last().copied().unwrap_or(0);
        let name = sel.name.clone();
        let shared = self.shared.clone();
        let metas: Vec<(u32, Option<store::Msg>)> = shared.with_store(|s| {
            let mb = s.mailbox(&name);
            sel.uids
                .iter()
                .map(|u| (*u, mb.and_then(|m| m.get(*u)).cloned()))
                .collect()
        });
        let mut hits = Vec::new();
        for (i, (u, meta)) in metas.iter().enumerate() {
            let Some(meta) = meta else { continue };
            let load = || shared.with_store(|s| s.read(&name, *u).ok());
            let mut c = Candidate::new(i as u32 + 1, largest_seq, largest_uid, meta, load);
            if c.matches(&key) {
                hits.push(if uid { *u } else { i as u32 + 1 });
            }
        }
        hits
    }

    fn fetch(
        &mut self,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        uid: bool,
        out: &mut Vec<Response<'static>>,
    ) {
        let mut names: Vec<MessageDataItemName<'static>> = match items {
            MacroOrMessageDataItemNames::Macro(m) => match m {
                Macro::All => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                ],
                Macro::Fast => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                ],
                Macro::Full => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                    MessageDataItemName::Body,
                ],
                _ => vec![MessageDataItemName::Flags],
            },
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
        };
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        let targets = self.resolve(set, uid);
        let State::Selected(sel) = &self.state else {
            return;
        };
        let read_only = sel.read_only;
        let name = sel.name.clone();
        let needs_body = names.iter().any(|n| {
            !matches!(
                n,
                MessageDataItemName::Uid
                    | MessageDataItemName::Flags
                    | MessageDataItemName::InternalDate
                    | MessageDataItemName::Rfc822Size
            )
        });
        let sets_seen = !read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let metas: Vec<(u32, u32, Option<store::Msg>)> = self.shared.with_store(|s| {
            let mb = s.mailbox(&name);
            targets
                .iter()
                .map(|(seq, u)| (*seq, *u, mb.and_then(|m| m.get(*u)).cloned()))
                .collect()
        });
        let mut seen_changes = Vec::new();
        for (seq, u, meta) in metas {
            // Expunged by another session and not yet reported: nothing to show.
            let Some(mut meta) = meta else { continue };
            let raw = if needs_body {
                match self.shared.with_store(|s| s.read(&name, u)) {
                    Ok(r) => Some(r),
                    Err(_) => continue,
                }
            } else {
                None
            };
            if sets_seen && !meta.has("\\Seen") {
                meta.flags.insert("\\Seen".to_owned());
                seen_changes.push((u, meta.flags.clone()));
            }
            let raw = raw.as_deref().unwrap_or(b"");
            let mut data = Vec::with_capacity(names.len());
            for n in &names {
                data.push(match n {
                    MessageDataItemName::Uid => MessageDataItem::Uid(nz(u)),
                    MessageDataItemName::Flags => MessageDataItem::Flags(flags_fetch(&meta.flags)),
                    MessageDataItemName::InternalDate => match internal_date(meta.date) {
                        Some(d) => MessageDataItem::InternalDate(d),
                        None => continue,
                    },
                    MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(meta.size),
                    MessageDataItemName::Envelope => {
                        MessageDataItem::Envelope(message::envelope(raw))
                    }
                    MessageDataItemName::Body => {
                        MessageDataItem::Body(message::body_structure(raw))
                    }
                    MessageDataItemName::BodyStructure => {
                        MessageDataItem::BodyStructure(message::body_structure(raw))
                    }
                    MessageDataItemName::Rfc822 => {
                        MessageDataItem::Rfc822(message::literal_lossy(raw.to_vec()))
                    }
                    MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(
                        message::literal_lossy(raw[..message::header_end(raw)].to_vec()),
                    ),
                    MessageDataItemName::Rfc822Text => MessageDataItem::Rfc822Text(
                        message::literal_lossy(raw[message::header_end(raw)..].to_vec()),
                    ),
                    MessageDataItemName::BodyExt {
                        section, partial, ..
                    } => {
                        let bytes = message::section(raw, section.as_ref()).unwrap_or_default();
                        let (origin, bytes) = match partial {
                            Some((start, len)) => {
                                let s = (*start as usize).min(bytes.len());
                                let e = s.saturating_add(len.get() as usize).min(bytes.len());
                                (Some(*start), bytes[s..e].to_vec())
                            }
                            None => (None, bytes),
                        };
                        MessageDataItem::BodyExt {
                            section: section.clone(),
                            origin,
                            data: message::literal_lossy(bytes),
                        }
                    }
                    // BINARY and MODSEQ are not advertised.
                    MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {
                        continue;
                    }
                });
            }
            // \Seen set by this FETCH is reported with it (RFC 3501 6.4.5).
            if sets_seen
                && !names.contains(&MessageDataItemName::Flags)
                && seen_changes.last().is_some_and(|(x, _)| *x == u)
            {
                data.push(MessageDataItem::Flags(flags_fetch(&meta.flags)));
            }
            if let Ok(items) = Vec1::try_from(data) {
                out.push(Response::Data(Data::Fetch {
                    seq: nz(seq),
                    items,
                }));
            }
        }
        if !seen_changes.is_empty() {
            let name2 = name.clone();
            let changes = seen_changes.clone();
            if let Err(e) = self.shared.with_store(|s| s.set_flags(&name2, &changes)) {
                tracing::error!(error = %e, "bridge store failed to set \\Seen");
            }
            if let State::Selected(sel) = &mut self.state {
                for (u, f) in seen_changes {
                    sel.flags.insert(u, f);
                }
            }
        }
    }

    fn store_flags(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
        out: &mut Vec<Response<'static>>,
    ) -> Result<(), Error> {
        let targets = self.resolve(set, uid);
        let State::Selected(sel) = &self.state else {
            return Ok(());
        };
        if sel.read_only {
            return Err(Error::Source("the mailbox is open read-only".into()));
        }
        let name = sel.name.clone();
        let given: BTreeSet<String> = flags.iter().filter_map(flag_name).collect();
        let current: Vec<(u32, u32, Option<BTreeSet<String>>)> = self.shared.with_store(|s| {
            let mb = s.mailbox(&name);
            targets
                .iter()
                .map(|(seq, u)| {
                    (
                        *seq,
                        *u,
                        mb.and_then(|m| m.get(*u)).map(|m| m.flags.clone()),
                    )
                })
                .collect()
        });
        let mut changes = Vec::new();
        let mut shown = Vec::new();
        for (seq, u, cur) in current {
            let Some(cur) = cur else { continue };
            let new: BTreeSet<String> = match kind {
                StoreType::Replace => given.clone(),
                StoreType::Add => cur.union(&given).cloned().collect(),
                StoreType::Remove => cur.difference(&given).cloned().collect(),
            };
            changes.push((u, new.clone()));
            shown.push((seq, u, new));
        }
        let name2 = name.clone();
        self.shared.with_store(|s| s.set_flags(&name2, &changes))?;
        if let State::Selected(sel) = &mut self.state {
            for (seq, u, f) in shown {
                sel.flags.insert(u, f.clone());
                if response == StoreResponse::Answer {
                    let mut items = vec![MessageDataItem::Flags(flags_fetch(&f))];
                    if uid {
                        items.push(MessageDataItem::Uid(nz(u)));
                    }
                    out.push(Response::Data(Data::Fetch {
                        seq: nz(seq),
                        items: Vec1::try_from(items).expect("invariant: FLAGS is there"),
                    }));
                }
            }
        }
        Ok(())
    }

    fn copy(
        &mut self,
        set: &SequenceSet,
        to: &str,
        uid: bool,
        remove: bool,
        out: &mut Vec<Response<'static>>,
    ) -> Result<Option<Code<'static>>, Error> {
        let targets = self.resolve(set, uid);
        let State::Selected(sel) = &self.state else {
            return Ok(None);
        };
        if remove && sel.read_only {
            return Err(Error::Source("the mailbox is open read-only".into()));
        }
        let from = sel.name.clone();
        let uids: Vec<u32> = targets.iter().map(|(_, u)| *u).collect();
        let (pairs, validity) = self.shared.with_store(|s| {
            let pairs = s.copy(&from, &uids, to)?;
            if remove {
                let moved: Vec<u32> = pairs.iter().map(|(a, _)| *a).collect();
                s.expunge(&from, &moved)?;
            }
            let v = s.mailbox(to).map(|m| m.uidvalidity).unwrap_or(1);
            Ok::<_, Error>((pairs, v))
        })?;
        let code = match (
            uid_set(&pairs.iter().map(|p| p.0).collect::<Vec<_>>()),
            uid_set(&pairs.iter().map(|p| p.1).collect::<Vec<_>>()),
        ) {
            (Some(source), Some(destination)) => Some(Code::CopyUid {
                uid_validity: nz(validity),
                source,
                destination,
            }),
            _ => None,
        };
        if remove {
            if let Some(c) = code.clone() {
                out.push(untagged_ok(c, "Moved"));
            }
            self.report_expunged(out);
        }
        Ok(code)
    }

    /// EXPUNGE: removes messages flagged \Deleted (within `only`, for UID EXPUNGE).
    fn expunge_deleted(
        &mut self,
        only: Option<&SequenceSet>,
        out: &mut Vec<Response<'static>>,
    ) -> Result<(), Error> {
        let State::Selected(sel) = &self.state else {
            return Ok(());
        };
        if sel.read_only {
            return Ok(());
        }
        let name = sel.name.clone();
        let limit = only.map(|s| NumSet::new(s, sel.uids.last().copied().unwrap_or(0)));
        self.shared.with_store(|s| {
            let Some(mb) = s.mailbox(&name) else {
                return Ok(());
            };
            let doomed: Vec<u32> = mb
                .messages
                .iter()
                .filter(|m| m.has("\\Deleted") && limit.as_ref().is_none_or(|l| l.contains(m.uid)))
                .map(|m| m.uid)
                .collect();
            s.expunge(&name, &doomed).map(|_| ())
        })?;
        self.report_expunged(out);
        Ok(())
    }

    /// Sends EXPUNGE for every message of the view that the store no longer has.
    fn report_expunged(&mut self, out: &mut Vec<Response<'static>>) {
        let State::Selected(sel) = &mut self.state else {
            return;
        };
        let name = sel.name.clone();
        let present: Option<std::collections::HashSet<u32>> = self.shared.with_store(|s| {
            s.mailbox(&name)
                .map(|m| m.messages.iter().map(|x| x.uid).collect())
        });
        let present = present.unwrap_or_default();
        // Highest sequence number first, so earlier numbers stay valid as we go.
        let mut i = sel.uids.len();
        while i > 0 {
            i -= 1;
            let u = sel.uids[i];
            if !present.contains(&u) {
                sel.uids.remove(i);
                sel.flags.remove(&u);
                out.push(Response::Data(Data::Expunge(nz(i as u32 + 1))));
            }
        }
    }

    /// Unsolicited updates for the selected mailbox: EXPUNGE (unless deferred), EXISTS for
    /// new messages, FETCH FLAGS for flags changed elsewhere.
    pub fn updates(&mut self, defer_expunge: bool, out: &mut Vec<Response<'static>>) {
        let State::Selected(sel) = &self.state else {
            return;
        };
        let name = sel.name.clone();
        let seen_version = sel.version;
        let snapshot = self.shared.with_store(|s| {
            if s.version() == seen_version {
                return None;
            }
            Some((
                s.version(),
                s.mailbox(&name).map(|m| {
                    m.messages
                        .iter()
                        .map(|x| (x.uid, x.flags.clone()))
                        .collect::<Vec<_>>()
                }),
            ))
        });
        let Some((version, msgs)) = snapshot else {
            return;
        };
        let Some(msgs) = msgs else {
            // Deleted under us: nothing sensible to show; the next command fails.
            return;
        };
        if !defer_expunge {
            self.report_expunged(out);
        }
        let State::Selected(sel) = &mut self.state else {
            return;
        };
        let current: HashMap<u32, &BTreeSet<String>> = msgs.iter().map(|(u, f)| (*u, f)).collect();
        for (i, u) in sel.uids.iter().enumerate() {
            if let Some(f) = current.get(u)
                && sel.flags.get(u) != Some(*f)
            {
                sel.flags.insert(*u, (*f).clone());
                let items = vec![
                    MessageDataItem::Flags(flags_fetch(f)),
                    MessageDataItem::Uid(nz(*u)),
                ];
                out.push(Response::Data(Data::Fetch {
                    seq: nz(i as u32 + 1),
                    items: Vec1::try_from(items).expect("invariant: two items"),
                }));
            }
        }
        let last = sel.uids.last().copied().unwrap_or(0);
        let before = sel.uids.len();
        for (u, f) in &msgs {
            if *u > last {
                sel.uids.push(*u);
                sel.flags.insert(*u, f.clone());
            }
        }
        if sel.uids.len() != before {
            out.push(Response::Data(Data::Exists(sel.uids.len() as u32)));
        }
        // Only a full look (expunges reported) brings the view up to this version.
        if !defer_expunge {
            sel.version = version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        assert!(wildcard(b"*", b"a/b"));
        assert!(wildcard(b"%", b"Sent"));
        assert!(!wildcard(b"%", b"a/b"));
        assert!(wildcard(b"a/%", b"a/b"));
        assert!(wildcard(b"S*t", b"Sent"));
        assert!(!wildcard(b"S*x", b"Sent"));
    }

    #[test]
    fn uid_sets_compress_runs() {
        let s = uid_set(&[1, 2, 3, 7, 9, 10]).unwrap();
        assert_eq!(s.0.as_ref().len(), 3);
    }
}
