//! The one age layer, both directions: reading a vault's ciphertext
//! (hashed as it is read, drained to its end) through armor detection,
//! header parsing and identity matching, with age's errors classified into
//! casevault's; and the encrypting writer `seal` and `rekey` write through.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::io::{classify_stream_error, SharedHash, SourceReader, TeeHash, BUF_SIZE};
use crate::keys::{BoxedIdentity, BoxedRecipient};
use crate::pipe::PumpReader;
use crate::source::VaultInput;
use crate::{Error, Result};

/// A reader of the decrypted payload. It releases only authenticated
/// chunks; a tampered chunk reads as `io::ErrorKind::InvalidData`, a
/// truncated stream as `UnexpectedEof`, and `Ok(0)` only after the final
/// chunk verified.
pub type PlainReader<R> =
    age::stream::StreamReader<BufReader<age::armor::ArmoredReader<BufReader<R>>>>;

/// Parse the age header of `input` (binary or ASCII-armored) and unwrap the
/// file key with one of `identities`.
pub fn age_reader<R: Read>(
    input: R,
    identities: &[BoxedIdentity],
) -> std::result::Result<PlainReader<R>, age::DecryptError> {
    let ids: Vec<&dyn age::Identity> = identities
        .iter()
        .map(|i| i.as_ref() as &dyn age::Identity)
        .collect();
    age_reader_with(input, &ids)
}

/// [`age_reader`] with identities given as trait objects (e.g. a
/// [`crate::keys::Remembering`]).
pub fn age_reader_with<R: Read>(
    input: R,
    identities: &[&dyn age::Identity],
) -> std::result::Result<PlainReader<R>, age::DecryptError> {
    let armored = age::armor::ArmoredReader::new(input);
    let dec = age::Decryptor::new_buffered(BufReader::new(armored))?;
    dec.decrypt(identities.iter().copied())
}

/// casevault's reading of an age error (STYLE "classify at the boundary"):
/// no identity matched → [`Error::NoMatchingKey`] (exit 4); anything wrong
/// with the file → [`Error::Integrity`] (exit 3); a read error → I/O.
pub fn map_error(vault: &Path, e: age::DecryptError) -> Error {
    use age::DecryptError as D;
    match e {
        D::NoMatchingKeys => Error::NoMatchingKey,
        D::Io(io) => classify_stream_error(vault, "cannot read the age header", io),
        D::UnknownFormat => Error::integrity("not an age v1 file (unknown header version)"),
        D::InvalidMac => Error::integrity("age header MAC does not verify (header tampered)"),
        D::InvalidHeader => Error::integrity("age header does not parse"),
        // An age plugin (hardware key) reported an error, e.g. a wrong PIN
        // or a declined touch: a key problem, not damage to the vault.
        D::Plugin(errors) => Error::Refused(format!(
            "age plugin failed: {}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )),
        D::DecryptionFailed | D::KeyDecryptionFailed => {
            Error::integrity("a recipient stanza for this identity failed to decrypt (tampered)")
        }
        other => Error::integrity(format!("cannot decrypt: {other}")),
    }
}

/// The vault file being read: every byte the decryptor reads is hashed,
/// and [`Ciphertext::finish`] hashes what it did not need.
pub struct Ciphertext {
    drain: VaultInput,
    state: SharedHash,
}

impl Ciphertext {
    /// Open `vault`; the reader hashes what it reads (and marks disk
    /// errors as such, see [`SourceReader`]).
    pub fn open(vault: &Path) -> Result<(SourceReader<TeeHash<VaultInput>>, Ciphertext)> {
        // A local file or an S3 object (src/source.rs, issue #13).
        let (file, drain) = crate::source::open(vault, "cannot open vault")?;
        let state = crate::io::shared_hash();
        let tee = TeeHash {
            inner: file,
            state: Arc::clone(&state),
        };
        Ok((SourceReader(tee), Ciphertext { drain, state }))
    }

    /// Read the vault file to its end (whatever the decryptor did not need:
    /// nothing, for a well-formed vault) and return its SHA-256 (hex) and
    /// length.
    pub fn finish(mut self, vault: &Path) -> Result<(String, u64)> {
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let n = match crate::io::retry(|| self.drain.read(&mut buf)) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(Error::io("cannot read vault", vault, e)),
            };
            crate::io::update_shared(&self.state, &buf[..n]);
        }
        Ok(crate::io::shared_digest(&self.state))
    }
}

/// Records whether the decrypted stream was read to its authenticated end.
pub(super) struct EofReader<R> {
    pub(super) inner: R,
    pub(super) eof: Arc<AtomicBool>,
}

impl<R: Read> EofReader<R> {
    pub(super) fn new(inner: R) -> (Self, Arc<AtomicBool>) {
        let eof = Arc::new(AtomicBool::new(false));
        let r = EofReader {
            inner,
            eof: Arc::clone(&eof),
        };
        (r, eof)
    }
}

impl<R: Read> Read for EofReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Open the vault file and return a reader of its decrypted plaintext, the
/// flag it sets at its authenticated end, and the ciphertext to finish.
/// Reading and hashing the ciphertext runs on its own thread.
pub(super) fn decrypt(
    vault: &Path,
    identities: &[&dyn age::Identity],
) -> Result<(impl Read + Send + 'static, Arc<AtomicBool>, Ciphertext)> {
    let (tee, cipher) = Ciphertext::open(vault)?;
    let pumped = PumpReader::spawn(tee);
    let plain = age_reader_with(BufReader::with_capacity(BUF_SIZE, pumped), identities)
        .map_err(|e| map_error(vault, e))?;
    let (plain, eof) = EofReader::new(plain);
    Ok((plain, eof, cipher))
}

/// Parse `vault`'s age header without any identity (verify without -i):
/// `Some(problem)` if it does not parse; a disk error is an error.
pub fn check_header(vault: &Path) -> Result<Option<String>> {
    let f = crate::source::open_one(vault, "cannot open vault")?;
    let armored = age::armor::ArmoredReader::new(BufReader::new(SourceReader(f)));
    match age::Decryptor::new_buffered(BufReader::new(armored)) {
        Ok(_) => Ok(None),
        Err(age::DecryptError::Io(io)) if crate::io::is_source_error(&io) => {
            Err(Error::io("cannot read vault", vault, io))
        }
        Err(other) => Ok(Some(format!("the age header does not parse: {other}"))),
    }
}

/// The age encryptor for `recipients`; refused if age cannot encrypt to
/// this set (e.g. mixed plugin labels).
pub fn encryptor(recipients: &[BoxedRecipient]) -> Result<age::Encryptor> {
    age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient))
        .map_err(|e| Error::Refused(format!("cannot encrypt to these recipients: {e}")))
}

/// An age stream writer over `out`, binary or ASCII-armored. Its end must
/// be written with [`finish_writer`]: dropped, it leaves a truncated vault.
pub type AgeWriter<W> = age::stream::StreamWriter<age::armor::ArmoredWriter<W>>;

/// Start writing an age file to `out` with `encryptor`.
pub fn encrypt_writer<W: Write>(
    encryptor: age::Encryptor,
    armor: bool,
    out: W,
) -> io::Result<AgeWriter<W>> {
    let fmt = if armor {
        age::armor::Format::AsciiArmor
    } else {
        age::armor::Format::Binary
    };
    let armored = age::armor::ArmoredWriter::wrap_output(out, fmt)?;
    encryptor.wrap_output(armored)
}

/// Write the final chunk (and the armor's end) and return `out`.
pub fn finish_writer<W: Write>(w: AgeWriter<W>) -> io::Result<W> {
    w.finish()?.finish()
}
