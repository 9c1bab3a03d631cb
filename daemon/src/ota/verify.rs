//! Every check a bundle or a key set must pass, each failure with a
//! specific [`Rejection`] (its [`Rejection::reason`] is the stable label
//! published on the state topic).
//!
//! A bundle is checked in this order; the first failure decides:
//!
//! 1. size: over `max_bundle_bytes` → `too-large` (before any decoding);
//! 2. decode: CBOR structure, `format`, field types → `malformed`;
//! 3. trust: no key set yet → `no-keyset`; key set expired → `keyset-expired`;
//! 4. signatures over the manifest bytes only (nothing in the manifest is
//!    believed before this): `revoked-key`, `non-canonical-signature`,
//!    `bad-signature`, then the threshold: `duplicate-signer`,
//!    `unknown-key`, `below-threshold`;
//! 5. the manifest's name is a topic segment → else `malformed`;
//! 6. module: length first (cheap) → `length-mismatch`, then sha256 →
//!    `hash-mismatch`;
//! 7. target → `wrong-target`; 8. scope → `wrong-scope`;
//! 9. validity window → `not-yet-valid`, `expired`;
//! 10. release counter → `rollback`, `replay`;
//! 11. local policy (fuel, memory) → `exceeds-policy`.
//!
//! Signature rules: a signature by a revoked key, a malleable one (S ≥ ℓ)
//! or one that does not verify (`verify_strict`, which also refuses weak
//! and small-order keys) rejects the bundle outright, whatever the others
//! say. A signature by a key the key set does not know is ignored (it may
//! come from a newer key set during a rotation); it only names the reason
//! when the threshold is then not met. A key counts once however often it
//! signs, and only if the manifest's `key_ids` lists it.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::Digest;

use super::bundle::{
    self, Bundle, KeySet, MAX_KEYSET_BYTES, MAX_KEYSET_KEYS, Manifest, Scope, SignedKeySet,
    WireSignature,
};
use super::keys::{key_id, parse_public_hex};

/// What a gateway trusts: root keys and the current release key set.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Root keys from the config.
    pub roots: Vec<ed25519_dalek::VerifyingKey>,
    /// Root signatures a key set needs.
    pub root_threshold: usize,
    /// Release signatures a manifest needs.
    pub threshold: usize,
    /// The current verified release key set, if any.
    pub keyset: Option<super::bundle::KeySet>,
}

/// Everything a bundle is checked against besides the keys.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// This gateway's id.
    pub gateway_id: &'a str,
    /// This gateway's fleet.
    pub fleet: Option<&'a str>,
    /// This board's class.
    pub board: &'a str,
    /// The ABI version this runtime implements.
    pub abi: u32,
    /// Size cap, bytes.
    pub max_bundle_bytes: usize,
    /// Local policy: fuel per call.
    pub max_fuel: u64,
    /// Local policy: memory bytes.
    pub max_memory: u64,
    /// max(system clock, persisted floor), unix seconds.
    pub now: i64,
    /// The highest release accepted so far for the manifest's name.
    pub stored_release: Option<u64>,
}

/// A bundle that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The manifest.
    pub manifest: Manifest,
    /// The module bytes.
    pub module: Vec<u8>,
    /// Ids of the keys whose signatures verified.
    pub signers: Vec<String>,
}

/// Why a bundle or key set is refused. `Display` is a message an operator
/// can act on; [`Rejection::reason`] is a stable kebab-case label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a well-formed bundle / key set.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Over the size cap.
    #[error(
        "{size} bytes exceed the cap of {max} bytes (raise [ota] max_bundle_bytes if intended)"
    )]
    TooLarge {
        /// Size received.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// A signature that does not verify (tampering, wrong key, weak key).
    #[error(
        "signature by key {key_id} does not verify: the signed bytes were altered or signed with another key"
    )]
    BadSignature {
        /// The key id the signature names.
        key_id: String,
    },
    /// Signed by keys the gateway does not trust.
    #[error("{}", unknown_key_message(key_id, *keyset_version))]
    UnknownKey {
        /// The first unknown key id.
        key_id: String,
        /// The key set consulted; `None` for root keys (a key set's signers).
        keyset_version: Option<u64>,
    },
    /// Signed by a revoked key.
    #[error("key {key_id} is revoked; sign with a current release key")]
    RevokedKey {
        /// The revoked key id.
        key_id: String,
    },
    /// Too few valid signatures.
    #[error(
        "{valid} valid signature(s) from distinct listed keys, {needed} needed; add signatures with other trusted keys"
    )]
    BelowThreshold {
        /// Distinct valid signers.
        valid: usize,
        /// The threshold.
        needed: usize,
    },
    /// S ≥ ℓ: a malleated signature.
    #[error(
        "signature by key {key_id} is not canonical (S not below the group order): a malleated signature"
    )]
    NonCanonicalSignature {
        /// The key id the signature names.
        key_id: String,
    },
    /// The threshold would be met only by counting one key twice.
    #[error(
        "key {key_id} signed more than once and counts once: {valid} distinct signer(s), {needed} needed"
    )]
    DuplicateSigner {
        /// The repeated key id.
        key_id: String,
        /// Distinct valid signers.
        valid: usize,
        /// The threshold.
        needed: usize,
    },
    /// No release key set has been accepted yet.
    #[error(
        "no trusted release key set yet: set [ota] keyset_file or push a key set signed by the root keys first"
    )]
    NoKeyset,
    /// The release key set expired.
    #[error(
        "the release key set (version {version}) expired at {expires} (now {now}); sign and push a new one"
    )]
    KeysetExpired {
        /// Key set version.
        version: u64,
        /// Its expiry, unix seconds.
        expires: i64,
        /// The time it was checked against.
        now: i64,
    },
    /// Release counter below the stored one.
    #[error(
        "release {release} of {name} is older than the installed release {stored}: rollback refused"
    )]
    Rollback {
        /// Module name.
        name: String,
        /// The bundle's release.
        release: u64,
        /// The stored release.
        stored: u64,
    },
    /// Release counter equal to the stored one.
    #[error(
        "release {release} of {name} is already installed: replay refused (sign a higher --release)"
    )]
    Replay {
        /// Module name.
        name: String,
        /// The release.
        release: u64,
    },
    /// The manifest's validity ended.
    #[error("manifest expired at {expires} (gateway time {now}); re-sign it")]
    Expired {
        /// Its expiry, unix seconds.
        expires: i64,
        /// The time it was checked against.
        now: i64,
    },
    /// Issue time and expiry are inconsistent.
    #[error("manifest validity window is empty (issued at {issued_at}, expires {expires})")]
    NotYetValid {
        /// Issue time, unix seconds.
        issued_at: i64,
        /// Expiry, unix seconds.
        expires: i64,
    },
    /// Module sha256 differs from the manifest's.
    #[error(
        "module sha256 {actual} differs from the signed {expected}: module altered or corrupted"
    )]
    HashMismatch {
        /// Signed hash, hex.
        expected: String,
        /// Hash of the module received, hex.
        actual: String,
    },
    /// Module length differs from the manifest's.
    #[error("module is {actual} bytes, the manifest says {declared}: module altered or truncated")]
    LengthMismatch {
        /// Signed length.
        declared: u64,
        /// Length received.
        actual: u64,
    },
    /// ABI or board does not fit this gateway.
    #[error("wrong target: {0}")]
    WrongTarget(String),
    /// Meant for another gateway or fleet.
    #[error("wrong scope: {0}")]
    WrongScope(String),
    /// Asks for more fuel or memory than local policy allows.
    #[error("exceeds local policy: {0}")]
    ExceedsPolicy(String),
    /// A key set older than the current one.
    #[error(
        "key set version {version} is older than the current version {current}: rollback refused"
    )]
    KeysetRollback {
        /// Its version.
        version: u64,
        /// The current version.
        current: u64,
    },
    /// The current key set again.
    #[error("key set version {version} is already the current one")]
    KeysetReplay {
        /// Its version.
        version: u64,
    },
}

fn unknown_key_message(key_id: &str, keyset_version: Option<u64>) -> String {
    match keyset_version {
        Some(v) => format!(
            "key {key_id} is not in the trusted release key set (version {v}); push a key set \
             listing it, or sign with a listed key"
        ),
        None => format!(
            "key {key_id} is not one of the configured root keys ([ota] root_keys); sign the \
             key set with a root key"
        ),
    }
}

impl Rejection {
    /// The stable label (state topic `reason`, CLI verdict).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::TooLarge { .. } => "too-large",
            Rejection::BadSignature { .. } => "bad-signature",
            Rejection::UnknownKey { .. } => "unknown-key",
            Rejection::RevokedKey { .. } => "revoked-key",
            Rejection::BelowThreshold { .. } => "below-threshold",
            Rejection::NonCanonicalSignature { .. } => "non-canonical-signature",
            Rejection::DuplicateSigner { .. } => "duplicate-signer",
            Rejection::NoKeyset => "no-keyset",
            Rejection::KeysetExpired { .. } => "keyset-expired",
            Rejection::Rollback { .. } => "rollback",
            Rejection::Replay { .. } => "replay",
            Rejection::Expired { .. } => "expired",
            Rejection::NotYetValid { .. } => "not-yet-valid",
            Rejection::HashMismatch { .. } => "hash-mismatch",
            Rejection::LengthMismatch { .. } => "length-mismatch",
            Rejection::WrongTarget(_) => "wrong-target",
            Rejection::WrongScope(_) => "wrong-scope",
            Rejection::ExceedsPolicy(_) => "exceeds-policy",
            Rejection::KeysetRollback { .. } => "keyset-rollback",
            Rejection::KeysetReplay { .. } => "keyset-replay",
        }
    }
}

/// What became of one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Verified, by a trusted key the manifest lists: counts.
    Valid,
    /// Verified, but the manifest's `key_ids` does not list the key: does
    /// not count.
    NotListed,
    /// A second signature by a key already counted.
    Duplicate,
    /// The key is not in the key set (or not a root key): ignored.
    Unknown,
    /// The key is revoked: rejects.
    Revoked,
    /// S ≥ ℓ: rejects.
    NonCanonical,
    /// Does not verify: rejects.
    Bad,
}

impl SignatureStatus {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            SignatureStatus::Valid => "ok",
            SignatureStatus::NotListed => {
                "valid but not listed in the manifest's key_ids (not counted)"
            }
            SignatureStatus::Duplicate => {
                "duplicate of an earlier signature by the same key (counted once)"
            }
            SignatureStatus::Unknown => "unknown key (ignored)",
            SignatureStatus::Revoked => "revoked key",
            SignatureStatus::NonCanonical => "non-canonical (malleated) signature",
            SignatureStatus::Bad => "does not verify",
        }
    }
}

/// One signature's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The key id the signature names.
    pub key_id: String,
    /// What became of it.
    pub status: SignatureStatus,
}

/// How a signer's key id resolves.
enum Lookup {
    Trusted(Option<VerifyingKey>),
    Revoked,
    Unknown,
}

/// The group order ℓ = 2^252 + 27742317777372353535851937790883648493,
/// little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Whether the S half of a signature (little-endian) is below ℓ.
fn is_canonical_s(s: &[u8]) -> bool {
    for i in (0..32).rev() {
        let (a, b) = (s.get(i).copied().unwrap_or(0), GROUP_ORDER[i]);
        if a != b {
            return a < b;
        }
    }
    false
}

/// Check `signatures` over `message`; `listed`, when given, are the key
/// ids allowed to count. Returns each signature's status and the verdict:
/// the distinct valid signers, or why not.
fn check_signatures(
    message: &[u8],
    signatures: &[WireSignature],
    lookup: impl Fn(&str) -> Lookup,
    listed: Option<&[String]>,
    threshold: usize,
    keyset_version: Option<u64>,
) -> (Vec<SignatureCheck>, Result<Vec<String>, Rejection>) {
    let threshold = threshold.max(1);
    let mut checks = Vec::with_capacity(signatures.len());
    let mut signers: Vec<String> = Vec::new();
    let mut hard: Option<Rejection> = None;
    for s in signatures {
        let status = match lookup(&s.key_id) {
            Lookup::Revoked => SignatureStatus::Revoked,
            Lookup::Unknown => SignatureStatus::Unknown,
            Lookup::Trusted(key) => {
                let counted = signers.contains(&s.key_id);
                if !is_canonical_s(s.sig.get(32..).unwrap_or(&[])) {
                    SignatureStatus::NonCanonical
                } else {
                    let ok = match (key, <&[u8; 64]>::try_from(s.sig.as_slice())) {
                        (Some(key), Ok(sig)) => key
                            .verify_strict(message, &Signature::from_bytes(sig))
                            .is_ok(),
                        _ => false,
                    };
                    if !ok {
                        SignatureStatus::Bad
                    } else if counted {
                        SignatureStatus::Duplicate
                    } else if listed.is_some_and(|l| !l.contains(&s.key_id)) {
                        SignatureStatus::NotListed
                    } else {
                        signers.push(s.key_id.clone());
                        SignatureStatus::Valid
                    }
                }
            }
        };
        if hard.is_none() {
            let key_id = s.key_id.clone();
            hard = match status {
                SignatureStatus::Revoked => Some(Rejection::RevokedKey { key_id }),
                SignatureStatus::NonCanonical => Some(Rejection::NonCanonicalSignature { key_id }),
                SignatureStatus::Bad => Some(Rejection::BadSignature { key_id }),
                _ => None,
            };
        }
        checks.push(SignatureCheck {
            key_id: s.key_id.clone(),
            status,
        });
    }
    let verdict = if let Some(r) = hard {
        Err(r)
    } else if signers.len() >= threshold {
        Ok(signers)
    } else {
        let first = |st: SignatureStatus| checks.iter().find(|c| c.status == st);
        let valid = signers.len();
        if let Some(c) = first(SignatureStatus::Duplicate) {
            Err(Rejection::DuplicateSigner {
                key_id: c.key_id.clone(),
                valid,
                needed: threshold,
            })
        } else if let Some(c) = first(SignatureStatus::Unknown) {
            Err(Rejection::UnknownKey {
                key_id: c.key_id.clone(),
                keyset_version,
            })
        } else {
            Err(Rejection::BelowThreshold {
                valid,
                needed: threshold,
            })
        }
    };
    (checks, verdict)
}

/// The current unix time from the system clock (0 if it is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Trust {
    /// The trust of `[ota]`: its root keys and thresholds, and the key set
    /// of `keyset_file` if set, verified against those root keys at the
    /// system time. A key set that does not verify is an error (the message
    /// names the key or file); one that has merely expired is kept, with a
    /// warning, so the gateway still starts and re-verifies its active
    /// modules, while [`verify_bundle`] refuses new installs under it
    /// (`keyset-expired`) until a newer key set arrives.
    pub fn from_config(ota: &crate::ota::OtaConfig) -> Result<Trust, String> {
        let roots = ota
            .root_keys
            .iter()
            .enumerate()
            .map(|(i, k)| parse_public_hex(k).map_err(|e| format!("ota.root_keys[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut trust = Trust {
            roots,
            root_threshold: ota.root_threshold.max(1),
            threshold: ota.threshold.max(1),
            keyset: None,
        };
        if let Some(path) = &ota.keyset_file {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("ota.keyset_file {}: {e}", path.display()))?;
            let refused = |r: Rejection| {
                format!(
                    "ota.keyset_file {}: refused ({}): {r}",
                    path.display(),
                    r.reason()
                )
            };
            let keyset = match verify_keyset(&bytes, &trust, None, unix_now()) {
                Ok(ks) => ks,
                // Still the key set the active modules were installed
                // under: the gateway starts and keeps running them, and
                // refuses new bundles (`keyset-expired`) until a newer key
                // set arrives.
                Err(expired @ Rejection::KeysetExpired { .. }) => {
                    tracing::warn!(
                        file = %path.display(),
                        error = %expired,
                        "OTA: the configured key set has expired; no bundle is installed until a newer one arrives"
                    );
                    reverify_stored_keyset(&bytes, &trust).map_err(refused)?
                }
                Err(r) => return Err(refused(r)),
            };
            trust.keyset = Some(keyset);
        }
        Ok(trust)
    }

    /// The trusted release key set, unless missing → `no-keyset` or, when
    /// `now` is given, expired → `keyset-expired`.
    pub fn release_keys(&self, now: Option<i64>) -> Result<&KeySet, Rejection> {
        let ks = self.keyset.as_ref().ok_or(Rejection::NoKeyset)?;
        if let Some(now) = now {
            if ks.expires <= now {
                return Err(Rejection::KeysetExpired {
                    version: ks.version,
                    expires: ks.expires,
                    now,
                });
            }
        }
        Ok(ks)
    }
}

/// Check a decoded bundle's signatures against `keyset` (step 4): each
/// signature's status, and the distinct counted signers or the rejection.
pub fn bundle_signatures(
    bundle: &Bundle<'_>,
    keyset: &KeySet,
    threshold: usize,
) -> (Vec<SignatureCheck>, Result<Vec<String>, Rejection>) {
    let message = bundle::manifest_message(bundle.manifest_bytes);
    let lookup = |id: &str| {
        if keyset.is_revoked(id) {
            Lookup::Revoked
        } else {
            match keyset.key(id) {
                Some(k) => Lookup::Trusted(VerifyingKey::from_bytes(&k.public).ok()),
                None => Lookup::Unknown,
            }
        }
    };
    check_signatures(
        &message,
        &bundle.signatures,
        lookup,
        Some(&bundle.manifest.key_ids),
        threshold,
        Some(keyset.version),
    )
}

/// Check a decoded key set's signatures against the root keys.
pub fn keyset_signatures(
    signed: &SignedKeySet<'_>,
    trust: &Trust,
) -> (Vec<SignatureCheck>, Result<Vec<String>, Rejection>) {
    let message = bundle::keyset_message(signed.keyset_bytes);
    let lookup = |id: &str| match trust.roots.iter().find(|r| key_id(r) == id) {
        Some(r) => Lookup::Trusted(Some(*r)),
        None => Lookup::Unknown,
    };
    check_signatures(
        &message,
        &signed.signatures,
        lookup,
        None,
        trust.root_threshold,
        None,
    )
}

/// Step 5: fields the rest of the gateway relies on.
pub fn check_manifest_fields(m: &Manifest) -> Result<(), Rejection> {
    if !crate::config::is_valid_stream_name(&m.name) {
        return Err(Rejection::Malformed(format!(
            "manifest name {:?}: use only letters, digits, `_` and `-`",
            m.name
        )));
    }
    Ok(())
}

/// Step 6: module length, then sha256.
pub fn check_module(m: &Manifest, module: &[u8]) -> Result<(), Rejection> {
    let actual = module.len() as u64;
    if actual != m.length {
        return Err(Rejection::LengthMismatch {
            declared: m.length,
            actual,
        });
    }
    let hash: [u8; 32] = sha2::Sha256::digest(module).into();
    if hash != m.sha256 {
        return Err(Rejection::HashMismatch {
            expected: hex::encode(m.sha256),
            actual: hex::encode(hash),
        });
    }
    Ok(())
}

/// Step 7: ABI version and board class (`any` fits every board).
pub fn check_target(m: &Manifest, cx: &Context<'_>) -> Result<(), Rejection> {
    if m.target.abi != cx.abi {
        return Err(Rejection::WrongTarget(format!(
            "built for processor ABI {}, this gateway runs ABI {}",
            m.target.abi, cx.abi
        )));
    }
    if m.target.board != "any" && m.target.board != cx.board {
        return Err(Rejection::WrongTarget(format!(
            "built for board {:?}, this gateway is {:?} ([ota] board)",
            m.target.board, cx.board
        )));
    }
    Ok(())
}

/// Step 8: the gateway id or the fleet.
pub fn check_scope(m: &Manifest, cx: &Context<'_>) -> Result<(), Rejection> {
    match &m.scope {
        Scope::Gateway(id) if id == cx.gateway_id => Ok(()),
        Scope::Gateway(id) => Err(Rejection::WrongScope(format!(
            "meant for gateway {id:?}, this is {:?}",
            cx.gateway_id
        ))),
        Scope::Fleet(f) if cx.fleet == Some(f.as_str()) => Ok(()),
        Scope::Fleet(f) => Err(Rejection::WrongScope(match cx.fleet {
            Some(mine) => format!("meant for fleet {f:?}, this gateway is in fleet {mine:?}"),
            None => format!("meant for fleet {f:?}, this gateway has no [ota] fleet"),
        })),
    }
}

/// Step 9: the validity window against `now` (the gateway's time floor).
pub fn check_validity(m: &Manifest, now: i64) -> Result<(), Rejection> {
    if m.issued_at >= m.expires {
        return Err(Rejection::NotYetValid {
            issued_at: m.issued_at,
            expires: m.expires,
        });
    }
    if m.expires <= now {
        return Err(Rejection::Expired {
            expires: m.expires,
            now,
        });
    }
    Ok(())
}

/// Step 10: the release counter must exceed the stored one.
pub fn check_release(m: &Manifest, stored: Option<u64>) -> Result<(), Rejection> {
    match stored {
        Some(s) if m.release < s => Err(Rejection::Rollback {
            name: m.name.clone(),
            release: m.release,
            stored: s,
        }),
        Some(s) if m.release == s => Err(Rejection::Replay {
            name: m.name.clone(),
            release: m.release,
        }),
        _ => Ok(()),
    }
}

/// Step 11: requested fuel and memory within local policy.
pub fn check_policy(m: &Manifest, cx: &Context<'_>) -> Result<(), Rejection> {
    if let Some(fuel) = m.fuel {
        if fuel > cx.max_fuel {
            return Err(Rejection::ExceedsPolicy(format!(
                "asks for {fuel} fuel per call, [runtime] fuel_per_call allows {}",
                cx.max_fuel
            )));
        }
    }
    if let Some(memory) = m.memory {
        if memory > cx.max_memory {
            return Err(Rejection::ExceedsPolicy(format!(
                "asks for {memory} bytes of memory, [runtime] memory_bytes allows {}",
                cx.max_memory
            )));
        }
    }
    Ok(())
}

/// Steps 1–2: the size cap, then decoding.
pub fn decode_capped<'b>(bytes: &'b [u8], cx: &Context<'_>) -> Result<Bundle<'b>, Rejection> {
    if bytes.len() > cx.max_bundle_bytes {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            max: cx.max_bundle_bytes,
        });
    }
    bundle::decode_bundle(bytes).map_err(|e| Rejection::Malformed(e.0))
}

fn verify(
    bytes: &[u8],
    trust: &Trust,
    cx: &Context<'_>,
    new_install: bool,
) -> Result<VerifiedBundle, Rejection> {
    let b = decode_capped(bytes, cx)?;
    let keyset = trust.release_keys(new_install.then_some(cx.now))?;
    let signers = bundle_signatures(&b, keyset, trust.threshold).1?;
    // From here on the manifest is authentic.
    let m = &b.manifest;
    check_manifest_fields(m)?;
    check_module(m, b.module)?;
    check_target(m, cx)?;
    check_scope(m, cx)?;
    if new_install {
        check_validity(m, cx.now)?;
        check_release(m, cx.stored_release)?;
    }
    check_policy(m, cx)?;
    Ok(VerifiedBundle {
        manifest: b.manifest.clone(),
        module: b.module.to_vec(),
        signers,
    })
}

/// Verify a bundle received for installation: every check, in the order
/// of the module documentation.
pub fn verify_bundle(
    bytes: &[u8],
    trust: &Trust,
    cx: &Context<'_>,
) -> Result<VerifiedBundle, Rejection> {
    verify(bytes, trust, cx, true)
}

/// Re-verify a bundle that is already active (the daemon's startup check):
/// the same checks as [`verify_bundle`] except the manifest's and the key
/// set's expiry and the release counter. An active module whose manifest
/// (or key set) has expired keeps running until it is replaced: expiry and
/// the counter protect *new installs* against freeze and replay attacks,
/// they are not a kill switch; and the stored counter is this bundle's own,
/// so the counter check would always say `replay`. Signatures, revocation,
/// hash, length, target, scope and policy are still checked, so a bundle
/// whose key was revoked, or a store that was tampered with, is refused.
pub fn reverify_stored(
    bytes: &[u8],
    trust: &Trust,
    cx: &Context<'_>,
) -> Result<VerifiedBundle, Rejection> {
    verify(bytes, trust, cx, false)
}

/// Check a key set's contents (after its signatures): valid, non-weak keys
/// whose ids match, no duplicate ids, bounded lists, a listed key not also
/// revoked.
fn check_keyset_contents(ks: &KeySet) -> Result<(), Rejection> {
    let malformed = |m: String| Err(Rejection::Malformed(m));
    if ks.keys.len() > MAX_KEYSET_KEYS || ks.revoked.len() > MAX_KEYSET_KEYS {
        return malformed(format!("key set lists more than {MAX_KEYSET_KEYS} keys"));
    }
    for (i, k) in ks.keys.iter().enumerate() {
        let Ok(vk) = VerifyingKey::from_bytes(&k.public) else {
            return malformed(format!("key set key {:?} is not an ed25519 point", k.id));
        };
        if vk.is_weak() {
            return malformed(format!(
                "key set key {:?} is a weak (small-order) key",
                k.id
            ));
        }
        if key_id(&vk) != k.id {
            return malformed(format!(
                "key set key {:?}: its id should be {}",
                k.id,
                key_id(&vk)
            ));
        }
        if ks.keys[..i].iter().any(|o| o.id == k.id) {
            return malformed(format!("key set lists key {:?} twice", k.id));
        }
    }
    Ok(())
}

/// Verify a signed key set: size, decoding, root signatures (unknown,
/// bad, malleated and duplicate signatures as for bundles, against
/// `root_threshold`), contents, validity window against `now` (→
/// `not-yet-valid`, `keyset-expired`), and `version` above
/// `current_version` (→ `keyset-rollback`, `keyset-replay`).
pub fn verify_keyset(
    bytes: &[u8],
    trust: &Trust,
    current_version: Option<u64>,
    now: i64,
) -> Result<KeySet, Rejection> {
    if bytes.len() > MAX_KEYSET_BYTES {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            max: MAX_KEYSET_BYTES,
        });
    }
    let signed = bundle::decode_keyset(bytes).map_err(|e| Rejection::Malformed(e.0))?;
    keyset_signatures(&signed, trust).1?;
    let ks = signed.keyset;
    check_keyset_contents(&ks)?;
    if ks.issued_at >= ks.expires {
        return Err(Rejection::NotYetValid {
            issued_at: ks.issued_at,
            expires: ks.expires,
        });
    }
    if ks.expires <= now {
        return Err(Rejection::KeysetExpired {
            version: ks.version,
            expires: ks.expires,
            now,
        });
    }
    match current_version {
        Some(c) if ks.version < c => Err(Rejection::KeysetRollback {
            version: ks.version,
            current: c,
        }),
        Some(c) if ks.version == c => Err(Rejection::KeysetReplay {
            version: ks.version,
        }),
        _ => Ok(ks),
    }
}

/// Re-verify a key set the gateway already accepted (e.g. one persisted in
/// its store, at startup): size, decoding, root signatures and contents,
/// but neither expiry nor version. An expired key set stays the trusted
/// one for re-verifying *active* bundles ([`reverify_stored`]);
/// [`verify_bundle`] still refuses new installs under it (`keyset-expired`)
/// until a newer key set arrives.
pub fn reverify_stored_keyset(bytes: &[u8], trust: &Trust) -> Result<KeySet, Rejection> {
    if bytes.len() > MAX_KEYSET_BYTES {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            max: MAX_KEYSET_BYTES,
        });
    }
    let signed = bundle::decode_keyset(bytes).map_err(|e| Rejection::Malformed(e.0))?;
    keyset_signatures(&signed, trust).1?;
    check_keyset_contents(&signed.keyset)?;
    Ok(signed.keyset)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{SigningKey, Verifier};

    use super::*;
    use crate::ota::bundle::{KeySetKey, Target, encode_bundle, sign_bundle, sign_keyset};

    const NOW: i64 = 1_750_000_000;

    fn root() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }
    fn key_a() -> SigningKey {
        SigningKey::from_bytes(&[2; 32])
    }
    fn key_b() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }
    fn key_c() -> SigningKey {
        SigningKey::from_bytes(&[4; 32])
    }
    fn id(k: &SigningKey) -> String {
        key_id(&k.verifying_key())
    }

    fn keyset(version: u64, keys: &[&SigningKey], revoked: &[&SigningKey]) -> KeySet {
        KeySet {
            version,
            issued_at: NOW - 1000,
            expires: NOW + 86_400,
            keys: keys
                .iter()
                .map(|k| KeySetKey::new(&k.verifying_key()))
                .collect(),
            revoked: revoked.iter().map(|k| id(k)).collect(),
        }
    }

    fn roots_only(threshold: usize) -> Trust {
        Trust {
            roots: vec![root().verifying_key()],
            root_threshold: 1,
            threshold,
            keyset: None,
        }
    }

    /// Trust in `ks`, accepted through a signed key set.
    fn trust_with(ks: &KeySet, threshold: usize) -> Trust {
        let mut t = roots_only(threshold);
        let bytes = sign_keyset(ks, &[root()]);
        t.keyset = Some(verify_keyset(&bytes, &t, None, NOW).unwrap());
        t
    }

    fn trust() -> Trust {
        trust_with(&keyset(1, &[&key_a(), &key_b(), &key_c()], &[]), 1)
    }

    fn cx() -> Context<'static> {
        Context {
            gateway_id: "gw-1",
            fleet: Some("north"),
            board: "pi4",
            abi: 1,
            max_bundle_bytes: 1 << 20,
            max_fuel: 1_000_000,
            max_memory: 16 << 20,
            now: NOW,
            stored_release: Some(5),
        }
    }

    fn module() -> Vec<u8> {
        b"\0asm\x01\0\0\0 pretend module".to_vec()
    }

    fn manifest_for(module: &[u8], signers: &[&SigningKey]) -> Manifest {
        Manifest {
            name: "calibrate".into(),
            version: "1.1.0".into(),
            release: 6,
            sha256: sha2::Sha256::digest(module).into(),
            length: module.len() as u64,
            target: Target {
                abi: 1,
                board: "any".into(),
            },
            scope: Scope::Gateway("gw-1".into()),
            issued_at: NOW - 100,
            expires: NOW + 3600,
            fuel: Some(500_000),
            memory: Some(1 << 20),
            key_ids: signers.iter().map(|k| id(k)).collect(),
        }
    }

    fn manifest() -> Manifest {
        manifest_for(&module(), &[&key_a()])
    }

    fn signed(m: &Manifest, keys: &[SigningKey]) -> Vec<u8> {
        sign_bundle(m, &module(), keys)
    }

    fn reason(bytes: &[u8], trust: &Trust, cx: &Context<'_>) -> &'static str {
        match verify_bundle(bytes, trust, cx) {
            Ok(_) => "accepted",
            Err(r) => {
                // Every message is non-empty and distinct from the label.
                assert!(!r.to_string().is_empty());
                r.reason()
            }
        }
    }

    /// `m` with one field changed by `f`.
    fn with(f: impl FnOnce(&mut Manifest)) -> Manifest {
        let mut m = manifest();
        f(&mut m);
        m
    }

    #[test]
    fn ota_valid_bundle_is_accepted() {
        let v = verify_bundle(&signed(&manifest(), &[key_a()]), &trust(), &cx()).unwrap();
        assert_eq!(v.manifest, manifest());
        assert_eq!(v.module, module());
        assert_eq!(v.signers, vec![id(&key_a())]);
        // No stored release yet: anything goes.
        let mut c = cx();
        c.stored_release = None;
        assert_eq!(
            reason(&signed(&manifest(), &[key_a()]), &trust(), &c),
            "accepted"
        );
        // Fleet scope, board "pi4" explicitly, no fuel/memory requests.
        let m = with(|m| {
            m.scope = Scope::Fleet("north".into());
            m.target.board = "pi4".into();
            m.fuel = None;
            m.memory = None;
        });
        assert_eq!(reason(&signed(&m, &[key_a()]), &trust(), &cx()), "accepted");
    }

    #[test]
    fn ota_malformed_inputs() {
        let good = signed(&manifest(), &[key_a()]);
        for cut in [0, 1, good.len() / 2, good.len() - 1] {
            assert_eq!(
                reason(&good[..cut], &trust(), &cx()),
                "malformed",
                "cut {cut}"
            );
        }
        // Random bytes (deterministic xorshift).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in [1usize, 7, 64, 1000] {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert_eq!(reason(&junk, &trust(), &cx()), "malformed");
        }
        // Trailing bytes.
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(reason(&trailing, &trust(), &cx()), "malformed");
        // Wrong format field.
        use serde_cbor::Value;
        let mut map: std::collections::BTreeMap<Value, Value> =
            serde_cbor::from_slice(&good).unwrap();
        map.insert(
            Value::Text("format".into()),
            Value::Text("wasmgate-bundle/2".into()),
        );
        let wrong = serde_cbor::to_vec(&map).unwrap();
        assert_eq!(reason(&wrong, &trust(), &cx()), "malformed");
        // A bad field type: the module as text.
        let mut map2: std::collections::BTreeMap<Value, Value> =
            serde_cbor::from_slice(&good).unwrap();
        map2.insert(Value::Text("module".into()), Value::Text("x".into()));
        assert_eq!(
            reason(&serde_cbor::to_vec(&map2).unwrap(), &trust(), &cx()),
            "malformed"
        );
        // An unknown field.
        let mut map3: std::collections::BTreeMap<Value, Value> =
            serde_cbor::from_slice(&good).unwrap();
        map3.insert(Value::Text("extra".into()), Value::Integer(1));
        assert_eq!(
            reason(&serde_cbor::to_vec(&map3).unwrap(), &trust(), &cx()),
            "malformed"
        );
        // Manifest bytes that are not a manifest (release as text).
        let mut mv: std::collections::BTreeMap<Value, Value> =
            serde_cbor::from_slice(&manifest().to_bytes()).unwrap();
        mv.insert(Value::Text("release".into()), Value::Text("six".into()));
        let mb = serde_cbor::to_vec(&mv).unwrap();
        let b = bundle::decode_bundle(&good).unwrap();
        assert_eq!(
            reason(
                &encode_bundle(&mb, &b.signatures, &module()),
                &trust(),
                &cx()
            ),
            "malformed"
        );
        // A signature of the wrong length.
        let mut sigs = b.signatures.clone();
        sigs[0].sig.truncate(63);
        assert_eq!(
            reason(
                &encode_bundle(b.manifest_bytes, &sigs, &module()),
                &trust(),
                &cx()
            ),
            "malformed"
        );
        // A key set is not a bundle.
        let ks = sign_keyset(&keyset(2, &[&key_a()], &[]), &[root()]);
        assert_eq!(reason(&ks, &trust(), &cx()), "malformed");
        // A signed manifest whose name is not a topic segment.
        let m = with(|m| m.name = "a/+/b".into());
        assert_eq!(
            reason(&signed(&m, &[key_a()]), &trust(), &cx()),
            "malformed"
        );
    }

    #[test]
    fn ota_too_large_before_decoding() {
        let mut c = cx();
        c.max_bundle_bytes = 64;
        assert_eq!(
            reason(&signed(&manifest(), &[key_a()]), &trust(), &c),
            "too-large"
        );
        assert_eq!(reason(&[0xff; 65], &trust(), &c), "too-large");
        assert_eq!(reason(&[0xff; 64], &trust(), &c), "malformed");
    }

    #[test]
    fn ota_bad_signature() {
        // A flipped signature bit.
        let good = signed(&manifest(), &[key_a()]);
        let b = bundle::decode_bundle(&good).unwrap();
        let mut sigs = b.signatures.clone();
        sigs[0].sig[5] ^= 1;
        let bytes = encode_bundle(b.manifest_bytes, &sigs, b.module);
        assert_eq!(reason(&bytes, &trust(), &cx()), "bad-signature");
        // A manifest altered after signing (the module and hash consistent
        // with the change, the target wrong too: signatures come first).
        let m2 = with(|m| {
            m.release = 99;
            m.target.abi = 7;
        });
        let bytes = encode_bundle(&m2.to_bytes(), &b.signatures, b.module);
        assert_eq!(reason(&bytes, &trust(), &cx()), "bad-signature");
        // Signed by B but claiming to be A.
        let by_b = signed(&manifest(), &[key_b()]);
        let mut sigs = bundle::decode_bundle(&by_b).unwrap().signatures;
        sigs[0].key_id = id(&key_a());
        let bytes = encode_bundle(b.manifest_bytes, &sigs, b.module);
        assert_eq!(reason(&bytes, &trust(), &cx()), "bad-signature");
        // A bad signature rejects even when another one meets the threshold.
        let two = signed(&with(|m| m.key_ids.push(id(&key_b()))), &[key_a(), key_b()]);
        let b2 = bundle::decode_bundle(&two).unwrap();
        let mut sigs = b2.signatures.clone();
        sigs[1].sig[40] ^= 0x80;
        let bytes = encode_bundle(b2.manifest_bytes, &sigs, b2.module);
        assert_eq!(reason(&bytes, &trust(), &cx()), "bad-signature");
    }

    #[test]
    fn ota_weak_key_is_refused_by_verify_strict() {
        // The identity point as a "release key": with R = identity and S = 0
        // the plain (cofactorless) equation holds for every message;
        // verify_strict refuses the weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        assert!(weak.is_weak());
        let weak_id = key_id(&weak);
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let m = with(|m| m.key_ids = vec![weak_id.clone()]);
        let mb = m.to_bytes();
        let msg = bundle::manifest_message(&mb);
        assert!(weak.verify(&msg, &Signature::from_bytes(&sig)).is_ok());
        let mut t = trust();
        // Bypass verify_keyset (which refuses weak keys) to reach verify_strict.
        t.keyset = Some(KeySet {
            keys: vec![KeySetKey {
                id: weak_id.clone(),
                public: identity,
            }],
            ..keyset(1, &[], &[])
        });
        let bytes = encode_bundle(
            &mb,
            &[WireSignature {
                key_id: weak_id,
                sig: sig.to_vec(),
            }],
            &module(),
        );
        assert_eq!(reason(&bytes, &t, &cx()), "bad-signature");
        // And a signed key set listing it is refused.
        let ks = t.keyset.clone().unwrap();
        let r = verify_keyset(&sign_keyset(&ks, &[root()]), &roots_only(1), None, NOW);
        assert_eq!(r.unwrap_err().reason(), "malformed");
    }

    #[test]
    fn ota_non_canonical_signature() {
        let good = signed(&manifest(), &[key_a()]);
        let b = bundle::decode_bundle(&good).unwrap();
        let mut sigs = b.signatures.clone();
        // S + ℓ: verifies under the unreduced equation, malleable.
        let s = &mut sigs[0].sig[32..];
        let mut carry = 0u16;
        for (i, byte) in s.iter_mut().enumerate() {
            let v = u16::from(*byte) + u16::from(GROUP_ORDER[i]) + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
        let bytes = encode_bundle(b.manifest_bytes, &sigs, b.module);
        assert_eq!(reason(&bytes, &trust(), &cx()), "non-canonical-signature");
        // S = ℓ exactly.
        sigs[0].sig[32..].copy_from_slice(&GROUP_ORDER);
        let bytes = encode_bundle(b.manifest_bytes, &sigs, b.module);
        assert_eq!(reason(&bytes, &trust(), &cx()), "non-canonical-signature");
        assert!(is_canonical_s(&b.signatures[0].sig[32..]));
        let mut below = GROUP_ORDER;
        below[0] -= 1;
        assert!(is_canonical_s(&below));
    }

    #[test]
    fn ota_unknown_key() {
        let t = trust_with(&keyset(1, &[&key_a()], &[]), 1);
        let m = manifest_for(&module(), &[&key_b()]);
        assert_eq!(reason(&signed(&m, &[key_b()]), &t, &cx()), "unknown-key");
        // No signature at all: below threshold.
        assert_eq!(reason(&signed(&m, &[]), &t, &cx()), "below-threshold");
        // An unknown extra signature is ignored when the threshold is met.
        let m = manifest_for(&module(), &[&key_a(), &key_b()]);
        assert_eq!(
            reason(&signed(&m, &[key_b(), key_a()]), &t, &cx()),
            "accepted"
        );
    }

    #[test]
    fn ota_revoked_key() {
        // Revoked and still listed: revocation wins.
        let t = trust_with(&keyset(2, &[&key_a(), &key_b()], &[&key_a()]), 1);
        assert_eq!(
            reason(&signed(&manifest(), &[key_a()]), &t, &cx()),
            "revoked-key"
        );
        // A revoked signature rejects even next to a valid one.
        let m = manifest_for(&module(), &[&key_a(), &key_b()]);
        assert_eq!(
            reason(&signed(&m, &[key_b(), key_a()]), &t, &cx()),
            "revoked-key"
        );
    }

    #[test]
    fn ota_threshold() {
        let t2 = trust_with(&keyset(1, &[&key_a(), &key_b(), &key_c()], &[]), 2);
        // 1 of 2.
        assert_eq!(
            reason(&signed(&manifest(), &[key_a()]), &t2, &cx()),
            "below-threshold"
        );
        // 2 of 3: A and C.
        let m = manifest_for(&module(), &[&key_a(), &key_c()]);
        let v = verify_bundle(&signed(&m, &[key_a(), key_c()]), &t2, &cx()).unwrap();
        assert_eq!(v.signers, vec![id(&key_a()), id(&key_c())]);
        // The same key twice counts once.
        let m = manifest_for(&module(), &[&key_a()]);
        assert_eq!(
            reason(&signed(&m, &[key_a(), key_a()]), &t2, &cx()),
            "duplicate-signer"
        );
        // A valid signature by a key the manifest does not list does not count.
        let m = manifest_for(&module(), &[&key_a()]);
        let (checks, verdict) = bundle_signatures(
            &bundle::decode_bundle(&signed(&m, &[key_a(), key_b()])).unwrap(),
            t2.keyset.as_ref().unwrap(),
            2,
        );
        assert_eq!(checks[1].status, SignatureStatus::NotListed);
        assert_eq!(verdict.unwrap_err().reason(), "below-threshold");
    }

    #[test]
    fn ota_no_keyset_and_keyset_expired() {
        let bytes = signed(&manifest(), &[key_a()]);
        assert_eq!(reason(&bytes, &roots_only(1), &cx()), "no-keyset");
        let mut c = cx();
        c.now = NOW + 86_400;
        assert_eq!(reason(&bytes, &trust(), &c), "keyset-expired");
    }

    #[test]
    fn ota_rollback_and_replay() {
        let bytes = signed(&manifest(), &[key_a()]);
        let mut c = cx();
        c.stored_release = Some(7);
        assert_eq!(reason(&bytes, &trust(), &c), "rollback");
        c.stored_release = Some(6);
        assert_eq!(reason(&bytes, &trust(), &c), "replay");
    }

    #[test]
    fn ota_expiry() {
        let m = with(|m| m.expires = NOW);
        assert_eq!(reason(&signed(&m, &[key_a()]), &trust(), &cx()), "expired");
        let m = with(|m| {
            m.issued_at = NOW + 10;
            m.expires = NOW + 5;
        });
        assert_eq!(
            reason(&signed(&m, &[key_a()]), &trust(), &cx()),
            "not-yet-valid"
        );
        // Issued in the gateway's future is fine (clock behind; the floor
        // catches up with it).
        let m = with(|m| {
            m.issued_at = NOW + 100;
            m.expires = NOW + 200;
        });
        assert_eq!(reason(&signed(&m, &[key_a()]), &trust(), &cx()), "accepted");
    }

    #[test]
    fn ota_hash_and_length_mismatch() {
        let mut other = module();
        other[10] ^= 0xff;
        let m = manifest();
        assert_eq!(
            reason(&sign_bundle(&m, &other, &[key_a()]), &trust(), &cx()),
            "hash-mismatch"
        );
        let mut longer = other.clone();
        longer.push(0);
        // Length is checked before the hash.
        assert_eq!(
            reason(&sign_bundle(&m, &longer, &[key_a()]), &trust(), &cx()),
            "length-mismatch"
        );
        assert_eq!(
            reason(
                &sign_bundle(&m, &module()[1..], &[key_a()]),
                &trust(),
                &cx()
            ),
            "length-mismatch"
        );
    }

    #[test]
    fn ota_wrong_target() {
        for f in [
            (|m: &mut Manifest| m.target.abi = 2) as fn(&mut Manifest),
            |m| m.target.board = "esp32".into(),
        ] {
            assert_eq!(
                reason(&signed(&with(f), &[key_a()]), &trust(), &cx()),
                "wrong-target"
            );
        }
    }

    #[test]
    fn ota_wrong_scope() {
        for f in [
            (|m: &mut Manifest| m.scope = Scope::Gateway("gw-2".into())) as fn(&mut Manifest),
            |m| m.scope = Scope::Fleet("south".into()),
        ] {
            assert_eq!(
                reason(&signed(&with(f), &[key_a()]), &trust(), &cx()),
                "wrong-scope"
            );
        }
        let mut c = cx();
        c.fleet = None;
        let m = with(|m| m.scope = Scope::Fleet("north".into()));
        assert_eq!(reason(&signed(&m, &[key_a()]), &trust(), &c), "wrong-scope");
    }

    #[test]
    fn ota_exceeds_policy() {
        let m = with(|m| m.fuel = Some(1_000_001));
        assert_eq!(
            reason(&signed(&m, &[key_a()]), &trust(), &cx()),
            "exceeds-policy"
        );
        let m = with(|m| m.memory = Some((16 << 20) + 1));
        assert_eq!(
            reason(&signed(&m, &[key_a()]), &trust(), &cx()),
            "exceeds-policy"
        );
        let m = with(|m| {
            m.fuel = Some(1_000_000);
            m.memory = Some(16 << 20);
        });
        assert_eq!(reason(&signed(&m, &[key_a()]), &trust(), &cx()), "accepted");
    }

    #[test]
    fn ota_rotation() {
        let a_bundle = signed(&manifest(), &[key_a()]);
        let mb = manifest_for(&module(), &[&key_b()]);
        let b_bundle = signed(&mb, &[key_b()]);
        let mut t = trust_with(&keyset(1, &[&key_a()], &[]), 1);
        assert_eq!(reason(&a_bundle, &t, &cx()), "accepted");
        assert_eq!(reason(&b_bundle, &t, &cx()), "unknown-key");
        // Key set 2: A dropped, B added.
        let v2 = sign_keyset(&keyset(2, &[&key_b()], &[]), &[root()]);
        t.keyset = Some(verify_keyset(&v2, &t, Some(1), NOW).unwrap());
        assert_eq!(reason(&a_bundle, &t, &cx()), "unknown-key");
        assert_eq!(reason(&b_bundle, &t, &cx()), "accepted");
        // Key set 3: A revoked as well.
        let v3 = sign_keyset(&keyset(3, &[&key_b()], &[&key_a()]), &[root()]);
        t.keyset = Some(verify_keyset(&v3, &t, Some(2), NOW).unwrap());
        assert_eq!(reason(&a_bundle, &t, &cx()), "revoked-key");
        assert_eq!(reason(&b_bundle, &t, &cx()), "accepted");
        // The old key sets cannot come back.
        assert_eq!(
            verify_keyset(&v2, &t, Some(3), NOW).unwrap_err().reason(),
            "keyset-rollback"
        );
        assert_eq!(
            verify_keyset(&v3, &t, Some(3), NOW).unwrap_err().reason(),
            "keyset-replay"
        );
    }

    #[test]
    fn ota_keyset_checks() {
        let t = roots_only(1);
        let ks = keyset(1, &[&key_a()], &[]);
        let reason = |bytes: &[u8], t: &Trust, now: i64| match verify_keyset(bytes, t, None, now) {
            Ok(_) => "accepted",
            Err(r) => r.reason(),
        };
        assert_eq!(reason(&sign_keyset(&ks, &[root()]), &t, NOW), "accepted");
        // Signed by a release key, not a root.
        assert_eq!(
            reason(&sign_keyset(&ks, &[key_a()]), &t, NOW),
            "unknown-key"
        );
        assert_eq!(reason(&sign_keyset(&ks, &[]), &t, NOW), "below-threshold");
        // Two roots needed.
        let second = SigningKey::from_bytes(&[5; 32]);
        let t2 = Trust {
            roots: vec![root().verifying_key(), second.verifying_key()],
            root_threshold: 2,
            ..roots_only(1)
        };
        assert_eq!(
            reason(&sign_keyset(&ks, &[root()]), &t2, NOW),
            "below-threshold"
        );
        assert_eq!(
            reason(&sign_keyset(&ks, &[root(), root()]), &t2, NOW),
            "duplicate-signer"
        );
        assert_eq!(
            reason(&sign_keyset(&ks, &[second.clone(), root()]), &t2, NOW),
            "accepted"
        );
        // Tampered after signing.
        let good = sign_keyset(&ks, &[root()]);
        let d = bundle::decode_keyset(&good).unwrap();
        let mut ks2 = ks.clone();
        ks2.keys.push(KeySetKey::new(&key_b().verifying_key()));
        let forged = bundle::encode_keyset(&ks2.to_bytes(), &d.signatures);
        assert_eq!(reason(&forged, &t, NOW), "bad-signature");
        // Expired, inconsistent, malformed, too large.
        assert_eq!(reason(&good, &t, NOW + 86_400), "keyset-expired");
        let bad_window = KeySet {
            issued_at: NOW + 1,
            expires: NOW,
            ..ks.clone()
        };
        assert_eq!(
            reason(&sign_keyset(&bad_window, &[root()]), &t, NOW),
            "not-yet-valid"
        );
        let mut wrong_id = ks.clone();
        wrong_id.keys[0].id = "0000000000000000".into();
        assert_eq!(
            reason(&sign_keyset(&wrong_id, &[root()]), &t, NOW),
            "malformed"
        );
        assert_eq!(reason(&good[..good.len() - 3], &t, NOW), "malformed");
        assert_eq!(
            reason(&signed(&manifest(), &[key_a()]), &t, NOW),
            "malformed"
        );
        assert_eq!(
            reason(&vec![0u8; MAX_KEYSET_BYTES + 1], &t, NOW),
            "too-large"
        );
    }

    #[test]
    fn ota_reverify_stored_skips_expiry_and_counter_only() {
        let bytes = signed(&manifest(), &[key_a()]);
        let mut c = cx();
        // The active bundle's own release, its manifest and key set expired.
        c.stored_release = Some(6);
        c.now = NOW + 10 * 86_400;
        assert!(reverify_stored(&bytes, &trust(), &c).is_ok());
        assert_eq!(reason(&bytes, &trust(), &c), "keyset-expired");
        // Still: revocation, tampering, scope, policy.
        let t = trust_with(&keyset(2, &[&key_b()], &[&key_a()]), 1);
        assert_eq!(
            reverify_stored(&bytes, &t, &c).unwrap_err().reason(),
            "revoked-key"
        );
        let mut other = module();
        other[0] ^= 1;
        assert_eq!(
            reverify_stored(&sign_bundle(&manifest(), &other, &[key_a()]), &trust(), &c)
                .unwrap_err()
                .reason(),
            "hash-mismatch"
        );
        let mut c2 = c.clone();
        c2.gateway_id = "gw-9";
        assert_eq!(
            reverify_stored(&bytes, &trust(), &c2).unwrap_err().reason(),
            "wrong-scope"
        );
        c2 = c.clone();
        c2.max_fuel = 1;
        assert_eq!(
            reverify_stored(&bytes, &trust(), &c2).unwrap_err().reason(),
            "exceeds-policy"
        );
    }

    #[test]
    fn ota_reverify_stored_keyset_skips_expiry_and_version_only() {
        let t = roots_only(1);
        let good = sign_keyset(&keyset(3, &[&key_a()], &[]), &[root()]);
        assert_eq!(
            verify_keyset(&good, &t, Some(3), NOW + 86_400)
                .unwrap_err()
                .reason(),
            "keyset-expired"
        );
        assert_eq!(reverify_stored_keyset(&good, &t).unwrap().version, 3);
        let by_release = sign_keyset(&keyset(3, &[&key_a()], &[]), &[key_a()]);
        assert_eq!(
            reverify_stored_keyset(&by_release, &t)
                .unwrap_err()
                .reason(),
            "unknown-key"
        );
        assert_eq!(
            reverify_stored_keyset(&good[1..], &t).unwrap_err().reason(),
            "malformed"
        );
    }

    #[test]
    fn ota_trust_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyset.cbor");
        let mut ota = crate::ota::OtaConfig {
            root_keys: vec![hex::encode(root().verifying_key().as_bytes())],
            ..Default::default()
        };
        let t = Trust::from_config(&ota).unwrap();
        assert_eq!(t.roots, vec![root().verifying_key()]);
        assert!(t.keyset.is_none());
        let now = unix_now();
        let ks = KeySet {
            issued_at: now - 10,
            expires: now + 3600,
            ..keyset(4, &[&key_a()], &[])
        };
        std::fs::write(&file, sign_keyset(&ks, &[root()])).unwrap();
        ota.keyset_file = Some(file.clone());
        assert_eq!(Trust::from_config(&ota).unwrap().keyset, Some(ks.clone()));
        // Expired: kept (the gateway starts), new installs refused.
        let old = KeySet {
            issued_at: now - 7200,
            expires: now - 3600,
            ..ks.clone()
        };
        std::fs::write(&file, sign_keyset(&old, &[root()])).unwrap();
        let t = Trust::from_config(&ota).unwrap();
        assert_eq!(t.keyset, Some(old.clone()));
        let mut c = cx();
        c.now = now;
        let m = Manifest {
            issued_at: now - 1,
            expires: now + 100,
            ..manifest()
        };
        assert_eq!(reason(&signed(&m, &[key_a()]), &t, &c), "keyset-expired");
        // Not signed by the root: an error naming the file.
        std::fs::write(&file, sign_keyset(&ks, &[key_a()])).unwrap();
        let e = Trust::from_config(&ota).unwrap_err();
        assert!(
            e.contains("keyset.cbor") && e.contains("unknown-key"),
            "{e}"
        );
        std::fs::remove_file(&file).unwrap();
        assert!(
            Trust::from_config(&ota)
                .unwrap_err()
                .contains("keyset.cbor")
        );
        ota.root_keys = vec!["abcd".into()];
        assert!(
            Trust::from_config(&ota)
                .unwrap_err()
                .contains("root_keys[0]")
        );
    }

    #[test]
    fn ota_reason_labels_are_stable() {
        let all = [
            Rejection::Malformed(String::new()),
            Rejection::TooLarge { size: 0, max: 0 },
            Rejection::BadSignature {
                key_id: String::new(),
            },
            Rejection::UnknownKey {
                key_id: String::new(),
                keyset_version: None,
            },
            Rejection::RevokedKey {
                key_id: String::new(),
            },
            Rejection::BelowThreshold {
                valid: 0,
                needed: 1,
            },
            Rejection::NonCanonicalSignature {
                key_id: String::new(),
            },
            Rejection::DuplicateSigner {
                key_id: String::new(),
                valid: 0,
                needed: 1,
            },
            Rejection::NoKeyset,
            Rejection::KeysetExpired {
                version: 0,
                expires: 0,
                now: 0,
            },
            Rejection::Rollback {
                name: String::new(),
                release: 0,
                stored: 0,
            },
            Rejection::Replay {
                name: String::new(),
                release: 0,
            },
            Rejection::Expired { expires: 0, now: 0 },
            Rejection::NotYetValid {
                issued_at: 0,
                expires: 0,
            },
            Rejection::HashMismatch {
                expected: String::new(),
                actual: String::new(),
            },
            Rejection::LengthMismatch {
                declared: 0,
                actual: 0,
            },
            Rejection::WrongTarget(String::new()),
            Rejection::WrongScope(String::new()),
            Rejection::ExceedsPolicy(String::new()),
            Rejection::KeysetRollback {
                version: 0,
                current: 0,
            },
            Rejection::KeysetReplay { version: 0 },
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(Rejection::reason).collect();
        assert_eq!(labels.len(), all.len());
        for l in labels {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{l}"
            );
        }
    }
}
