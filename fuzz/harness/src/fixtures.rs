//! The fixed world the targets run in: keys derived from constant seeds, a
//! trusted key set, the gateway's OTA context, and the decoding contexts of
//! the payload target. Built once ([`get`]); the seed generator uses the
//! same values, so its "valid" seeds are valid here.

use std::sync::LazyLock;

use ed25519_dalek::SigningKey;
use wasmgate::ota::bundle::{KeySet, KeySetKey};
use wasmgate::ota::keys::key_id;
use wasmgate::ota::verify::{Context, Trust};

/// The gateway's time (the time floor), unix seconds.
pub const NOW: i64 = 1_750_000_000;
/// The highest release already installed, for every module name.
pub const STORED_RELEASE: u64 = 4;
/// The version of the trusted key set.
pub const KEYSET_VERSION: u64 = 7;
/// This gateway's id.
pub const GATEWAY_ID: &str = "gw-fuzz";
/// This gateway's fleet.
pub const FLEET: &str = "north";
/// This board's class.
pub const BOARD: &str = "rpi4";
/// The ABI the runtime implements.
pub const ABI: u32 = 1;
/// Local policy: fuel per call.
pub const MAX_FUEL: u64 = 10_000_000;
/// Local policy: memory, bytes.
pub const MAX_MEMORY: u64 = 16 << 20;
/// The bundle size cap. Larger than any input libFuzzer is allowed to make
/// (`-max_len` in scripts/fuzz.sh), so `too-large` is never the verdict and
/// re-encoded bundles are judged like the originals.
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;

/// The root key (signs key sets).
pub fn root() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

/// Release key A (in the key set).
pub fn release_a() -> SigningKey {
    SigningKey::from_bytes(&[0x22; 32])
}

/// Release key B (in the key set).
pub fn release_b() -> SigningKey {
    SigningKey::from_bytes(&[0x33; 32])
}

/// A release key that is listed *and* revoked (revocation wins).
pub fn revoked() -> SigningKey {
    SigningKey::from_bytes(&[0x44; 32])
}

/// A key the key set does not know.
pub fn stranger() -> SigningKey {
    SigningKey::from_bytes(&[0x55; 32])
}

/// A key's id.
pub fn id(key: &SigningKey) -> String {
    key_id(&key.verifying_key())
}

/// The trusted release key set: A, B and the revoked key; the last one
/// revoked.
pub fn keyset() -> KeySet {
    KeySet {
        version: KEYSET_VERSION,
        issued_at: NOW - 86_400,
        expires: NOW + 10 * 365 * 86_400,
        keys: vec![
            KeySetKey::new(&release_a().verifying_key()),
            KeySetKey::new(&release_b().verifying_key()),
            KeySetKey::new(&revoked().verifying_key()),
        ],
        revoked: vec![id(&revoked())],
    }
}

/// Everything built once.
pub struct Fixtures {
    /// Root key, key set, threshold 1 (manifests and key sets).
    pub trust: Trust,
    /// The same with a release threshold of 2.
    pub trust2: Trust,
    /// Release key A, for re-signing decoded manifests.
    pub release_a: SigningKey,
    /// The root key, for re-signing decoded key sets.
    pub root: SigningKey,
    /// `id(release_a)`.
    pub id_a: String,
    /// `id(revoked)`.
    pub id_revoked: String,
}

impl Fixtures {
    /// The trusted release key set (built once: deriving its keys is
    /// costly).
    pub fn keyset(&self) -> &KeySet {
        self.trust
            .keyset
            .as_ref()
            .expect("the fixture trust has a key set")
    }

    /// The gateway's OTA context.
    pub fn context(&self) -> Context<'static> {
        Context {
            gateway_id: GATEWAY_ID,
            fleet: Some(FLEET),
            board: BOARD,
            abi: ABI,
            max_bundle_bytes: MAX_BUNDLE_BYTES,
            max_fuel: MAX_FUEL,
            max_memory: MAX_MEMORY,
            now: NOW,
            stored_release: Some(STORED_RELEASE),
        }
    }
}

static FIXTURES: LazyLock<Fixtures> = LazyLock::new(|| {
    let trust = Trust {
        roots: vec![root().verifying_key()],
        root_threshold: 1,
        threshold: 1,
        keyset: Some(keyset()),
    };
    let trust2 = Trust {
        threshold: 2,
        ..trust.clone()
    };
    Fixtures {
        trust,
        trust2,
        release_a: release_a(),
        root: root(),
        id_a: id(&release_a()),
        id_revoked: id(&revoked()),
    }
});

/// The fixtures (built on first use).
pub fn get() -> &'static Fixtures {
    &FIXTURES
}
