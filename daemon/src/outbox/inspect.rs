//! `wasmgate outbox stats|export` (being written).
