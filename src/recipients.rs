//! Recipients from the command line (`-r RECIPIENT`, `-R FILE`): the one
//! loader seal, rekey and sweep share. Every file is read once; every line
//! is checked with the same rules and messages; the set is refused up
//! front when age would refuse it (post-quantum beside classic).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use crate::keys::{self, BoxedRecipient};
use crate::sanitize::sanitize;
use crate::{Error, Result};

/// A checked list of recipients, kept as their text so that each vault can
/// get fresh recipient objects (sweep seals many) while every vault of a run
/// goes to the same list, even if a recipients file changes meanwhile.
#[derive(Debug, Clone)]
pub struct Recipients {
    lines: Vec<String>,
}

impl Recipients {
    /// Read `-r` recipients, then each `-R` file (one recipient per line,
    /// blank lines and `#` comments ignored), parse every one and check the
    /// set with [`keys::check_recipients`].
    pub fn load(recipient: &[String], files: &[PathBuf]) -> Result<Recipients> {
        let mut lines = Vec::new();
        let mut parsed = Vec::new();
        for r in recipient {
            parsed.push(parse(r)?);
            lines.push(r.clone());
        }
        for path in files {
            let before = lines.len();
            let f = fs::File::open(path)
                .map_err(|e| Error::io("cannot open recipients file", path, e))?;
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| Error::io("cannot read recipients file", path, e))?;
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                parsed.push(keys::parse_recipient(t).map_err(|e| {
                    Error::Refused(format!("{} line {}: {e}", path.display(), i + 1))
                })?);
                lines.push(t.to_string());
            }
            if lines.len() == before {
                return Err(Error::Refused(format!(
                    "recipients file {} holds no recipient",
                    path.display()
                )));
            }
        }
        keys::check_recipients(&parsed)?;
        Ok(Recipients { lines })
    }

    /// Fresh recipient objects for one vault.
    pub fn parse(&self) -> Result<Vec<BoxedRecipient>> {
        self.lines.iter().map(|l| parse(l)).collect()
    }
}

fn parse(r: &str) -> Result<BoxedRecipient> {
    keys::parse_recipient(r)
        .map_err(|e| Error::Refused(format!("recipient {:?}: {e}", sanitize(r))))
}
