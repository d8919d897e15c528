//! The HTTP API of `spec/api.md`: routing, bounded body reading, JSON and binary answers,
//! the JSON error body. One module per group of endpoints.

mod accounts;
mod auth;
mod devices;
pub mod error;
mod mailbox;
mod ohttp;
mod records;
mod transfer;

pub use error::ApiError;

use std::sync::Arc;

use bytes::Bytes;
use bytes::BytesMut;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sealpost_proto::api;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::basics::client_addr::ClientIp;
use crate::basics::paths::path_prefix;
use crate::budget::{Charge, Exhausted};
use crate::metrics::{Metrics, Route};
use crate::node::Node;
use crate::ratelimit::RateLimiter;

pub type Resp = Response<Full<Bytes>>;

/// Largest JSON request body.
const MAX_JSON_BODY: usize = 256 * 1024;
/// Room for the OpenPGP layer around an envelope in a hop payload
/// (`MAX_HOP_PAYLOAD_BYTES - MAX_ENVELOPE_BYTES` in the protocol limits).
pub const HOP_OVERHEAD: usize =
    sealpost_proto::limits::MAX_HOP_PAYLOAD_BYTES - sealpost_proto::limits::MAX_ENVELOPE_BYTES;

/// Whether `/metrics` may be read: no `admin.metrics_token`, or the request bears it.
fn metrics_allowed(node: &Node, headers: &HeaderMap) -> bool {
    let token = node.config.admin.metrics_token.as_bytes();
    if token.is_empty() {
        return true;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    // Compare in constant time: the token is a secret.
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Answers one request. Never fails: errors become their JSON body.
pub async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Resp {
    let (route, result) = dispatch(&node, req).await;
    let resp = result.unwrap_or_else(|e| error_response(route, &e));
    node.metrics.request(route, resp.status().as_u16());
    resp
}

async fn dispatch(node: &Arc<Node>, req: Request<Incoming>) -> (Route, Result<Resp, ApiError>) {
    let path = req.uri().path().to_owned();
    let path = path
        .strip_prefix(path_prefix(&node.url))
        .filter(|p| p.starts_with('/'))
        .unwrap_or(&path);
    // Leading slashes collapse (`//v1/submit` is `/v1/submit`), as they always have.
    let path = format!("/{}", path.trim_start_matches('/'));
    let method = req.method().clone();
    let only = |m: Method| {
        if method == m {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed)
        }
    };
    match path.as_str() {
        api::DESCRIPTOR => (
            Route::Descriptor,
            only(Method::GET).map(|_| {
                let mut r = binary(node.descriptor.clone());
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=300"),
                );
                r
            }),
        ),
        api::HEALTH => (
            Route::Health,
            only(Method::GET).map(|_| text(StatusCode::OK, "ok\n".into())),
        ),
        // With admin.metrics_token set, only a bearer of it learns that /metrics exists.
        api::METRICS if !metrics_allowed(node, req.headers()) => {
            (Route::Metrics, Err(ApiError::NotFound))
        }
        api::METRICS => (
            Route::Metrics,
            only(Method::GET).map(|_| {
                let mut r = text(StatusCode::OK, node.metrics.render(node.store.stats()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }),
        ),
        api::ACCOUNTS => (
            Route::Register,
            run(only(Method::POST), accounts::register(node, req)).await,
        ),
        api::CHALLENGE => (
            Route::Challenge,
            run(only(Method::POST), auth::challenge(node, req)).await,
        ),
        api::TOKEN => (
            Route::Token,
            run(only(Method::POST), auth::token(node, req)).await,
        ),
        api::SUBMIT => (
            Route::Submit,
            run(only(Method::POST), transfer::submit(node, req)).await,
        ),
        api::DELIVER => (
            Route::Deliver,
            run(only(Method::POST), transfer::deliver(node, req)).await,
        ),
        api::FORWARD => (
            Route::Forward,
            run(only(Method::POST), transfer::forward(node, req)).await,
        ),
        api::OHTTP_GATEWAY => (
            Route::Oblivious,
            run(only(Method::POST), ohttp::gateway(node, req)).await,
        ),
        api::RELAY_OHTTP => (
            Route::Relay,
            run(only(Method::POST), ohttp::relay(node, req)).await,
        ),
        api::RELAY_DESCRIPTOR => (
            Route::Relay,
            run(only(Method::GET), ohttp::relay_descriptor(node, req)).await,
        ),
        api::DEVICES => (
            Route::Devices,
            match method {
                Method::GET => devices::list(node, req).await,
                Method::POST => devices::add(node, req).await,
                _ => Err(ApiError::MethodNotAllowed),
            },
        ),
        api::LINKS => (
            Route::Links,
            run(only(Method::POST), devices::open(node, req)).await,
        ),
        p if p.starts_with(api::DEVICES) || p.starts_with(api::LINKS) => {
            devices::route(node, p, req).await
        }
        p => {
            let under_records = api::segments_under(p, api::RECORDS);
            let under_mailbox = api::segments_under(p, api::MAILBOX);
            match (under_records.as_deref(), under_mailbox.as_deref()) {
                (Some([address]), _) => {
                    let address = address.to_string();
                    match method {
                        Method::PUT => (Route::PutRecord, records::put(node, &address, req).await),
                        Method::GET => (
                            Route::GetRecord,
                            run(
                                check_per_ip(node, &node.lookup_limit, &req).await,
                                records::get(node, &address),
                            )
                            .await,
                        ),
                        _ => (Route::PutRecord, Err(ApiError::MethodNotAllowed)),
                    }
                }
                (_, Some([mailbox])) => {
                    let mailbox = mailbox.to_string();
                    (
                        Route::List,
                        run(only(Method::GET), mailbox::list(node, &mailbox, req)).await,
                    )
                }
                (_, Some([mailbox, step]))
                    if method == Method::POST && *step == api::FETCH_STEP =>
                {
                    let mailbox = mailbox.to_string();
                    (
                        Route::FetchBatch,
                        mailbox::fetch_batch(node, &mailbox, req).await,
                    )
                }
                (_, Some([mailbox, step])) if method == Method::POST && *step == api::ACK_STEP => {
                    let mailbox = mailbox.to_string();
                    (
                        Route::AckBatch,
                        mailbox::ack_batch(node, &mailbox, req).await,
                    )
                }
                (_, Some([mailbox, seq])) => {
                    let (mailbox, seq) = (mailbox.to_string(), seq.to_string());
                    match method {
                        Method::GET => (
                            Route::GetEnvelope,
                            mailbox::get(node, &mailbox, &seq, req).await,
                        ),
                        Method::DELETE => {
                            (Route::Ack, mailbox::ack(node, &mailbox, &seq, req).await)
                        }
                        _ => (Route::GetEnvelope, Err(ApiError::MethodNotAllowed)),
                    }
                }
                _ => (Route::Unknown, Err(ApiError::NotFound)),
            }
        }
    }
}

/// Runs `f` if the method check passed.
async fn run(
    check: Result<(), ApiError>,
    f: impl Future<Output = Result<Resp, ApiError>>,
) -> Result<Resp, ApiError> {
    check?;
    f.await
}

fn error_response(route: Route, e: &ApiError) -> Resp {
    let status = e.status();
    match e {
        ApiError::Internal(detail) => {
            tracing::error!(route = route.label(), error = %detail, "internal error")
        }
        _ if status.is_server_error() => {
            tracing::warn!(route = route.label(), code = e.code(), "request failed")
        }
        _ => tracing::debug!(route = route.label(), code = e.code(), error = %e, "request refused"),
    }
    let body = serde_json::json!({ "error": { "code": e.code(), "message": e.to_string() } });
    let mut r = json(status, &body);
    if let ApiError::RateLimited { retry_after } | ApiError::Busy { retry_after } = e {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
    }
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED
        || status == StatusCode::PAYLOAD_TOO_LARGE
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
    {
        // The rest of the body may not have been read (refusals come before it is): do not
        // reuse the connection, and do not read what the client still sends.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec(v).expect("invariant: response types serialise");
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn binary(bytes: Bytes) -> Resp {
    let mut r = Response::new(Full::new(bytes));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

pub fn text(status: StatusCode, s: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(s)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A request body read into memory, with the share of the body budget it holds until the
/// request ends.
pub struct Body {
    pub headers: HeaderMap,
    pub uri: hyper::Uri,
    pub bytes: Bytes,
    pub charge: Charge,
}

/// Reads a request body of at most `max` bytes within the body timeout. A declared
/// `Content-Length` above `max` is refused before reading anything.
pub async fn read_body(
    node: &Node,
    req: Request<Incoming>,
    max: usize,
    what: &'static str,
) -> Result<(HeaderMap, hyper::Uri, Bytes), ApiError> {
    let b = read_body_charged(node, req, max, what, |_| {}).await?;
    Ok((b.headers, b.uri, b.bytes))
}

/// [`read_body`], handing each chunk to `on_chunk` as it arrives (to hash it) and keeping
/// the bytes charged to the body budget (`limits.body_bytes_in_flight*`) until the returned
/// [`Body`] drops. A body that would pass the node's or the client's budget is refused with
/// `503 busy` before more of it is read.
pub async fn read_body_charged(
    node: &Node,
    req: Request<Incoming>,
    max: usize,
    what: &'static str,
    mut on_chunk: impl FnMut(&[u8]),
) -> Result<Body, ApiError> {
    let client = client_key(&req);
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > max as u64
    {
        return Err(ApiError::TooLarge {
            what,
            len,
            max: max as u64,
        });
    }
    let busy = |e: Exhausted| {
        Metrics::inc(&node.metrics.body_budget_refused);
        tracing::debug!(budget = ?e, %client, "request body refused: budget spent");
        ApiError::Busy { retry_after: 1 }
    };
    let mut charge = node.body_budget.start(client);
    if let Some(len) = declared {
        charge.cover(len).map_err(busy)?;
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let total = buf.len() + data.len();
            if total > max {
                return Err(ApiError::TooLarge {
                    what,
                    len: total as u64,
                    max: max as u64,
                });
            }
            charge.cover(total as u64).map_err(busy)?;
            on_chunk(&data);
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    tokio::time::timeout(node.config.limits.body_timeout.get(), read)
        .await
        .map_err(|_| ApiError::Timeout)??;
    Ok(Body {
        headers: parts.headers,
        uri: parts.uri,
        bytes: buf.freeze(),
        charge,
    })
}

/// Charges one unauthenticated, costly request to the client's address.
pub async fn check_anonymous(node: &Node, req: &Request<Incoming>) -> Result<(), ApiError> {
    check_per_ip(node, &node.anonymous_limit, req).await
}

/// Takes a token from `limiter` for the request's client address ([`Node::check_ip`]).
pub fn check_per_ip<'a>(
    node: &'a Node,
    limiter: &'a RateLimiter<std::net::IpAddr>,
    req: &Request<Incoming>,
) -> impl Future<Output = Result<(), ApiError>> + Send + 'a {
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    async move {
        match ip {
            Some(ip) => Ok(node.check_ip(limiter, ip).await?),
            None => Ok(()),
        }
    }
}

/// The address key (`client_addr::addr_key`) of the client a request came from.
pub fn client_key(req: &Request<Incoming>) -> std::net::IpAddr {
    let ip = req
        .extensions()
        .get::<ClientIp>()
        .map(|c| c.0)
        .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    crate::basics::client_addr::addr_key(ip)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))
}

/// Reads and parses a JSON request body.
pub async fn json_body<T: DeserializeOwned>(
    node: &Node,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let (_, _, body) = read_body(node, req, MAX_JSON_BODY, "JSON body").await?;
    parse_json(&body)
}

/// Decodes `%XX` escapes in a path segment.
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest("bad percent-encoding in path".into());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .ok_or_else(bad)?;
            out.push(u8::from_str_radix(h, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("alice%40alpha.test").unwrap(),
            "alice@alpha.test"
        );
        assert_eq!(percent_decode("plain@x.test").unwrap(), "plain@x.test");
        assert!(percent_decode("bad%4").is_err());
        assert!(percent_decode("bad%zz").is_err());
    }
}
