//! [`ObjectReader`]: one S3 object version as `Read + Seek`.
//!
//! Reading streams one GET from the current position to the end; a seek
//! drops that stream and the next read starts a ranged GET at the new
//! position (HTTP `Range: bytes=N-`), so a reader that jumps (format v3's
//! index, `list`, `unseal --path`) fetches only what it reads. The version
//! is pinned when the reader is opened: an object overwritten meanwhile
//! (a new version) is never mixed into what is read.

use std::io::{self, Read, Seek, SeekFrom};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{client, Client, Location};
use crate::{Error, Result};

/// A `Read + Seek` view of one object version.
pub struct ObjectReader {
    client: &'static Client,
    loc: Location,
    version: Option<String>,
    size: u64,
    pos: u64,
    body: Option<ByteStream>,
    pending: Bytes,
    /// Bytes fetched from the server so far (what a test can count).
    fetched: u64,
}

impl ObjectReader {
    /// Open the current version of `loc` (HEAD): a refusal naming it when
    /// there is no such object.
    pub fn open(loc: &Location) -> Result<ObjectReader> {
        ObjectReader::open_version(loc, None)
    }

    /// Open one version of `loc` (the current one when `None`).
    pub fn open_version(loc: &Location, version: Option<&str>) -> Result<ObjectReader> {
        let client = client()?;
        let head = client.head(loc, version)?.ok_or_else(|| Error::Io {
            op: "cannot open",
            path: loc.to_string().into(),
            cause: io::Error::new(io::ErrorKind::NotFound, "no such object"),
        })?;
        Ok(ObjectReader {
            client,
            loc: loc.clone(),
            version: head.version_id.or_else(|| version.map(str::to_string)),
            size: head.size,
            pos: 0,
            body: None,
            pending: Bytes::new(),
            fetched: 0,
        })
    }

    /// The object's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The version being read, where the bucket is versioned.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// How many bytes came from the server so far.
    pub fn fetched(&self) -> u64 {
        self.fetched
    }

    pub fn location(&self) -> &Location {
        &self.loc
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        while self.pending.is_empty() {
            if self.body.is_none() {
                let body = self
                    .client
                    .get_range(&self.loc, self.version.as_deref(), self.pos, None)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                self.body = Some(body);
            }
            let body = self.body.as_mut().expect("a body was just set");
            match self.client.next_chunk(body)? {
                Some(b) => {
                    self.fetched += b.len() as u64;
                    self.pending = b;
                }
                None => {
                    self.body = None;
                    // The server ended the body before the size HEAD gave.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{}: the object ended early", self.loc),
                    ));
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        let _ = self.pending.split_to(n);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if new != self.pos {
            // A short hop forward within what is already buffered keeps
            // the stream; anything else starts a new ranged GET on read.
            let ahead = new.checked_sub(self.pos);
            match ahead {
                Some(d) if (d as usize) < self.pending.len() => {
                    let _ = self.pending.split_to(d as usize);
                }
                _ => {
                    self.body = None;
                    self.pending = Bytes::new();
                }
            }
            self.pos = new;
        }
        Ok(new)
    }
}
