//! Reading sources. So far: the payload decoders shared by the MQTT and
//! serial sources, and the I²C polling core; the source tasks that run them
//! inside the daemon come with `wasmgate run`.

pub mod decode;
pub mod i2c;
