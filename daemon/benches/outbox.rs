//! Durable ingest benchmark (being written).
fn main() {}
