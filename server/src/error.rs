//! The node's one error type for requests: each variant has a stable code and HTTP status
//! (`spec/api.md`, error table). The message is for people; clients match on the code.

use hyper::StatusCode;
use sealpost_proto::Error as ProtoError;

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
    /// A device or link refusal (`devices::DeviceError` has the code and status).
    #[error("{0}")]
    Device(#[from] crate::devices::DeviceError),
    /// Details go to the log, not to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadRequest(_) | MalformedBody(_) | UnknownVersion(_) | BadRecord(_) => {
                StatusCode::BAD_REQUEST
            }
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Forbidden(_) | BadInvite => StatusCode::FORBIDDEN,
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
            Device(e) => e.status(),
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
            Device(e) => e.code(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
