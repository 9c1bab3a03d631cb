//! Glob patterns over sensor ids, used by a stream's `sensors = [...]` list.
//!
//! The syntax is deliberately small: `*` matches any run of characters
//! (including none, and including `/`), `?` matches exactly one character,
//! and everything else matches itself. There is no escaping and no character
//! classes; sensor ids with a literal `*` or `?` can still be matched with `?`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Why a sensor pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string (it could only match an empty id,
    /// which is never a valid sensor).
    #[error("empty sensor pattern")]
    Empty,
}

/// A compiled sensor-id glob, e.g. `greenhouse/*` or `shed/temp-?`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SensorPattern {
    src: Box<str>,
}

impl SensorPattern {
    /// Parse a pattern; the only invalid pattern is the empty one.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        Ok(SensorPattern {
            src: pattern.into(),
        })
    }

    /// The pattern `*`, matching every sensor.
    pub fn any() -> Self {
        SensorPattern { src: "*".into() }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// Whether this pattern matches every sensor id (it consists of `*` only).
    pub fn matches_everything(&self) -> bool {
        self.src.bytes().all(|b| b == b'*')
    }

    /// Whether `sensor` matches the whole pattern. Does not allocate; runs in
    /// `O(len(pattern) * len(sensor))` at worst, linear for typical patterns.
    pub fn matches(&self, sensor: &str) -> bool {
        let p = self.src.as_bytes();
        let s = sensor.as_bytes();
        let (mut pi, mut si) = (0usize, 0usize);
        // Position after the last `*` seen, and where in `s` its match ends.
        let mut star: Option<(usize, usize)> = None;
        // Literal bytes are compared one by one: both sides are valid UTF-8,
        // so a literal character only ever matches a whole character, and
        // `?` and backtracking always advance `si` by whole characters.
        while si < s.len() {
            match p.get(pi) {
                Some(b'*') => {
                    pi += 1;
                    star = Some((pi, si));
                    continue;
                }
                Some(b'?') => {
                    pi += 1;
                    si += utf8_len(s[si]);
                    continue;
                }
                Some(&c) if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more character.
            match star {
                Some((after_star, matched_to)) => {
                    let next = matched_to + utf8_len(s[matched_to]);
                    star = Some((after_star, next));
                    pi = after_star;
                    si = next;
                }
                None => return false,
            }
        }
        p[pi.min(p.len())..].iter().all(|&b| b == b'*')
    }
}

/// Length of the UTF-8 sequence starting with `lead` (a char boundary).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0x80..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

impl fmt::Display for SensorPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.src)
    }
}

impl FromStr for SensorPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SensorPattern::parse(s)
    }
}

impl<'de> Deserialize<'de> for SensorPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SensorPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        SensorPattern::parse(p).unwrap().matches(s)
    }

    #[test]
    fn literal() {
        assert!(m("greenhouse/north", "greenhouse/north"));
        assert!(!m("greenhouse/north", "greenhouse/nort"));
        assert!(!m("greenhouse/north", "greenhouse/northx"));
        assert!(!m("a", ""));
    }

    #[test]
    fn star() {
        assert!(m("*", "anything/at/all"));
        assert!(m("*", ""));
        assert!(m("greenhouse/*", "greenhouse/north"));
        assert!(m("greenhouse/*", "greenhouse/"));
        assert!(m("greenhouse/*", "greenhouse/a/b/c"), "* crosses /");
        assert!(!m("greenhouse/*", "greenhouse"));
        assert!(!m("greenhouse/*", "shed/north"));
        assert!(m("*/temp", "shed/temp"));
        assert!(m("*/temp", "a/b/temp"));
        assert!(!m("*/temp", "a/b/temp2"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abcbc"));
        assert!(!m("a*b*c", "aXXbYYcd"));
        assert!(m("a**b", "ab"));
        assert!(m("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaab"));
        assert!(!m("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn question_mark() {
        assert!(m("shed/temp-?", "shed/temp-1"));
        assert!(!m("shed/temp-?", "shed/temp-"));
        assert!(!m("shed/temp-?", "shed/temp-12"));
        assert!(m("??", "ab"));
        assert!(m("?*", "a"));
        assert!(!m("?*", ""));
        assert!(m("a?c", "a/c"));
    }

    #[test]
    fn unicode_is_matched_per_character() {
        assert!(m("gewächs?aus", "gewächshaus"));
        assert!(m("t-?", "t-ü"));
        assert!(m("t-?", "t-水"));
        assert!(!m("t-?", "t-üü"));
        assert!(m("*ü", "aaü"));
        assert!(m("*水*", "x水y"));
        assert!(!m("*水*", "x氷y"));
    }

    #[test]
    fn parse_display_serde() {
        assert_eq!(SensorPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(PatternError::Empty.to_string(), "empty sensor pattern");
        let p: SensorPattern = "shed/*".parse().unwrap();
        assert_eq!(p.to_string(), "shed/*");
        assert_eq!(p.as_str(), "shed/*");
        assert!(!p.matches_everything());
        assert!(SensorPattern::any().matches_everything());
        assert!(SensorPattern::any().matches("x"));

        let v: Vec<SensorPattern> = serde_json::from_str(r#"["a/*", "b?"]"#).unwrap();
        assert_eq!(v[1].as_str(), "b?");
        let err = serde_json::from_str::<SensorPattern>(r#""""#).unwrap_err();
        assert!(err.to_string().starts_with("empty sensor pattern"), "{err}");
        assert!(serde_json::from_str::<SensorPattern>("1").is_err());
    }
}
