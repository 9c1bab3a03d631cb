//! ABI v1 shape checks (`wit/ABI.md` §1–§2, §4), done statically on the
//! parsed module before any of its code runs.

use wasmi::{ExternType, Module, ValType};

/// The processor ABI version this host implements.
pub const ABI_VERSION: u32 = 1;
/// Prefix of the marker export; the version number follows it.
pub const MARKER_PREFIX: &str = "wasmgate_abi_v";
/// The import module name of every host function.
pub const IMPORT_MODULE: &str = "wasmgate";
/// Name of the exported linear memory.
pub const MEMORY_EXPORT: &str = "memory";

/// Exported functions: (name, params, results, required).
pub const EXPORTS: &[(&str, &[ValType], &[ValType], bool)] = &[
    ("wasmgate_alloc", &[ValType::I32], &[ValType::I32], true),
    ("wasmgate_dealloc", &[ValType::I32, ValType::I32], &[], true),
    (
        "wasmgate_init",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
        false,
    ),
    (
        "wasmgate_process",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
        true,
    ),
];

/// Host functions a module may import from [`IMPORT_MODULE`]: (name, params, results).
pub const IMPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("log", &[ValType::I32, ValType::I32, ValType::I32], &[]),
    ("now_ms", &[], &[ValType::I64]),
    (
        "state_get",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
    (
        "state_set",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
    (
        "state_delete",
        &[ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
    (
        "config_get",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
];

/// What the shape check learned about a module.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The module exports `wasmgate_init`.
    pub has_init: bool,
}

/// Check the marker, the exports and the imports. The error message says
/// exactly what is wrong; the caller adds the module name.
pub fn check(module: &Module) -> Result<Shape, String> {
    check_marker(module)?;
    for (name, params, results, required) in EXPORTS {
        match module.get_export(name) {
            None if *required => return Err(format!("missing export {name}")),
            None => {}
            Some(ExternType::Func(ty)) if ty.params() != *params || ty.results() != *results => {
                return Err(format!(
                    "export {name} has type {}, expected {}",
                    show_func(ty.params(), ty.results()),
                    show_func(params, results)
                ));
            }
            Some(ExternType::Func(_)) => {}
            Some(other) => {
                return Err(format!(
                    "export {name} is a {}, expected a function",
                    extern_kind(&other)
                ));
            }
        }
    }
    match module.get_export(MEMORY_EXPORT) {
        Some(ExternType::Memory(_)) => {}
        Some(other) => {
            return Err(format!(
                "export memory is a {}, expected a linear memory",
                extern_kind(&other)
            ));
        }
        None => return Err("missing export memory".into()),
    }
    for import in module.imports() {
        let (m, n) = (import.module(), import.name());
        let expected = IMPORTS
            .iter()
            .find(|(name, _, _)| m == IMPORT_MODULE && *name == n);
        let Some((_, params, results)) = expected else {
            return Err(format!(
                "unknown import {m}::{n} (a processor may import only the `{IMPORT_MODULE}` host functions)"
            ));
        };
        match import.ty() {
            ExternType::Func(ty) if ty.params() == *params && ty.results() == *results => {}
            ExternType::Func(ty) => {
                return Err(format!(
                    "import {m}::{n} has type {}, expected {}",
                    show_func(ty.params(), ty.results()),
                    show_func(params, results)
                ));
            }
            other => {
                return Err(format!(
                    "import {m}::{n} is a {}, expected a function",
                    extern_kind(other)
                ));
            }
        }
    }
    Ok(Shape {
        has_init: module.get_export("wasmgate_init").is_some(),
    })
}

fn check_marker(module: &Module) -> Result<(), String> {
    let mut found: Option<(String, ExternType)> = None;
    for export in module.exports() {
        if let Some(version) = export.name().strip_prefix(MARKER_PREFIX) {
            if found.is_some() {
                return Err("more than one wasmgate_abi_v* marker export".into());
            }
            if version != ABI_VERSION.to_string() {
                return Err(format!(
                    "module implements processor ABI version {version}; this wasmgate supports version {ABI_VERSION}"
                ));
            }
            found = Some((export.name().to_string(), export.ty().clone()));
        }
    }
    match found {
        None => Err(format!(
            "missing ABI marker export {MARKER_PREFIX}{ABI_VERSION} (not a wasmgate processor? build it with the wasmgate SDK)"
        )),
        Some((_, ExternType::Func(ty))) if ty.params().is_empty() && ty.results().is_empty() => {
            Ok(())
        }
        Some((name, ExternType::Func(ty))) => Err(format!(
            "export {name} has type {}, expected () -> ()",
            show_func(ty.params(), ty.results())
        )),
        Some((name, other)) => Err(format!(
            "export {name} is a {}, expected a function",
            extern_kind(&other)
        )),
    }
}

fn extern_kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
    }
}

fn show_types(types: &[ValType]) -> String {
    let names: Vec<String> = types
        .iter()
        .map(|t| match t {
            ValType::I32 => "i32".to_string(),
            ValType::I64 => "i64".to_string(),
            ValType::F32 => "f32".to_string(),
            ValType::F64 => "f64".to_string(),
            other => format!("{other:?}").to_lowercase(),
        })
        .collect();
    names.join(", ")
}

/// Render a function type the way ABI.md writes it: `(i32, i32) -> i64`.
pub fn show_func(params: &[ValType], results: &[ValType]) -> String {
    let results = match results.len() {
        0 => "()".to_string(),
        1 => show_types(results),
        _ => format!("({})", show_types(results)),
    };
    format!("({}) -> {results}", show_types(params))
}
