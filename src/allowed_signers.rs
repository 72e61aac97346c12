//! OpenSSH allowed_signers files (ssh-keygen(1), "ALLOWED SIGNERS"): which
//! principal may sign with which key, in which namespaces.
//!
//! Each line: `PRINCIPALS [OPTIONS] KEYTYPE BASE64 [COMMENT]`. PRINCIPALS
//! is a comma-separated pattern list (`*`, `?`, `!` negation), optionally
//! quoted. Supported options: `namespaces="pattern-list"`. Refused, with
//! the line number (CLARIFICATIONS "Custody and signatures": never silently
//! trusted, never silently ignored): `cert-authority`, `valid-after`,
//! `valid-before` and anything else.

use std::fs;
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::PublicKey;

use crate::{Error, Result};

/// One trusted key.
#[derive(Debug, Clone)]
struct Line {
    principals: String,
    namespaces: Option<String>,
    key: KeyData,
}

/// A parsed allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    path: PathBuf,
    lines: Vec<Line>,
}

/// Largest allowed_signers file we read.
const MAX_FILE: u64 = 16 << 20;

impl AllowedSigners {
    /// Read and parse `path`. Any line casevault does not understand is an
    /// error (exit 1), so that nothing is trusted or ignored by accident.
    pub fn load(path: &Path) -> Result<Self> {
        let meta =
            fs::metadata(path).map_err(|e| Error::io("cannot read allowed signers", path, e))?;
        if meta.len() > MAX_FILE {
            return Err(Error::Refused(format!(
                "{}: too large for an allowed_signers file",
                path.display()
            )));
        }
        let text = fs::read(path).map_err(|e| Error::io("cannot read allowed signers", path, e))?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Refused(format!("{}: not UTF-8 text", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parse allowed_signers text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let line = parse_line(t).map_err(|why| {
                Error::Refused(format!("{} line {}: {why}", path.display(), i + 1))
            })?;
            lines.push(line);
        }
        Ok(AllowedSigners {
            path: path.to_path_buf(),
            lines,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `key` may sign in `namespace`, and as whom, by the rules of
    /// `ssh-keygen -Y verify` (sshsig.c). With `principal` (`--signer`),
    /// only a line whose principals match it counts, and that principal is
    /// returned; without, the first line listing the key, allowing the
    /// namespace, and admitting at least one principal name counts (a line
    /// of negations only, like `!*`, admits none), and its principals
    /// field is returned.
    pub fn trusted(
        &self,
        key: &KeyData,
        namespace: &str,
        principal: Option<&str>,
    ) -> Option<String> {
        self.lines.iter().find_map(|l| {
            if l.key != *key {
                return None;
            }
            if let Some(ns) = &l.namespaces {
                if !match_pattern_list(namespace, ns) {
                    return None;
                }
            }
            match principal {
                Some(p) => match_pattern_list(p, &l.principals).then(|| p.to_string()),
                None => admits_some_principal(&l.principals).then(|| l.principals.clone()),
            }
        })
    }
}

/// Where the first character of `s` that `stop` accepts stands outside
/// double quotes (a backslash inside quotes escapes the next character):
/// `Ok(None)` when there is none, `Err(())` when a quote is left open
/// before one.
fn find_unquoted(s: &str, stop: impl Fn(char) -> bool) -> std::result::Result<Option<usize>, ()> {
    let (mut in_quote, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            c if stop(c) && !in_quote => return Ok(Some(i)),
            _ => {}
        }
    }
    if in_quote {
        Err(())
    } else {
        Ok(None)
    }
}

/// Split off the next whitespace-separated token; double quotes group (and
/// are kept), a backslash inside quotes escapes the next character.
fn next_token(s: &str) -> std::result::Result<(&str, &str), String> {
    let s = s.trim_start();
    match find_unquoted(s, char::is_whitespace) {
        Ok(Some(i)) => Ok((&s[..i], &s[i..])),
        Ok(None) => Ok((s, "")),
        Err(()) => Err("unterminated quote".into()),
    }
}

fn unquote(s: &str) -> std::result::Result<String, String> {
    let Some(inner) = s.strip_prefix('"') else {
        if s.contains('"') {
            return Err(format!("stray quote in {s:?}"));
        }
        return Ok(s.to_string());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| format!("stray quote in {s:?}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or("dangling backslash")?),
            '"' => return Err(format!("stray quote in {s:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn is_key_type(t: &str) -> bool {
    ssh_key::Algorithm::new(t).is_ok()
}

/// Split an option list at commas outside quotes.
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Ok(Some(i)) = find_unquoted(rest, |c| c == ',') {
        out.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    out.push(rest);
    out
}

fn parse_line(t: &str) -> std::result::Result<Line, String> {
    let (principals, rest) = next_token(t)?;
    let principals = unquote(principals)?;
    if principals.is_empty() {
        return Err("empty principals field".into());
    }
    let (mut tok, mut rest) = next_token(rest)?;
    let mut namespaces = None;
    if !tok.is_empty() && !is_key_type(tok) {
        for opt in split_options(tok) {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (opt, None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("namespaces", Some(v)) => {
                    if namespaces.is_some() {
                        return Err("namespaces given twice".into());
                    }
                    // OpenSSH (sshsig.c, opt_dequote) requires the quotes.
                    if !v.starts_with('"') {
                        return Err(format!(
                            "namespaces={v} must be quoted, as OpenSSH requires: namespaces=\"{v}\""
                        ));
                    }
                    // An empty list is valid and, as in OpenSSH, allows
                    // no namespace at all.
                    namespaces = Some(unquote(v)?);
                }
                ("cert-authority", None) => {
                    return Err("`cert-authority` (trusting an SSH certificate authority) is not supported by casevault; list each signer's own public key instead".into())
                }
                (n @ ("valid-after" | "valid-before"), Some(_)) => {
                    return Err(format!(
                        "the `{n}` option is not supported by casevault; remove it (or the line) and keep key validity periods in your own records"
                    ))
                }
                _ => {
                    return Err(format!(
                        "unsupported option {opt:?} (casevault understands only namespaces=\"…\"); or an unknown key type"
                    ))
                }
            }
        }
        (tok, rest) = next_token(rest)?;
    }
    if tok.is_empty() {
        return Err("no public key".into());
    }
    if !is_key_type(tok) {
        return Err(format!("unknown key type {tok:?}"));
    }
    let (b64, _comment) = next_token(rest)?;
    if b64.is_empty() {
        return Err("no public key after the key type".into());
    }
    let key = PublicKey::from_openssh(&format!("{tok} {b64}"))
        .map_err(|e| format!("cannot parse the public key: {e}"))?;
    if key.algorithm().as_str() != tok {
        return Err(format!(
            "the key is a {}, not a {tok}",
            key.algorithm().as_str()
        ));
    }
    Ok(Line {
        principals,
        namespaces,
        key: key.key_data().clone(),
    })
}

/// OpenSSH `match_pattern` (match.c): `*` any run of bytes, `?` any one
/// byte, everything else itself (case-sensitive, as ssh-keygen matches
/// principals and namespaces). OpenSSH recurses at every `*` and takes
/// exponential time on patterns like `*a*a*a…b`; this is the standard
/// iterative matcher, which only ever backtracks to the most recent `*`
/// (issue #10 item 15): the same answers, in O(len(s) · len(p)) at worst
/// and linear time on such patterns.
fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    let (mut si, mut pi) = (0usize, 0usize);
    // After the most recent `*`: where the pattern resumes, and the next
    // position in `s` that star would swallow up to.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                star = Some((pi, si));
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((resume, from)) => {
                    pi = resume;
                    si = from + 1;
                    star = Some((resume, from + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// OpenSSH's limit on one pattern of a list (match.c `sub[1024]`): a
/// longer one makes the whole list fail to match.
const MAX_SUBPATTERN: usize = 1023;

/// OpenSSH `match_pattern_list` (without case folding): comma-separated
/// patterns, taken exactly as written (no whitespace is trimmed); a
/// matching `!pattern` excludes, otherwise any matching pattern includes.
pub fn match_pattern_list(s: &str, list: &str) -> bool {
    let mut positive = false;
    for pat in list.split(',') {
        let (negated, pat) = match pat.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        if pat.len() >= MAX_SUBPATTERN {
            return false;
        }
        if match_pattern(s.as_bytes(), pat.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// Whether some non-empty principal name would match `list`, i.e. whether
/// `ssh-keygen -Y verify -I NAME` could accept a line with these
/// principals for any NAME. A list of negations only (`!*`), or one whose
/// every positive pattern is also excluded, grants nothing (issue #10 item
/// 15). Each positive pattern is tried with its `?` and `*` filled by a
/// character the list does not use (a `*` as nothing, one, two, or more
/// of them than any pattern is long), so an exclusion that names other
/// characters does not hide the names the pattern still admits.
fn admits_some_principal(list: &str) -> bool {
    let fill = "abcdefghijklmnopqrstuvwxyz0123456789_-."
        .chars()
        .find(|&c| !list.contains(c))
        .unwrap_or('\u{e000}');
    let longest = list.split(',').map(str::len).max().unwrap_or(0);
    list.split(',').filter(|p| !p.starts_with('!')).any(|p| {
        [0, 1, 2, longest + 1].iter().any(|&k| {
            let star: String = std::iter::repeat_n(fill, k).collect();
            let mut name = String::new();
            for c in p.chars() {
                match c {
                    '*' => name.push_str(&star),
                    '?' => name.push(fill),
                    c => name.push(c),
                }
            }
            !name.is_empty() && match_pattern_list(&name, list)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens and option lists split outside quotes only; an open quote is
    /// an error for a token and ends the splitting of options.
    #[test]
    fn tokens_and_options_split_outside_quotes() {
        assert_eq!(next_token("  \"a b\" rest"), Ok(("\"a b\"", " rest")));
        assert_eq!(next_token("\"a\\\" b\" c"), Ok(("\"a\\\" b\"", " c")));
        assert_eq!(next_token("\"a b"), Err("unterminated quote".to_string()));
        assert_eq!(next_token("ab"), Ok(("ab", "")));
        assert_eq!(
            split_options("a=\"x,y\",b,\"c,d"),
            vec!["a=\"x,y\"", "b", "\"c,d"]
        );
        assert_eq!(split_options(""), vec![""]);
    }

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn key() -> KeyData {
        PublicKey::from_openssh(K1).unwrap().key_data().clone()
    }

    fn parse(t: &str) -> Result<AllowedSigners> {
        AllowedSigners::parse(t, Path::new("allowed"))
    }

    #[test]
    fn patterns() {
        assert!(match_pattern_list("alice@lab", "alice@lab"));
        assert!(match_pattern_list("alice@lab", "bob,*@lab"));
        assert!(match_pattern_list("a1", "a?"));
        assert!(!match_pattern_list("a12", "a?"));
        assert!(!match_pattern_list("mallory@lab", "*@lab,!mallory@*"));
        assert!(!match_pattern_list("x", ""));
    }

    #[test]
    fn lines() {
        let a = parse(&format!(
            "# comment\n\nalice@lab {K1} alice\n\"bob@lab,carol@lab\" namespaces=\"casevault-vault,casevault-custody\" {K1}\n"
        ))
        .unwrap();
        assert_eq!(
            a.trusted(&key(), "casevault-vault", None).as_deref(),
            Some("alice@lab")
        );
        assert_eq!(
            a.trusted(&key(), "casevault-vault", Some("carol@lab"))
                .as_deref(),
            Some("carol@lab")
        );
        assert_eq!(a.trusted(&key(), "file", Some("carol@lab")), None);
        assert_eq!(a.trusted(&key(), "file", Some("dave@lab")), None);
    }

    /// Issue #10 item 15: matching is linear on the patterns OpenSSH's
    /// recursive matcher takes exponential time on.
    #[test]
    fn matching_is_linear_on_star_heavy_patterns() {
        let pat = format!("{}b", "*a".repeat(5000));
        let s = "a".repeat(10_000);
        let t = std::time::Instant::now();
        assert!(!match_pattern(s.as_bytes(), pat.as_bytes()));
        let s2 = format!("{s}b");
        assert!(match_pattern(s2.as_bytes(), pat.as_bytes()));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
    }

    /// The iterative matcher agrees with a direct transcription of
    /// OpenSSH's recursive `match_pattern` on every short case.
    #[test]
    fn matcher_agrees_with_openssh_recursion() {
        fn openssh(s: &[u8], p: &[u8]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((b'*', rest)) => (0..=s.len()).any(|i| openssh(&s[i..], rest)),
                Some((b'?', rest)) => !s.is_empty() && openssh(&s[1..], rest),
                Some((c, rest)) => s.first() == Some(c) && openssh(&s[1..], rest),
            }
        }
        let alphabet = [b'a', b'b', b'*', b'?'];
        let mut pats = vec![Vec::new()];
        for _ in 0..5 {
            let next: Vec<Vec<u8>> = pats
                .iter()
                .flat_map(|p| {
                    alphabet.iter().map(move |&c| {
                        let mut q = p.clone();
                        q.push(c);
                        q
                    })
                })
                .collect();
            pats.extend(next.into_iter().filter(|p| p.len() <= 5));
            pats.sort();
            pats.dedup();
        }
        let strings: Vec<Vec<u8>> = (0..64u32)
            .flat_map(|n| {
                (0..=5).map(move |len| {
                    (0..len)
                        .map(|i| if n >> i & 1 == 1 { b'b' } else { b'a' })
                        .collect()
                })
            })
            .collect();
        for p in &pats {
            for s in &strings {
                assert_eq!(match_pattern(s, p), openssh(s, p), "{s:?} {p:?}");
            }
        }
    }

    /// Issue #10 item 15: a line of negations only trusts nobody, with or
    /// without `--signer`; a line whose positive patterns leave some name
    /// still does.
    #[test]
    fn negation_only_principals_trust_nobody() {
        let a = parse(&format!("!* {K1}\n")).unwrap();
        assert_eq!(a.trusted(&key(), "casevault-vault", None), None);
        assert_eq!(a.trusted(&key(), "casevault-vault", Some("alice")), None);
        let a = parse(&format!("\"!alice,!bob\" {K1}\n")).unwrap();
        assert_eq!(a.trusted(&key(), "casevault-vault", None), None);
        let a = parse(&format!("alice,!alice {K1}\n")).unwrap();
        assert_eq!(a.trusted(&key(), "casevault-vault", None), None);
        let a = parse(&format!("*@lab,!mallory@lab {K1}\n")).unwrap();
        assert_eq!(
            a.trusted(&key(), "casevault-vault", None).as_deref(),
            Some("*@lab,!mallory@lab")
        );
        let a = parse(&format!("*@lab,!@lab {K1}\n")).unwrap();
        assert!(a.trusted(&key(), "casevault-vault", None).is_some());
        let a = parse(&format!("*,!?* {K1}\n")).unwrap();
        assert_eq!(a.trusted(&key(), "casevault-vault", None), None);
    }

    /// OpenSSH takes pattern lists as written: no whitespace trimming, a
    /// trailing comma adds an empty pattern, over-long patterns match
    /// nothing.
    #[test]
    fn pattern_lists_as_openssh_reads_them() {
        assert!(!match_pattern_list("casevault-vault", "x, casevault-vault"));
        assert!(match_pattern_list("alice@lab", "alice@lab,"));
        assert!(match_pattern_list("", "alice@lab,"));
        assert!(!match_pattern_list("ALICE@lab", "alice@lab"));
        let long = "a".repeat(MAX_SUBPATTERN);
        assert!(!match_pattern_list(&long, &long));
        assert!(match_pattern_list(&long[1..], &long[1..]));
    }

    /// Issue #10 item 15: `namespaces=` must be quoted (OpenSSH: "missing
    /// start quote"); an empty quoted list allows nothing.
    #[test]
    fn namespaces_must_be_quoted() {
        let e = parse(&format!("a namespaces=casevault-vault {K1}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("must be quoted"), "{e}");
        let a = parse(&format!("a namespaces=\"\" {K1}\n")).unwrap();
        assert_eq!(a.trusted(&key(), "casevault-vault", None), None);
    }

    #[test]
    fn refusals_name_the_line() {
        for (t, want) in [
            (format!("a cert-authority {K1}"), "cert-authority"),
            (format!("a valid-after=\"20260101\" {K1}"), "valid-after"),
            (format!("a no-touch-required {K1}"), "unsupported option"),
            ("a ssh-ed25519 AAAA".to_string(), "cannot parse"),
            ("a".to_string(), "no public key"),
            (format!("a namespaces=\"x {K1}"), "quote"),
        ] {
            let e = parse(&format!("\n{t}\n")).unwrap_err().to_string();
            assert!(e.contains("line 2") && e.contains(want), "{t}: {e}");
        }
    }
}
