//! OTA benchmark: time from a bundle's bytes to the new version active.
//! Prints figures, asserts nothing about speed.
//!
//! ```text
//! cargo bench -p wasmgate --bench ota
//! WASMGATE_BENCH_N=50 cargo bench -p wasmgate --bench ota
//! ```
//!
//! The daemon's path, step by step, on the library API:
//!
//! 1. **verify**: [`verify::verify_bundle`] — size cap, CBOR decoding,
//!    ed25519 `verify_strict` of the manifest signature, module length and
//!    sha256, target, scope, validity, release counter, policy;
//! 2. **persist**: raise the time floor, store the release counter and,
//!    after the swap, the active bundle in sled ([`OtaStore`]; both writes
//!    flushed, as the daemon does) — in a fresh directory on disk under
//!    cargo's `target/tmp` (or `WASMGATE_BENCH_DIR`);
//! 3. **deploy**: [`Deployer::deploy`] into a [`Pipeline`] built from a
//!    config (one stream, processor `p`): compile the module, instantiate
//!    and shadow-run it on the stream's 64-reading sample, instantiate the
//!    live instance, swap.
//!
//! For `calibrate.wasm` and `moving-average.wasm`, `WASMGATE_BENCH_N`
//! deployments each (default 20), every one a new release. **cold**: every
//! bundle's module differs (a unique custom section appended), so it is
//! parsed, validated and compiled; **warm**: the same bytes as the running
//! module, so the runtime's module cache (keyed by sha256) skips the
//! compile. p50 and max in milliseconds; `total` is the per-iteration sum
//! of the three steps (not the sum of the p50s). Not included: the MQTT
//! hop, the wait for the processing task to finish its current batch, and
//! publishing the state (the e2e test `ota_e2e` prints the daemon's own
//! `activation_ms`, which covers everything from receipt to swap).
//!
//! With `WASMGATE_BENCH_OUT=<file>`, every cell is also appended to that
//! file as a JSON line (`{"bench","name","value","unit","min","max"}`:
//! p50, min and max over the row's deployments) for `scripts/bench.sh`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_usize, examples_dir, machine, median_spread, record, uname};
use ed25519_dalek::SigningKey;
use sha2::Digest;
use wasmgate::Reading;
use wasmgate::config::Config;
use wasmgate::ota::OtaConfig;
use wasmgate::ota::bundle::{self, KeySet, KeySetKey, Manifest, Scope, Target};
use wasmgate::ota::keys;
use wasmgate::ota::store::OtaStore;
use wasmgate::ota::task::{Deploy, Deployer, Outcome};
use wasmgate::ota::verify::{self, Context, Trust};
use wasmgate::pipeline::{BatchResult, Pipeline};
use wasmgate::runtime::abi::ABI_VERSION;
use wasmgate::runtime::{Clock, Limits, Runtime};
use wasmgate::state::MemoryState;

const BENCH: &str = "ota";
/// Readings per batch (the daemon's default `batch_size`) and so the size
/// of the shadow run's sample.
const BATCH: usize = 64;
/// sled page cache, as the daemon's default `storage.cache_bytes`.
const CACHE_BYTES: u64 = 4 << 20;
const GATEWAY: &str = "bench-gw";

/// A fresh directory on disk, removed on drop.
fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("WASMGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("benchmark directory");
    tempfile::Builder::new()
        .prefix("ota-bench-")
        .tempdir_in(base)
        .expect("temporary benchmark directory")
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `module` with a custom section `name` holding `payload` appended: a
/// valid module with other bytes (so another sha256, a cache miss).
fn with_custom_section(module: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(name.len() + payload.len() + 5);
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = module.to_vec();
    out.push(0);
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

fn now_secs() -> i64 {
    verify::unix_now()
}

/// A batch of readings with the fields both examples use.
fn batch(i: usize) -> Vec<Reading> {
    (0..BATCH)
        .map(|k| {
            let n = (i * BATCH + k) as f64;
            Reading::new(
                format!("greenhouse/s{}", k % 4),
                1_714_550_400_000 + (i * BATCH + k) as i64 * 1000,
            )
            .with_field("temp", 20.0 + (n * 0.1).sin() * 5.0)
            .with_field("humidity", 50.0 + (n * 0.05).cos() * 10.0)
        })
        .collect()
}

/// The processor config each example needs.
fn processor_config(name: &str) -> &'static str {
    match name {
        "calibrate" => "{ fields = { temp = { scale = 1.8, offset = 32.0 } } }",
        "moving-average" => "{ window = 8 }",
        _ => "{}",
    }
}

/// A pipeline whose stream `s` runs `module` as processor `p`, with a
/// 64-reading sample for shadow runs already taken.
fn pipeline(dir: &std::path::Path, name: &str, module: &std::path::Path) -> Pipeline {
    let text = format!(
        "[streams.s]\nsensors = [\"*\"]\n[[streams.s.processors]]\nmodule = \"{}\"\n\
         name = \"p\"\nconfig = {}\n",
        module.display(),
        processor_config(name)
    );
    let config = Config::from_str_at(&text, dir.join("wasmgate.toml")).expect("bench config");
    let runtime = Arc::new(Runtime::new(Limits::default()).expect("runtime"));
    let mut p = Pipeline::build(
        &config,
        runtime,
        Arc::new(MemoryState::new()),
        Clock::System,
    )
    .expect("pipeline");
    p.keep_samples(true);
    feed(&mut p, 0);
    assert_eq!(p.streams()[0].sample(0).len(), BATCH, "sample taken");
    p
}

/// One batch through the pipeline (the running version processes it).
fn feed(p: &mut Pipeline, i: usize) {
    let mut sink = |r: BatchResult<'_>| {
        std::hint::black_box(r.outputs.len());
        Ok::<(), ()>(())
    };
    for (k, r) in batch(i).into_iter().enumerate() {
        p.push(r, None, (i * BATCH + k) as u64, &mut sink)
            .expect("push");
    }
}

/// Signing and trust material, and the gateway's context.
struct Keys {
    release: SigningKey,
    trust: Trust,
}

impl Keys {
    fn new() -> Keys {
        let root = keys::generate().expect("key");
        let release = keys::generate().expect("key");
        let ks = KeySet {
            version: 1,
            issued_at: now_secs() - 60,
            expires: now_secs() + 86_400,
            keys: vec![KeySetKey::new(&release.verifying_key())],
            revoked: Vec::new(),
        };
        let mut trust = Trust {
            roots: vec![root.verifying_key()],
            root_threshold: 1,
            threshold: 1,
            keyset: None,
        };
        let signed = bundle::sign_keyset(&ks, &[root]);
        trust.keyset =
            Some(verify::verify_keyset(&signed, &trust, None, now_secs()).expect("key set"));
        Keys { release, trust }
    }

    fn bundle(&self, module: &[u8], release: u64) -> Vec<u8> {
        let m = Manifest {
            name: "p".into(),
            version: format!("bench-{release}"),
            release,
            sha256: sha2::Sha256::digest(module).into(),
            length: module.len() as u64,
            target: Target {
                abi: ABI_VERSION,
                board: "any".into(),
            },
            scope: Scope::Gateway(GATEWAY.into()),
            issued_at: now_secs() - 60,
            expires: now_secs() + 3600,
            fuel: None,
            memory: None,
            key_ids: vec![keys::key_id(&self.release.verifying_key())],
        };
        bundle::sign_bundle(&m, module, std::slice::from_ref(&self.release))
    }
}

fn context(stored_release: u64, limits: &Limits) -> Context<'static> {
    Context {
        gateway_id: GATEWAY,
        fleet: None,
        board: "generic",
        abi: ABI_VERSION,
        max_bundle_bytes: 4 << 20,
        max_fuel: limits.fuel_per_call,
        max_memory: limits.memory_bytes,
        now: now_secs(),
        stored_release: Some(stored_release),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (p50, min, max) of `xs`, milliseconds.
fn spread_ms(xs: &[Duration]) -> (f64, f64, f64) {
    median_spread(xs.iter().copied().map(ms).collect())
}

/// Per-iteration timings of one series.
#[derive(Default)]
struct Series {
    verify: Vec<Duration>,
    persist: Vec<Duration>,
    deploy: Vec<Duration>,
    total: Vec<Duration>,
    /// The very first deployment of the series.
    first_total: Option<Duration>,
}

fn run_series(
    name: &str,
    base: &[u8],
    module_path: &std::path::Path,
    cold: bool,
    n: usize,
    keys: &Keys,
) -> (Series, usize) {
    let dir = bench_dir();
    let mut p = pipeline(dir.path(), name, module_path);
    let db = wasmgate::state::open_db(&dir.path().join("state"), CACHE_BYTES).expect("sled");
    let store = OtaStore::open(&db).expect("ota tree");
    let mut deployer = Deployer::new(&OtaConfig::default());
    let limits = Limits::default();
    let mut series = Series::default();
    let mut bundle_bytes = 0;
    for i in 1..=n {
        let module = if cold {
            let unique = format!("{name}-{i}-{:?}", Instant::now());
            with_custom_section(base, "wasmgate-bench", unique.as_bytes())
        } else {
            base.to_vec()
        };
        let bytes = keys.bundle(&module, i as u64);
        bundle_bytes = bytes.len();

        let t0 = Instant::now();
        let verified = verify::verify_bundle(&bytes, &keys.trust, &context(i as u64 - 1, &limits))
            .unwrap_or_else(|r| panic!("{name}: bundle {i} refused: {r}"));
        let t1 = Instant::now();
        store
            .raise_floor(verified.manifest.issued_at)
            .expect("floor");
        store
            .set_release("p", verified.manifest.release)
            .expect("release");
        let t2 = Instant::now();
        let outcome = deployer.deploy(
            &mut p,
            &Deploy {
                name: "p".into(),
                version: verified.manifest.version.clone(),
                release: verified.manifest.release,
                module: verified.module,
            },
        );
        let t3 = Instant::now();
        assert!(
            matches!(outcome, Outcome::Activated { slots: 1, .. }),
            "{name}: deploy {i}: {outcome:?}"
        );
        store.activate("p", &bytes).expect("activate");
        let t4 = Instant::now();

        series.verify.push(t1 - t0);
        series.persist.push((t2 - t1) + (t4 - t3));
        series.deploy.push(t3 - t2);
        series.total.push(t4 - t0);
        series.first_total.get_or_insert(t4 - t0);
        // The new version processes a batch before the next update.
        feed(&mut p, i);
    }
    (series, bundle_bytes)
}

fn main() {
    let n = env_usize("WASMGATE_BENCH_N", 20).max(1);
    println!("OTA: bundle bytes -> new version active (library path, release build)");
    let arch = uname("-m")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    println!("machine: {}", machine(&arch));
    println!(
        "{n} deployments per row, each a new release; shadow run on a {BATCH}-reading sample; \
         p50 / max in ms"
    );
    println!();
    println!(
        "{:<16} {:<5} {:>8}  {:>15}  {:>15}  {:>15}  {:>15}  {:>9}",
        "module", "cache", "bundle", "verify", "persist", "deploy", "total", "1st total"
    );
    let keys = Keys::new();
    for name in ["calibrate", "moving-average"] {
        let path = examples_dir().join(format!("{name}.wasm"));
        let base = std::fs::read(&path).expect("example module");
        for cold in [true, false] {
            let (s, bundle_bytes) = run_series(name, &base, &path, cold, n, &keys);
            let cache = if cold { "cold" } else { "warm" };
            for (step, xs) in [
                ("verify", &s.verify),
                ("persist", &s.persist),
                ("deploy", &s.deploy),
                ("total", &s.total),
            ] {
                let (p50, min, max) = spread_ms(xs);
                let key = format!("{name}/{cache}/{step}");
                record(BENCH, &key, p50, "ms", min, max);
            }
            let cell = |xs: &[Duration]| {
                let (p50, _, max) = spread_ms(xs);
                format!("{p50:>6.2} / {max:>6.2}")
            };
            println!(
                "{:<16} {:<5} {:>8}  {:>15}  {:>15}  {:>15}  {:>15}  {:>9.2}",
                name,
                cache,
                bundle_bytes,
                cell(&s.verify),
                cell(&s.persist),
                cell(&s.deploy),
                cell(&s.total),
                ms(s.first_total.unwrap_or_default()),
            );
        }
    }
    println!();
    println!(
        "cold: each module's bytes differ (custom section), so each is compiled; warm: the \
         running module's bytes (compile skipped by the sha256-keyed module cache). persist \
         = two sled flushes (release counter before, active bundle after the swap)."
    );
}
