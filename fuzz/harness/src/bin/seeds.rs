//! Write the seed corpora: `fuzz/corpus/<target>/<name>` for every seed of
//! `wasmgate_fuzz_harness::seeds::all()`. Files the generator no longer
//! makes are removed (the corpus directories hold generated seeds only).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml -p wasmgate-fuzz-harness --bin seeds [-- OUT_DIR]
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus"));
    for (target, files) in wasmgate_fuzz_harness::seeds::all() {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        let names: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), files.len(), "{target}: duplicate seed names");
        for entry in std::fs::read_dir(&dir).expect("read the corpus directory") {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !names.contains(name.as_str()) {
                std::fs::remove_file(&path).expect("remove a stale seed");
            }
        }
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
        println!("{target}: {} seeds in {}", files.len(), dir.display());
    }
}
