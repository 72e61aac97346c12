//! The tar layer of reading (FORMAT §2 item 3, §6.1): strict pax parsing,
//! path component checks, and turning one raw tar entry into a checked
//! path. Writing the tar layer is `tarfmt.rs`.

use std::io::Read;

use crate::format::{self, MAX_PAX};
use crate::{Error, Result};

/// Parse pax records strictly: `LEN key=value\n`, only `path`, `size`,
/// `mtime`, each at most once (FORMAT §6.1). Returns `path` and `size`.
pub fn parse_pax(data: &[u8]) -> Result<(Option<String>, Option<u64>)> {
    let bad = || Error::integrity("malformed pax extended header");
    let (mut path, mut size) = (None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ').ok_or_else(bad)?;
        let len_txt = std::str::from_utf8(&rest[..sp]).map_err(|_| bad())?;
        if len_txt.is_empty() || !len_txt.bytes().all(|c| c.is_ascii_digit()) || len_txt.len() > 6 {
            return Err(bad());
        }
        let len: usize = len_txt.parse().map_err(|_| bad())?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec.iter().position(|&c| c == b'=').ok_or_else(bad)?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        match key {
            b"path" => {
                let p = std::str::from_utf8(value)
                    .map_err(|_| Error::integrity("pax path is not UTF-8"))?;
                if path.replace(p.to_string()).is_some() {
                    return Err(bad());
                }
            }
            b"size" => {
                let v = std::str::from_utf8(value).ok().filter(|v| {
                    !v.is_empty() && v.len() <= 20 && v.bytes().all(|c| c.is_ascii_digit())
                });
                let v = v.and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad)?;
                if size.replace(v).is_some() {
                    return Err(bad());
                }
            }
            b"mtime" => {
                let ok = std::str::from_utf8(value)
                    .ok()
                    .is_some_and(|v| v.len() <= 32 && v.parse::<f64>().is_ok());
                if !ok {
                    return Err(bad());
                }
            }
            _ => {
                return Err(Error::integrity(format!(
                    "unsupported pax key {:?}",
                    String::from_utf8_lossy(key)
                )))
            }
        }
        rest = &rest[len..];
    }
    Ok((path, size))
}

/// Check a path from the archive: relative, `/`-separated, no empty, `.`
/// or `..` components.
pub(crate) fn check_components(path: &str) -> Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::integrity(format!(
            "unsafe path in archive: {path:?}"
        )));
    }
    Ok(())
}

/// What a pax extended header says about the entry after it: its `path`
/// and `size`.
pub(crate) type Pax = (Option<String>, Option<u64>);

/// Read the pax extended header `entry` (of `size` bytes) and parse it;
/// `pending` says one is already waiting for its entry.
pub(crate) fn read_pax<R: Read>(
    entry: &mut R,
    size: u64,
    pending: bool,
    read_err: impl Fn(std::io::Error) -> Error,
) -> Result<Pax> {
    if pending || size > MAX_PAX {
        return Err(Error::integrity("bad or oversized pax extended header"));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut data).map_err(read_err)?;
    if data.len() as u64 != size {
        return Err(Error::integrity("tar stream ends inside a pax header"));
    }
    parse_pax(&data)
}

/// The checked path of a directory or regular file entry (a directory's
/// without its trailing `/`), from its header and the pax header before
/// it. Anything else is refused.
pub(crate) fn entry_path(header: &tar::Header, size: u64, pax: Pax) -> Result<String> {
    let etype = header.entry_type();
    let (pax_path, pax_size) = pax;
    if !(etype.is_dir() || etype.is_file()) || header.as_ustar().is_none() {
        let p = String::from_utf8_lossy(&header.path_bytes()).into_owned();
        return Err(Error::integrity(format!(
            "unsupported tar entry {p:?} (type {:?}); a vault holds only directories and regular files",
            etype
        )));
    }
    if pax_size.is_some_and(|s| s != size) {
        return Err(Error::integrity("pax size disagrees with the tar header"));
    }
    let raw_path = match pax_path {
        Some(p) => p,
        None => String::from_utf8(header.path_bytes().into_owned())
            .map_err(|_| Error::integrity("tar entry path is not UTF-8"))?,
    };
    if raw_path.len() > format::MAX_PATH_BYTES || raw_path.contains('\0') {
        return Err(Error::integrity("tar entry path too long or contains NUL"));
    }
    let path = if etype.is_dir() {
        if size != 0 {
            return Err(Error::integrity(format!(
                "directory entry {raw_path:?} has a size"
            )));
        }
        raw_path.strip_suffix('/').unwrap_or(&raw_path).to_string()
    } else {
        if raw_path.ends_with('/') {
            return Err(Error::integrity(format!(
                "file entry {raw_path:?} ends with '/'"
            )));
        }
        raw_path
    };
    check_components(&path)?;
    Ok(path)
}

/// Where the data of an entry of `size` bytes at `pos` ends, padding
/// included.
pub(super) fn data_end(pos: u64, size: u64) -> u64 {
    pos + size + crate::tarfmt::padding(size) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_parsing() {
        assert_eq!(
            parse_pax(b"12 path=a/b\n").unwrap(),
            (Some("a/b".into()), None)
        );
        assert_eq!(parse_pax(b"12 size=123\n").unwrap(), (None, Some(123)));
        assert!(parse_pax(b"12 size=-12\n").is_err());
        assert!(parse_pax(b"99 path=a/b\n").is_err());
        assert!(parse_pax(b"13 uname=root\n").is_err());
        assert!(parse_pax(b"12 path=a/b\n12 path=a/b\n").is_err());
    }

    #[test]
    fn components() {
        for bad in ["", "/a", "a//b", "a/./b", "a/../b", "..", "a/"] {
            assert!(check_components(bad).is_err(), "{bad:?}");
        }
        assert!(check_components("c/data/a b/ü").is_ok());
    }
}
