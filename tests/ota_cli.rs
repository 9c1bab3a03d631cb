//! The OTA commands through the binary: `keygen`, `keyset sign`, `sign`,
//! `verify` and `push` (against the test broker).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::common::*;

fn wasmgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .output()
        .expect("wasmgate runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A root key, a release key, a key set and a gateway config trusting them.
struct Setup {
    dir: tempfile::TempDir,
    release: PathBuf,
    config: PathBuf,
    keyset: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.key");
        let release = dir.path().join("release.key");
        ok(&wasmgate(&["keygen", "--out", s(&root)]));
        ok(&wasmgate(&["keygen", "--out", s(&release)]));
        let keyset = dir.path().join("keyset.cbor");
        let out = ok(&wasmgate(&[
            "keyset",
            "sign",
            "--root-key",
            s(&root),
            "--release-key",
            s(&dir.path().join("release.key.pub")),
            "--version",
            "1",
            "--out",
            s(&keyset),
        ]));
        assert!(out.contains("key set version 1"), "{out}");
        let root_pub = std::fs::read_to_string(dir.path().join("root.key.pub")).unwrap();
        let config = dir.path().join("wasmgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[gateway]
id = "gw-1"

[storage]
path = "{state}"

[ota]
root_keys = ["{root}"]
keyset_file = "{keyset}"
fleet = "north"
board = "pi4"
"#,
                root = root_pub.trim(),
                keyset = keyset.display(),
                state = dir.path().join("state").display(),
            ),
        )
        .unwrap();
        Setup {
            dir,
            release,
            config,
            keyset,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sign the calibrate example; `extra` adds or overrides arguments.
    fn sign(&self, out: &str, extra: &[&str]) -> PathBuf {
        let bundle = self.path(out);
        let module = example("calibrate");
        let mut args = vec![
            "sign",
            "--key",
            s(&self.release),
            "--module",
            s(&module),
            "--name",
            "calibrate",
            "--version",
            "1.0.0",
            "--release",
            "3",
            "--out",
            s(&bundle),
        ];
        args.extend_from_slice(extra);
        let out = ok(&wasmgate(&args));
        assert!(
            out.contains("manifest calibrate 1.0.0 (release 3)"),
            "{out}"
        );
        bundle
    }

    fn verify(&self, bundle: &Path) -> Output {
        wasmgate(&["verify", s(bundle), "--config", s(&self.config)])
    }
}

#[test]
fn ota_keygen_writes_private_0600_and_public_hex() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let out = ok(&wasmgate(&["keygen", "--out", s(&key)]));
    let public = std::fs::read_to_string(dir.path().join("release.key.pub")).unwrap();
    let public = public.trim_end_matches('\n');
    assert_eq!(public.len(), 64);
    assert!(public.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(out.contains(&format!("public key: {public}")), "{out}");
    let id = wasmgate::ota::keys::key_id(&wasmgate::ota::keys::parse_public_hex(public).unwrap());
    assert!(out.contains(&format!("key id:     {id}")), "{out}");
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);
    // The private key is never printed.
    let private = std::fs::read_to_string(&key).unwrap();
    assert_eq!(private.trim().len(), 64);
    assert!(!out.contains(private.trim()));
    assert!(!stderr(&wasmgate(&["keygen", "--out", s(&key)])).contains(private.trim()));

    // Never overwritten, neither half.
    let again = wasmgate(&["keygen", "--out", s(&key)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private);
    let other = dir.path().join("other.key");
    std::fs::write(dir.path().join("other.key.pub"), "x").unwrap();
    let refused = wasmgate(&["keygen", "--out", s(&other)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(!other.exists(), "nothing written when PATH.pub exists");
}

#[cfg(unix)]
#[test]
fn ota_sign_refuses_a_key_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    std::fs::set_permissions(&setup.release, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = wasmgate(&[
        "sign",
        "--key",
        s(&setup.release),
        "--module",
        s(&example("calibrate")),
        "--name",
        "calibrate",
        "--version",
        "1",
        "--release",
        "1",
        "--gateway",
        "gw-1",
        "--out",
        s(&setup.path("b.cbor")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("chmod 600 {}", setup.release.display())),
        "{err}"
    );
    assert!(!setup.path("b.cbor").exists());
}

#[test]
fn ota_keyset_sign_then_verify_accepts() {
    let setup = Setup::new();
    // For this gateway, and for its fleet.
    for (name, scope) in [
        ("gw.cbor", ["--gateway", "gw-1"]),
        ("fleet.cbor", ["--fleet", "north"]),
    ] {
        let bundle = setup.sign(name, &scope);
        let out = setup.verify(&bundle);
        let text = ok(&out);
        assert!(text.contains("verdict: accepted"), "{text}");
        assert!(text.contains("  ok"), "{text}");
        assert!(text.contains("release   not checked"), "{text}");
    }
    // The key set itself verifies against the roots (it is the one the
    // config already has: a replay for this gateway).
    let out = setup.verify(&setup.keyset);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("keyset-replay"), "{}", stdout(&out));
}

#[test]
fn ota_verify_explains_rejections() {
    let setup = Setup::new();
    let bundle = setup.sign("b.cbor", &["--gateway", "gw-1"]);
    let good = std::fs::read(&bundle).unwrap();

    // The module is the last field: its last byte altered.
    let mut module_tampered = good.clone();
    *module_tampered.last_mut().unwrap() ^= 0x55;
    let f = setup.path("module-tampered.cbor");
    std::fs::write(&f, &module_tampered).unwrap();
    let out = setup.verify(&f);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("verdict: rejected (hash-mismatch)"),
        "{}",
        stdout(&out)
    );

    // The manifest altered: its version string "1.0.0" becomes "9.0.0".
    let at = good
        .windows(5)
        .position(|w| w == b"1.0.0")
        .expect("version in the manifest");
    let mut manifest_tampered = good.clone();
    manifest_tampered[at] = b'9';
    let f = setup.path("manifest-tampered.cbor");
    std::fs::write(&f, &manifest_tampered).unwrap();
    let out = setup.verify(&f);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("verdict: rejected (bad-signature)"), "{text}");
    assert!(text.contains("does not verify"), "{text}");

    // Another gateway, another board, too much fuel, expired.
    for (name, extra, label) in [
        ("other.cbor", vec!["--gateway", "gw-2"], "wrong-scope"),
        (
            "board.cbor",
            vec!["--gateway", "gw-1", "--board", "esp32"],
            "wrong-target",
        ),
        (
            "fuel.cbor",
            vec!["--gateway", "gw-1", "--fuel", "999999999999"],
            "exceeds-policy",
        ),
        (
            "old.cbor",
            vec![
                "--gateway",
                "gw-1",
                "--issued-at",
                "1000000000",
                "--expires-days",
                "1",
            ],
            "expired",
        ),
    ] {
        let b = setup.sign(name, &extra);
        let out = setup.verify(&b);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).contains(&format!("verdict: rejected ({label})")),
            "{name}: {}",
            stdout(&out)
        );
    }

    // Random bytes.
    let f = setup.path("junk.cbor");
    std::fs::write(&f, b"\x9f\x01\x02 definitely not a bundle").unwrap();
    let out = setup.verify(&f);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("rejected (malformed)"),
        "{}",
        stdout(&out)
    );

    // The configured key set expired: kept, but nothing new is installed.
    ok(&wasmgate(&[
        "keyset",
        "sign",
        "--root-key",
        s(&setup.path("root.key")),
        "--release-key",
        s(&setup.path("release.key.pub")),
        "--version",
        "1",
        "--issued-at",
        "1000000000",
        "--expires-days",
        "1",
        "--out",
        s(&setup.keyset),
    ]));
    let out = setup.verify(&bundle);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("EXPIRED"), "{text}");
    assert!(
        text.contains("verdict: rejected (keyset-expired)"),
        "{text}"
    );

    // A config with OTA off says so.
    let off = setup.path("off.toml");
    std::fs::write(&off, "[gateway]\nid = \"gw-1\"\n").unwrap();
    let out = wasmgate(&["verify", s(&bundle), "--config", s(&off)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("root_keys"), "{}", stderr(&out));
}

#[test]
fn ota_rotation_through_the_cli() {
    let setup = Setup::new();
    let old = setup.sign("old.cbor", &["--gateway", "gw-1"]);
    // A new release key; key set 2 revokes the old one.
    let new_key = setup.path("new.key");
    ok(&wasmgate(&["keygen", "--out", s(&new_key)]));
    let old_pub = std::fs::read_to_string(setup.path("release.key.pub")).unwrap();
    let old_id =
        wasmgate::ota::keys::key_id(&wasmgate::ota::keys::parse_public_hex(&old_pub).unwrap());
    let new_pub = std::fs::read_to_string(setup.path("new.key.pub")).unwrap();
    let v2 = setup.path("keyset-2.cbor");
    ok(&wasmgate(&[
        "keyset",
        "sign",
        "--root-key",
        s(&setup.path("root.key")),
        "--release-key",
        new_pub.trim(),
        "--revoke",
        &old_id,
        "--version",
        "2",
        "--out",
        s(&v2),
    ]));
    let text = ok(&setup.verify(&v2));
    assert!(text.contains("verdict: accepted"), "{text}");
    // Once the gateway has it (here: its keyset_file), the old key is refused.
    std::fs::copy(&v2, &setup.keyset).unwrap();
    let out = setup.verify(&old);
    assert!(
        stdout(&out).contains("verdict: rejected (revoked-key)"),
        "{}",
        stdout(&out)
    );
    let out = wasmgate(&[
        "sign",
        "--key",
        s(&new_key),
        "--module",
        s(&example("calibrate")),
        "--name",
        "calibrate",
        "--version",
        "1.0.1",
        "--release",
        "4",
        "--gateway",
        "gw-1",
        "--out",
        s(&setup.path("new.cbor")),
    ]);
    ok(&out);
    let text = ok(&setup.verify(&setup.path("new.cbor")));
    assert!(text.contains("verdict: accepted"), "{text}");
}

async fn subscriber(topics: &[String]) -> (AsyncClient, EventLoop) {
    let (host, port) = broker();
    let mut opts = MqttOptions::new(unique("ota-sub"), host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = AsyncClient::new(opts, 100);
    for t in topics {
        client.subscribe(t, QoS::AtLeastOnce).await.unwrap();
    }
    let mut acks = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while acks < topics.len() {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = ev.poll().await {
                acks += 1;
            }
        }
    })
    .await
    .expect("suback");
    (client, ev)
}

/// `wasmgate push` off the async runtime's threads.
async fn push(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        wasmgate(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ota_push_publishes_on_the_gateway_and_fleet_topics() {
    let setup = Setup::new();
    let (host, port) = broker();
    let prefix = unique("otap");
    let gw_topic = format!("{prefix}/gw-1/ota");
    let fleet_topic = format!("{prefix}/fleet/north/ota");
    let (_sub, mut ev) = subscriber(&[gw_topic.clone(), fleet_topic.clone()]).await;

    let bundle = setup.sign("b.cbor", &["--gateway", "gw-1"]);
    let common = |file: &Path, target: [&str; 2]| -> Vec<String> {
        [
            "push",
            s(file),
            "--host",
            &host,
            "--port",
            &port.to_string(),
            "--prefix",
            &prefix,
            target[0],
            target[1],
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let out = push(common(&bundle, ["--gateway", "gw-1"])).await;
    let text = ok(&out);
    assert!(text.contains("acknowledged"), "{text}");
    assert!(text.contains(&gw_topic), "{text}");
    let (topic, payload) = next_publish(&mut ev, 10).await;
    assert_eq!(topic, gw_topic);
    assert_eq!(payload, std::fs::read(&bundle).unwrap());

    // A key set goes the same way, here to the fleet.
    let out = push(common(&setup.keyset, ["--fleet", "north"])).await;
    let text = ok(&out);
    assert!(text.contains("key set version 1"), "{text}");
    let (topic, payload) = next_publish(&mut ev, 10).await;
    assert_eq!(topic, fleet_topic);
    assert_eq!(payload, std::fs::read(&setup.keyset).unwrap());

    // A bundle signed for one gateway pushed to the fleet: delivered, with
    // a warning that the gateways there will refuse it.
    let out = push(common(&bundle, ["--fleet", "north"])).await;
    ok(&out);
    assert!(stderr(&out).contains("wrong-scope"), "{}", stderr(&out));
    let (topic, _) = next_publish(&mut ev, 10).await;
    assert_eq!(topic, fleet_topic);

    // Retained: a gateway that subscribes later still gets it.
    let late_topic = format!("{prefix}/gw-late/ota");
    let late = setup.sign("late.cbor", &["--gateway", "gw-late"]);
    let mut args = common(&late, ["--gateway", "gw-late"]);
    args.push("--retain".into());
    let text = ok(&push(args).await);
    assert!(text.contains("retained"), "{text}");
    let (_late_sub, mut late_ev) = subscriber(std::slice::from_ref(&late_topic)).await;
    let (topic, payload) = next_publish(&mut late_ev, 10).await;
    assert_eq!(topic, late_topic);
    assert_eq!(payload, std::fs::read(&late).unwrap());

    // Not a bundle: refused before connecting.
    let junk = setup.path("junk");
    std::fs::write(&junk, b"hello").unwrap();
    let out = push(common(&junk, ["--gateway", "gw-1"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("neither a bundle nor a key set"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ota_push_fails_without_a_broker() {
    let setup = Setup::new();
    let bundle = setup.sign("b.cbor", &["--gateway", "gw-1"]);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = push(
        [
            "push",
            s(&bundle),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--gateway",
            "gw-1",
            "--timeout-secs",
            "5",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("127.0.0.1"), "{}", stderr(&out));
}
