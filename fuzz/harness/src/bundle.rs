//! `bundle`: OTA bundles and signed key sets (`ota/bundle.rs`, `verify.rs`,
//! `keys.rs`), as they arrive over MQTT: untrusted bytes.
//!
//! Each input is taken as a bundle *and* as a key set and run through the
//! full verification against the fixed trust of [`fixtures`] (root key,
//! key set version 7, gateway `gw-fuzz` in fleet `north`, board `rpi4`).
//! Mutating a signed manifest breaks its signature, so a fuzzer alone
//! never gets past step 4; every input that decodes is therefore also
//! **re-signed** with a trusted key (release key A / the root key) and
//! verified again, which lets the fuzzer drive the checks after the
//! signatures (name, module hash and length, target, scope, validity,
//! release counter, policy; key-set contents, window and version) with
//! arbitrary manifests and key sets.
//!
//! Invariants:
//! - decoding and verification never panic; every rejection renders to a
//!   non-empty message and a kebab-case reason;
//! - a decode failure is exactly the `malformed` verdict;
//! - verification is deterministic and depends only on the decoded parts
//!   (a re-encoding of the parts gets the same verdict);
//! - an accepted bundle satisfies every documented check (hash, length,
//!   target, scope, window, counter, policy, signers trusted, listed,
//!   distinct, not revoked), is re-verified at restart, and its name is
//!   what `peek_name` reports;
//! - the restart re-verification differs from the install verification
//!   only by the install-only checks (expiry, counter);
//! - a re-signed manifest gets exactly the verdict of the first failing
//!   check in the documented order; a revoked signature always rejects;
//! - an accepted key set has a higher version, a non-empty window that
//!   has not ended, and valid, non-weak keys with matching, distinct ids.

use ed25519_dalek::{Signer, VerifyingKey};
use sha2::Digest;
use wasmgate::ota::bundle::{
    self, Bundle, KeySet, MAX_KEYSET_KEYS, Manifest, Scope, SignedKeySet, WireSignature,
};
use wasmgate::ota::keys::key_id;
use wasmgate::ota::verify::{self, Context, Rejection, VerifiedBundle};

use crate::assert_message;
use crate::fixtures::{self, Fixtures};

/// Run every check on `data`.
pub fn check(data: &[u8]) {
    let f = fixtures::get();
    let cx = f.context();
    check_bundle(data, f, &cx);
    check_keyset(data, f);
}

/// A verdict that can be compared.
type Verdict = Result<(Manifest, Vec<u8>, Vec<String>), Rejection>;

fn verdict(r: Result<VerifiedBundle, Rejection>) -> Verdict {
    r.map(|v| (v.manifest, v.module, v.signers))
}

fn assert_rejection(r: &Rejection) {
    assert_message("rejection", &r.to_string());
    let reason = r.reason();
    assert!(
        !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
        "reason {reason:?}"
    );
}

/// Checks only a new install makes (not the restart re-verification).
fn install_only(r: &Rejection) -> bool {
    matches!(
        r,
        Rejection::Expired { .. }
            | Rejection::NotYetValid { .. }
            | Rejection::Rollback { .. }
            | Rejection::Replay { .. }
            | Rejection::KeysetExpired { .. }
    )
}

fn is_signature_rejection(r: &Rejection) -> bool {
    matches!(
        r,
        Rejection::BadSignature { .. }
            | Rejection::UnknownKey { .. }
            | Rejection::RevokedKey { .. }
            | Rejection::BelowThreshold { .. }
            | Rejection::NonCanonicalSignature { .. }
            | Rejection::DuplicateSigner { .. }
    )
}

fn check_bundle(data: &[u8], f: &Fixtures, cx: &Context<'_>) {
    let decoded = bundle::decode_bundle(data);
    let v = verdict(verify::verify_bundle(data, &f.trust, cx));
    let stored = verdict(verify::reverify_stored(data, &f.trust, cx));

    match &decoded {
        Err(e) => {
            assert_message("bundle decode", &e.0);
            assert_eq!(v, Err(Rejection::Malformed(e.0.clone())));
            assert_eq!(stored, v);
        }
        Ok(b) => check_decoded_bundle(data, b, &v, f, cx),
    }

    match &v {
        Ok(accepted) => check_accepted(accepted, f, cx),
        Err(r) => assert_rejection(r),
    }
    if let Err(r) = &stored {
        assert_rejection(r);
    }
    match (&v, &stored) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "install and restart verdicts differ"),
        (Ok(_), Err(r)) => panic!("accepted for install but refused at restart: {r}"),
        (Err(r), Ok(_)) => assert!(install_only(r), "refused for install only by {r}"),
        (Err(a), Err(b)) => assert!(
            a == b || install_only(a),
            "install: {a}; restart: {b} (restart checks are a subset)"
        ),
    }

    // Threshold 2 (only for accepted bundles: it costs another round of
    // signature checks): accepted there means accepted here, by ≥ 2 keys.
    if let Ok(accepted) = &v {
        match verdict(verify::verify_bundle(data, &f.trust2, cx)) {
            Ok(two) => {
                assert_eq!(two.0, accepted.0);
                assert!(two.2.len() >= 2, "threshold 2 met by {:?}", two.2);
            }
            Err(r) => assert!(
                accepted.2.len() < 2
                    && matches!(
                        r,
                        Rejection::BelowThreshold { .. }
                            | Rejection::DuplicateSigner { .. }
                            | Rejection::UnknownKey { .. }
                    ),
                "threshold 2 refused {:?} with {r}",
                accepted.2
            ),
        }
    }
}

fn check_decoded_bundle(data: &[u8], b: &Bundle<'_>, v: &Verdict, f: &Fixtures, cx: &Context<'_>) {
    // The unverified peeks agree with the decoder.
    let name_ok = wasmgate::config::is_valid_stream_name(&b.manifest.name);
    assert_eq!(
        bundle::peek_name(data),
        name_ok.then(|| b.manifest.name.clone())
    );
    assert!(!bundle::is_keyset(data), "a bundle taken for a key set");
    assert!(b.signatures.len() <= bundle::MAX_SIGNATURES);
    assert!(b.signatures.iter().all(|s| s.sig.len() == 64));
    assert!(
        bundle::decode_keyset(data).is_err(),
        "a bundle decoded as a key set"
    );

    // Verification depends only on the parts: re-encode them (the same
    // bytes for a canonical input: then this is the determinism check).
    let re = bundle::encode_bundle(b.manifest_bytes, &b.signatures, b.module);
    let rb = bundle::decode_bundle(&re).expect("a re-encoded bundle decodes");
    assert_eq!(rb.manifest_bytes, b.manifest_bytes);
    assert_eq!(rb.manifest, b.manifest);
    assert_eq!(rb.signatures, b.signatures);
    assert_eq!(rb.module, b.module);
    assert_eq!(
        &verdict(verify::verify_bundle(&re, &f.trust, cx)),
        v,
        "verdict changed by re-encoding (or is not deterministic)"
    );

    // Every signature gets a status.
    let (checks, _) = verify::bundle_signatures(b, f.keyset(), 1);
    assert_eq!(checks.len(), b.signatures.len());
    for c in &checks {
        assert!(!c.status.describe().is_empty());
    }

    resigned(b, f, cx);
}

/// Sign the decoded manifest with release key A and verify again: the
/// verdict is the first failing check in the documented order.
fn resigned(b: &Bundle<'_>, f: &Fixtures, cx: &Context<'_>) {
    let message = bundle::manifest_message(b.manifest_bytes);
    let sig_a = WireSignature {
        key_id: f.id_a.clone(),
        sig: f.release_a.sign(&message).to_bytes().to_vec(),
    };
    let bytes = bundle::encode_bundle(b.manifest_bytes, std::slice::from_ref(&sig_a), b.module);
    let got = verdict(verify::verify_bundle(&bytes, &f.trust, cx));
    let m = &b.manifest;
    let expected = (|| {
        if !m.key_ids.contains(&f.id_a) {
            return Err(Rejection::BelowThreshold {
                valid: 0,
                needed: 1,
            });
        }
        verify::check_manifest_fields(m)?;
        verify::check_module(m, b.module)?;
        verify::check_target(m, cx)?;
        verify::check_scope(m, cx)?;
        verify::check_validity(m, cx.now)?;
        verify::check_release(m, cx.stored_release)?;
        verify::check_policy(m, cx)
    })();
    match (&got, expected) {
        (Ok((manifest, module, signers)), Ok(())) => {
            assert_eq!(manifest, m);
            assert_eq!(module.as_slice(), b.module);
            assert_eq!(signers, std::slice::from_ref(&f.id_a));
            check_accepted(got.as_ref().unwrap(), f, cx);
            // A revoked signature rejects even next to a valid one.
            let revoked = WireSignature {
                key_id: f.id_revoked.clone(),
                sig: vec![0; 64],
            };
            let bytes = bundle::encode_bundle(b.manifest_bytes, &[sig_a, revoked], b.module);
            assert_eq!(
                verify::verify_bundle(&bytes, &f.trust, cx).map(|_| ()),
                Err(Rejection::RevokedKey {
                    key_id: f.id_revoked.clone()
                })
            );
        }
        (Err(a), Err(e)) => {
            assert_rejection(a);
            assert_eq!(
                a, &e,
                "re-signed manifest: verdict is not the first failing check"
            );
        }
        (got, expected) => {
            panic!("re-signed manifest: got {got:?}, the checks in order say {expected:?}")
        }
    }
}

/// Everything the documentation promises about an accepted bundle.
fn check_accepted(accepted: &(Manifest, Vec<u8>, Vec<String>), f: &Fixtures, cx: &Context<'_>) {
    let (m, module, signers) = accepted;
    assert!(wasmgate::config::is_valid_stream_name(&m.name));
    assert_eq!(module.len() as u64, m.length);
    let hash: [u8; 32] = sha2::Sha256::digest(module).into();
    assert_eq!(hash, m.sha256);
    assert_eq!(m.target.abi, cx.abi);
    assert!(m.target.board == "any" || m.target.board == cx.board);
    match &m.scope {
        Scope::Gateway(id) => assert_eq!(id, cx.gateway_id),
        Scope::Fleet(fleet) => assert_eq!(Some(fleet.as_str()), cx.fleet),
    }
    assert!(m.issued_at < m.expires && m.expires > cx.now);
    assert!(m.release > fixtures::STORED_RELEASE);
    assert!(m.fuel.is_none_or(|x| x <= cx.max_fuel));
    assert!(m.memory.is_none_or(|x| x <= cx.max_memory));
    assert!(!signers.is_empty() && signers.len() >= f.trust.threshold);
    let ks = f.keyset();
    for (i, s) in signers.iter().enumerate() {
        assert!(ks.key(s).is_some(), "signer {s} not in the key set");
        assert!(!ks.is_revoked(s), "revoked signer {s}");
        assert!(m.key_ids.contains(s), "signer {s} not listed");
        assert!(!signers[..i].contains(s), "signer {s} counted twice");
    }
}

fn check_keyset(data: &[u8], f: &Fixtures) {
    let decoded = bundle::decode_keyset(data);
    let v = verify::verify_keyset(
        data,
        &f.trust,
        Some(fixtures::KEYSET_VERSION),
        fixtures::NOW,
    );
    let stored = verify::reverify_stored_keyset(data, &f.trust);

    match &decoded {
        Err(e) => {
            assert_message("key set decode", &e.0);
            assert_eq!(v, Err(Rejection::Malformed(e.0.clone())));
            assert_eq!(stored, v);
        }
        Ok(s) => {
            assert!(bundle::is_keyset(data), "a decoded key set not recognised");
            assert!(
                bundle::decode_bundle(data).is_err(),
                "a key set decoded as a bundle"
            );
            assert!(s.signatures.len() <= bundle::MAX_SIGNATURES);
            let re = bundle::encode_keyset(s.keyset_bytes, &s.signatures);
            let rs = bundle::decode_keyset(&re).expect("a re-encoded key set decodes");
            assert_eq!(rs.keyset_bytes, s.keyset_bytes);
            assert_eq!(rs.keyset, s.keyset);
            assert_eq!(rs.signatures, s.signatures);
            assert_eq!(
                verify::verify_keyset(&re, &f.trust, Some(fixtures::KEYSET_VERSION), fixtures::NOW),
                v,
                "key set verdict changed by re-encoding (or is not deterministic)"
            );
            resigned_keyset(s, f);
        }
    }

    match &v {
        Ok(ks) => check_accepted_keyset(ks),
        Err(r) => assert_rejection(r),
    }
    match (&v, &stored) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Ok(_), Err(r)) => panic!("key set accepted but refused at restart: {r}"),
        (Err(r), Ok(_)) => assert!(
            matches!(
                r,
                Rejection::NotYetValid { .. }
                    | Rejection::KeysetExpired { .. }
                    | Rejection::KeysetRollback { .. }
                    | Rejection::KeysetReplay { .. }
            ),
            "key set refused only for install by {r}"
        ),
        (Err(a), Err(b)) => assert_eq!(a, b, "restart checks are a prefix"),
    }
}

/// Sign the decoded key set with the root key: no signature rejection is
/// left, and the verdict follows the contents, window and version.
fn resigned_keyset(s: &SignedKeySet<'_>, f: &Fixtures) {
    let message = bundle::keyset_message(s.keyset_bytes);
    let sig = WireSignature {
        key_id: key_id(&f.root.verifying_key()),
        sig: f.root.sign(&message).to_bytes().to_vec(),
    };
    let bytes = bundle::encode_keyset(s.keyset_bytes, &[sig]);
    if bytes.len() > bundle::MAX_KEYSET_BYTES {
        return;
    }
    let got = verify::verify_keyset(
        &bytes,
        &f.trust,
        Some(fixtures::KEYSET_VERSION),
        fixtures::NOW,
    );
    if let Err(r) = &got {
        assert_rejection(r);
        assert!(!is_signature_rejection(r), "re-signed key set refused: {r}");
    }
    let ks = &s.keyset;
    let contents_ok = contents_valid(ks);
    let expected = if !contents_ok {
        None
    } else if ks.issued_at >= ks.expires {
        Some(Err("not-yet-valid"))
    } else if ks.expires <= fixtures::NOW {
        Some(Err("keyset-expired"))
    } else if ks.version < fixtures::KEYSET_VERSION {
        Some(Err("keyset-rollback"))
    } else if ks.version == fixtures::KEYSET_VERSION {
        Some(Err("keyset-replay"))
    } else {
        Some(Ok(()))
    };
    match (&got, expected) {
        (Err(Rejection::Malformed(_)), None) => {}
        (Ok(accepted), Some(Ok(()))) => {
            assert_eq!(accepted, ks);
            check_accepted_keyset(accepted);
        }
        (Err(r), Some(Err(reason))) => assert_eq!(r.reason(), reason, "{r}"),
        (got, expected) => panic!(
            "re-signed key set: got {got:?}, contents valid: {contents_ok}, expected {expected:?}"
        ),
    }
}

/// The documented content rules: at most 256 keys and revoked ids; each
/// key a valid, non-weak ed25519 point whose id is its key id; no id twice.
fn contents_valid(ks: &KeySet) -> bool {
    ks.keys.len() <= MAX_KEYSET_KEYS
        && ks.revoked.len() <= MAX_KEYSET_KEYS
        && ks.keys.iter().enumerate().all(|(i, k)| {
            VerifyingKey::from_bytes(&k.public).is_ok_and(|vk| !vk.is_weak() && key_id(&vk) == k.id)
                && !ks.keys[..i].iter().any(|o| o.id == k.id)
        })
}

fn check_accepted_keyset(ks: &KeySet) {
    assert!(ks.version > fixtures::KEYSET_VERSION);
    assert!(ks.issued_at < ks.expires && ks.expires > fixtures::NOW);
    assert!(
        contents_valid(ks),
        "accepted key set breaks the content rules"
    );
}
