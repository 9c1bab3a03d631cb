//! Entry points for the fuzz targets (`fuzz/`, see `docs/FUZZING.md`): the
//! few internals they drive that are not otherwise public. Not a stable API;
//! hidden from the documentation.
//!
//! Everything else the targets call (`ota::bundle`, `ota::verify`,
//! `runtime::wire`, `sources::decode`) is already public.

#![doc(hidden)]

use std::path::Path;

use crate::config::{self, Config, ConfigError, ModuleCheck};
use crate::sources::serial::{Frame, Framer};

/// Parse and validate `text` exactly like [`Config::from_str_at`] (errors
/// carry `path:line:column` and the key path), except that processor
/// module files are not looked up on disk.
pub fn parse_config_without_module_check(text: &str, path: &Path) -> Result<Config, ConfigError> {
    config::parse(text, path, ModuleCheck::Skip)
}

/// One frame of the serial line framer: `Some(line)` without its `\n` /
/// `\r\n`, or `None` for a line over the limit (`line-too-long`).
pub type LineFrame = Option<Vec<u8>>;

/// The serial source's line framer (`sources/serial.rs`), fed chunk by
/// chunk as reads from the port would.
#[derive(Debug)]
pub struct LineFramer(Framer);

impl LineFramer {
    /// A framer for lines of at most `max_line_bytes` (without terminator).
    pub fn new(max_line_bytes: usize) -> Self {
        LineFramer(Framer::new(max_line_bytes))
    }

    /// Feed one chunk; its complete frames are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<LineFrame>) {
        let mut pos = 0;
        while let Some(frame) = self.0.next(chunk, &mut pos) {
            out.push(match frame {
                Frame::Line(line) => Some(line.to_vec()),
                Frame::TooLong => None,
            });
        }
    }

    /// Bytes the framer holds for an unfinished line (bounded by the limit
    /// plus one, for a `\r`).
    pub fn buffered(&self) -> usize {
        self.0.line.len()
    }
}
