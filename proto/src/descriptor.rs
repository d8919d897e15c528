//! The node descriptor: a node's URL, identity key, encryption certificate and limits,
//! self-signed with the node's Ed25519 key. Served at `/.well-known/sealpost/node`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sequoia_openpgp::Cert;

use crate::codec::{Codec, Reader, Writer, tag};
use crate::error::Error;
use crate::identity::cert_from_bytes;
use crate::limits::{MAX_CERT_BYTES, MAX_SIGNED_BODY_BYTES, MAX_SOFTWARE_BYTES, MAX_URL_BYTES};
use crate::oblivious::MAX_KEY_CONFIG_BYTES;
use crate::types::NodeUrl;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDescriptor {
    pub url: NodeUrl,
    /// Ed25519 public key: the node's identity, pinned by peers and listed in records.
    pub node_key: [u8; 32],
    /// OpenPGP certificate (binary) whose X25519 subkey hop payloads are encrypted to.
    pub encryption_cert: Vec<u8>,
    /// Largest envelope the node accepts, in bytes.
    pub max_envelope: u32,
    /// Free-form software name and version, e.g. `sealpost-node/0.1.0`.
    pub software: String,
    /// Unix seconds.
    pub created: u64,
    /// The node's Oblivious HTTP key configuration (RFC 9458 §3,
    /// [`crate::oblivious`]): lookups sent to this node through another node's relay are
    /// encrypted to it. Absent in descriptors of older nodes (the field is then not
    /// encoded, so their signatures still verify).
    pub ohttp_key: Option<Vec<u8>>,
}

impl Codec for NodeDescriptor {
    const WHAT: &'static str = "node descriptor";

    fn encode_to(&self, w: &mut Writer) {
        w.header(tag::DESCRIPTOR_BODY);
        w.bytes16(self.url.as_str().as_bytes());
        w.fixed(&self.node_key);
        w.bytes32(&self.encryption_cert);
        w.u32(self.max_envelope);
        w.bytes16(self.software.as_bytes());
        w.u64(self.created);
        if let Some(key) = &self.ohttp_key {
            w.bytes16(key);
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.header(tag::DESCRIPTOR_BODY)?;
        let url = NodeUrl::parse(r.str16("url", MAX_URL_BYTES)?)?;
        let node_key = r.array()?;
        let encryption_cert = r
            .bytes32("encryption certificate", MAX_CERT_BYTES)?
            .to_vec();
        let max_envelope = r.u32()?;
        let software = r.str16("software", MAX_SOFTWARE_BYTES)?.to_string();
        let created = r.u64()?;
        let ohttp_key = if r.remaining() > 0 {
            let key = r.bytes16("OHTTP key configuration", MAX_KEY_CONFIG_BYTES)?;
            crate::oblivious::check_key_config(key)?;
            Some(key.to_vec())
        } else {
            None
        };
        Ok(NodeDescriptor {
            url,
            node_key,
            encryption_cert,
            max_envelope,
            software,
            created,
            ohttp_key,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedDescriptor {
    pub body: Vec<u8>,
    pub signature: [u8; 64],
}

impl Codec for SignedDescriptor {
    const WHAT: &'static str = "signed descriptor";

    fn encode_to(&self, w: &mut Writer) {
        w.header(tag::SIGNED_DESCRIPTOR);
        w.bytes32(&self.body);
        w.fixed(&self.signature);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.header(tag::SIGNED_DESCRIPTOR)?;
        let body = r
            .bytes32("descriptor body", MAX_SIGNED_BODY_BYTES)?
            .to_vec();
        let signature = r.array()?;
        Ok(SignedDescriptor { body, signature })
    }
}

/// Domain separation: what an Ed25519 descriptor signature covers.
const DESCRIPTOR_CONTEXT: &[u8] = b"sealpost node descriptor v1\0";

impl SignedDescriptor {
    pub fn sign(desc: &NodeDescriptor, key: &SigningKey) -> Self {
        let body = desc.encode();
        let signature = key.sign(&[DESCRIPTOR_CONTEXT, &body].concat()).to_bytes();
        SignedDescriptor { body, signature }
    }

    /// Checks the self-signature; returns the descriptor and its encryption certificate.
    /// The caller compares `node_key` with the key it pinned or found in a record.
    pub fn verify(&self) -> Result<(NodeDescriptor, Cert), Error> {
        let desc = NodeDescriptor::decode(&self.body)?;
        let vk = VerifyingKey::from_bytes(&desc.node_key).map_err(|_| Error::InvalidField {
            what: "node key",
            reason: "not an Ed25519 public key".into(),
        })?;
        // Strict, as for request signatures: no small-order keys.
        vk.verify_strict(
            &[DESCRIPTOR_CONTEXT, &self.body].concat(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| Error::BadObjectSignature("node descriptor"))?;
        let cert = cert_from_bytes(&desc.encryption_cert)?;
        Ok((desc, cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeUrl;

    #[test]
    fn a_small_order_node_key_with_a_zero_signature_is_refused() {
        let mut node_key = [0u8; 32];
        node_key[0] = 1; // the identity point
        let desc = NodeDescriptor {
            url: NodeUrl::parse("http://forged.test").unwrap(),
            node_key,
            encryption_cert: vec![0x99],
            max_envelope: 4096,
            software: "x".into(),
            created: 1,
            ohttp_key: None,
        };
        let mut signature = [0u8; 64];
        signature[0] = 1;
        let signed = SignedDescriptor {
            body: desc.encode(),
            signature,
        };
        assert!(matches!(
            signed.verify(),
            Err(Error::BadObjectSignature("node descriptor"))
        ));
    }

    #[test]
    fn the_ohttp_key_is_optional_so_old_descriptors_still_parse() {
        let mut desc = NodeDescriptor {
            url: NodeUrl::parse("http://n.test").unwrap(),
            node_key: [3; 32],
            encryption_cert: vec![0x99],
            max_envelope: 4096,
            software: "x".into(),
            created: 1,
            ohttp_key: None,
        };
        let old = desc.encode();
        assert_eq!(NodeDescriptor::decode(&old).unwrap(), desc);
        let key = crate::oblivious::GatewayKey::derive(&[1; 32]).unwrap();
        desc.ohttp_key = Some(key.config().to_vec());
        let new = desc.encode();
        assert_eq!(&new[..old.len()], &old[..], "the key is appended");
        assert_eq!(NodeDescriptor::decode(&new).unwrap(), desc);
        desc.ohttp_key = Some(vec![0xff; 8]);
        assert!(
            NodeDescriptor::decode(&desc.encode()).is_err(),
            "unusable key"
        );
    }
}
