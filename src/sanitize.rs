//! Escaping names before they reach a terminal: evidence folders contain
//! strange names, and a hostile one must not rewrite the screen.

/// Replace control, bidi-override and zero-width characters with `\u{…}`
/// escapes (backslash itself is left alone).
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bad = c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}');
        if bad {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn escapes_controls() {
        assert_eq!(sanitize("a\nb\x1b[2Jc"), "a\\u{a}b\\u{1b}[2Jc");
        assert_eq!(sanitize("ok ü 名"), "ok ü 名");
        assert_eq!(sanitize("x\u{202E}y"), "x\\u{202e}y");
    }
}
