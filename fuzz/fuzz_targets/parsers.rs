//! The tag-file and pax parsers on arbitrary bytes; the first byte picks
//! the parser: 0 manifest, 1 casevault.json, 2 bag-info.txt, 3 pax records.
//! Besides crashes it checks that a parsed manifest, written out again,
//! parses to the same lines, and that path encoding round-trips.
#![no_main]

use casevault::format::{parse_bag_info, CaseJson};
use casevault::manifest;
use casevault::read::parse_pax;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let p = manifest::encode_path(text);
            assert_eq!(manifest::decode_path(&p).as_deref(), Some(text));
            if let Ok(lines) = manifest::parse("manifest", text) {
                let again: String = lines.iter().map(|(p, h)| manifest::line(h, p)).collect();
                let reparsed =
                    manifest::parse("manifest", &again).expect("re-encoded manifest parses");
                assert_eq!(reparsed, lines);
            }
        }
        1 => {
            if let Ok(j) = CaseJson::parse(rest) {
                let out = serde_json::to_vec(&j).expect("a parsed casevault.json serializes");
                assert_eq!(CaseJson::parse(&out).expect("and parses again"), j);
            }
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = parse_bag_info(text);
            }
        }
        _ => {
            let _ = parse_pax(rest);
        }
    }
});
