//! The recipients of a vault as its age header lists them, read without
//! any identity: the stanza types and their count (issue #14). The header
//! is hostile input; this parser only counts, keeps no stanza bodies, and
//! stops at fixed limits. Whether the header is *valid* (its MAC) can only
//! be checked with an identity; verify's header check still runs.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Serialize;

use crate::io::SourceReader;
use crate::{Error, Result};

/// Longest header line read (a plugin stanza's arguments stay far below).
const MAX_LINE: u64 = 64 * 1024;
/// Most header bytes read before giving up.
const MAX_HEADER: u64 = 16 << 20;
/// Distinct stanza types kept by name; more are counted as `(other)`.
const MAX_TYPES: usize = 64;

/// What the age header says about the recipients.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Recipients {
    /// Whether the vault is ASCII-armored.
    pub armored: bool,
    /// Number of recipient stanzas (one per recipient; a passphrase vault
    /// has one `scrypt` stanza), grease stanzas not counted.
    pub count: u64,
    /// Grease stanzas: random stanzas (type `…-grease`) that age adds so
    /// that parsers stay tolerant; no recipient can open them.
    pub grease: u64,
    /// Stanzas per type (`X25519`, `mlkem768x25519`, `ssh-ed25519`,
    /// `ssh-rsa`, `scrypt`, or a plugin's own), sorted by type.
    pub types: BTreeMap<String, u64>,
    /// Why the header could not be read to its end, if it could not.
    pub problem: Option<String>,
}

/// Read the age header of `vault` (binary or armored). A disk error is an
/// error; a malformed header is reported in `problem`.
pub fn recipients(vault: &Path) -> Result<Recipients> {
    let f = fs::File::open(vault).map_err(|e| Error::io("cannot open vault", vault, e))?;
    let mut head = [0u8; 5];
    let n = SourceReader(&f)
        .read(&mut head)
        .map_err(|e| Error::io("cannot read vault", vault, e))?;
    let armored = head[..n] == *b"-----";
    let f = fs::File::open(vault).map_err(|e| Error::io("cannot open vault", vault, e))?;
    let armor = age::armor::ArmoredReader::new(BufReader::new(SourceReader(f)));
    let mut r = BufReader::new(armor).take(MAX_HEADER);
    let mut out = Recipients {
        armored,
        ..Recipients::default()
    };
    match parse(&mut r, &mut out) {
        Ok(()) => Ok(out),
        Err(Parse::Io(e)) if crate::io::is_source_error(&e) => {
            Err(Error::io("cannot read vault", vault, e))
        }
        Err(Parse::Io(e)) => {
            out.problem = Some(format!("the age header cannot be read: {e}"));
            Ok(out)
        }
        Err(Parse::Bad(why)) => {
            out.problem = Some(format!("the age header does not parse: {why}"));
            Ok(out)
        }
    }
}

enum Parse {
    Io(std::io::Error),
    Bad(&'static str),
}

/// One line without its LF; `None` at the end of the input.
fn line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::result::Result<Option<()>, Parse> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE + 1)
        .read_until(b'\n', buf)
        .map_err(Parse::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.pop() != Some(b'\n') {
        return Err(Parse::Bad("a header line is too long or the file ends"));
    }
    Ok(Some(()))
}

/// The age v1 header grammar, counting only: a version line, stanzas
/// (`-> TYPE ARGS…`, then base64 body lines, the last one shorter than 64
/// columns), and the `---` MAC line.
fn parse<R: BufRead>(r: &mut R, out: &mut Recipients) -> std::result::Result<(), Parse> {
    let mut buf = Vec::new();
    if line(r, &mut buf)?.is_none() || buf != b"age-encryption.org/v1" {
        return Err(Parse::Bad("not an age v1 file"));
    }
    loop {
        if line(r, &mut buf)?.is_none() {
            return Err(Parse::Bad("the header ends before its MAC line"));
        }
        if buf.starts_with(b"---") {
            return if out.count == 0 {
                Err(Parse::Bad("no recipient stanza"))
            } else {
                Ok(())
            };
        }
        let Some(args) = buf.strip_prefix(b"-> ") else {
            return Err(Parse::Bad("a line that is neither a stanza nor the MAC"));
        };
        let kind = args.split(|&b| b == b' ').next().unwrap_or_default();
        if kind.is_empty() {
            return Err(Parse::Bad("a stanza without a type"));
        }
        let kind = String::from_utf8_lossy(kind).into_owned();
        if kind.ends_with("-grease") {
            out.grease += 1;
            skip_body(r, &mut buf)?;
            continue;
        }
        out.count += 1;
        let key = if out.types.contains_key(&kind) || out.types.len() < MAX_TYPES {
            kind
        } else {
            "(other)".to_string()
        };
        *out.types.entry(key).or_default() += 1;
        skip_body(r, &mut buf)?;
    }
}

/// A stanza's body: full 64-column lines, then one shorter (maybe empty).
fn skip_body<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::result::Result<(), Parse> {
    loop {
        if line(r, buf)?.is_none() {
            return Err(Parse::Bad("the header ends inside a stanza"));
        }
        if buf.len() < 64 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Recipients {
        let mut out = Recipients::default();
        match parse(&mut text.as_bytes(), &mut out) {
            Ok(()) => {}
            Err(Parse::Bad(why)) => out.problem = Some(why.into()),
            Err(Parse::Io(e)) => out.problem = Some(e.to_string()),
        }
        out
    }

    #[test]
    fn counts_stanzas_by_type() {
        let full = "A".repeat(64);
        let h = format!(
            "age-encryption.org/v1\n-> X25519 abc\nshort\n-> X25519 def\n{full}\n\n-> ssh-ed25519 xy z\nq\n-> a-grease x\n\n--- mac\nPAYLOAD"
        );
        let r = parsed(&h);
        assert_eq!(r.problem, None);
        assert_eq!(r.count, 3);
        assert_eq!(r.grease, 1);
        assert_eq!(r.types.get("X25519"), Some(&2));
        assert_eq!(r.types.get("ssh-ed25519"), Some(&1));
    }

    #[test]
    fn refuses_what_is_not_a_header() {
        assert!(parsed("hello\n").problem.is_some());
        assert!(parsed("age-encryption.org/v1\n-> X25519 a\n")
            .problem
            .is_some());
        assert!(parsed("age-encryption.org/v1\n--- mac\n").problem.is_some());
        assert!(parsed("age-encryption.org/v1\njunk\n").problem.is_some());
        let long = format!("age-encryption.org/v1\n-> {}\n", "x".repeat(70_000));
        assert!(parsed(&long).problem.is_some());
    }
}
