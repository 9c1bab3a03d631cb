//! The CBOR wire formats of OTA updates: the *bundle* (signed manifest +
//! module) and the *key set* (release keys signed by the root keys). The
//! field-by-field description is in `docs/OTA.md`.
//!
//! Both are a CBOR map whose signed part is carried as a byte string: the
//! signatures cover exactly those bytes (behind a domain-separation prefix),
//! so a verifier never has to re-encode anything to check a signature, and
//! nothing inside the signed part is looked at before the signatures pass
//! (see [`crate::ota::verify`]).
//!
//! ```text
//! bundle  = { "format": "wasmgate-bundle/1", "manifest": bstr, "signatures": [sig*], "module": bstr }
//! key set = { "format": "wasmgate-keyset/1", "keyset": bstr, "signatures": [sig*] }
//! sig     = { "key_id": tstr, "sig": bstr .size 64 }
//! ```

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keys::key_id;

/// The `format` of a bundle.
pub const BUNDLE_FORMAT: &str = "wasmgate-bundle/1";
/// The `format` of a signed key set.
pub const KEYSET_FORMAT: &str = "wasmgate-keyset/1";
/// Prefix of the message a release key signs: `MANIFEST_DOMAIN ++ manifest`.
pub const MANIFEST_DOMAIN: &[u8] = b"wasmgate-manifest-v1\0";
/// Prefix of the message a root key signs: `KEYSET_DOMAIN ++ keyset`.
pub const KEYSET_DOMAIN: &[u8] = b"wasmgate-keyset-v1\0";
/// Most signatures a bundle or key set may carry (each costs a signature
/// verification: a cap keeps a hostile bundle from burning CPU).
pub const MAX_SIGNATURES: usize = 16;
/// Largest signed key set accepted, bytes.
pub const MAX_KEYSET_BYTES: usize = 64 << 10;
/// Most keys (and, separately, revoked ids) a key set may list.
pub const MAX_KEYSET_KEYS: usize = 256;

/// What a manifest's module is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Processor ABI version (1).
    pub abi: u32,
    /// Board class, or `any`.
    pub board: String,
}

/// Who a manifest is for: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every gateway of a fleet.
    Fleet(String),
    /// One gateway, by id.
    Gateway(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Fleet(n) => write!(f, "fleet {n}"),
            Scope::Gateway(id) => write!(f, "gateway {id}"),
        }
    }
}

/// The signed description of one module release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Processor name (as in `[[streams.*.processors]] name`).
    pub name: String,
    /// Human version string.
    pub version: String,
    /// Release counter: must exceed the last one accepted for `name`.
    pub release: u64,
    /// sha256 of the module.
    #[serde(with = "serde_bytes_array")]
    pub sha256: [u8; 32],
    /// Module length, bytes.
    pub length: u64,
    /// ABI and board.
    pub target: Target,
    /// Fleet or gateway.
    pub scope: Scope,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires: i64,
    /// Requested fuel per call (must not exceed local policy).
    pub fuel: Option<u64>,
    /// Requested memory, bytes (must not exceed local policy).
    pub memory: Option<u64>,
    /// Ids of the keys expected to sign.
    pub key_ids: Vec<String>,
}

impl Manifest {
    /// The manifest's encoding: the bytes signatures cover. Deterministic:
    /// a CBOR map with the fields in declaration order, shortest integer
    /// encodings, definite lengths.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }
}

/// The set of release keys the root keys vouch for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    /// Must increase from one key set to the next.
    pub version: u64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; after this the key set (and so every bundle) is refused
    /// until a newer one arrives.
    pub expires: i64,
    /// The release keys trusted to sign manifests.
    pub keys: Vec<KeySetKey>,
    /// Ids of release keys that must be refused even if a bundle names them.
    pub revoked: Vec<String>,
}

impl KeySet {
    /// The key set's encoding: the bytes root signatures cover.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// The release key with this id, if listed.
    pub fn key(&self, id: &str) -> Option<&KeySetKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.iter().any(|r| r == id)
    }
}

/// One release key of a [`KeySet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetKey {
    /// [`key_id`] of `public`.
    pub id: String,
    /// ed25519 public key.
    #[serde(with = "serde_bytes_array")]
    pub public: [u8; 32],
}

impl KeySetKey {
    /// The entry for `key`, its id computed.
    pub fn new(key: &ed25519_dalek::VerifyingKey) -> Self {
        KeySetKey {
            id: key_id(key),
            public: key.to_bytes(),
        }
    }
}

/// One signature of a bundle or key set, as carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSignature {
    /// Id of the key that signed ([`key_id`]).
    pub key_id: String,
    /// The 64-byte ed25519 signature (`R ‖ S`).
    #[serde(with = "serde_bytes_vec")]
    pub sig: Vec<u8>,
}

/// A decoded, NOT yet verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle<'a> {
    /// The manifest bytes, exactly as signed.
    pub manifest_bytes: &'a [u8],
    /// The decoded manifest (untrusted until the signatures pass).
    pub manifest: Manifest,
    /// The signatures as carried.
    pub signatures: Vec<WireSignature>,
    /// The module bytes.
    pub module: &'a [u8],
}

/// A decoded, NOT yet verified key set.
#[derive(Debug, Clone)]
pub struct SignedKeySet<'a> {
    /// The key set bytes, exactly as signed.
    pub keyset_bytes: &'a [u8],
    /// The decoded key set (untrusted until the signatures pass).
    pub keyset: KeySet,
    /// The signatures as carried.
    pub signatures: Vec<WireSignature>,
}

/// Why bytes are not a well-formed bundle or key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A byte string borrowed from the input (CBOR `bstr`).
#[derive(Debug, Clone, Copy)]
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Only a definite-length byte string, borrowed from the input
        /// (serde's own `&[u8]` would also take a text string).
        struct RawVisitor;

        impl<'de> serde::de::Visitor<'de> for RawVisitor {
            type Value = &'de [u8];

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(v)
            }
        }

        d.deserialize_bytes(RawVisitor).map(Raw)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBundle<'a> {
    format: String,
    #[serde(borrow)]
    manifest: Raw<'a>,
    signatures: Vec<WireSignature>,
    #[serde(borrow)]
    module: Raw<'a>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireKeySet<'a> {
    format: String,
    #[serde(borrow)]
    keyset: Raw<'a>,
    signatures: Vec<WireSignature>,
}

/// Only the `format` field (the others are skipped).
#[derive(Deserialize)]
struct PeekFormat {
    format: String,
}

/// Only the `name` field of a manifest.
#[derive(Deserialize)]
struct PeekName {
    name: String,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing plain data into a Vec cannot fail (no I/O, no map keys that
    // are not strings); an empty result would fail every signature check.
    let _ = serde_cbor::to_writer(&mut out, value);
    out
}

/// The message a release key signs for `manifest_bytes`.
pub fn manifest_message(manifest_bytes: &[u8]) -> Vec<u8> {
    [MANIFEST_DOMAIN, manifest_bytes].concat()
}

/// The message a root key signs for `keyset_bytes`.
pub fn keyset_message(keyset_bytes: &[u8]) -> Vec<u8> {
    [KEYSET_DOMAIN, keyset_bytes].concat()
}

fn sign_all(message: &[u8], keys: &[SigningKey]) -> Vec<WireSignature> {
    keys.iter()
        .map(|k| WireSignature {
            key_id: key_id(&k.verifying_key()),
            sig: k.sign(message).to_bytes().to_vec(),
        })
        .collect()
}

/// Encode a bundle: `manifest` signed by each of `keys` (in order), and
/// `module`. The manifest is taken as given (its `sha256`, `length` and
/// `key_ids` are not filled in here: `wasmgate sign` does that).
pub fn sign_bundle(manifest: &Manifest, module: &[u8], keys: &[SigningKey]) -> Vec<u8> {
    let manifest_bytes = manifest.to_bytes();
    let signatures = sign_all(&manifest_message(&manifest_bytes), keys);
    encode(&WireBundle {
        format: BUNDLE_FORMAT.into(),
        manifest: Raw(&manifest_bytes),
        signatures,
        module: Raw(module),
    })
}

/// Encode a key set signed by each of the root keys `roots` (in order).
pub fn sign_keyset(keyset: &KeySet, roots: &[SigningKey]) -> Vec<u8> {
    let keyset_bytes = keyset.to_bytes();
    let signatures = sign_all(&keyset_message(&keyset_bytes), roots);
    encode(&WireKeySet {
        format: KEYSET_FORMAT.into(),
        keyset: Raw(&keyset_bytes),
        signatures,
    })
}

/// Re-encode a bundle from parts (tests and tools: tamper with one part
/// while keeping the others).
pub fn encode_bundle(
    manifest_bytes: &[u8],
    signatures: &[WireSignature],
    module: &[u8],
) -> Vec<u8> {
    encode(&WireBundle {
        format: BUNDLE_FORMAT.into(),
        manifest: Raw(manifest_bytes),
        signatures: signatures.to_vec(),
        module: Raw(module),
    })
}

/// Re-encode a key set from parts (tests and tools).
pub fn encode_keyset(keyset_bytes: &[u8], signatures: &[WireSignature]) -> Vec<u8> {
    encode(&WireKeySet {
        format: KEYSET_FORMAT.into(),
        keyset: Raw(keyset_bytes),
        signatures: signatures.to_vec(),
    })
}

fn check_signature_shapes(signatures: &[WireSignature]) -> Result<(), DecodeError> {
    if signatures.len() > MAX_SIGNATURES {
        return Err(DecodeError(format!(
            "{} signatures (at most {MAX_SIGNATURES})",
            signatures.len()
        )));
    }
    for s in signatures {
        if s.sig.len() != 64 {
            return Err(DecodeError(format!(
                "signature by {:?} is {} bytes, not 64",
                s.key_id,
                s.sig.len()
            )));
        }
    }
    Ok(())
}

/// Decode a bundle (structure only: nothing is verified). Refuses trailing
/// bytes, unknown fields, a wrong `format`, more than [`MAX_SIGNATURES`]
/// signatures and signatures that are not 64 bytes.
pub fn decode_bundle(bytes: &[u8]) -> Result<Bundle<'_>, DecodeError> {
    let wire: WireBundle<'_> =
        serde_cbor::from_slice(bytes).map_err(|e| DecodeError(format!("bundle: {e}")))?;
    if wire.format != BUNDLE_FORMAT {
        return Err(DecodeError(format!(
            "format is {:?}, expected {BUNDLE_FORMAT:?}",
            wire.format
        )));
    }
    check_signature_shapes(&wire.signatures)?;
    let manifest: Manifest = serde_cbor::from_slice(wire.manifest.0)
        .map_err(|e| DecodeError(format!("manifest: {e}")))?;
    Ok(Bundle {
        manifest_bytes: wire.manifest.0,
        manifest,
        signatures: wire.signatures,
        module: wire.module.0,
    })
}

/// Decode a signed key set (structure only: nothing is verified).
pub fn decode_keyset(bytes: &[u8]) -> Result<SignedKeySet<'_>, DecodeError> {
    let wire: WireKeySet<'_> =
        serde_cbor::from_slice(bytes).map_err(|e| DecodeError(format!("key set: {e}")))?;
    if wire.format != KEYSET_FORMAT {
        return Err(DecodeError(format!(
            "format is {:?}, expected {KEYSET_FORMAT:?}",
            wire.format
        )));
    }
    check_signature_shapes(&wire.signatures)?;
    let keyset: KeySet = serde_cbor::from_slice(wire.keyset.0)
        .map_err(|e| DecodeError(format!("key set contents: {e}")))?;
    Ok(SignedKeySet {
        keyset_bytes: wire.keyset.0,
        keyset,
        signatures: wire.signatures,
    })
}

/// Whether `bytes` claim to be a signed key set (their `format` field);
/// false on anything undecodable. Nothing is verified.
pub fn is_keyset(bytes: &[u8]) -> bool {
    serde_cbor::from_slice::<PeekFormat>(bytes).is_ok_and(|p| p.format == KEYSET_FORMAT)
}

/// The manifest name of a bundle, UNVERIFIED: only for reporting a
/// rejection on the right state topic. `None` when the bytes do not decode
/// that far or the name is not a valid topic segment (`[A-Za-z0-9_-]+`).
pub fn peek_name(bytes: &[u8]) -> Option<String> {
    let wire: WireBundle<'_> = serde_cbor::from_slice(bytes).ok()?;
    if wire.format != BUNDLE_FORMAT {
        return None;
    }
    let peek: PeekName = serde_cbor::from_slice(wire.manifest.0).ok()?;
    crate::config::is_valid_stream_name(&peek.name).then_some(peek.name)
}

mod serde_bytes_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v: serde_cbor::Value = Deserialize::deserialize(d)?;
        match v {
            serde_cbor::Value::Bytes(b) if b.len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(&b);
                Ok(out)
            }
            _ => Err(serde::de::Error::custom("expected a 32-byte string")),
        }
    }
}

mod serde_bytes_vec {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "calibrate".into(),
            version: "1.2.0".into(),
            release: 7,
            sha256: [3; 32],
            length: 10,
            target: Target {
                abi: 1,
                board: "any".into(),
            },
            scope: Scope::Fleet("north".into()),
            issued_at: 1_700_000_000,
            expires: 1_800_000_000,
            fuel: Some(1000),
            memory: None,
            key_ids: vec!["00".into()],
        }
    }

    #[test]
    fn ota_bundle_round_trips_and_peeks() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let bytes = sign_bundle(&manifest(), b"0123456789", &[key]);
        let b = decode_bundle(&bytes).unwrap();
        assert_eq!(b.manifest, manifest());
        assert_eq!(b.manifest_bytes, manifest().to_bytes().as_slice());
        assert_eq!(b.module, b"0123456789");
        assert_eq!(b.signatures.len(), 1);
        assert_eq!(b.signatures[0].sig.len(), 64);
        assert!(!is_keyset(&bytes));
        assert_eq!(peek_name(&bytes).as_deref(), Some("calibrate"));
        assert_eq!(peek_name(b"\xff\x00junk"), None);
        assert!(!is_keyset(b""));
        // The outer map is exactly the four documented fields.
        let v: serde_cbor::Value = serde_cbor::from_slice(&bytes).unwrap();
        let serde_cbor::Value::Map(m) = v else {
            panic!("not a map")
        };
        let keys: Vec<_> = m.keys().cloned().collect();
        assert_eq!(keys.len(), 4);
        // Deterministic: the same inputs encode to the same bytes.
        assert_eq!(
            bytes,
            sign_bundle(
                &manifest(),
                b"0123456789",
                &[SigningKey::from_bytes(&[9; 32])]
            )
        );
    }

    #[test]
    fn ota_keyset_round_trips() {
        let root = SigningKey::from_bytes(&[1; 32]);
        let ks = KeySet {
            version: 2,
            issued_at: 1,
            expires: 2,
            keys: vec![KeySetKey::new(
                &SigningKey::from_bytes(&[2; 32]).verifying_key(),
            )],
            revoked: vec!["abc".into()],
        };
        let bytes = sign_keyset(&ks, &[root]);
        assert!(is_keyset(&bytes));
        let d = decode_keyset(&bytes).unwrap();
        assert_eq!(d.keyset, ks);
        assert!(decode_bundle(&bytes).is_err());
        assert_eq!(peek_name(&bytes), None);
        // The public key is a byte string, not an array of integers.
        let v: serde_cbor::Value = serde_cbor::from_slice(d.keyset_bytes).unwrap();
        let serde_cbor::Value::Map(m) = v else {
            panic!("not a map")
        };
        let keys = &m[&serde_cbor::Value::Text("keys".into())];
        let serde_cbor::Value::Array(a) = keys else {
            panic!("keys")
        };
        let serde_cbor::Value::Map(k) = &a[0] else {
            panic!("key")
        };
        assert!(matches!(
            k[&serde_cbor::Value::Text("public".into())],
            serde_cbor::Value::Bytes(_)
        ));
    }

    #[test]
    fn ota_peek_name_refuses_topic_metacharacters() {
        let mut m = manifest();
        m.name = "a/#".into();
        let bytes = sign_bundle(&m, b"", &[]);
        assert_eq!(peek_name(&bytes), None);
    }
}
