//! `unseal --path`: which entries the named paths select, and reading just
//! those from a version 3 vault (FORMAT §13.3 step 6).

use std::cell::RefCell;
use std::io::Write;

use sha2::{Digest, Sha256};

use super::random::{check_meta, RandomVault, Tail};
use super::Extract;
use crate::format::{self, CaseJson, Entry, Kind};
use crate::io::hex;
use crate::{Error, Result};

/// The paths asked for (case-relative, as `list` prints them) and what
/// they select.
pub struct Selection {
    wanted: Vec<String>,
    found: Vec<bool>,
}

impl Selection {
    /// `paths` as given; refuses an empty or unsafe one (usage error).
    pub fn new(paths: &[String]) -> Result<Selection> {
        let mut wanted = Vec::new();
        for p in paths {
            let p = p.trim_end_matches('/');
            if p.is_empty() || super::tar::check_components(p).is_err() {
                return Err(Error::Usage(format!(
                    "--path {p:?} is not a path inside the case as `casevault list` prints it"
                )));
            }
            wanted.push(p.to_string());
        }
        let found = vec![false; wanted.len()];
        Ok(Selection { wanted, found })
    }

    /// Whether the bag entry `bag_path` is restored: named, inside a named
    /// directory, or a directory above one (`data` always).
    pub fn admit(&mut self, bag_path: &str) -> bool {
        let Some(rel) = bag_path.strip_prefix("data/") else {
            return bag_path == "data";
        };
        let mut keep = false;
        for (w, found) in self.wanted.iter().zip(self.found.iter_mut()) {
            if rel == w {
                *found = true;
                keep = true;
            } else if rel.starts_with(w.as_str()) && rel.as_bytes()[w.len()] == b'/'
                || w.starts_with(rel) && w.as_bytes()[rel.len()] == b'/'
            {
                keep = true;
            }
        }
        keep
    }

    /// A path that selected nothing: an error (exit 1) naming it.
    pub fn check_found(&self) -> Result<()> {
        match self.wanted.iter().zip(&self.found).find(|(_, f)| !**f) {
            Some((w, _)) => Err(Error::Refused(format!(
                "{w:?} is not in the vault (give paths as `casevault list` prints them); nothing was written"
            ))),
            None => Ok(()),
        }
    }

    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }
}

/// The first pass of a partial unseal: every check of FORMAT §13.3 step 5,
/// the selected entries (with every symlink record, for checking where
/// the selected links lead), and the inner signature's key.
pub fn select(
    rv: &RefCell<RandomVault>,
    tail: &Tail,
    sel: &mut Selection,
) -> Result<(CaseJson, Vec<Entry>)> {
    let mut picked = Vec::new();
    let (mut json, _sig) = check_meta(rv, tail, &mut |e| {
        if sel.admit(&e.path) || e.kind == Kind::Symlink {
            picked.push(e.clone());
        }
        Ok(())
    })?;
    sel.check_found()?;
    json.entries = Vec::new();
    Ok((json, picked))
}

/// Extract the selected directories and files into `x`, reading each from
/// its offset and checking its header, size and SHA-256 (FORMAT §13.3
/// step 6). `picked` also holds unselected links, which are skipped.
pub fn extract<X: Extract>(
    rv: &RefCell<RandomVault>,
    case_id: &str,
    picked: &[Entry],
    sel: &mut Selection,
    x: &mut X,
) -> Result<()> {
    let mut buf = vec![0u8; crate::io::BUF_SIZE];
    for e in picked {
        crate::signal::check()?;
        if e.kind == Kind::Symlink || e.path == "data" || !sel.admit(&e.path) {
            continue;
        }
        let offset = e.offset.unwrap_or(0);
        let (data_at, size) = header_at(&mut rv.borrow_mut(), offset, case_id, e)?;
        let rel = &e.path["data/".len()..];
        x.reserve(rel, size)?;
        if e.kind == Kind::Dir {
            x.dir(rel)?;
            continue;
        }
        let mut out = x.create_file(rel)?;
        let mut h = Sha256::new();
        let (mut pos, mut left) = (data_at, size);
        while left > 0 {
            crate::signal::check()?;
            let k = (buf.len() as u64).min(left) as usize;
            rv.borrow_mut().read_at(pos, &mut buf[..k])?;
            h.update(&buf[..k]);
            out.write_all(&buf[..k])
                .map_err(|err| x.write_error(rel, err))?;
            pos += k as u64;
            left -= k as u64;
        }
        out.flush().map_err(|err| x.write_error(rel, err))?;
        let digest = hex(&h.finalize());
        if Some(digest.as_str()) != e.sha256.as_deref() {
            return Err(Error::integrity(format!(
                "{:?}: its bytes hash to {digest}, casevault.json records {}",
                e.path,
                e.sha256.as_deref().unwrap_or("-")
            )));
        }
        crate::progress::add_file();
    }
    Ok(())
}

/// The header(s) at `offset` must describe exactly entry `e` of case
/// `case_id`; returns where its data starts and its size.
pub(crate) fn header_at(
    rv: &mut RandomVault,
    offset: u64,
    case_id: &str,
    e: &Entry,
) -> Result<(u64, u64)> {
    let bad = || {
        Error::integrity(format!(
            "{}: the offset of {:?} ({offset}) does not lead to its header (the index disagrees with the payload)",
            format::CASEVAULT_JSON,
            e.path
        ))
    };
    let mut block = [0u8; 512];
    rv.read_at(offset, &mut block)?;
    let mut at = offset + 512;
    let mut pax = (None, None);
    if block[156] == b'x' {
        let h = tar::Header::from_byte_slice(&block);
        let len = h.entry_size().map_err(|_| bad())?;
        if len > format::MAX_PAX {
            return Err(bad());
        }
        let mut data = vec![0u8; len as usize];
        rv.read_at(at, &mut data)?;
        pax = super::tar::parse_pax(&data)?;
        at += len.div_ceil(512) * 512;
        rv.read_at(at, &mut block)?;
        at += 512;
    }
    let header = tar::Header::from_byte_slice(&block);
    if header.as_ustar().is_none() || !super::random::checksum_ok(&block) {
        return Err(bad());
    }
    let size = match pax.1 {
        Some(s) => s,
        None => header.entry_size().map_err(|_| bad())?,
    };
    let path = super::tar::entry_path(header, size, pax).map_err(|_| bad())?;
    let want_type = if e.kind == Kind::Dir { b'5' } else { b'0' };
    let want_size = e.size.unwrap_or(0);
    if path != format!("{case_id}/{}", e.path) || block[156] != want_type || size != want_size {
        return Err(bad());
    }
    Ok((at, size))
}
