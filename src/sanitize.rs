//! Escaping names before they reach a terminal: evidence folders contain
//! strange names, and a hostile one must not rewrite the screen, hide part
//! of itself, or pass for another name (issue #10 item 7).
//!
//! Escaped as `\u{HEX}` (lower-case hex, as Rust's `{:?}` writes them):
//! every character of the Unicode general categories Cc (controls), Cf
//! (format: zero-width characters, the bidi marks, embeddings, overrides
//! and isolates, the soft hyphen, invisible operators, tags), Zl and Zp
//! (line and paragraph separators). The backslash itself becomes `\\`, so
//! a name holding the six characters `\u{1b}` prints as `\\u{1b}` and can
//! never be mistaken for one holding a real ESC: the output is unambiguous.

/// The characters of general category Cf (format), from Unicode 15.1
/// `DerivedGeneralCategory.txt` (unchanged in 16.0). The bidi controls
/// (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) are all Cf.
/// A unit test checks known members and that the table is sorted.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // SOFT HYPHEN
    (0x0600, 0x0605),   // ARABIC NUMBER SIGN..ARABIC NUMBER MARK ABOVE
    (0x061C, 0x061C),   // ARABIC LETTER MARK
    (0x06DD, 0x06DD),   // ARABIC END OF AYAH
    (0x070F, 0x070F),   // SYRIAC ABBREVIATION MARK
    (0x0890, 0x0891),   // ARABIC POUND/PIASTRE MARK ABOVE
    (0x08E2, 0x08E2),   // ARABIC DISPUTED END OF AYAH
    (0x180E, 0x180E),   // MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),   // ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),   // LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),   // WORD JOINER..INVISIBLE PLUS
    (0x2066, 0x206F),   // LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0xFEFF, 0xFEFF),   // ZERO WIDTH NO-BREAK SPACE (BOM)
    (0xFFF9, 0xFFFB),   // INTERLINEAR ANNOTATION ANCHOR..TERMINATOR
    (0x110BD, 0x110BD), // KAITHI NUMBER SIGN
    (0x110CD, 0x110CD), // KAITHI NUMBER SIGN ABOVE
    (0x13430, 0x1343F), // EGYPTIAN HIEROGLYPH VERTICAL JOINER..END WALLED ENCLOSURE
    (0x1BCA0, 0x1BCA3), // SHORTHAND FORMAT LETTER OVERLAP..UP STEP
    (0x1D173, 0x1D17A), // MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0001, 0xE0001), // LANGUAGE TAG
    (0xE0020, 0xE007F), // TAG SPACE..CANCEL TAG
];

/// Whether `c` is of general category Cf.
fn is_format(c: char) -> bool {
    let c = c as u32;
    FORMAT_CHARS
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether `c` must not reach a terminal as itself: Cc, Cf, Zl, Zp.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_format(c)
}

/// Escape `s` for a terminal: Cc, Cf, Zl and Zp characters as `\u{…}`,
/// the backslash as `\\`; everything else unchanged.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls() {
        assert_eq!(sanitize("a\nb\x1b[2Jc"), "a\\u{a}b\\u{1b}[2Jc");
        assert_eq!(sanitize("ok ü 名"), "ok ü 名");
        assert_eq!(sanitize("x\u{202E}y"), "x\\u{202e}y");
        assert_eq!(sanitize("\u{7f}\u{85}\u{9f}"), "\\u{7f}\\u{85}\\u{9f}");
    }

    /// Issue #10 item 7: every character the issue names.
    #[test]
    fn escapes_the_characters_named_in_issue_10() {
        for (c, want) in [
            ('\u{061C}', "\\u{61c}"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{2029}', "\\u{2029}"),
            ('\u{2060}', "\\u{2060}"),
            ('\u{2061}', "\\u{2061}"),
            ('\u{2062}', "\\u{2062}"),
            ('\u{2063}', "\\u{2063}"),
            ('\u{2064}', "\\u{2064}"),
            ('\u{00AD}', "\\u{ad}"),
        ] {
            assert_eq!(sanitize(&format!("a{c}b")), format!("a{want}b"), "{c:?}");
        }
    }

    /// The bidi controls (UAX #9 explicit formatting characters and marks).
    #[test]
    fn escapes_every_bidi_control() {
        for c in ['\u{061C}', '\u{200E}', '\u{200F}']
            .into_iter()
            .chain('\u{202A}'..='\u{202E}')
            .chain('\u{2066}'..='\u{2069}')
        {
            assert!(needs_escape(c), "{c:?}");
        }
    }

    /// Known Cf members at the edges of each range, and neighbours that are
    /// not Cf, so that a wrong bound in the table shows.
    #[test]
    fn format_table_matches_known_members() {
        assert!(FORMAT_CHARS.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(FORMAT_CHARS.iter().all(|&(lo, hi)| lo <= hi));
        for &(lo, hi) in FORMAT_CHARS {
            for c in [lo, hi] {
                assert!(is_format(char::from_u32(c).unwrap()), "{c:x}");
            }
        }
        for c in [
            '\u{00AD}',
            '\u{0600}',
            '\u{06DD}',
            '\u{180E}',
            '\u{200B}',
            '\u{200D}',
            '\u{2064}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{FFFB}',
            '\u{13438}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
        ] {
            assert!(is_format(c), "{c:?}");
        }
        // Neighbours of those ranges that are not Cf (letters, symbols,
        // spaces, an unassigned code point).
        for c in [
            '\u{00AC}',
            '\u{00AE}',
            '\u{0606}',
            '\u{061B}',
            '\u{200A}',
            '\u{2010}',
            '\u{2065}',
            '\u{2070}',
            '\u{FEFE}',
            '\u{FFFC}',
            '\u{E0000}',
            '\u{E0080}',
            ' ',
            'A',
            'é',
        ] {
            assert!(!is_format(c), "{c:?}");
        }
    }

    /// A literal `\u{1b}` in a name and a real ESC print differently, and
    /// the escaping can be undone unambiguously.
    #[test]
    fn backslash_is_escaped_so_escapes_are_unambiguous() {
        let literal = "a\\u{1b}b";
        let real = "a\u{1b}b";
        assert_eq!(sanitize(literal), "a\\\\u{1b}b");
        assert_eq!(sanitize(real), "a\\u{1b}b");
        assert_ne!(sanitize(literal), sanitize(real));
        for s in [literal, real, "\\", "\\\\u{2028}\u{2028}", "x\\\u{200B}"] {
            assert_eq!(unescape(&sanitize(s)), s, "{s:?}");
        }
    }

    /// The inverse of [`sanitize`], for the round-trip test.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('u') => {
                    assert_eq!(it.next(), Some('{'));
                    let hex: String = it.by_ref().take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => panic!("bad escape {other:?} in {s:?}"),
            }
        }
        out
    }
}
