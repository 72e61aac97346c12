//! Format version 3's random-access structures on arbitrary bytes (issue
//! #12); the first byte picks: 0 the locator, 1 a seek table at the end of
//! a plaintext, 2 one frame against a declared size, 3 the frame-logging
//! streaming decoder and its seek table check. Besides crashes it checks
//! that a parsed locator writes out to the same bytes, that a parsed seek
//! table covers the plaintext exactly, and that a frame decompresses to
//! exactly the size it was held to.
#![no_main]

use std::io::Read;

use casevault::format::Locator;
use casevault::frames::{decompress_frame, FramedDecoder, SeekTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(l) = Locator::parse(rest) {
                assert_eq!(l.to_text().as_bytes(), rest, "a locator round-trips");
            }
        }
        1 => {
            let len = rest.len() as u64;
            let t = SeekTable::read(len, |off, buf| {
                let end = off as usize + buf.len();
                buf.copy_from_slice(&rest[off as usize..end]);
                Ok(())
            });
            if let Ok(t) = t {
                let (c, _, _, _) = t.frame(t.frames() - 1);
                assert!(c < len);
                let mut total = 0;
                for i in 0..t.frames() {
                    let (_, _, d, n) = t.frame(i);
                    assert_eq!(d, total);
                    assert!(n >= 1 && n <= casevault::frames::MAX_FRAME);
                    assert_eq!(t.frame_of(d), i);
                    total += n;
                }
                assert_eq!(total, t.decompressed_len());
            }
        }
        2 => {
            if rest.len() < 3 {
                return;
            }
            let size = u64::from(u16::from_le_bytes([rest[0], rest[1]])) * 64;
            let mut dctx = zstd_dctx();
            let mut out = Vec::new();
            if decompress_frame(&mut dctx, &rest[2..], size, &mut out).is_ok() {
                assert_eq!(out.len() as u64, size);
            }
        }
        _ => {
            let Ok((mut d, log)) = FramedDecoder::new(rest) else {
                return;
            };
            let mut out = Vec::new();
            let _ = (&mut d).take(64 << 20).read_to_end(&mut out);
            let _ = log.lock().unwrap().check_v3();
        }
    }
});

fn zstd_dctx() -> casevault::frames::Dctx {
    casevault::frames::new_dctx()
}
