//! Legacy mail in the node's one durable outbound queue: the real `sealpost-node` sends to a
//! scripted SMTP server on loopback (`smtp_sink`). A job deferred with a 4xx keeps its retry
//! state on disk (attempts, next try, the remote reply) through a SIGKILL and is sent after
//! the restart, once; recipients refused with a 5xx, and a job that runs out of time, end in
//! exactly one bounce that names the recipient and the remote reply. Letters one after
//! another to the same destination share one SMTP session.

mod common;
mod procnode;
mod smtp_sink;

use std::time::Duration;

use common::*;
use procnode::ProcNode;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::seal::open;
use sealpost_proto::{MailboxId, NodeUrl};
use sealpost_server::store::OutboundItem;
use smtp_sink::{Outgoing, Script, Sink};

const DOMAIN: &str = "gw.test";

fn node_args(sink: &Sink, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "limits.submit_per_minute=0".to_string(),
        "relay.retry_base=0.05".into(),
        "relay.retry_max=0.5".into(),
        "gateway.enabled=true".into(),
        format!("gateway.domain=\"{DOMAIN}\""),
        "gateway.listen=\"127.0.0.1:0\"".into(),
        format!("gateway.smarthost=\"{}\"", sink.addr),
        "gateway.retry_base=0.3".into(),
        "gateway.retry_max=0.6".into(),
    ]
    .into_iter()
    .chain(extra.iter().map(|s| s.to_string()))
    .collect();
    args = args
        .into_iter()
        .flat_map(|a| ["--set".to_string(), a])
        .collect();
    args
}

fn start(sink: &Sink, extra: &[&str]) -> ProcNode {
    let args = node_args(sink, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ProcNode::start(&refs, &[])
}

/// A user of the node, ready to send legacy mail.
struct Sender {
    user: User,
    mailbox: MailboxId,
    token: String,
    out: Outgoing,
}

impl Sender {
    async fn new(api: &Api, url: &NodeUrl) -> Sender {
        let user = User::new(&format!("alice@{DOMAIN}"));
        let mailbox = api.mailbox(url, &user).await;
        let token = api.token(url, &mailbox, &user.keys).await;
        let out = Outgoing::discover(&api.http, url, DOMAIN).await;
        Sender {
            user,
            mailbox,
            token,
            out,
        }
    }

    /// Submits a letter to `to`; returns its Message-ID.
    async fn send(&self, api: &Api, to: &[&str], subject: &str) -> String {
        let (hop, message_id) = self
            .out
            .hop(&self.user.address, &self.user.keys, to, subject);
        let a = api.submit(&self.out.url, Some(&self.token), hop).await;
        assert_eq!(a.0, StatusCode::ACCEPTED, "submit: {a:?}");
        message_id
    }

    /// The letters in the sender's mailbox: (subject, body), read with `token`.
    async fn letters_with(&self, api: &Api, token: &str) -> Vec<(String, String)> {
        let items = api.items(&self.out.url, &self.mailbox, &token).await;
        let mut out = Vec::new();
        for (seq, _) in items {
            let resp = api
                .get(&self.out.url, &self.mailbox, seq, Some(token))
                .await;
            assert_eq!(resp.status(), StatusCode::OK);
            let env = Envelope::decode(&resp.bytes().await.expect("body")).expect("envelope");
            let opened = open(&env.sealed, &self.user.keys, &|_| None).expect("open");
            out.push((opened.letter.subject, opened.letter.body));
        }
        out
    }

    async fn letters(&self, api: &Api) -> Vec<(String, String)> {
        self.letters_with(api, &self.token).await
    }

    /// Waits for a letter in the sender's mailbox, then a while longer: there must be
    /// exactly one. Returns it.
    async fn the_one_bounce(&self, api: &Api) -> (String, String) {
        eventually("a bounce", || async {
            (!self.letters(api).await.is_empty()).then_some(())
        })
        .await;
        // Time for a wrong second bounce to show.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut letters = self.letters(api).await;
        assert_eq!(letters.len(), 1, "exactly one bounce: {letters:?}");
        letters.remove(0)
    }
}

/// The SMTP jobs in a dead node's queue.
fn queued_smtp_jobs(node: &ProcNode) -> Vec<OutboundItem> {
    let mut out = Vec::new();
    sealpost_server::store::rocks::scan_all(&node.data_dir(), |cf, k, v| {
        if cf == "outbound" && k.first() == Some(&b'm') {
            let item: OutboundItem = serde_json::from_slice(v).expect("queue entry");
            if item.smtp.is_some() {
                out.push(item);
            }
        }
    })
    .expect("read the dead node's store");
    out
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_smtp_job_keeps_its_retry_state_through_a_kill_and_is_sent_once_after() {
    let deferral = "451 4.7.1 greylisted, come back later";
    let sink = Sink::start(Script {
        defer_all: Some(deferral.into()),
        ..Script::default()
    })
    .await;
    let mut node = start(&sink, &[]);
    let api = Api::default();
    let alice = Sender::new(&api, &node.url).await;
    let mid = alice
        .send(&api, &["carol@legacy.test"], "deferred then sent")
        .await;

    // Deferred at least twice: the job is being retried on the queue's schedule.
    wait_for("two deferrals", || {
        (sink
            .refusals()
            .iter()
            .filter(|r| r.as_str() == deferral)
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    node.kill();
    let jobs = queued_smtp_jobs(&node);
    assert_eq!(jobs.len(), 1, "one SMTP job on disk: {jobs:?}");
    let job = &jobs[0];
    let smtp = job.smtp.as_ref().unwrap();
    assert_eq!(smtp.message_id, mid);
    assert_eq!(smtp.rcpts, vec!["carol@legacy.test".to_string()]);
    assert!(job.attempts >= 1, "attempts kept: {job:?}");
    assert!(
        job.last_error.contains(deferral),
        "the remote reply is kept: {job:?}"
    );
    assert!(job.next_attempt_ms > job.submitted_ms, "{job:?}");
    assert!(sink.accepted().is_empty());

    // The remote server takes mail again; the restarted node sends the job, once.
    sink.set_script(Script::default());
    node.restart();
    wait_for("the message at the sink", || {
        (!sink.accepted().is_empty()).then_some(())
    })
    .await;
    // Time for a wrong second send to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 1, "sent once: {accepted:?}");
    assert_eq!(accepted[0].message_id, mid);
    assert_eq!(accepted[0].rcpts, vec!["carol@legacy.test".to_string()]);
    let status = node.terminate();
    assert!(status.success());
    assert!(queued_smtp_jobs(&node).is_empty(), "the job is done");
    node.restart();
    let api = Api::default();
    let token = api.token(&node.url, &alice.mailbox, &alice.user.keys).await;
    let letters = alice.letters_with(&api, &token).await;
    assert!(letters.is_empty(), "no bounce: {letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_gets_one_bounce_naming_it_and_the_remote_reply() {
    let refusal = "550 5.1.1 <carol@legacy.test>: Recipient address rejected: no such user";
    let sink = Sink::start(Script {
        refuse: [("carol@legacy.test".to_string(), refusal.to_string())].into(),
        ..Script::default()
    })
    .await;
    let mut node = start(&sink, &[]);
    let api = Api::default();
    let alice = Sender::new(&api, &node.url).await;
    let mid = alice
        .send(
            &api,
            &["carol@legacy.test", "dan@legacy.test"],
            "partly refused",
        )
        .await;
    let (subject, body) = alice.the_one_bounce(&api).await;
    assert!(subject.starts_with("Undeliverable"), "{subject}");
    assert!(body.contains("Recipient: carol@legacy.test"), "{body}");
    assert!(body.contains(refusal), "the remote reply: {body}");
    assert!(!body.contains("dan@legacy.test"), "dan got it: {body}");
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0].message_id, mid);
    assert_eq!(accepted[0].rcpts, vec!["dan@legacy.test".to_string()]);
    node.kill();
    assert!(queued_smtp_jobs(&node).is_empty(), "the job is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deferred_past_its_deadline_ends_in_one_bounce_with_the_last_reply() {
    let deferral = "452 4.2.2 mailbox full";
    let sink = Sink::start(Script {
        defer_all: Some(deferral.into()),
        ..Script::default()
    })
    .await;
    let mut node = start(&sink, &["gateway.give_up_after=2"]);
    let api = Api::default();
    let alice = Sender::new(&api, &node.url).await;
    alice
        .send(&api, &["carol@legacy.test"], "never taken")
        .await;
    let (_, body) = alice.the_one_bounce(&api).await;
    assert!(body.contains("Recipient: carol@legacy.test"), "{body}");
    assert!(body.contains(deferral), "the last remote reply: {body}");
    assert!(sink.accepted().is_empty());
    node.kill();
    assert!(queued_smtp_jobs(&node).is_empty(), "the job is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_letters_share_one_smtp_session() {
    let sink = Sink::start(Script::default()).await;
    let mut node = start(&sink, &[]);
    let api = Api::default();
    let alice = Sender::new(&api, &node.url).await;
    for n in 1..=3 {
        let mid = alice
            .send(&api, &["carol@legacy.test"], &format!("letter {n}"))
            .await;
        wait_for("the letter at the sink", || {
            sink.counts().contains_key(&mid).then_some(())
        })
        .await;
    }
    assert_eq!(sink.accepted().len(), 3);
    assert_eq!(sink.sessions(), 1, "the session is reused");
    node.kill();
}
