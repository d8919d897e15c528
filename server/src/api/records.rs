//! `PUT`/`GET /v1/records/{address}`: mailbox records, stored only when they name this node
//! as a home of an account whose certificate signed them, and that account owns the address
//! (`accounts`: the first account to name it, or the one it rotated to).

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use sealpost_proto::Address;
use sealpost_proto::codec::Codec;
use sealpost_proto::limits::{MAX_SIGNATURE_BYTES, MAX_SIGNED_BODY_BYTES};
use sealpost_proto::record::SignedRecord;

use super::ApiError;
use super::{Resp, binary, empty, percent_decode, read_body};
use crate::basics::clock::now_secs;
use crate::node::Node;
use crate::store::RecordOutcome;

/// Largest encoded `SignedRecord`.
const MAX_RECORD_BYTES: usize = MAX_SIGNED_BODY_BYTES + MAX_SIGNATURE_BYTES + 16;

fn parse_address(segment: &str) -> Result<Address, ApiError> {
    Address::parse(&percent_decode(segment)?).map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub async fn put(
    node: &Arc<Node>,
    segment: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let address = parse_address(segment)?;
    let (_, _, body) = read_body(node, req, MAX_RECORD_BYTES, "record").await?;
    let signed = SignedRecord::decode(&body).map_err(ApiError::from_body)?;
    let (record, cert) = signed.verify(now_secs()).map_err(|e| match e {
        sealpost_proto::Error::UnknownVersion { .. } => ApiError::from_body(e),
        other => ApiError::BadRecord(other.to_string()),
    })?;
    record
        .check_bounds(now_secs())
        .map_err(|e| ApiError::RecordOutOfBounds(e.to_string()))?;
    if record.address != address {
        return Err(ApiError::BadRecord(format!(
            "the path names {address}, the record {}",
            record.address
        )));
    }
    let node_key = node.keys.node_key();
    let home = record
        .homes
        .iter()
        .find(|h| h.url == node.url && h.node_key == node_key)
        .ok_or_else(|| ApiError::Forbidden("the record names no home on this node".into()))?;
    let account = node.account_fresh(home.mailbox).await?.ok_or_else(|| {
        ApiError::Forbidden("the record's mailbox is not an account on this node".into())
    })?;
    if account.fingerprint != cert.fingerprint() {
        return Err(ApiError::Forbidden(
            "the record's certificate is not the account's".into(),
        ));
    }
    match node
        .store
        .put_record(
            address.as_str().to_string(),
            account.mailbox,
            record.sequence,
            body.to_vec(),
        )
        .await?
    {
        RecordOutcome::Stored => {
            node.homes.forget(&account.mailbox);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        RecordOutcome::Stale { stored } => Err(ApiError::StaleRecord { stored }),
        RecordOutcome::NotOwner => Err(ApiError::AddressTaken {
            address: address.as_str().to_string(),
        }),
    }
}

pub async fn get(node: &Arc<Node>, segment: &str) -> Result<Resp, ApiError> {
    let address = parse_address(segment)?;
    let bytes: Bytes = node
        .store
        .record(address.as_str().to_string())
        .await?
        .ok_or(ApiError::UnknownAddress)?;
    Ok(binary(bytes))
}
