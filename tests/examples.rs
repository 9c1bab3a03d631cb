//! Every example processor, through the real runtime, known input → known output.

use std::sync::Arc;

use wasmgate::Reading;
use wasmgate::runtime::{ErrorKind, LoadError, ModuleConfig, Runtime, Supervisor};
use wasmgate::state::{MemoryState, StateStore};

use crate::common::*;

fn load(
    rt: &Runtime,
    name: &str,
    toml_config: &str,
    state: Arc<dyn StateStore>,
) -> Result<wasmgate::runtime::Instance, LoadError> {
    let table: toml::Table = toml::from_str(toml_config).expect("test config parses");
    let m = rt.load_file(&example(name), None)?;
    rt.instantiate(&m, env_with(state, ModuleConfig::from_toml(&table)))
}

fn run(name: &str, toml_config: &str, batches: &[Vec<Reading>]) -> Vec<Reading> {
    let rt = runtime();
    let mut inst = load(&rt, name, toml_config, Arc::new(MemoryState::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for b in batches {
        out.extend(inst.process(b).unwrap_or_else(|e| panic!("{e}")).0);
    }
    out
}

fn fields(r: &Reading) -> Vec<(&str, f64)> {
    r.fields.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// ---- calibrate -------------------------------------------------------------

const CALIBRATE: &str = r#"
[fields.temp]
scale = 1.8
offset = 32.0
rename = "temp_f"
[fields.pressure]
scale = 0.01
"#;

#[test]
fn calibrate_scales_offsets_and_renames() {
    let mut r = reading(
        "s1",
        1000,
        &[("temp", 20.0), ("humidity", 55.5), ("pressure", 101325.0)],
    );
    r.tags = vec![("site".into(), "north".into())];
    let out = run(
        "calibrate",
        CALIBRATE,
        &[vec![r.clone(), reading("s2", 2000, &[("humidity", 1.0)])]],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].sensor, "s1");
    assert_eq!(out[0].ts, 1000);
    assert_eq!(out[0].tags, r.tags, "tags pass unchanged");
    let f = fields(&out[0]);
    assert_eq!(f[0].0, "temp_f", "renamed in place");
    assert!(approx(f[0].1, 68.0));
    assert_eq!(f[1], ("humidity", 55.5), "unconfigured field unchanged");
    assert_eq!(f[2].0, "pressure");
    assert!(approx(f[2].1, 1013.25));
    assert_eq!(fields(&out[1]), vec![("humidity", 1.0)]);
}

#[test]
fn calibrate_without_fields_is_a_config_error() {
    let rt = runtime();
    let err = load(&rt, "calibrate", "", Arc::new(MemoryState::new()))
        .err()
        .expect("refused");
    match err {
        LoadError::Init(e) => {
            assert_eq!(e.kind(), ErrorKind::GuestError);
            assert!(e.to_string().contains("bad-config"), "{e}");
        }
        other => panic!("{other}"),
    }
}

// ---- moving-average ----------------------------------------------------------

#[test]
fn moving_average_windows_per_sensor_and_field() {
    let batch: Vec<Reading> = [1.0, 2.0, 3.0, 4.0, 5.0]
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            vec![
                reading("a", i as i64, &[("t", *v), ("h", 10.0 * v)]),
                reading("b", i as i64, &[("t", 100.0)]),
            ]
        })
        .collect();
    let out = run("moving-average", "window = 3\nfields = [\"t\"]\n", &[batch]);
    let a: Vec<f64> = out
        .iter()
        .filter(|r| r.sensor == "a")
        .map(|r| r.field("t").unwrap())
        .collect();
    assert_eq!(a, vec![1.0, 1.5, 2.0, 3.0, 4.0]);
    let h: Vec<f64> = out
        .iter()
        .filter(|r| r.sensor == "a")
        .map(|r| r.field("h").unwrap())
        .collect();
    assert_eq!(
        h,
        vec![10.0, 20.0, 30.0, 40.0, 50.0],
        "unselected field unchanged"
    );
    assert!(
        out.iter()
            .filter(|r| r.sensor == "b")
            .all(|r| r.field("t") == Some(100.0))
    );
}

#[test]
fn moving_average_window_survives_a_restart() {
    let rt = runtime();
    let state: Arc<dyn StateStore> = Arc::new(MemoryState::new());
    let values = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0];
    let mut continuous = Vec::new();
    {
        let mut inst = load(
            &rt,
            "moving-average",
            "window = 4",
            Arc::new(MemoryState::new()),
        )
        .unwrap();
        for (i, v) in values.iter().enumerate() {
            continuous.extend(
                inst.process(&[reading("s", i as i64, &[("v", *v)])])
                    .unwrap()
                    .0,
            );
        }
    }
    let mut restarted = Vec::new();
    for (i, v) in values.iter().enumerate() {
        // A fresh instance for every batch, as after a restart: the window
        // lives in host state.
        let mut inst = load(&rt, "moving-average", "window = 4", state.clone()).unwrap();
        restarted.extend(
            inst.process(&[reading("s", i as i64, &[("v", *v)])])
                .unwrap()
                .0,
        );
    }
    assert_eq!(restarted, continuous);
    let last = continuous.last().unwrap().field("v").unwrap();
    assert!(approx(last, 9.0), "mean of 6, 8, 10, 12 is 9, got {last}");
}

// ---- window-stats ------------------------------------------------------------

#[test]
fn window_stats_count_windows() {
    let batch: Vec<Reading> = (0..7)
        .map(|i| reading("s", 1000 + i, &[("t", i as f64)]))
        .collect();
    let out = run("window-stats", "count = 3", &[batch]);
    assert_eq!(
        out.len(),
        2,
        "two full windows of 3, the 7th reading is pending"
    );
    assert_eq!(out[0].kind.as_deref(), Some("stats"));
    assert_eq!(out[0].ts, 1002);
    assert_eq!(
        fields(&out[0]),
        vec![
            ("t_count", 3.0),
            ("t_avg", 1.0),
            ("t_min", 0.0),
            ("t_max", 2.0)
        ]
    );
    assert_eq!(out[1].ts, 1005);
    assert_eq!(
        fields(&out[1]),
        vec![
            ("t_count", 3.0),
            ("t_avg", 4.0),
            ("t_min", 3.0),
            ("t_max", 5.0)
        ]
    );
}

#[test]
fn window_stats_time_windows_across_batches() {
    // 10 s windows: [0,10s) gets 3 readings, [10s,20s) 2, then a reading at 25 s closes it.
    let b1 = vec![
        reading("s", 1_000, &[("t", 1.0)]),
        reading("s", 5_000, &[("t", 5.0)]),
    ];
    let b2 = vec![
        reading("s", 9_999, &[("t", 3.0)]),
        reading("s", 10_000, &[("t", 10.0)]),
        reading("s", 19_000, &[("t", 20.0)]),
        reading("s", 25_000, &[("t", 0.0)]),
    ];
    let out = run("window-stats", "seconds = 10", &[b1, b2]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].ts, 0);
    assert_eq!(
        fields(&out[0]),
        vec![
            ("t_count", 3.0),
            ("t_avg", 3.0),
            ("t_min", 1.0),
            ("t_max", 5.0)
        ]
    );
    assert_eq!(out[1].ts, 10_000);
    assert_eq!(
        fields(&out[1]),
        vec![
            ("t_count", 2.0),
            ("t_avg", 15.0),
            ("t_min", 10.0),
            ("t_max", 20.0)
        ]
    );
}

#[test]
fn window_stats_rejects_both_modes() {
    let rt = runtime();
    let err = load(
        &rt,
        "window-stats",
        "count = 3\nseconds = 10",
        Arc::new(MemoryState::new()),
    );
    assert!(matches!(err, Err(LoadError::Init(_))));
}

// ---- threshold-alert ---------------------------------------------------------

const ALERT: &str = "field = \"temp\"\nwarning = 30.0\ncritical = 40.0\nhysteresis = 2.0\n";

fn alerts(out: &[Reading]) -> Vec<(i64, String, String)> {
    out.iter()
        .filter(|r| r.kind.as_deref() == Some("alert"))
        .map(|r| {
            let tag = |k: &str| {
                r.tags
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (r.ts, tag("previous"), tag("level"))
        })
        .collect()
}

#[test]
fn threshold_alert_levels_with_hysteresis() {
    let temps = [25.0, 31.0, 29.0, 27.0, 41.0, 39.0, 37.0, 20.0];
    let batch: Vec<Reading> = temps
        .iter()
        .enumerate()
        .map(|(i, t)| reading("s", i as i64, &[("temp", *t)]))
        .collect();
    let out = run("threshold-alert", ALERT, &[batch]);
    assert_eq!(
        alerts(&out),
        vec![
            (1, "normal".into(), "warning".into()), // 31 ≥ 30
            // 29 stays warning (≥ 30 − 2); 27 < 28 falls back
            (3, "warning".into(), "normal".into()),
            (4, "normal".into(), "critical".into()), // 41 ≥ 40
            // 39 stays critical (≥ 38); 37 < 38 → warning
            (6, "critical".into(), "warning".into()),
            (7, "warning".into(), "normal".into()),
        ]
    );
    let passed: Vec<&Reading> = out.iter().filter(|r| r.kind.is_none()).collect();
    assert_eq!(
        passed.len(),
        temps.len(),
        "pass_through keeps every reading"
    );
    // Alert readings follow the reading that caused them, carrying its value.
    let i = out.iter().position(|r| r.kind.is_some()).unwrap();
    assert_eq!(out[i - 1].ts, out[i].ts);
    assert_eq!(out[i].field("temp"), Some(31.0));
    assert!(out[i].tags.iter().any(|(k, v)| k == "field" && v == "temp"));
}

#[test]
fn threshold_alert_below_direction_and_no_pass_through() {
    let cfg = "field = \"v\"\nwarning = 10.0\ncritical = 5.0\ndirection = \"below\"\npass_through = false\n";
    let batch: Vec<Reading> = [12.0, 9.0, 4.0, 11.0]
        .iter()
        .enumerate()
        .map(|(i, v)| reading("s", i as i64, &[("v", *v)]))
        .collect();
    let out = run("threshold-alert", cfg, &[batch]);
    assert!(out.iter().all(|r| r.kind.as_deref() == Some("alert")));
    assert_eq!(
        alerts(&out),
        vec![
            (1, "normal".into(), "warning".into()),
            (2, "warning".into(), "critical".into()),
            (3, "critical".into(), "normal".into()),
        ]
    );
}

// ---- c-clamp (C) -------------------------------------------------------------

#[test]
fn c_clamp_clamps_every_field() {
    let mut r = reading("s", 5, &[("a", -3.0), ("b", 0.5), ("c", 99.0)]);
    r.kind = Some("stats".into());
    let out = run(
        "c-clamp",
        "min = 0.0\nmax = 1.0",
        &[vec![r.clone(), reading("t", 6, &[])]],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(fields(&out[0]), vec![("a", 0.0), ("b", 0.5), ("c", 1.0)]);
    assert_eq!(out[0].kind, r.kind, "everything else unchanged");
    assert_eq!(out[1], reading("t", 6, &[]));
}

#[test]
fn c_clamp_rejects_inverted_bounds() {
    let rt = runtime();
    let err = load(
        &rt,
        "c-clamp",
        "min = 5.0\nmax = 1.0",
        Arc::new(MemoryState::new()),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("bad-config"), "{err}");
}

// ---- a chain under supervision -------------------------------------------------

#[test]
fn examples_chain_through_supervisors() {
    let rt = runtime();
    let table = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
    let mk = |name: &str, cfg: &str| {
        let m = rt.load_file(&example(name), None).unwrap();
        Supervisor::new(
            rt.clone(),
            m,
            env_with(
                Arc::new(MemoryState::new()),
                ModuleConfig::from_toml(&table(cfg)),
            ),
            wasmgate::runtime::FailurePolicy::PassThrough,
        )
        .unwrap()
    };
    let mut chain = [
        mk("calibrate", "[fields.temp]\nscale = 1.8\noffset = 32.0\n"),
        mk(
            "threshold-alert",
            "field = \"temp\"\nwarning = 86.0\ncritical = 104.0\n",
        ),
    ];
    let mut data = vec![
        reading("s", 1, &[("temp", 20.0)]),
        reading("s", 2, &[("temp", 31.0)]),
    ];
    for m in &mut chain {
        let step = m.process(data);
        assert!(step.error.is_none());
        data = step.outputs;
    }
    assert_eq!(data.len(), 3);
    assert!(approx(data[1].field("temp").unwrap(), 87.8));
    assert_eq!(data[2].kind.as_deref(), Some("alert"));
}
