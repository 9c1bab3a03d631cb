//! `guest_output`: the strict decoder of guest result envelopes
//! (`runtime/wire.rs`, [`decode_envelope`]): the CBOR a Wasm module leaves
//! in its memory, fully attacker-controlled.
//!
//! Invariants:
//! - decoding never panics and is deterministic; a refusal is a non-empty
//!   message;
//! - accepted outputs obey the caps (sensor ≤ 256 bytes, ≤ 256 fields, all
//!   finite, kind ≤ 64 bytes, ≤ 32 tags);
//! - accepted outputs survive the host's own batch encoding
//!   ([`encode_batch`], the bytes the next processor in a chain gets): the
//!   re-encoded envelope decodes to the same readings, and the batch
//!   decodes as `Vec<Reading>`;
//! - a guest error's code and message are truncated to 64 / 1024 bytes
//!   (plus `…`), and short ones round-trip.

use wasmgate::Reading;
use wasmgate::runtime::wire::{
    Decoded, MAX_FIELDS, MAX_KIND_LEN, MAX_SENSOR_LEN, MAX_TAGS, decode_envelope, encode_batch,
};

use crate::assert_message;

/// Run every check on `data`.
pub fn check(data: &[u8]) {
    let first = decode_envelope(data);
    let again = decode_envelope(data);
    assert_eq!(summary(&first), summary(&again), "not deterministic");
    match first {
        Err(msg) => assert_message("envelope", &msg),
        Ok(Decoded::Outputs(outputs)) => check_outputs(&outputs),
        Ok(Decoded::GuestError { code, message }) => check_error(&code, &message),
    }
}

/// A comparable form of a result.
fn summary(r: &Result<Decoded, String>) -> Result<String, String> {
    r.as_ref().map(|d| format!("{d:?}")).map_err(Clone::clone)
}

fn check_outputs(outputs: &[Reading]) {
    for r in outputs {
        assert!(r.sensor.len() <= MAX_SENSOR_LEN);
        assert!(r.fields.len() <= MAX_FIELDS);
        assert!(r.fields.iter().all(|(_, v)| v.is_finite()));
        assert!(r.kind.as_ref().is_none_or(|k| k.len() <= MAX_KIND_LEN));
        assert!(r.tags.len() <= MAX_TAGS);
    }
    // The host's encoding of the same readings, wrapped in an envelope.
    let mut batch = Vec::new();
    encode_batch(&mut batch, outputs);
    let back: Vec<Reading> =
        serde_cbor::from_slice(&batch).expect("the host's batch encoding decodes");
    assert_eq!(back, outputs, "batch encoding does not round-trip");
    let mut envelope = vec![0xa1, 0x67];
    envelope.extend_from_slice(b"outputs");
    envelope.extend_from_slice(&batch);
    match decode_envelope(&envelope) {
        Ok(Decoded::Outputs(again)) => assert_eq!(again, outputs, "envelope does not round-trip"),
        other => panic!("re-encoded outputs decode as {other:?}"),
    }
}

fn check_error(code: &str, message: &str) {
    // Truncated to 64 / 1024 bytes, plus a 3-byte ellipsis.
    assert!(code.len() <= 64 + 3, "code of {} bytes", code.len());
    assert!(
        message.len() <= 1024 + 3,
        "message of {} bytes",
        message.len()
    );
    if code.len() <= 64 && message.len() <= 1024 {
        let envelope = error_envelope(code, message);
        match decode_envelope(&envelope) {
            Ok(Decoded::GuestError {
                code: c,
                message: m,
            }) => {
                assert_eq!((c.as_str(), m.as_str()), (code, message));
            }
            other => panic!("re-encoded error decodes as {other:?}"),
        }
    }
}

/// `{"error": {"code": code, "message": message}}`.
pub fn error_envelope(code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    wasmgate::cbor::write_map_head(&mut out, 1);
    wasmgate::cbor::write_text(&mut out, "error");
    wasmgate::cbor::write_map_head(&mut out, 2);
    wasmgate::cbor::write_text(&mut out, "code");
    wasmgate::cbor::write_text(&mut out, code);
    wasmgate::cbor::write_text(&mut out, "message");
    wasmgate::cbor::write_text(&mut out, message);
    out
}
