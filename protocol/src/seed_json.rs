//! JSON encoding that matches Python's `json.dumps(obj)` byte for byte for the values this
//! protocol uses: `", "` and `": "` separators, non-ASCII and DEL escaped as lowercase `\uXXXX`
//! (UTF-16 surrogate pairs above the BMP), keys in declaration order.
//!
//! Decoding needs nothing special: any JSON parser reads both forms. Known difference: floats with
//! large exponents print as `1e20` here and `1e+20` in Python; no field of the protocol uses them.

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};
use std::io::{self, Write};

/// Encode `value` the way the seed's `json.dumps(value).encode()` would.
pub fn to_seed_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .expect("protocol types serialize infallibly into a Vec (string keys only)");
    out
}

/// [`to_seed_json`] as a `String`.
pub fn to_seed_json_string<T: Serialize + ?Sized>(value: &T) -> String {
    String::from_utf8(to_seed_json(value)).expect("the encoder only emits ASCII")
}

/// `serde_json` formatter reproducing Python's default separators and `ensure_ascii=True`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() && ch != '\u{7f}' {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{:04x}", unit)?;
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // Python writes the same short escapes as serde_json, and `\u00XX` (lowercase) for the
        // other control characters.
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => return write!(writer, "\\u{:04x}", byte),
        };
        writer.write_all(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_separators_and_order() {
        // Python: json.dumps({"username": "bob", "message": "hi", "n": [1, 2], "x": None})
        let v = json!({"username": "bob", "message": "hi", "n": [1, 2], "x": null});
        // serde_json's Value map is sorted unless preserve_order; check with a struct instead.
        #[derive(Serialize)]
        struct P<'a> {
            username: &'a str,
            message: &'a str,
            n: [i32; 2],
            x: Option<i32>,
        }
        let p = P {
            username: "bob",
            message: "hi",
            n: [1, 2],
            x: None,
        };
        assert_eq!(
            to_seed_json_string(&p),
            r#"{"username": "bob", "message": "hi", "n": [1, 2], "x": null}"#
        );
        assert!(to_seed_json_string(&v).contains("\"n\": [1, 2]"));
    }

    #[test]
    fn escapes_like_ensure_ascii() {
        // Python: json.dumps("é\u007f\n\x01😀\"\\/") == '"\\u00e9\\u007f\\n\\u0001\\ud83d\\ude00\\"\\\\/"'
        let s = "é\u{7f}\n\u{1}😀\"\\/";
        assert_eq!(
            to_seed_json_string(s),
            r#""\u00e9\u007f\n\u0001\ud83d\ude00\"\\/""#
        );
    }

    #[test]
    fn floats_and_empty_containers() {
        #[derive(Serialize)]
        struct P {
            timestamp: f64,
            a: Vec<i32>,
        }
        assert_eq!(
            to_seed_json_string(&P {
                timestamp: 1.0,
                a: vec![]
            }),
            r#"{"timestamp": 1.0, "a": []}"#
        );
        assert_eq!(to_seed_json_string(&serde_json::Map::new()), "{}");
    }
}
