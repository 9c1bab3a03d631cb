//! Writer primitives for the restricted, deterministic CBOR of `wit/ABI.md` §5.
//!
//! Everything the host sends to a guest is built from these: definite lengths
//! only, integers (and length heads) in their shortest form, every float as a
//! float64 (`0xfb`). The functions append to a caller-owned buffer, so a
//! buffer reused across calls costs no allocation once it has grown.
//!
//! ```
//! use wasmgate::cbor;
//! let mut out = Vec::new();
//! cbor::write_map_head(&mut out, 1);
//! cbor::write_text(&mut out, "a");
//! cbor::write_i64(&mut out, -1);
//! assert_eq!(out, [0xa1, 0x61, b'a', 0x20]);
//! ```

/// Major type 0: unsigned integer.
pub const MAJOR_UINT: u8 = 0;
/// Major type 1: negative integer (`-1 - n`).
pub const MAJOR_NEGINT: u8 = 1;
/// Major type 2: byte string.
pub const MAJOR_BYTES: u8 = 2;
/// Major type 3: UTF-8 text string.
pub const MAJOR_TEXT: u8 = 3;
/// Major type 4: array.
pub const MAJOR_ARRAY: u8 = 4;
/// Major type 5: map.
pub const MAJOR_MAP: u8 = 5;

/// Append the head of a data item: major type `major` (0..=7, only the low
/// three bits are used) with argument `n`, in the shortest encoding.
pub fn write_uint_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = (major & 0x07) << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[m | 24, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(m | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(m | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Append an unsigned integer (major type 0).
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    write_uint_head(out, MAJOR_UINT, v);
}

/// Append a signed integer: major type 0 when `v >= 0`, else major type 1.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint_head(out, MAJOR_UINT, v as u64);
    } else {
        // -1 - v, computed without overflow for i64::MIN: !v == -1 - v.
        write_uint_head(out, MAJOR_NEGINT, !v as u64);
    }
}

/// Append a UTF-8 text string (major type 3).
pub fn write_text(out: &mut Vec<u8>, s: &str) {
    write_uint_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Append a byte string (major type 2).
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_uint_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

/// Append a float, always as float64 (`0xfb` + 8 bytes big-endian), never
/// shortened to half or single precision.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xfb);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

/// Append `true` (`0xf5`) or `false` (`0xf4`).
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xf5 } else { 0xf4 });
}

/// Append `null` (`0xf6`).
pub fn write_null(out: &mut Vec<u8>) {
    out.push(0xf6);
}

/// Append the head of a map of `len` key/value pairs; the caller then writes
/// `len` keys and values, alternating.
pub fn write_map_head(out: &mut Vec<u8>, len: usize) {
    write_uint_head(out, MAJOR_MAP, len as u64);
}

/// Append the head of an array of `len` items; the caller then writes them.
pub fn write_array_head(out: &mut Vec<u8>, len: usize) {
    write_uint_head(out, MAJOR_ARRAY, len as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    // RFC 8949, Appendix A.
    #[test]
    fn rfc8949_integers() {
        let cases: &[(i64, &str)] = &[
            (0, "00"),
            (1, "01"),
            (10, "0a"),
            (23, "17"),
            (24, "1818"),
            (25, "1819"),
            (100, "1864"),
            (1000, "1903e8"),
            (1_000_000, "1a000f4240"),
            (1_000_000_000_000, "1b000000e8d4a51000"),
            (-1, "20"),
            (-10, "29"),
            (-100, "3863"),
            (-1000, "3903e7"),
            (i64::MIN, "3b7fffffffffffffff"),
            (i64::MAX, "1b7fffffffffffffff"),
        ];
        for &(v, h) in cases {
            assert_eq!(enc(|o| write_i64(o, v)), hex(h), "{v}");
            let back: i64 = serde_cbor::from_slice(&hex(h)).unwrap();
            assert_eq!(back, v);
        }
        assert_eq!(enc(|o| write_u64(o, u64::MAX)), hex("1bffffffffffffffff"));
        // Boundaries of each head width.
        assert_eq!(enc(|o| write_u64(o, 255)), hex("18ff"));
        assert_eq!(enc(|o| write_u64(o, 256)), hex("190100"));
        assert_eq!(enc(|o| write_u64(o, 65_535)), hex("19ffff"));
        assert_eq!(enc(|o| write_u64(o, 65_536)), hex("1a00010000"));
        assert_eq!(enc(|o| write_u64(o, u32::MAX.into())), hex("1affffffff"));
        assert_eq!(enc(|o| write_u64(o, 1 << 32)), hex("1b0000000100000000"));
    }

    #[test]
    fn rfc8949_floats_as_float64() {
        let cases: &[(f64, &str)] = &[
            (1.1, "fb3ff199999999999a"),
            (1.0e300, "fb7e37e43c8800759c"),
            (-4.1, "fbc010666666666666"),
            // RFC gives shorter encodings for these; the ABI wants float64.
            (0.0, "fb0000000000000000"),
            (1.0, "fb3ff0000000000000"),
            (-0.0, "fb8000000000000000"),
        ];
        for &(v, h) in cases {
            assert_eq!(enc(|o| write_f64(o, v)), hex(h), "{v}");
            let back: f64 = serde_cbor::from_slice(&hex(h)).unwrap();
            assert_eq!(back.to_bits(), v.to_bits());
        }
    }

    #[test]
    fn rfc8949_simple_and_strings() {
        assert_eq!(enc(|o| write_bool(o, false)), hex("f4"));
        assert_eq!(enc(|o| write_bool(o, true)), hex("f5"));
        assert_eq!(enc(write_null), hex("f6"));
        assert_eq!(enc(|o| write_bytes(o, &[])), hex("40"));
        assert_eq!(enc(|o| write_bytes(o, &[1, 2, 3, 4])), hex("4401020304"));
        let cases: &[(&str, &str)] = &[
            ("", "60"),
            ("a", "6161"),
            ("IETF", "6449455446"),
            ("\"\\", "62225c"),
            ("\u{00fc}", "62c3bc"),
            ("\u{6c34}", "63e6b0b4"),
        ];
        for &(s, h) in cases {
            assert_eq!(enc(|o| write_text(o, s)), hex(h), "{s}");
            let back: String = serde_cbor::from_slice(&hex(h)).unwrap();
            assert_eq!(back, s);
        }
        let long = "x".repeat(300);
        let bytes = enc(|o| write_text(o, &long));
        assert_eq!(&bytes[..3], &hex("79012c")[..]);
        assert_eq!(serde_cbor::from_slice::<String>(&bytes).unwrap(), long);
    }

    #[test]
    fn rfc8949_containers() {
        assert_eq!(enc(|o| write_array_head(o, 0)), hex("80"));
        assert_eq!(enc(|o| write_map_head(o, 0)), hex("a0"));
        let arr = enc(|o| {
            write_array_head(o, 3);
            for i in 1..=3 {
                write_i64(o, i);
            }
        });
        assert_eq!(arr, hex("83010203"));
        let map = enc(|o| {
            write_map_head(o, 2);
            write_i64(o, 1);
            write_i64(o, 2);
            write_i64(o, 3);
            write_i64(o, 4);
        });
        assert_eq!(map, hex("a201020304"));
        // {"a": 1, "b": [2, 3]}
        let nested = enc(|o| {
            write_map_head(o, 2);
            write_text(o, "a");
            write_i64(o, 1);
            write_text(o, "b");
            write_array_head(o, 2);
            write_i64(o, 2);
            write_i64(o, 3);
        });
        assert_eq!(nested, hex("a26161016162820203"));
        let v: serde_cbor::Value = serde_cbor::from_slice(&nested).unwrap();
        let expected: serde_cbor::Value =
            serde_cbor::from_slice(&hex("a26161016162820203")).unwrap();
        assert_eq!(v, expected);
        // 25 elements need a one-byte length argument.
        let big = enc(|o| {
            write_array_head(o, 25);
            for i in 1..=25 {
                write_i64(o, i);
            }
        });
        assert_eq!(&big[..2], &hex("9819")[..]);
        let back: Vec<i64> = serde_cbor::from_slice(&big).unwrap();
        assert_eq!(back, (1..=25).collect::<Vec<_>>());
    }
}
