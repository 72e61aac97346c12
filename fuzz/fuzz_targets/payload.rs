//! The decrypted-payload reader: every check `unseal`, `verify -i` and
//! `list` make after age decryption (zstd detection, tar, paths, limits,
//! tag files, bag), on arbitrary bytes. Besides crashes and hangs it checks
//! one property: no path handed to the extractor can leave the staging
//! directory.
#![no_main]

use std::io;
use std::path::Path;

use casevault::read::{check_plaintext, Extract};
use libfuzzer_sys::fuzz_target;

/// Bytes one input may make the extractor write; more ends the run early
/// (a decompression bomb is not a finding, only slow).
const BUDGET: u64 = 16 << 20;

/// Discards file contents like `verify`, within [`BUDGET`].
struct Discard {
    written: std::rc::Rc<std::cell::Cell<u64>>,
}

struct Budget {
    written: std::rc::Rc<std::cell::Cell<u64>>,
}

impl io::Write for Budget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.written.get() + buf.len() as u64;
        if n > BUDGET {
            return Err(io::Error::other("fuzz byte budget exhausted"));
        }
        self.written.set(n);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The property: a relative path of normal components only.
fn assert_safe(rel: &str) {
    assert!(
        !rel.is_empty()
            && !rel.starts_with('/')
            && !rel.contains('\0')
            && rel
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "unsafe path reached the extractor: {rel:?}"
    );
}

impl Extract for Discard {
    type File = Budget;

    fn dir(&mut self, rel: &str) -> casevault::Result<()> {
        assert_safe(rel);
        Ok(())
    }

    fn create_file(&mut self, rel: &str) -> casevault::Result<Budget> {
        assert_safe(rel);
        Ok(Budget {
            written: self.written.clone(),
        })
    }

    fn write_error(&self, rel: &str, e: io::Error) -> casevault::Error {
        casevault::Error::Io {
            op: "fuzz write",
            path: rel.into(),
            cause: e,
        }
    }

    fn reserve(&mut self, _rel: &str, size: u64) -> casevault::Result<()> {
        if size > BUDGET {
            return Err(casevault::Error::Refused("over the fuzz budget".into()));
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut x = Discard {
        written: Default::default(),
    };
    if let Ok(p) = check_plaintext(Path::new("fuzz"), data.to_vec(), &mut x) {
        // Whatever passes must be self-consistent.
        assert_eq!(p.json.case_id, p.case_id);
    }
});
