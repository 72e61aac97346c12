//! The age layer of reading a vault: armor detection, header parsing,
//! identity matching, and the classification of age's errors into
//! casevault's. `rekey` and the C2SP CCTV conformance test
//! (`tests/it/cctv.rs`) use it; it is the same layering `open.rs` builds
//! for unseal, verify and list (`ArmoredReader` → `Decryptor::new_buffered`
//! → `decrypt`).

use std::io::{BufReader, Read};
use std::path::Path;

use crate::io::classify_stream_error;
use crate::keys::BoxedIdentity;
use crate::Error;

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
) -> Result<PlainReader<R>, age::DecryptError> {
    let armored = age::armor::ArmoredReader::new(input);
    let dec = age::Decryptor::new_buffered(BufReader::new(armored))?;
    dec.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
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
