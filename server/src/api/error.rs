//! The node's one error type for requests: each variant has a stable code and HTTP status
//! (`spec/api.md`, error table). The message is for people; clients match on the code.
//! The domain's errors (delivery, rate limits, storage) become one here and nowhere else.

use hyper::StatusCode;
use sealpost_proto::Error as ProtoError;

use crate::accounts::RegisterError;
use crate::auth::AuthError;
use crate::delivery::{DeliveryError, Refused, TryLater};
use crate::devices::DeviceError;
use crate::ratelimit::RateLimited;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("body does not decode: {0}")]
    MalformedBody(String),
    #[error("{0}")]
    UnknownVersion(String),
    #[error("mailbox record refused: {0}")]
    BadRecord(String),
    /// `expires` or `sequence` so high that no later record could replace it.
    #[error("mailbox record refused: {0}")]
    RecordOutOfBounds(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("invite code is unknown or used")]
    BadInvite,
    /// A forward from a node that the mailbox's record does not name as a home.
    #[error("the forwarding node is not a home of this mailbox")]
    NotAHome,
    #[error("no such resource")]
    NotFound,
    #[error("no such mailbox on this node")]
    UnknownMailbox,
    #[error("no record for this address")]
    UnknownAddress,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("timed out reading the request")]
    Timeout,
    #[error(
        "{address} belongs to another account on this node; only that account's current key can move it to a new key (key rotation), or the node's operator can free it"
    )]
    AddressTaken { address: String },
    #[error("stored record has sequence {stored}; a new one must be above it")]
    StaleRecord { stored: u64 },
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("mailbox is full")]
    QuotaExceeded,
    #[error(
        "you have too much mail waiting in this node's outbound queue; try again once some is delivered"
    )]
    OutboundFull,
    #[error("storage unavailable, try again later")]
    Unavailable,
    /// Too many request bodies in memory, node-wide or from this client address.
    #[error("the node is busy receiving other requests; retry after {retry_after} s")]
    Busy { retry_after: u64 },
    /// A node this one asked on the client's behalf failed (`failure`: `refused`,
    /// `no_such_host`, `timed_out`, `other`, `bad_answer`).
    #[error("{message}")]
    Upstream {
        failure: &'static str,
        message: String,
    },
    /// Details go to the log, not to the client.
    #[error("internal error")]
    Internal(String),
    /// A device or link refusal; [`device_status`] and [`device_code`] name it.
    #[error("{0}")]
    Device(#[from] DeviceError),
}

fn device_status(e: &DeviceError) -> StatusCode {
    use DeviceError::*;
    match e {
        LinkUnknown | UnknownDevice => StatusCode::NOT_FOUND,
        LinkExpired | LinkUsed | LinkAborted => StatusCode::GONE,
        LinkOutOfOrder | TooManyDevices { .. } | LastDevice => StatusCode::CONFLICT,
        LinkNotYours => StatusCode::FORBIDDEN,
        TooManyLinks => StatusCode::TOO_MANY_REQUESTS,
        DeviceKeyRequired => StatusCode::UNAUTHORIZED,
    }
}

fn device_code(e: &DeviceError) -> &'static str {
    use DeviceError::*;
    match e {
        LinkUnknown => "link_unknown",
        LinkExpired => "link_expired",
        LinkUsed => "link_used",
        LinkAborted => "link_aborted",
        LinkOutOfOrder => "link_out_of_order",
        LinkNotYours => "link_not_yours",
        TooManyLinks => "too_many_links",
        TooManyDevices { .. } => "too_many_devices",
        UnknownDevice => "unknown_device",
        LastDevice => "last_device",
        DeviceKeyRequired => "device_key_required",
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadRequest(_) | MalformedBody(_) | UnknownVersion(_) | BadRecord(_) => {
                StatusCode::BAD_REQUEST
            }
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Forbidden(_) | BadInvite | NotAHome => StatusCode::FORBIDDEN,
            NotFound | UnknownMailbox | UnknownAddress => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Timeout => StatusCode::REQUEST_TIMEOUT,
            StaleRecord { .. } | AddressTaken { .. } => StatusCode::CONFLICT,
            RecordOutOfBounds(_) => StatusCode::UNPROCESSABLE_ENTITY,
            TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            QuotaExceeded | OutboundFull => StatusCode::INSUFFICIENT_STORAGE,
            Unavailable | Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Upstream { failure, .. } if *failure == "timed_out" => StatusCode::GATEWAY_TIMEOUT,
            Upstream { .. } => StatusCode::BAD_GATEWAY,
            Device(e) => device_status(e),
        }
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadRequest(_) => "bad_request",
            MalformedBody(_) => "malformed_body",
            UnknownVersion(_) => "unknown_version",
            BadRecord(_) => "bad_record",
            RecordOutOfBounds(_) => "record_out_of_bounds",
            Unauthorized(_) => "unauthorized",
            Forbidden(_) => "forbidden",
            BadInvite => "bad_invite",
            NotAHome => "not_a_home",
            NotFound => "not_found",
            UnknownMailbox => "unknown_mailbox",
            UnknownAddress => "unknown_address",
            MethodNotAllowed => "method_not_allowed",
            Timeout => "timeout",
            StaleRecord { .. } => "stale_record",
            AddressTaken { .. } => "address_taken",
            TooLarge { .. } => "too_large",
            RateLimited { .. } => "rate_limited",
            QuotaExceeded | OutboundFull => "quota_exceeded",
            Unavailable => "unavailable",
            Busy { .. } => "busy",
            Internal(_) => "internal",
            Upstream { failure, .. } => match *failure {
                "refused" => "target_refused",
                "no_such_host" => "target_no_such_host",
                "timed_out" => "target_timed_out",
                "bad_answer" => "target_bad_answer",
                _ => "target_unreachable",
            },
            Device(e) => device_code(e),
        }
    }

    /// A codec or crypto error in a request body: unknown versions keep their own code.
    pub fn from_body(e: ProtoError) -> ApiError {
        match e {
            ProtoError::UnknownVersion { .. } => ApiError::UnknownVersion(e.to_string()),
            ProtoError::TooLong { what, len, max } => ApiError::TooLarge {
                what,
                len: len as u64,
                max: max as u64,
            },
            other => ApiError::MalformedBody(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(_) | StoreError::Closed => {
                tracing::warn!(error = %e, "storage unavailable");
                ApiError::Unavailable
            }
            StoreError::Read(_) | StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(RateLimited { retry_after }: RateLimited) -> ApiError {
        ApiError::RateLimited { retry_after }
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> ApiError {
        match e {
            RegisterError::BadCertificate(_) | RegisterError::TooManyAddresses { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            RegisterError::AddressTaken { address } => ApiError::AddressTaken { address },
            RegisterError::Closed => ApiError::Forbidden(e.to_string()),
            RegisterError::BadInvite => ApiError::BadInvite,
            RegisterError::Storage(s) => s.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::UnknownMailbox => ApiError::UnknownMailbox,
            AuthError::Busy { retry_after } => ApiError::RateLimited { retry_after },
            AuthError::BadChallenge
            | AuthError::NoAccount
            | AuthError::BadSignature
            | AuthError::KeyChanged => ApiError::Unauthorized(e.to_string()),
            AuthError::Device(DeviceError::UnknownDevice) => {
                ApiError::Unauthorized("no such device in this account".into())
            }
            AuthError::Device(d) => ApiError::Device(d),
            AuthError::BadDeviceSignature => ApiError::Unauthorized(e.to_string()),
            AuthError::Suspended => ApiError::Forbidden(e.to_string()),
            AuthError::Storage(s) => s.into(),
        }
    }
}

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> ApiError {
        match e {
            DeliveryError::NotOurs => ApiError::UnknownMailbox,
            DeliveryError::Refused(r) => match r {
                Refused::TooLarge { what, len, max } => ApiError::TooLarge { what, len, max },
                Refused::UnknownVersion(m) => ApiError::UnknownVersion(m),
                Refused::Malformed(m) => ApiError::MalformedBody(m),
                Refused::NotAHome => ApiError::NotAHome,
                // A relay's verdict on another node: no request of a client ends with it.
                r @ (Refused::Destination(_) | Refused::ByPeer { .. }) => {
                    ApiError::Internal(r.to_string())
                }
            },
            DeliveryError::TryLater(t) => match t {
                TryLater::MailboxFull => ApiError::QuotaExceeded,
                TryLater::Storage(e) => e.into(),
                TryLater::Internal(m) => ApiError::Internal(m),
                t @ (TryLater::Peer(_) | TryLater::NoAnswer(_) | TryLater::ByPeer { .. }) => {
                    ApiError::Internal(t.to_string())
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local delivery's refusals answer `/v1/deliver` as they always have, and the reason a
    /// bounce names is the code and message `/v1/deliver` would answer (the mailbox full
    /// excepted, whose bounce has said "the mailbox is full").
    #[test]
    fn delivery_errors_map_to_their_codes_and_reasons() {
        let cases: Vec<(DeliveryError, StatusCode, &str)> = vec![
            (
                DeliveryError::NotOurs,
                StatusCode::NOT_FOUND,
                "unknown_mailbox",
            ),
            (
                Refused::TooLarge {
                    what: "envelope",
                    len: 9,
                    max: 5,
                }
                .into(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
            ),
            (
                Refused::UnknownVersion("envelope version 9".into()).into(),
                StatusCode::BAD_REQUEST,
                "unknown_version",
            ),
            (
                Refused::Malformed("hop payload: x".into()).into(),
                StatusCode::BAD_REQUEST,
                "malformed_body",
            ),
            (
                TryLater::Storage(StoreError::Unavailable("disk".into())).into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                TryLater::Storage(StoreError::Closed).into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                TryLater::Storage(StoreError::Corrupt("x".into())).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                TryLater::Internal("join".into()).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
        ];
        for (e, status, code) in cases {
            let reason = e.reason();
            let permanent = e.is_final();
            let api = ApiError::from(e);
            assert_eq!((api.status(), api.code()), (status, code), "{api}");
            assert_eq!(reason, format!("{}: {api}", api.code()));
            assert_eq!(permanent, status.is_client_error(), "{reason}");
        }
        let full = DeliveryError::from(TryLater::MailboxFull);
        assert_eq!(full.reason(), "quota_exceeded: the mailbox is full");
        assert!(!full.is_final());
        let api = ApiError::from(full);
        assert_eq!(
            (api.status(), api.code(), api.to_string().as_str()),
            (
                StatusCode::INSUFFICIENT_STORAGE,
                "quota_exceeded",
                "mailbox is full"
            )
        );
        // An envelope that does not decode is refused as any other request body is.
        let protos = || {
            [
                ProtoError::Truncated {
                    what: "envelope",
                    needed: 3,
                },
                ProtoError::UnknownVersion {
                    what: "envelope",
                    version: 9,
                },
                ProtoError::TooLong {
                    what: "sealed",
                    len: 10,
                    max: 5,
                },
            ]
        };
        for (p, q) in protos().into_iter().zip(protos()) {
            let domain = ApiError::from(DeliveryError::from(Refused::from(p)));
            let body = ApiError::from_body(q);
            assert_eq!(
                (domain.status(), domain.code(), domain.to_string()),
                (body.status(), body.code(), body.to_string())
            );
        }
    }

    #[test]
    fn proto_errors_map_to_codes() {
        let v = ApiError::from_body(ProtoError::UnknownVersion {
            what: "envelope",
            version: 9,
        });
        assert_eq!(
            (v.status(), v.code()),
            (StatusCode::BAD_REQUEST, "unknown_version")
        );
        let t = ApiError::from_body(ProtoError::Truncated {
            what: "envelope",
            needed: 3,
        });
        assert_eq!(t.code(), "malformed_body");
        let l = ApiError::from_body(ProtoError::TooLong {
            what: "hop payload",
            len: 10,
            max: 5,
        });
        assert_eq!(
            (l.status(), l.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        );
    }
}
