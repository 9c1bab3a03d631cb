//! What the wasmgate fuzz targets check (`fuzz/fuzz_targets/*.rs` are one
//! line each: `<module>::check(data)`), the fixed keys and contexts they
//! check against ([`fixtures`]), and the seeds ([`seeds`], written by the
//! `seeds` binary). See `docs/FUZZING.md`.
//!
//! Every `check` must hold for *any* input: it panics (which libFuzzer
//! reports as a crash) only when the code under test broke one of its own
//! rules, never because the input was bad. The invariants are written as
//! plain `assert!`s; `unwrap` is used where an earlier check already proved
//! success.
//!
//! The tests at the bottom replay the committed corpus (`fuzz/corpus/`)
//! through the same checks, so `cargo test` on the stable toolchain catches
//! a seed that would crash before a fuzzer ever runs.

pub mod bundle;
pub mod config;
pub mod fixtures;
pub mod guest_output;
pub mod payload;
pub mod seeds;

/// A non-empty, single-purpose message: what every error of the code under
/// test must render to.
pub(crate) fn assert_message(what: &str, msg: &str) {
    assert!(!msg.trim().is_empty(), "{what}: empty error message");
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 10, "{}: too few seeds", dir.display());
        files
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }

    fn replay(target: &str, check: fn(&[u8])) {
        for (path, bytes) in corpus(target) {
            eprintln!("{}", path.display());
            check(&bytes);
        }
    }

    #[test]
    fn corpus_bundle() {
        replay("bundle", super::bundle::check);
    }

    #[test]
    fn corpus_guest_output() {
        replay("guest_output", super::guest_output::check);
    }

    #[test]
    fn corpus_payload() {
        replay("payload", super::payload::check);
    }

    #[test]
    fn corpus_config() {
        replay("config", super::config::check);
    }

    /// The committed seeds are what the generator writes now (so nobody
    /// edits them by hand and forgets the generator, and the generator's
    /// fixtures still match the checks).
    #[test]
    fn corpus_is_generated() {
        for (target, files) in super::seeds::all() {
            for (name, bytes) in files {
                let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../corpus")
                    .join(target)
                    .join(&name);
                let committed = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (run the seeds binary)", path.display()));
                assert!(
                    committed == bytes,
                    "{} differs from the generator's output (run the seeds binary)",
                    path.display()
                );
            }
        }
    }

    /// The seeds the fixtures call valid really are accepted, so the fuzzer
    /// starts past the signature checks.
    #[test]
    fn valid_seeds_verify() {
        use wasmgate::ota::verify;
        let f = super::fixtures::get();
        let bundle = super::seeds::valid_bundle();
        verify::verify_bundle(&bundle, &f.trust, &f.context()).unwrap();
        let two = super::seeds::valid_bundle_two_signers();
        verify::verify_bundle(&two, &f.trust2, &f.context()).unwrap();
        let ks = super::seeds::valid_keyset();
        verify::verify_keyset(
            &ks,
            &f.trust,
            Some(super::fixtures::KEYSET_VERSION),
            super::fixtures::NOW,
        )
        .unwrap();
    }
}

#[cfg(test)]
mod seed_verdicts {
    use wasmgate::ota::verify;

    use super::fixtures::{self, KEYSET_VERSION, NOW};

    /// Each bundle / key-set seed gets the verdict it was made for
    /// (threshold 1), so the corpus covers every rejection reason.
    #[test]
    fn bundle_seed_verdicts() {
        let expected: &[(&str, &str)] = &[
            ("valid.cbor", "accepted"),
            ("valid-two-signers.cbor", "accepted"),
            ("valid-extra-unknown-signer.cbor", "accepted"),
            ("duplicate-signer.cbor", "accepted"),
            ("bad-signature.cbor", "bad-signature"),
            ("non-canonical-signature.cbor", "non-canonical-signature"),
            ("short-signature.cbor", "malformed"),
            ("too-many-signatures.cbor", "malformed"),
            ("revoked-key.cbor", "revoked-key"),
            ("unknown-key.cbor", "unknown-key"),
            ("not-listed.cbor", "below-threshold"),
            ("unsigned.cbor", "below-threshold"),
            ("hash-mismatch.cbor", "hash-mismatch"),
            ("length-mismatch.cbor", "length-mismatch"),
            ("bad-name.cbor", "malformed"),
            ("wrong-abi.cbor", "wrong-target"),
            ("wrong-board.cbor", "wrong-target"),
            ("wrong-fleet.cbor", "wrong-scope"),
            ("wrong-gateway.cbor", "wrong-scope"),
            ("expired.cbor", "expired"),
            ("empty-window.cbor", "not-yet-valid"),
            ("rollback.cbor", "rollback"),
            ("replay.cbor", "replay"),
            ("fuel-over-policy.cbor", "exceeds-policy"),
            ("memory-over-policy.cbor", "exceeds-policy"),
            ("trailing-byte.cbor", "malformed"),
            ("keyset-valid.cbor", "accepted"),
            ("keyset-replay.cbor", "keyset-replay"),
            ("keyset-rollback.cbor", "keyset-rollback"),
            ("keyset-expired.cbor", "keyset-expired"),
            ("keyset-weak-key.cbor", "malformed"),
            ("keyset-wrong-id.cbor", "malformed"),
            ("keyset-duplicate-key.cbor", "malformed"),
            ("keyset-unknown-root.cbor", "unknown-key"),
            ("keyset-bad-signature.cbor", "bad-signature"),
            ("keyset-unsigned.cbor", "below-threshold"),
            ("empty", "malformed"),
        ];
        let f = fixtures::get();
        let cx = f.context();
        let seeds = super::seeds::all().remove(0);
        assert_eq!(seeds.0, "bundle");
        for (name, bytes) in seeds.1 {
            if name.starts_with("regression-") {
                continue;
            }
            let verdict = if name.starts_with("keyset-") {
                verify::verify_keyset(&bytes, &f.trust, Some(KEYSET_VERSION), NOW).map(|_| ())
            } else {
                verify::verify_bundle(&bytes, &f.trust, &cx).map(|_| ())
            };
            let got = verdict.map_or_else(|r| r.reason(), |()| "accepted");
            let want = expected
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no expected verdict for seed {name}"))
                .1;
            assert_eq!(got, want, "seed {name}");
        }
    }
}

#[cfg(test)]
mod payload_seeds {
    use wasmgate::sources::decode::{JsonOptions, decode_with};

    use crate::payload::{Mode, mode, replay_context, replay_options, source_context};

    /// The payload seeds meant as valid examples decode, the others are
    /// refused, each in the mode its first byte selects.
    #[test]
    fn payload_seed_outcomes() {
        let accepted = [
            "all-formats.json",
            "json-flat.json",
            "json-structured.json",
            "json-batch.json",
            "json-derived.json",
            "json-escapes.json",
            "number.txt",
            "number-negative.txt",
            "number-exponent.txt",
            "number-leading-dot.txt",
            "csv.csv",
            "csv-empty-cells.csv",
            "csv-quoted.csv",
            "csv-replay-columns.csv",
            "kv-spaces.txt",
            "kv-commas.txt",
            "kv-colons.txt",
            "kv-sensor-and-time.txt",
            "kv-spaced-separators.txt",
            "sample-greenhouse-0.csv",
            "sample-greenhouse-1.csv",
            "cbor-flat.cbor",
            "cbor-structured.cbor",
            "cbor-batch.cbor",
        ];
        let seeds = super::seeds::all().remove(2);
        assert_eq!(seeds.0, "payload");
        for (name, bytes) in seeds.1 {
            let Some((&sel, payload)) = bytes.split_first() else {
                continue;
            };
            let (format, replay) = match mode(sel) {
                Mode::Decode(f, r) => (f, r),
                Mode::All => (wasmgate::sources::decode::PayloadFormat::Json, false),
                Mode::Serial => continue,
            };
            let (ctx, opts) = if replay {
                (replay_context(), replay_options())
            } else {
                (source_context(), JsonOptions::default())
            };
            let got = decode_with(format, payload, &ctx, &opts, &mut Vec::new());
            assert_eq!(
                got.is_ok(),
                accepted.contains(&name.as_str()),
                "seed {name}: {got:?}"
            );
        }
    }
}
