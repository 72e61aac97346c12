//! `manifest-sha256.txt` and `tagmanifest-sha256.txt`: writing, strict
//! parsing, and RFC 8493 §2.1.3 path encoding (FORMAT §5.3).

use std::collections::HashSet;

use crate::{Error, Result};

/// Encode a path for a manifest line: `%` → `%25`, CR → `%0D`, LF → `%0A`.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// Decode a manifest path; any `%` sequence other than `%25`, `%0D`, `%0A`
/// (hex digits in either case) is refused.
pub fn decode_path(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let seq = rest.get(i + 1..i + 3)?;
        out.push(match seq.to_ascii_uppercase().as_str() {
            "25" => '%',
            "0D" => '\r',
            "0A" => '\n',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// One manifest line: `HEX  encoded-path\n`.
pub fn line(sha256_hex: &str, path: &str) -> String {
    format!("{sha256_hex}  {}\n", encode_path(path))
}

fn is_lower_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parse a manifest strictly; `name` is used in error messages. Returns
/// `(path, sha256 hex)` pairs in file order.
pub fn parse(name: &str, text: &str) -> Result<Vec<(String, String)>> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(Error::integrity(format!(
            "{name} does not end with a line feed"
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in text.split_terminator('\n').enumerate() {
        let (path, hash) = parse_line(name, i + 1, l)?;
        if !seen.insert(path.clone()) {
            return Err(Error::integrity(format!(
                "{name} line {}: duplicate path",
                i + 1
            )));
        }
        out.push((path, hash.to_string()));
    }
    Ok(out)
}

/// Longest manifest line a reader accepts, without its line feed: a
/// checksum, two spaces and a 4096-byte path with every byte
/// percent-encoded (FORMAT §6.1).
pub const MAX_LINE: usize = 64 + 2 + 3 * crate::format::MAX_PATH_BYTES;

/// Parse one manifest line `l` (line number `n`, no line feed) strictly:
/// returns the decoded path and the checksum. Duplicates are the caller's
/// to find.
pub fn parse_line<'l>(name: &str, n: usize, l: &'l str) -> Result<(String, &'l str)> {
    let bad = |why: &str| Error::integrity(format!("{name} line {n}: {why}"));
    let (hash, rest) = l.split_at_checked(64).ok_or_else(|| bad("too short"))?;
    if !is_lower_hex64(hash) {
        return Err(bad("checksum is not 64 lower-case hex digits"));
    }
    let encoded = rest
        .strip_prefix("  ")
        .ok_or_else(|| bad("checksum and path must be separated by two spaces"))?;
    if encoded.is_empty() {
        return Err(bad("empty path"));
    }
    let path = decode_path(encoded).ok_or_else(|| bad("bad percent-encoding in path"))?;
    Ok((path, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        for p in [
            "data/a b.txt",
            "data/100%",
            "data/x\ny\rz",
            "data/%0A literal",
            "data/ü名",
        ] {
            assert_eq!(decode_path(&encode_path(p)).as_deref(), Some(p));
        }
        assert_eq!(encode_path("data/100%\n"), "data/100%25%0A");
        assert_eq!(decode_path("a%0a%0d%25").as_deref(), Some("a\n\r%"));
        assert_eq!(decode_path("a%41"), None);
        assert_eq!(decode_path("a%2"), None);
        assert_eq!(decode_path("a%"), None);
    }

    #[test]
    fn parse_is_strict() {
        let h = "a".repeat(64);
        assert_eq!(
            parse("m", &line(&h, "data/x")).unwrap(),
            vec![("data/x".to_string(), h.clone())]
        );
        assert!(parse("m", &format!("{h} data/x\n")).is_err(), "one space");
        assert!(
            parse("m", &format!("{}  data/x\n", "A".repeat(64))).is_err(),
            "upper case"
        );
        assert!(
            parse("m", &format!("{}  data/x\n", "a".repeat(63))).is_err(),
            "short hash"
        );
        assert!(parse("m", &format!("{h}  data/x")).is_err(), "no final LF");
        assert!(
            parse("m", &format!("{h}  data/x\n{h}  data/x\n")).is_err(),
            "duplicate"
        );
        assert!(parse("m", &format!("{h}  \n")).is_err(), "empty path");
        assert!(parse("m", "\n").is_err(), "empty line");
        assert!(
            parse("m", &format!("{h}  data/%zz\n")).is_err(),
            "bad escape"
        );
        assert_eq!(parse("m", "").unwrap(), vec![]);
    }
}
