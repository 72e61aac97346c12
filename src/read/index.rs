//! Version 3's random-access structures as a full read finds them (FORMAT
//! §13.2): every entry `offset` where the entry is, the locator exactly
//! where the tag files are, the end of the tar stream exactly the two
//! zero blocks, and the zstd seek table exactly the frames read. A vault
//! that passes is safe for every later partial read.

use crate::format::{self, CaseJson, Kind, Locator, TagPlace};
use crate::frames::SharedLog;
use crate::{Error, Result};

/// What the streaming reader recorded about where things are.
pub(super) struct Layout<'a> {
    /// First header offset of every directory and file, `data` first.
    pub(super) offsets: &'a [u64],
    /// Every tag file: name, header offset, content size, pax header.
    pub(super) tag_places: &'a [(&'static str, u64, u64, bool)],
    pub(super) locator: Option<&'a [u8]>,
    /// Zero bytes after the last entry's data.
    pub(super) trailing: u64,
    pub(super) frames: Option<&'a SharedLog>,
}

impl Layout<'_> {
    /// The checks of FORMAT §13.2 for a version 3 `json`; for versions 1
    /// and 2, only that no locator is there.
    pub(super) fn check(&self, json: &CaseJson) -> Result<()> {
        if json.version < 3 {
            if self.locator.is_some() {
                return Err(Error::integrity(format!(
                    "a version {} vault holds {} (a version 3 tag file)",
                    json.version,
                    format::LOCATOR
                )));
            }
            return Ok(());
        }
        // The entry order a partial read relies on (FORMAT §13.3 step 5),
        // symlink records included.
        let mut order = super::random::Order::default();
        for e in &json.entries {
            order.admit(&e.path, e.kind == Kind::Dir)?;
        }
        self.check_offsets(json)?;
        self.check_tail(json)
    }

    /// The checks of FORMAT §13.2 but the entries' order and offsets (a
    /// lockstep read checks those on the way).
    pub(super) fn check_tail(&self, json: &CaseJson) -> Result<()> {
        if json.version < 3 {
            return Ok(());
        }
        self.check_tags()?;
        if self.trailing != 1024 {
            return Err(Error::integrity(format!(
                "version 3: {} zero bytes end the tar stream, exactly 1024 expected",
                self.trailing
            )));
        }
        if let Some(log) = self.frames {
            let log = log.lock().expect("frame log lock is never poisoned");
            log.check_v3()
                .map_err(|why| Error::integrity(format!("version 3: {why}")))?;
        }
        Ok(())
    }

    /// Each directory and file entry's `offset` against where it is.
    fn check_offsets(&self, json: &CaseJson) -> Result<()> {
        let mut actual = self.offsets.iter();
        for e in json.entries.iter().filter(|e| e.kind != Kind::Symlink) {
            let Some(&at) = actual.next() else {
                return Err(Error::integrity(format!(
                    "{}: {:?} has an offset but the payload has no more entries",
                    format::CASEVAULT_JSON,
                    e.path
                )));
            };
            if e.offset != Some(at) {
                return Err(Error::integrity(format!(
                    "{}: the offset of {:?} is {}, but the entry is at {at} (the index disagrees with the payload)",
                    format::CASEVAULT_JSON,
                    e.path,
                    e.offset.map_or("missing".into(), |o| o.to_string())
                )));
            }
        }
        if actual.next().is_some() {
            return Err(Error::integrity(format!(
                "{}: fewer offsets than payload entries",
                format::CASEVAULT_JSON
            )));
        }
        Ok(())
    }

    /// The locator against the tag files, and the fixed tail.
    fn check_tags(&self) -> Result<()> {
        let Some(text) = self.locator else {
            return Err(Error::integrity(format!(
                "a version 3 vault without {}",
                format::LOCATOR
            )));
        };
        if let Some((name, ..)) = self.tag_places.iter().find(|t| t.3) {
            return Err(Error::integrity(format!(
                "version 3: tag file {name} is written with a pax header"
            )));
        }
        let locator = Locator::parse(text)?;
        let before: Vec<TagPlace> = self
            .tag_places
            .iter()
            .take_while(|t| t.0 != format::LOCATOR)
            .map(|&(name, offset, size, _)| TagPlace { name, offset, size })
            .collect();
        if locator.tags != before {
            return Err(Error::integrity(format!(
                "{} does not give the places of the tag files",
                format::LOCATOR
            )));
        }
        let tail: Vec<&str> = self.tag_places.iter().rev().take(2).map(|t| t.0).collect();
        let tm = self.tag_places.last();
        if tail != [format::TAGMANIFEST, format::LOCATOR]
            || tm.is_none_or(|t| t.2 > format::MAX_TAIL_TAG)
        {
            return Err(Error::integrity(format!(
                "version 3: the tar stream must end with {} and {} of at most {} bytes each",
                format::LOCATOR,
                format::TAGMANIFEST,
                format::MAX_TAIL_TAG
            )));
        }
        Ok(())
    }
}
