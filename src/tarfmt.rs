//! Writing the tar layer (FORMAT §2 item 3, §2.1): ustar headers, pax
//! extended headers where a value does not fit, never GNU extensions.

use std::io::{self, Write};

/// Largest value an 11-digit octal ustar field holds.
const USTAR_MAX: u64 = 0o77777777777;

/// Tar block size.
pub const BLOCK: u64 = 512;

/// Zero bytes needed after `size` bytes of data to reach a block boundary.
pub fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

/// One pax record: `"%d %s=%s\n"`, where the length counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Split a path into ustar `prefix` and `name`, if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // The prefix ends at a '/', which is not stored; name must be non-empty.
    let start = path.len().saturating_sub(101);
    for i in start..path.len().min(156) {
        if path[i] == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i + 1 < path.len() {
            return Some((&path[..i], &path[i + 1..]));
        }
    }
    None
}

/// Write the header(s) of one entry: a pax extended header first if the
/// path, size or mtime does not fit a ustar field. Returns how many bytes
/// that was (512, or more with a pax header), so that the writer can keep
/// its place in the tar stream (FORMAT §13.1: entry offsets).
pub fn write_header<W: Write>(
    out: &mut W,
    path: &str,
    kind: tar::EntryType,
    size: u64,
    mode: u32,
    mtime: i64,
) -> io::Result<u64> {
    let mut written = 512;
    let mut pax = Vec::new();
    let split = ustar_split(path.as_bytes());
    if split.is_none() {
        pax_record(&mut pax, "path", path.as_bytes());
    }
    if size > USTAR_MAX {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    let ustar_mtime = if (0..=USTAR_MAX as i64).contains(&mtime) {
        mtime as u64
    } else {
        pax_record(&mut pax, "mtime", mtime.to_string().as_bytes());
        0
    };
    if !pax.is_empty() {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        let short: String = path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect();
        set_name(&mut h, format!("PaxHeaders/{short}").as_bytes(), &[]);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(ustar_mtime);
        h.set_size(pax.len() as u64);
        h.set_cksum();
        out.write_all(h.as_bytes())?;
        out.write_all(&pax)?;
        out.write_all(&[0u8; 512][..padding(pax.len() as u64)])?;
        written += 512 + pax.len() as u64 + padding(pax.len() as u64) as u64;
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    match split {
        Some((prefix, name)) => set_name(&mut h, name, prefix),
        None => {
            // Readers that honour pax use the `path` record; the ustar name
            // keeps the last 100 bytes at a char boundary for the others.
            let mut cut = path.len().saturating_sub(100);
            while !path.is_char_boundary(cut) {
                cut += 1;
            }
            set_name(&mut h, &path.as_bytes()[cut..], &[]);
        }
    }
    h.set_mode(mode & 0o7777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(ustar_mtime);
    // Sizes beyond the octal range are written base-256 by the tar crate
    // (a GNU/star convention that GNU tar reads); the pax `size` record
    // above is the portable value.
    h.set_size(size);
    h.set_cksum();
    out.write_all(h.as_bytes())?;
    Ok(written)
}

fn set_name(h: &mut tar::Header, name: &[u8], prefix: &[u8]) {
    let u = h.as_ustar_mut().expect("header was made as ustar");
    u.name = [0; 100];
    u.name[..name.len()].copy_from_slice(name);
    u.prefix = [0; 155];
    u.prefix[..prefix.len()].copy_from_slice(prefix);
}

/// Write one complete small entry (a tag file) from memory.
pub fn write_small_file<W: Write>(
    out: &mut W,
    path: &str,
    data: &[u8],
    mtime: i64,
) -> io::Result<()> {
    write_header(
        out,
        path,
        tar::EntryType::Regular,
        data.len() as u64,
        0o644,
        mtime,
    )?;
    out.write_all(data)?;
    out.write_all(&[0u8; 512][..padding(data.len() as u64)])
}

/// The end-of-archive marker: two zero blocks.
pub fn write_end<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(&[0u8; 1024])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in [0, 1, 5, 80, 90, 95, 100, 990, 1000] {
            let mut v = Vec::new();
            pax_record(&mut v, "path", "x".repeat(n).as_bytes());
            let text = String::from_utf8(v.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), v.len(), "n={n}");
        }
    }

    #[test]
    fn ustar_split_rules() {
        assert_eq!(ustar_split(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = format!("{}/{}", "p".repeat(150), "n".repeat(99));
        let (p, n) = ustar_split(long.as_bytes()).unwrap();
        assert_eq!((p.len(), n.len()), (150, 99));
        assert!(ustar_split("x".repeat(101).as_bytes()).is_none());
        assert!(ustar_split(format!("{}/{}", "p".repeat(156), "n").as_bytes()).is_none());
    }

    #[test]
    fn stock_tar_crate_reads_our_headers() {
        let long = format!("case/data/{}/{}", "d".repeat(120), "f".repeat(130));
        let mut out = Vec::new();
        for (p, size, mtime) in [("case/data/a", 3u64, 5i64), (long.as_str(), 2, -7)] {
            write_header(&mut out, p, tar::EntryType::Regular, size, 0o640, mtime).unwrap();
            out.extend(std::iter::repeat_n(b'z', size as usize));
            out.extend(std::iter::repeat_n(0u8, padding(size)));
        }
        write_end(&mut out).unwrap();
        let mut ar = tar::Archive::new(&out[..]);
        let got: Vec<(String, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.size())
            })
            .collect();
        assert_eq!(got, vec![("case/data/a".to_string(), 3), (long, 2)]);
    }
}
