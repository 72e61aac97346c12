//! The checked-in hostile corpus, `tests/vectors/hostile/` (issue #6): one
//! `NAME.vault` per crafted vault, encrypted to the test-only key
//! `tests/vectors/TEST-ONLY-key.txt`, beside `NAME.txt`:
//!
//! ```text
//! expect: integrity        what `unseal` must end in (class, see `code`)
//! verify: success          optional: what `verify -i` ends in, if different
//! comment: one line saying what is wrong with the vault
//! ```
//!
//! `hostile_corpus` walks the directory: for each vault, unseal exits with
//! the expected code, leaves nothing at DEST and nothing else in DEST's
//! parent (no staging directory), and verify -i exits as expected and
//! writes nothing. The vaults are made from the readable recipes below by
//! `cargo test --test it regenerate_vectors -- --ignored`; they are
//! committed and only ever added to, like age's testkit.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use casevault::format::Compression;
use casevault::manifest;

use crate::util::*;

const CASE: &str = "VEC-1";
/// Where the absolute-path vectors try to write.
const ESCAPE: &str = "/tmp/casevault-vector-escape.txt";

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Exit code of an `expect:` class.
fn code(class: &str) -> i32 {
    match class {
        "success" => 0,
        "error" => 1,
        "integrity" | "unsafe" => 3,
        "no-match" => 4,
        other => panic!("unknown expect class {other:?}"),
    }
}

/// The small base case every vector starts from.
fn base_recipe() -> Recipe {
    Recipe::new(CASE)
        .file("data/a.txt", b"alpha\n")
        .dir("data/sub")
        .file("data/sub/b.txt", b"bravo\n")
        .file("data/sub/empty.txt", b"")
        .link("data/link-to-a", "a.txt")
}

/// The base bag, zstd-compressed (raw tar pads to 20 KiB per vault).
fn base_bag() -> Bag {
    Bag::from_recipe(&base_recipe(), Compression::Zstd)
}

// ---------------------------------------------------------------------------
// The recipes
// ---------------------------------------------------------------------------

/// What a vector holds: an age plaintext (encrypted to the test key by the
/// generator) or a finished age file.
enum Body {
    Plain(Vec<u8>),
    Age(Vec<u8>),
}

struct Vector {
    name: &'static str,
    unseal: &'static str,
    verify: &'static str,
    /// Version 3: `list`'s class when it is not verify's.
    list: Option<&'static str>,
    comment: &'static str,
    body: Body,
}

fn v(name: &'static str, class: &'static str, comment: &'static str, plain: Vec<u8>) -> Vector {
    Vector {
        name,
        unseal: class,
        verify: class,
        list: None,
        comment,
        body: Body::Plain(plain),
    }
}

impl Vector {
    fn list(mut self, class: &'static str) -> Vector {
        self.list = Some(class);
        self
    }
}

/// Number of tiny entries in the `many-entries` vector.
const MANY: usize = 20_000;
/// Size the zstd bomb's one file declares (1 PiB, base-256 size field).
const BOMB_DECLARED: u64 = 1 << 50;
/// Zero bytes the bomb's frame actually holds before it ends.
const BOMB_ZEROS: usize = 512 << 20;

fn recipes(recipient: &str) -> Vec<Vector> {
    let base = base_bag();
    let mut out = vec![
        v(
            "ok-control",
            "success",
            "a valid vault built by the generator: proves the key and the recipe builder work",
            base.plaintext(),
        ),
        v(
            "ok-control-raw-tar",
            "success",
            "the same, uncompressed",
            Bag::from_recipe(&base_recipe(), Compression::None).plaintext(),
        ),
        // --- paths
        v(
            "dotdot-path",
            "integrity",
            "a payload file named VEC-1/data/../../escape.txt",
            base.with_payload(tar_entry(
                "VEC-1/data/../../escape.txt",
                b'0',
                b"x".to_vec(),
            )),
        ),
        v(
            "absolute-path",
            "integrity",
            "a payload file with the absolute name /tmp/casevault-vector-escape.txt",
            base.with_payload(tar_entry(ESCAPE, b'0', b"x".to_vec())),
        ),
        v(
            "long-path-pax",
            "integrity",
            "a pax path of 5000 bytes (limit 4096)",
            base.with_payload(tar_entry(
                &format!("VEC-1/data/{}x", "p/".repeat(2495)),
                b'0',
                b"x".to_vec(),
            )),
        ),
        {
            let name = format!("data/{}", "n".repeat(300));
            let r = base_recipe().file(&name, b"long name\n");
            Vector {
                name: "long-component",
                unseal: "error",
                verify: "success",
                list: None,
                comment: "a consistent bag with a 300-byte file name: longer than NAME_MAX, so \
                          unseal fails creating it (exit 1, nothing left); verify passes",
                body: Body::Plain(Bag::from_recipe(&r, Compression::Zstd).plaintext()),
            }
        },
        // --- entry types
        v(
            "symlink-entry-then-file",
            "integrity",
            "a tar symlink data/out -> /tmp, then a file data/out/x written through it",
            base.with_entries(|e| {
                let at = 6;
                e.insert(
                    at,
                    RawEntry::new_raw(b"VEC-1/data/out", b'2', vec![], b"/tmp"),
                );
                e.insert(
                    at + 1,
                    RawEntry::new_raw(b"VEC-1/data/out/x", b'0', b"x".to_vec(), b""),
                );
            }),
        ),
        v(
            "hardlink-entry",
            "integrity",
            "a tar hard link to /etc/passwd",
            base.with_payload(RawEntry::new_raw(
                b"VEC-1/data/pw",
                b'1',
                vec![],
                b"/etc/passwd",
            )),
        ),
        v(
            "fifo-entry",
            "integrity",
            "a FIFO entry",
            base.with_payload(RawEntry::new_raw(b"VEC-1/data/fifo", b'6', vec![], b"")),
        ),
        v(
            "char-device-entry",
            "integrity",
            "a character device entry",
            base.with_payload(RawEntry::new_raw(b"VEC-1/data/tty", b'3', vec![], b"")),
        ),
        v(
            "gnu-longname",
            "integrity",
            "a GNU ././@LongLink (type L) header",
            base.with_payload(RawEntry::new_raw(
                b"././@LongLink",
                b'L',
                b"VEC-1/data/long\0".to_vec(),
                b"",
            )),
        ),
        v(
            "pax-global-header",
            "integrity",
            "a pax global header (type g)",
            base.with_payload(RawEntry::new_raw(
                b"VEC-1/pax_global_header",
                b'g',
                pax_record("comment", "x").into_bytes(),
                b"",
            )),
        ),
        v(
            "duplicate-entry",
            "integrity",
            "data/a.txt twice, the second with other bytes",
            base.with_payload(tar_entry("VEC-1/data/a.txt", b'0', b"other\n".to_vec())),
        ),
        v(
            "entry-outside-data",
            "integrity",
            "an extra file VEC-1/extra.txt between the payload and the tag files",
            base.with_payload(tar_entry("VEC-1/extra.txt", b'0', b"x".to_vec())),
        ),
        // --- pax headers
        {
            let mut e = tar_entry("VEC-1/data/pax.txt", b'0', b"x".to_vec());
            e.pax = Some(pax_header(
                CASE,
                &pax_record("size", "18446744073709551615"),
            ));
            v(
                "pax-huge-size",
                "integrity",
                "a pax size of 2^64-1 on a 1-byte file",
                base.with_payload(e),
            )
        },
        {
            let mut e = tar_entry("VEC-1/data/pax.txt", b'0', b"x".to_vec());
            e.pax = Some(pax_header(
                CASE,
                &pax_record("size", "99999999999999999999999"),
            ));
            v(
                "pax-size-overflow",
                "integrity",
                "a pax size that does not fit 64 bits",
                base.with_payload(e),
            )
        },
        {
            let mut e = tar_entry("VEC-1/data/pax.txt", b'0', b"x".to_vec());
            e.pax = Some(pax_header(CASE, "999999 path=VEC-1/data/pax.txt\n"));
            v(
                "pax-bogus-length",
                "integrity",
                "a pax record whose length field (999999) exceeds the header",
                base.with_payload(e),
            )
        },
        {
            let mut e = tar_entry("VEC-1/data/pax.txt", b'0', b"x".to_vec());
            e.pax = Some(pax_header(CASE, &pax_record("linkpath", "/etc/passwd")));
            v(
                "pax-unknown-key",
                "integrity",
                "a pax linkpath record",
                base.with_payload(e),
            )
        },
        {
            // The pax header's size field claims 1 GiB; its data is not there.
            let (mut h, _) = pax_header(CASE, "");
            h.set_size(1 << 30);
            h.set_cksum();
            let mut e = tar_entry("VEC-1/data/pax.txt", b'0', b"x".to_vec());
            e.pax = Some((h, vec![]));
            v(
                "pax-oversized-header",
                "integrity",
                "a pax extended header whose size field says 1 GiB (limit 64 KiB)",
                base.with_payload(e),
            )
        },
        {
            let mut e = tar_entry("VEC-1/data/pax.txt", b'0', b"x".to_vec());
            e.pax = Some(pax_header(CASE, &pax_record("path", "VEC-1/data/a\0b")));
            v(
                "pax-path-nul",
                "integrity",
                "a pax path containing a NUL byte",
                base.with_payload(e),
            )
        },
        // --- manifests and casevault.json
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| format!("zz{}", &t[2..]));
            v(
                "manifest-bad-hex",
                "integrity",
                "a manifest digest with non-hex digits (tag manifest updated)",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| t.to_uppercase());
            v(
                "manifest-upper-hex",
                "integrity",
                "manifest digests in upper-case hex",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| {
                let first = t.lines().next().unwrap().to_string();
                t.replacen(&first, &first[..64], 1)
            });
            v(
                "manifest-wrong-field-count",
                "integrity",
                "a manifest line with a digest and no path",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| {
                t.replacen("  data/", " data/", 1)
            });
            v(
                "manifest-one-space",
                "integrity",
                "a manifest line separated by one space",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| {
                t.replacen("data/sub/b.txt", "data/sub/../sub/b.txt", 1)
            });
            v(
                "manifest-dotdot-path",
                "integrity",
                "a manifest path data/sub/../sub/b.txt",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| {
                t.replacen("data/a.txt", "data/a%zz.txt", 1)
            });
            v(
                "manifest-bad-percent",
                "integrity",
                "a manifest path with the % sequence %zz",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| {
                let first = t.lines().next().unwrap().to_string() + "\n";
                t.replacen(&first, "", 1)
            });
            v(
                "manifest-missing-file",
                "integrity",
                "the manifest omits data/a.txt",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| {
                t + &manifest::line(&sha256_hex(b"ghost"), "data/ghost.txt")
            });
            v(
                "manifest-extra-file",
                "integrity",
                "the manifest lists data/ghost.txt, which is not in the payload",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_tag("manifest-sha256.txt", |t| {
                t.replacen(&sha256_hex(b"alpha\n"), &sha256_hex(b"alphA\n"), 1)
            });
            v(
                "manifest-hash-mismatch",
                "integrity",
                "the manifest digest of data/a.txt is of other bytes",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.edit_json(|j| j["entries"][1]["size"] = 7.into());
            v(
                "json-size-mismatch",
                "integrity",
                "casevault.json gives data/a.txt size 7 (it is 6)",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            let mut json = b.tag("casevault.json");
            json.truncate(json.len() / 2);
            json.push(b'\n');
            b.set_tag("casevault.json", json);
            b.fix_tagmanifest();
            v(
                "json-truncated",
                "integrity",
                "casevault.json cut in half (tag manifest updated)",
                b.plaintext(),
            )
        },
        {
            let mut b = base_bag();
            b.set_tag(
                "bag-info.txt",
                b"Bagging-Date: 2026-01-01\nPayload-Oxum: 99999999999999999999999.3\n\
                External-Identifier: VEC-1\n"
                    .to_vec(),
            );
            b.fix_tagmanifest();
            v(
                "bag-info-bogus-oxum",
                "integrity",
                "a Payload-Oxum too large for 64 bits",
                b.plaintext(),
            )
        },
        // --- symlink records
        {
            let r = base_recipe()
                .link("data/l1", "l2")
                .link("data/l2", "sub/l3")
                .link("data/sub/l3", "../../../etc");
            Vector {
                name: "symlink-chain-escape",
                unseal: "unsafe",
                verify: "success",
                list: None,
                comment: "links l1 -> l2 -> sub/l3 -> ../../../etc: each hop looks harmless, \
                          the chain leaves the case; verify reports it, unseal refuses",
                body: Body::Plain(Bag::from_recipe(&r, Compression::Zstd).plaintext()),
            }
        },
        {
            let mut r = base_recipe();
            for i in 0..41 {
                r = r.link(&format!("data/h{i:02}"), &format!("h{:02}", i + 1));
            }
            r = r.link("data/h41", "a.txt");
            Vector {
                name: "symlink-chain-41-hops",
                unseal: "success",
                verify: "success",
                list: None,
                comment: "a chain of 42 links that ends inside the case, past the 40-hop limit: \
                          the OS cannot follow h00 (ELOOP) and nothing leaves the case, so unseal \
                          recreates it (was unsafe before issue #10 item 8)",
                body: Body::Plain(Bag::from_recipe(&r, Compression::Zstd).plaintext()),
            }
        },
        {
            let r = base_recipe().dir("data/d").link("data/d/x", "y");
            let mut b = Bag::from_recipe(&r, Compression::Zstd);
            b.edit_json(|j| {
                for e in j["entries"].as_array_mut().unwrap() {
                    if e["path"] == "data/d/x" {
                        e["path"] = "data/d/../../x".into();
                    }
                }
            });
            v(
                "json-symlink-dotdot-path",
                "integrity",
                "a symlink record whose path is data/d/../../x",
                b.plaintext(),
            )
        },
        // --- truncation and trailing data
        {
            let tar = base.tar();
            v(
                "tar-ends-in-file-data",
                "integrity",
                "the tar stream ends inside data/a.txt's data",
                tar[..512 * 3 + 3].to_vec(),
            )
        },
        {
            let payload = &base.entries[..base.first_tag()];
            let len: usize = payload
                .iter()
                .map(|e| 512 + e.data.len().div_ceil(512) * 512)
                .sum();
            v(
                "tar-ends-before-tags",
                "integrity",
                "the tar stream stops after the payload: no tag files, no end marker",
                build_tar(payload)[..len].to_vec(),
            )
        },
        {
            let mut tar = base.tar();
            tar.extend_from_slice(b"trailing garbage after the archive");
            v(
                "tar-trailing-garbage",
                "integrity",
                "non-zero bytes after the end-of-archive blocks",
                base.plaintext_of(tar),
            )
        },
        v(
            "empty-plaintext",
            "integrity",
            "a valid age file whose plaintext is empty",
            vec![],
        ),
    ];

    // --- resources
    {
        // Tens of thousands of empty files in 100 directories, then a
        // bagit.txt with the wrong text and the end of the stream: every
        // entry is extracted to staging before the bag is found broken.
        let mut e = vec![
            tar_entry(&format!("{CASE}/"), b'5', vec![]),
            tar_entry(&format!("{CASE}/data/"), b'5', vec![]),
        ];
        for d in 0..100 {
            e.push(tar_entry(&format!("{CASE}/data/d{d:02}/"), b'5', vec![]));
            for f in 0..MANY / 100 {
                e.push(tar_entry(
                    &format!("{CASE}/data/d{d:02}/{f:03}"),
                    b'0',
                    vec![],
                ));
            }
        }
        e.push(tar_entry(
            &format!("{CASE}/bagit.txt"),
            b'0',
            b"no\n".to_vec(),
        ));
        let tar = build_tar(&e);
        out.push(v(
            "many-entries",
            "integrity",
            "20,000 empty files in 100 directories, then a broken bag: all are staged, then removed",
            zstd::encode_all(&tar[..], 19).unwrap(),
        ));
    }
    {
        // One file declaring 1 PiB; the frame holds 512 MiB of zeros (a few
        // KiB compressed) and then ends.
        let prefix = headers_only(&[
            ("VEC-1/", b'5', 0),
            ("VEC-1/data/", b'5', 0),
            ("VEC-1/data/bomb.bin", b'0', BOMB_DECLARED),
        ]);
        out.push(Vector {
            name: "zstd-bomb",
            unseal: "error",
            verify: "integrity",
            list: None,
            comment: "a zstd bomb: 16 KiB of RLE blocks expand to 512 MiB of zeros in a file \
                      declaring 1 PiB; unseal refuses before writing (free space, exit 1), \
                      verify hashes 512 MiB and finds the stream ends early",
            body: Body::Plain(zstd_rle_frame(&prefix, BOMB_ZEROS)),
        });
    }
    // --- the age layer
    {
        let full = encrypt_to(recipient, &base.plaintext(), false);
        let hdr_end = full.windows(4).position(|w| w == b"\n---").unwrap();
        let mac_end = hdr_end
            + 1
            + full[hdr_end + 1..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap();
        out.push(Vector {
            name: "age-header-only",
            unseal: "integrity",
            verify: "integrity",
            list: None,
            comment: "an age header (with a valid MAC) and no payload at all",
            body: Body::Age(full[..=mac_end].to_vec()),
        });
        out.push(Vector {
            name: "age-header-and-nonce",
            unseal: "integrity",
            verify: "integrity",
            list: None,
            comment: "an age header and the 16-byte payload nonce, but no chunk",
            body: Body::Age(full[..=mac_end + 16].to_vec()),
        });
        out.push(Vector {
            name: "age-truncated-chunk",
            unseal: "integrity",
            verify: "integrity",
            list: None,
            comment: "an age file cut in the middle of its last chunk",
            body: Body::Age(full[..full.len() - 7].to_vec()),
        });
    }
    out.extend(v3_recipes());
    out
}

/// Format version 3 (FORMAT §13): a hostile index, locator or seek table
/// is refused (exit 3) by the full read and by every partial read that
/// relies on it; `list` does not follow payload offsets, so an offset that
/// lies but keeps its order lists (and fails `verify -i`, §13.2).
fn v3_recipes() -> Vec<Vector> {
    let base = Bag::from_recipe_v3(&base_recipe(), Compression::Zstd);
    let raw = Bag::from_recipe_v3(&base_recipe(), Compression::None);
    let offset = |b: &Bag, path: &str| -> u64 {
        let mut j = b.json();
        Bag::json_entry(&mut j, path)["offset"].as_u64().unwrap()
    };
    // casevault.json edited, the tag manifest fixed, nothing else.
    let lie = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut b = base.clone();
        b.edit_json(|j| edit(j));
        b.plaintext_as_is()
    };
    let a_at = offset(&base, "data/a.txt");
    let b_at = offset(&base, "data/sub/b.txt");
    let mut out = vec![
        v(
            "v3-ok-control",
            "success",
            "a valid version 3 vault built by the test toolkit (seek table made from the zstd seekable format's description)",
            base.plaintext_as_is(),
        ),
        v(
            "v3-ok-control-raw-tar",
            "success",
            "the same, uncompressed",
            raw.plaintext_as_is(),
        ),
        v(
            "v3-offset-into-another-entry",
            "integrity",
            "the offset of data/sub/b.txt is that of data/a.txt (out of order)",
            lie(&|j| Bag::json_entry(j, "data/sub/b.txt")["offset"] = a_at.into()),
        ),
        v(
            "v3-offset-past-end",
            "integrity",
            "the offset of data/sub/empty.txt lies past the end of the tar stream",
            lie(&|j| Bag::json_entry(j, "data/sub/empty.txt")["offset"] = (1u64 << 40).into()),
        ),
        v(
            "v3-offset-in-order-but-wrong",
            "integrity",
            "the offset of data/sub/b.txt points into its own data: in order, so list passes; verify -i and unseal --path sub refuse",
            lie(&|j| Bag::json_entry(j, "data/sub/b.txt")["offset"] = (b_at + 512).into()),
        )
        .list("success"),
        v(
            "v3-index-disagrees-with-manifest",
            "integrity",
            "casevault.json gives data/a.txt another SHA-256 than the manifest",
            lie(&|j| Bag::json_entry(j, "data/a.txt")["sha256"] = "0".repeat(64).into()),
        ),
    ];
    // The locator says casevault.json is somewhere else.
    let mut b = base.clone();
    b.edit_tag("casevault-locator.txt", |t| {
        let (json_line, _) = t
            .lines()
            .enumerate()
            .find(|(_, l)| l.starts_with("casevault.json "))
            .unwrap();
        t.lines()
            .enumerate()
            .map(|(i, l)| {
                if i == json_line {
                    let mut f = l.split(' ');
                    let (n, o, z) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
                    format!("{n} {} {z}\n", o.parse::<u64>().unwrap() + 512)
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    });
    out.push(v(
        "v3-locator-lies",
        "integrity",
        "the locator puts casevault.json 512 bytes later (listed in the tag manifest with its own hash)",
        b.plaintext_as_is(),
    ));
    // Seek tables that lie (one frame: entry at len - 17 .. len - 9).
    let patch = |f: &dyn Fn(&mut [u8])| {
        let mut p = base.plaintext_as_is();
        let n = p.len();
        f(&mut p[n - 17..n - 9]);
        p
    };
    out.push(v(
        "v3-frame-larger-than-declared",
        "integrity",
        "the seek table declares a frame 512 bytes shorter than it decompresses to",
        patch(&|e| {
            let d = u32::from_le_bytes(e[4..8].try_into().unwrap()) - 512;
            e[4..8].copy_from_slice(&d.to_le_bytes());
        }),
    ));
    out.push(v(
        "v3-seek-table-compressed-sizes-lie",
        "integrity",
        "the seek table's compressed size is one byte too many (does not add up)",
        patch(&|e| {
            let c = u32::from_le_bytes(e[0..4].try_into().unwrap()) + 1;
            e[0..4].copy_from_slice(&c.to_le_bytes());
        }),
    ));
    out.push(v(
        "v3-no-seek-table",
        "integrity",
        "a version 3 bag in one zstd frame without a seek table",
        zstd::encode_all(&base.tar()[..], 19).unwrap(),
    ));
    let mut padded = build_tar_as_is(&base.entries, false);
    padded = seekable_zstd(&padded, 19);
    out.push(v(
        "v3-record-padding",
        "integrity",
        "a version 3 tar padded to a 10240-byte record after the end blocks",
        padded,
    ));
    out
}

// ---------------------------------------------------------------------------
// Generator and walker
// ---------------------------------------------------------------------------

fn test_key() -> Key {
    let path = vectors_dir().join("TEST-ONLY-key.txt");
    let text = fs::read_to_string(&path).expect("tests/vectors/TEST-ONLY-key.txt");
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("an AGE-SECRET-KEY-1 line")
        .to_string();
    let id: age::x25519::Identity = secret.parse().unwrap();
    Key {
        path,
        recipient: id.to_public().to_string(),
        secret,
    }
}

/// Rebuild tests/vectors/hostile/ from the recipes (and the test-only key,
/// if it is missing). Not part of the normal run:
/// `cargo test --test it regenerate_vectors -- --ignored`.
#[test]
#[ignore]
fn regenerate_vectors() {
    let dir = vectors_dir();
    let key_path = dir.join("TEST-ONLY-key.txt");
    fs::create_dir_all(dir.join("hostile")).unwrap();
    if !key_path.exists() {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        fs::write(
            &key_path,
            format!(
                "# TEST-ONLY key for tests/vectors: public in the repository, never use it\n\
                 # for real cases.\n# public key: {}\n{}\n",
                id.to_public(),
                id.to_string().expose_secret()
            ),
        )
        .unwrap();
    }
    let key = test_key();
    // CASEVAULT_VECTORS=PREFIX writes only the vectors whose name starts
    // so (age output is random: rewriting the rest only churns the files).
    let only = std::env::var("CASEVAULT_VECTORS").unwrap_or_default();
    for vec in recipes(&key.recipient) {
        if !vec.name.starts_with(&only) {
            continue;
        }
        let bytes = match vec.body {
            Body::Plain(p) => encrypt_to(&key.recipient, &p, false),
            Body::Age(a) => a,
        };
        let base = dir.join("hostile").join(vec.name);
        fs::write(base.with_extension("vault"), &bytes).unwrap();
        let mut txt = format!("expect: {}\n", vec.unseal);
        if vec.verify != vec.unseal {
            txt.push_str(&format!("verify: {}\n", vec.verify));
        }
        if let Some(list) = vec.list {
            txt.push_str(&format!("list: {list}\n"));
        }
        txt.push_str(&format!("comment: {}\n", vec.comment));
        fs::write(base.with_extension("txt"), txt).unwrap();
        eprintln!("{:>8} bytes  {}", bytes.len(), vec.name);
    }
}

struct Expect {
    unseal: String,
    verify: String,
    /// Version 3 vectors: `list`, and `unseal --path sub`.
    list: String,
    comment: String,
}

/// A version 3 vector read from its end: `list` and `unseal --path sub`
/// end as the vector says, and a failing one writes nothing.
fn check_v3_partial_reads(vault: &Path, key: &Path, parent: &Path, stem: &str, ex: &Expect) {
    let a = list_cmd(vault, key).assert();
    assert_eq!(
        a.get_output().status.code(),
        Some(code(&ex.list)),
        "{stem}: list should end in {}: {}",
        ex.list,
        stderr_of(&a)
    );
    let dest = parent.join("partial");
    let a = unseal_cmd(vault, &dest, key)
        .args(["--path", "sub"])
        .assert();
    assert_eq!(
        a.get_output().status.code(),
        Some(code(&ex.unseal)),
        "{stem}: unseal --path should end in {}: {}",
        ex.unseal,
        stderr_of(&a)
    );
    if ex.unseal == "success" {
        assert_eq!(fs::read(dest.join("sub/b.txt")).unwrap(), b"bravo\n");
        assert!(
            !dest.join("a.txt").exists(),
            "{stem}: --path sub restored a.txt"
        );
        fs::remove_dir_all(&dest).unwrap();
    } else {
        assert!(dest.symlink_metadata().is_err(), "{stem}: DEST was created");
    }
    let left = snapshot(parent);
    assert!(
        left.is_empty() || left.iter().all(|p| p.starts_with("dest")),
        "{stem}: left {left:?}"
    );
}

fn parse_expect(text: &str) -> Expect {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .map(str::to_string)
    };
    let unseal = field("expect").expect("an `expect:` line");
    let verify = field("verify").unwrap_or_else(|| unseal.clone());
    Expect {
        list: field("list").unwrap_or_else(|| verify.clone()),
        verify,
        comment: field("comment").unwrap_or_default(),
        unseal,
    }
}

/// The stderr marker of a failure class.
fn marker(class: &str) -> Option<&'static str> {
    match class {
        "integrity" => Some("integrity failure"),
        "unsafe" => Some("unsafe entry"),
        "error" | "no-match" => Some("casevault: error: "),
        _ => None,
    }
}

#[test]
fn hostile_corpus() {
    let dir = vectors_dir().join("hostile");
    let tmp = tempfile::Builder::new()
        .prefix("casevault-vectors-")
        .tempdir()
        .unwrap();
    // Git does not keep mode 0600; casevault refuses a key group or others
    // can read, so use a private copy.
    let key = tmp.path().join("key.txt");
    write_private(
        &key,
        fs::read(vectors_dir().join("TEST-ONLY-key.txt")).unwrap(),
    );
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let vaults: Vec<&String> = names.iter().filter(|n| n.ends_with(".vault")).collect();
    for n in &names {
        let stem = n.rsplit_once('.').unwrap().0;
        assert!(
            names.contains(&format!("{stem}.vault")) && names.contains(&format!("{stem}.txt")),
            "{n}: every vector is NAME.vault plus NAME.txt"
        );
    }
    assert!(vaults.len() >= 40, "only {} vectors", vaults.len());
    let corpus_before = snapshot(&dir);
    let mut total = 0;
    for name in vaults {
        let stem = name.strip_suffix(".vault").unwrap();
        let vault = dir.join(name);
        total += fs::metadata(&vault).unwrap().len();
        let ex = parse_expect(&fs::read_to_string(dir.join(format!("{stem}.txt"))).unwrap());
        let parent = tmp.path().join(stem);
        fs::create_dir(&parent).unwrap();
        let dest = parent.join("dest");

        let start = Instant::now();
        let a = unseal_cmd(&vault, &dest, &key).assert();
        let took = start.elapsed();
        let err = stderr_of(&a);
        eprintln!(
            "{stem}: unseal {:?} in {took:?} ({})",
            a.get_output().status.code(),
            ex.comment
        );
        assert_eq!(
            a.get_output().status.code(),
            Some(code(&ex.unseal)),
            "{stem}: unseal should end in {}: {err}",
            ex.unseal
        );
        if let Some(m) = marker(&ex.unseal) {
            assert!(err.contains(m), "{stem}: stderr lacks {m:?}: {err}");
        }
        let left = snapshot(&parent);
        if ex.unseal == "success" {
            assert!(dest.is_dir(), "{stem}: DEST missing");
            assert!(
                left.iter().all(|p| p.starts_with("dest")),
                "{stem}: unseal left {left:?}"
            );
        } else {
            assert!(
                dest.symlink_metadata().is_err(),
                "{stem}: DEST was created by a failing unseal"
            );
            assert!(left.is_empty(), "{stem}: unseal left {left:?} beside DEST");
        }
        assert!(
            Path::new(ESCAPE).symlink_metadata().is_err(),
            "{stem}: {ESCAPE} was written"
        );
        assert!(
            took < Duration::from_secs(120),
            "{stem}: unseal took {took:?}"
        );

        if stem.starts_with("v3-") {
            check_v3_partial_reads(&vault, &key, &parent, stem, &ex);
        }

        let before = snapshot(tmp.path());
        let start = Instant::now();
        let a = verify_cmd(&vault, &key).current_dir(&parent).assert();
        let took = start.elapsed();
        assert_eq!(
            a.get_output().status.code(),
            Some(code(&ex.verify)),
            "{stem}: verify should end in {}: {}",
            ex.verify,
            stderr_of(&a)
        );
        assert_snapshot_unchanged(tmp.path(), &before);
        // A bound, not a benchmark: generous for a loaded 2-core machine.
        assert!(
            took < Duration::from_secs(120),
            "{stem}: verify took {took:?}"
        );
        let _ = fs::remove_dir_all(&parent);
    }
    assert_snapshot_unchanged(&dir, &corpus_before);
    assert!(
        total < 1 << 20,
        "the corpus should stay under 1 MiB, it is {total} bytes"
    );
}
