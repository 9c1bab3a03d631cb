//! `wit/processor.wit`, `wit/ABI.md` and the runtime's ABI tables agree.

use std::collections::BTreeSet;

use wasmgate::runtime::abi::{ABI_VERSION, EXPORTS, IMPORT_MODULE, IMPORTS, MARKER_PREFIX};
use wit_parser::{Resolve, WorldItem};

use crate::common::repo_root;

fn core_name(wit_name: &str) -> String {
    wit_name.replace('-', "_")
}

#[test]
fn wit_world_matches_the_runtime_tables() {
    let mut resolve = Resolve::new();
    let (pkg, _) = resolve
        .push_path(repo_root().join("wit/processor.wit"))
        .expect("processor.wit parses");
    let world_id = resolve
        .select_world(&[pkg], Some("processor"))
        .expect("world processor");
    let world = &resolve.worlds[world_id];

    let wit_exports: BTreeSet<String> = world
        .exports
        .values()
        .filter_map(|item| match item {
            WorldItem::Function(f) => Some(format!("wasmgate_{}", core_name(&f.name))),
            _ => None,
        })
        .collect();
    let runtime_exports: BTreeSet<String> = EXPORTS
        .iter()
        .map(|(n, ..)| n.to_string())
        .filter(|n| n != "wasmgate_alloc" && n != "wasmgate_dealloc")
        .collect();
    assert_eq!(
        wit_exports, runtime_exports,
        "world exports ↔ runtime exports"
    );

    let mut wit_imports = BTreeSet::new();
    for item in world.imports.values() {
        if let WorldItem::Interface { id, .. } = item {
            let iface = &resolve.interfaces[*id];
            if iface.name.as_deref() == Some("host") {
                wit_imports.extend(iface.functions.keys().map(|n| core_name(n)));
            }
        }
    }
    let runtime_imports: BTreeSet<String> = IMPORTS.iter().map(|(n, ..)| n.to_string()).collect();
    assert_eq!(
        wit_imports, runtime_imports,
        "host interface ↔ runtime imports"
    );
    assert_eq!(
        resolve.packages[pkg].name.version.as_ref().map(|v| v.major),
        Some(u64::from(ABI_VERSION)),
        "WIT package major version = ABI version"
    );
}

#[test]
fn abi_document_names_every_export_and_import() {
    let doc = std::fs::read_to_string(repo_root().join("wit/ABI.md")).unwrap();
    assert!(doc.contains(&format!("`{MARKER_PREFIX}{ABI_VERSION}`")));
    assert!(doc.contains(&format!("module `{IMPORT_MODULE}`")));
    for (name, params, results, _) in EXPORTS {
        assert!(
            doc.contains(&format!("`{name}`")),
            "ABI.md documents export {name}"
        );
        let _ = (params, results);
    }
    for (name, ..) in IMPORTS {
        assert!(
            doc.contains(&format!("`{name}`")),
            "ABI.md documents import {name}"
        );
    }
}
