//! Corruption sweeps on the age layer: flipped bytes in the header MAC, the
//! nonce and payload chunks, and truncations (FORMAT.md §6 step 1). Every
//! case: unseal exit 3 with nothing at DEST, verify -i exit 3, verify without
//! -i reports the sidecar mismatch with exit 3.

use std::fs;
use std::path::PathBuf;

use crate::util::*;

struct Layout {
    /// Bytes of the age header, up to and including the `--- MAC` line's LF.
    header_len: usize,
    /// Start of the MAC's base64 text.
    mac_start: usize,
    /// Number of payload chunks.
    chunks: usize,
    len: usize,
}

fn layout(bytes: &[u8]) -> Layout {
    let mac_line = bytes
        .windows(5)
        .position(|w| w == b"\n--- ")
        .expect("age header has a `--- ` line")
        + 1;
    let mac_start = mac_line + 4;
    let header_len = mac_start
        + bytes[mac_start..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("MAC line ends")
        + 1;
    let payload = bytes.len() - header_len - 16;
    Layout {
        header_len,
        mac_start,
        chunks: payload.div_ceil(AGE_CHUNK),
        len: bytes.len(),
    }
}

/// A vault with ~300 KiB of incompressible data, `--compress none`, so the
/// payload has several 64 KiB chunks.
fn big_vault(fx: &Fx) -> (PathBuf, Vec<u8>, Layout) {
    let case = CaseTree::new(fx.cases().join("CORRUPT-1"));
    case.file("random.bin", &seeded_bytes(99, 300 * 1024))
        .file("notes.txt", b"chain of custody\n");
    case.stamp_times(1_600_000_000);
    let vault = fx.vault("c.vault");
    fx.seal(&case.root, &vault, &["--compress", "none"]);
    let bytes = fs::read(&vault).unwrap();
    let l = layout(&bytes);
    assert!(l.chunks >= 4, "want at least 4 chunks, got {}", l.chunks);
    (vault, bytes, l)
}

/// Write `damaged` over the vault (sidecar left as sealed) and check all
/// three commands.
fn expect_damaged(fx: &Fx, vault: &PathBuf, damaged: &[u8], label: &str) {
    fs::write(vault, damaged).unwrap();
    let dest = fx.dest("restored");
    let before = snapshot(fx.root());
    let a = unseal_cmd(vault, &dest, &fx.key.path).assert();
    assert_eq!(
        a.get_output().status.code(),
        Some(3),
        "{label}: unseal exit code; stderr: {}",
        stderr_of(&a)
    );
    assert!(!dest.exists(), "{label}: DEST exists after failed unseal");
    assert_snapshot_unchanged(fx.root(), &before);
    assert_error_message(&stderr_of(&a));

    // (verify -i --json output on failure is checked in verify.rs.)
    let a = verify_cmd(vault, &fx.key.path).assert();
    assert_eq!(
        a.get_output().status.code(),
        Some(3),
        "{label}: verify -i exit code; stderr: {}",
        stderr_of(&a)
    );
    assert_error_message(&stderr_of(&a));

    let a = casevault().arg("verify").arg(vault).arg("--json").assert();
    assert_eq!(
        a.get_output().status.code(),
        Some(3),
        "{label}: verify (no -i) exit code; stderr: {}",
        stderr_of(&a)
    );
    let v = json_of(&a);
    assert_eq!(v["ok"], false, "{label}");
    assert_eq!(v["sidecar"], "mismatch", "{label}");
    assert_eq!(v["contents_checked"], false, "{label}");
    assert_snapshot_unchanged(fx.root(), &before);
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

#[test]
fn corruption_control_unmodified_vault_is_fine() {
    let fx = Fx::new();
    let (vault, bytes, _) = big_vault(&fx);
    // Rewriting the same bytes changes nothing: the sweep below only fails
    // because of the damage.
    fs::write(&vault, &bytes).unwrap();
    fx.unseal(&vault, &fx.dest("ok"), &[]);
    casevault().arg("verify").arg(&vault).assert().code(0);
}

#[test]
fn corruption_header_mac_byte() {
    let fx = Fx::new();
    let (vault, bytes, l) = big_vault(&fx);
    // Swap one base64 character of the MAC for another valid one.
    let mut b = bytes.clone();
    let at = l.mac_start + 5;
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    expect_damaged(&fx, &vault, &b, "header MAC");
}

#[test]
fn corruption_header_version_line() {
    let fx = Fx::new();
    let (vault, bytes, _) = big_vault(&fx);
    // "age-encryption.org/v1" -> "age-encryption.org/v2": header no longer
    // parses as v1.
    let mut b = bytes.clone();
    assert!(b.starts_with(b"age-encryption.org/v1\n"));
    b[20] = b'2';
    expect_damaged(&fx, &vault, &b, "header version");
}

#[test]
fn corruption_nonce_byte() {
    let fx = Fx::new();
    let (vault, bytes, l) = big_vault(&fx);
    expect_damaged(
        &fx,
        &vault,
        &flipped(&bytes, l.header_len + 3),
        "payload nonce",
    );
}

#[test]
fn corruption_first_chunk_byte() {
    let fx = Fx::new();
    let (vault, bytes, l) = big_vault(&fx);
    expect_damaged(
        &fx,
        &vault,
        &flipped(&bytes, l.header_len + 16 + 100),
        "first chunk",
    );
}

#[test]
fn corruption_middle_chunk_byte() {
    let fx = Fx::new();
    let (vault, bytes, l) = big_vault(&fx);
    let at = l.header_len + 16 + (l.chunks / 2) * AGE_CHUNK + 777;
    expect_damaged(&fx, &vault, &flipped(&bytes, at), "middle chunk");
}

#[test]
fn corruption_last_chunk_byte() {
    let fx = Fx::new();
    let (vault, bytes, l) = big_vault(&fx);
    let last_start = l.header_len + 16 + (l.chunks - 1) * AGE_CHUNK;
    expect_damaged(
        &fx,
        &vault,
        &flipped(&bytes, last_start + 1),
        "last chunk start",
    );
    expect_damaged(&fx, &vault, &flipped(&bytes, l.len - 1), "last chunk tag");
}

#[test]
fn corruption_chunk_swap() {
    let fx = Fx::new();
    let (vault, bytes, l) = big_vault(&fx);
    // Swap chunks 1 and 2: each authenticates alone but not at its index.
    let s1 = l.header_len + 16 + AGE_CHUNK;
    let s2 = s1 + AGE_CHUNK;
    let mut b = bytes.clone();
    b[s1..s2].copy_from_slice(&bytes[s2..s2 + AGE_CHUNK]);
    b[s2..s2 + AGE_CHUNK].copy_from_slice(&bytes[s1..s2]);
    expect_damaged(&fx, &vault, &b, "swapped chunks");
}

#[test]
fn corruption_truncations() {
    let fx = Fx::new();
    let (vault, bytes, l) = big_vault(&fx);
    let body = l.header_len + 16;
    let points = [
        ("inside the header", l.header_len / 2),
        ("right after the header", l.header_len),
        ("inside the nonce", l.header_len + 7),
        ("after the nonce, no chunk", body),
        ("chunk boundary k=1", body + AGE_CHUNK),
        ("chunk boundary k=2", body + 2 * AGE_CHUNK),
        (
            "last full-chunk boundary",
            body + (l.chunks - 1) * AGE_CHUNK,
        ),
        ("inside chunk 1", body + AGE_CHUNK + 1000),
        ("last chunk minus its tag", l.len - 16),
        ("one byte short", l.len - 1),
    ];
    for (label, at) in points {
        assert!(at < l.len, "{label}");
        expect_damaged(
            &fx,
            &vault,
            &bytes[..at],
            &format!("truncated {label} ({at})"),
        );
    }
    // An empty file.
    expect_damaged(&fx, &vault, b"", "empty file");
}

#[test]
fn corruption_appended_bytes() {
    let fx = Fx::new();
    let (vault, bytes, _) = big_vault(&fx);
    let mut b = bytes.clone();
    b.extend_from_slice(&[0u8; 64]);
    expect_damaged(&fx, &vault, &b, "data appended after the last chunk");
}
