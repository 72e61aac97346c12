//! Raw tar members: parse a tar stream into entries that keep their
//! header bytes, edit them without validation, and serialize them again.

/// One tar member as raw bytes: an optional pax extended header (type `x`)
/// and the entry it applies to.
#[derive(Clone)]
pub struct RawEntry {
    pub pax: Option<(tar::Header, Vec<u8>)>,
    pub header: tar::Header,
    pub data: Vec<u8>,
}

fn pax_value<'a>(data: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let rec = &rest[sp + 1..len];
        let eq = rec.iter().position(|&b| b == b'=')?;
        if &rec[..eq] == key.as_bytes() {
            return Some(&rec[eq + 1..rec.len() - 1]);
        }
        rest = &rest[len..];
    }
    None
}

impl RawEntry {
    /// The entry's path (pax `path` if present, else ustar prefix/name).
    pub fn path(&self) -> String {
        if let Some((_, d)) = &self.pax {
            if let Some(p) = pax_value(d, "path") {
                return String::from_utf8_lossy(p).into_owned();
            }
        }
        String::from_utf8_lossy(&self.header.path_bytes()).into_owned()
    }

    pub fn typeflag(&self) -> u8 {
        self.header.as_bytes()[156]
    }

    /// Replace the data and fix the size field and checksum.
    pub fn set_data(&mut self, data: Vec<u8>) {
        self.header.set_size(data.len() as u64);
        self.header.set_cksum();
        self.data = data;
    }

    /// Write `name` verbatim into the ustar name field (no validation, so
    /// `..` and absolute paths are possible), clear the prefix, drop any pax
    /// header, fix the checksum.
    pub fn set_raw_name(&mut self, name: &[u8]) {
        assert!(name.len() <= 100, "raw name too long");
        let b = self.header.as_mut_bytes();
        b[..100].fill(0);
        b[..name.len()].copy_from_slice(name);
        b[345..500].fill(0);
        self.pax = None;
        self.header.set_cksum();
    }

    /// A new ustar entry with a raw (unvalidated) name.
    pub fn new_raw(name: &[u8], typeflag: u8, data: Vec<u8>, link: &[u8]) -> RawEntry {
        let mut h = tar::Header::new_ustar();
        h.set_mode(if typeflag == b'5' { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.as_mut_bytes()[156] = typeflag;
        h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
        let mut e = RawEntry {
            pax: None,
            header: h,
            data,
        };
        e.set_raw_name(name);
        e
    }
}

/// One pax extended-header record `LEN key=value\n`, LEN counting itself.
pub fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut digits = 1;
    while (body.len() + digits).to_string().len() != digits {
        digits += 1;
    }
    format!("{}{body}", body.len() + digits)
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    let rem = v.len() % 512;
    if rem != 0 {
        v.resize(v.len() + 512 - rem, 0);
    }
    v
}

/// Parse a tar stream into raw entries plus everything after the first zero
/// block (end-of-archive marker and padding).
pub fn parse_tar(tar: &[u8]) -> (Vec<RawEntry>, Vec<u8>) {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut pax: Option<(tar::Header, Vec<u8>)> = None;
    while pos + 512 <= tar.len() {
        let block = &tar[pos..pos + 512];
        if block.iter().all(|&b| b == 0) {
            return (out, tar[pos..].to_vec());
        }
        let h = tar::Header::from_byte_slice(block).clone();
        let size = h.entry_size().unwrap() as usize;
        let data = tar[pos + 512..pos + 512 + size].to_vec();
        pos += 512 + size.div_ceil(512) * 512;
        if h.as_bytes()[156] == b'x' {
            pax = Some((h, data));
        } else {
            out.push(RawEntry {
                pax: pax.take(),
                header: h,
                data,
            });
        }
    }
    panic!("tar stream has no end-of-archive block");
}

/// Serialize entries, then the two zero blocks, padded to a 10240 record.
/// Bytes entry `e` takes in the tar stream.
fn entry_len(e: &RawEntry) -> u64 {
    let pax = e
        .pax
        .as_ref()
        .map_or(0, |(_, d)| 512 + padded(d).len() as u64);
    pax + 512 + padded(&e.data).len() as u64
}

/// Format version 3 (FORMAT §13.1): when the entries hold a locator, put
/// back what an edit moved — every `offset` in casevault.json (only if
/// one changed, so that an unchanged, signed casevault.json stays as it
/// was), the locator, and the locator's line in the tag manifest — so that
/// a test's edit is checked by the rule it aims at, not refused for its
/// side effects. Returns whether the bag is version 3.
pub fn v3_fixup(entries: &mut [RawEntry]) -> bool {
    let Some(loc) = entries
        .iter()
        .position(|e| e.header.path_bytes().ends_with(b"/casevault-locator.txt"))
    else {
        return false;
    };
    let case = entries[0].path().trim_end_matches('/').to_string();
    let json_i = entries
        .iter()
        .position(|e| e.path() == format!("{case}/casevault.json"));
    for _ in 0..4 {
        let mut at = std::collections::HashMap::new();
        let mut pos = 0u64;
        for e in entries.iter() {
            at.insert(e.path(), pos);
            pos += entry_len(e);
        }
        let Some(j) = json_i else { break };
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&entries[j].data) else {
            break;
        };
        let mut changed = false;
        if let Some(list) = v["entries"].as_array_mut() {
            for item in list {
                if item.get("offset").is_none() {
                    continue;
                }
                let p = item["path"].as_str().unwrap_or("").to_string();
                let key = if item["kind"] == "dir" {
                    format!("{case}/{p}/")
                } else {
                    format!("{case}/{p}")
                };
                if let Some(&o) = at.get(&key) {
                    if item["offset"] != o {
                        item["offset"] = o.into();
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
        let mut text = serde_json::to_string(&v).unwrap();
        text.push('\n');
        entries[j].set_data(text.into_bytes());
    }
    let mut locator = String::from("casevault-locator 1\n");
    let mut pos = 0u64;
    for e in entries[..loc].iter() {
        let p = e.path();
        let name = p.rsplit('/').next().unwrap_or("");
        if !p.contains("/data/") && !p.ends_with('/') && e.typeflag() == b'0' {
            locator.push_str(&format!("{name} {pos} {}\n", e.data.len()));
        }
        pos += entry_len(e);
    }
    let hash = crate::util::tree::sha256_hex(locator.as_bytes());
    entries[loc].set_data(locator.into_bytes());
    if let Some(tm) = entries
        .iter_mut()
        .find(|e| e.path().ends_with("/tagmanifest-sha256.txt"))
    {
        let text = String::from_utf8_lossy(&tm.data).into_owned();
        let fixed: String = text
            .split_inclusive('\n')
            .map(|l| {
                if l.trim_end().ends_with("  casevault-locator.txt") {
                    format!("{hash}  casevault-locator.txt\n")
                } else {
                    l.to_string()
                }
            })
            .collect();
        tm.set_data(fixed.into_bytes());
    }
    true
}

pub fn build_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut fixed = entries.to_vec();
    let v3 = v3_fixup(&mut fixed);
    build_tar_as_is(&fixed, v3)
}

/// The tar stream of `entries` exactly as they are (no version 3 fixup):
/// for vaults whose offsets or locator lie on purpose. `v3`: end with
/// exactly the two zero blocks.
pub fn build_tar_as_is(entries: &[RawEntry], v3: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if let Some((h, d)) = &e.pax {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&padded(d));
        }
        out.extend_from_slice(e.header.as_bytes());
        out.extend_from_slice(&padded(&e.data));
    }
    out.extend_from_slice(&[0u8; 1024]);
    let rem = out.len() % 10240;
    // Version 3 ends with exactly the two zero blocks.
    if rem != 0 && !v3 {
        out.resize(out.len() + 10240 - rem, 0);
    }
    out
}

#[test]
fn self_check_tar_parse_build_round_trip() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("X/a.txt").unwrap();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"abc"[..]).unwrap();
    // ustar prefix + name
    let split = format!("X/{}/f.txt", "p".repeat(120));
    let mut h = tar::Header::new_ustar();
    h.set_path(&split).unwrap();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"y"[..]).unwrap();
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024.min(bytes.len()));
    // A pax `x` header carrying the path of the next entry.
    let long = format!("X/{}", "n".repeat(150));
    let rec = pax_record("path", &long);
    let mut px = RawEntry::new_raw(b"X/PaxHeader", b'x', rec.into_bytes(), b"");
    px.header.set_cksum();
    let mut e = RawEntry::new_raw(b"X/short", b'0', b"z".to_vec(), b"");
    e.pax = Some((px.header.clone(), px.data.clone()));
    let extra = build_tar(&[e]);
    // parse_tar must see the pax path.
    bytes.extend_from_slice(&extra);
    let (entries, trailing) = parse_tar(&bytes);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].path(), "X/a.txt");
    assert_eq!(entries[0].data, b"abc");
    assert_eq!(entries[1].path(), split);
    assert_eq!(entries[2].path(), long);
    assert_eq!(entries[2].data, b"z");
    assert!(trailing.iter().all(|&b| b == 0));
    let rebuilt = build_tar(&entries);
    let names: Vec<String> = tar::Archive::new(&rebuilt[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["X/a.txt".to_string(), split, long]);
}
