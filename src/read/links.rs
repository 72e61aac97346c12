//! Where recorded symlinks lead (FORMAT §6 step 5): the case's directories
//! and links as a tree built once per reader run, each link resolved once.

use std::collections::HashMap;

use crate::format::{CaseJson, Kind, MAX_LINK_HOPS};

/// Where a recorded symlink leads when the OS follows it in the restored
/// tree (FORMAT §6 step 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Resolves inside the case tree (or dangles inside it).
    Inside,
    /// Resolving it leaves the case tree within [`MAX_LINK_HOPS`] links
    /// followed: the OS would follow it out.
    Outside(Escape),
    /// A cycle, or a chain that needs more than [`MAX_LINK_HOPS`] links
    /// followed, that does not leave the case before the limit: the OS
    /// refuses to follow it (`ELOOP`), so it leads nowhere.
    Loop,
}

/// How a link's resolution leaves the case tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escape {
    /// The link's own target.
    pub target: String,
    /// The link (case-relative path, target) whose target makes the
    /// resolution leave, when it is another link than the one checked.
    pub via: Option<(String, String)>,
    /// Whether it leaves by an absolute target (else by `..` above the
    /// case root).
    pub absolute: bool,
}

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.absolute {
            "is absolute"
        } else {
            "climbs above the case root"
        };
        match &self.via {
            None if self.absolute => write!(f, "its target {:?} {how}", self.target),
            None => write!(f, "resolving its target {:?} {how}", self.target),
            Some((path, target)) => write!(
                f,
                "its target {:?} leads through the link {path:?} -> {target:?}, whose target {how}",
                self.target
            ),
        }
    }
}

/// The outcome of resolving one link's target from its directory, with
/// `hops` links followed on the way (not counting the link itself).
#[derive(Debug, Clone, Copy)]
enum Res {
    /// Ends at `node`, `virt` levels below it in names the case does not
    /// record (the resolution is lexical there: nonexistent names and files
    /// count as directories, which is conservative).
    Inside {
        node: u32,
        virt: u32,
        hops: u32,
    },
    /// Leaves the tree after `hops` links followed, in the target of link
    /// node `by`.
    Outside {
        hops: u32,
        by: u32,
        absolute: bool,
    },
    Loop,
}

#[derive(Debug, Clone, Copy)]
enum Memo {
    Unknown,
    InProgress,
    Done(Res),
}

/// One link's target being walked.
struct Frame<'a> {
    link: u32,
    rest: Option<&'a str>,
    node: u32,
    virt: u32,
    hops: u32,
}

impl Frame<'_> {
    /// Continue after following a link whose own resolution is `r`
    /// (`self.hops` already counts the link). `Some` ends this frame.
    fn apply(&mut self, r: Res) -> Option<Res> {
        match r {
            Res::Inside { node, virt, hops } => {
                self.hops += hops;
                if self.hops > MAX_LINK_HOPS as u32 {
                    return Some(Res::Loop);
                }
                self.node = node;
                self.virt = virt;
                None
            }
            Res::Outside { hops, by, absolute } if self.hops + hops <= MAX_LINK_HOPS as u32 => {
                Some(Res::Outside {
                    hops: self.hops + hops,
                    by,
                    absolute,
                })
            }
            Res::Outside { .. } | Res::Loop => Some(Res::Loop),
        }
    }
}

enum Step {
    Done(Res),
    /// This frame must follow the link node, whose outcome is not known yet.
    Need(u32),
}

const ROOT: u32 = 0;

/// The recorded directories and symlinks of a case as a tree, built once
/// per reader run, and the memoised outcome of resolving each link
/// (FORMAT §6 step 5; issue #10 item 10). Checking every link costs time
/// linear in the bytes of the paths and targets: each link's target is
/// walked once, and a link met again on another link's way is answered
/// from its recorded outcome.
pub struct Links<'a> {
    parent: Vec<u32>,
    children: HashMap<(u32, &'a str), u32>,
    /// Link nodes: (case-relative path, target).
    link: Vec<Option<(&'a str, &'a str)>>,
    memo: Vec<Memo>,
    /// Path components walked so far, all links together (for tests).
    steps: u64,
}

impl<'a> Links<'a> {
    /// Build the tree of `json`'s directories and symlinks.
    pub fn new(json: &'a CaseJson) -> Self {
        let mut l = Links {
            parent: vec![u32::MAX],
            children: HashMap::new(),
            link: vec![None],
            memo: vec![Memo::Unknown],
            steps: 0,
        };
        for e in &json.entries {
            let Some(rel) = e.path.strip_prefix("data/") else {
                continue;
            };
            if e.kind == Kind::File {
                continue;
            }
            let node = l.intern(rel);
            if e.kind == Kind::Symlink {
                l.link[node as usize] = Some((rel, e.target.as_deref().unwrap_or("")));
            }
        }
        l
    }

    fn intern(&mut self, rel: &'a str) -> u32 {
        let mut node = ROOT;
        for c in rel.split('/') {
            node = match self.children.get(&(node, c)) {
                Some(&n) => n,
                None => {
                    let n = self.parent.len() as u32;
                    self.parent.push(node);
                    self.link.push(None);
                    self.memo.push(Memo::Unknown);
                    self.children.insert((node, c), n);
                    n
                }
            };
        }
        node
    }

    /// Where the symlink at bag path `path` (`data/...`) leads. A path that
    /// is not a recorded link resolves as a link to itself would not: it is
    /// reported [`LinkStatus::Inside`].
    pub fn status(&mut self, path: &str) -> LinkStatus {
        let Some(rel) = path.strip_prefix("data/") else {
            return LinkStatus::Inside;
        };
        let mut node = ROOT;
        for c in rel.split('/') {
            match self.children.get(&(node, c)) {
                Some(&n) => node = n,
                None => return LinkStatus::Inside,
            }
        }
        let Some((_, target)) = self.link[node as usize] else {
            return LinkStatus::Inside;
        };
        match self.resolve(node) {
            Res::Inside { .. } => LinkStatus::Inside,
            Res::Loop => LinkStatus::Loop,
            Res::Outside { by, absolute, .. } => LinkStatus::Outside(Escape {
                target: target.to_string(),
                via: (by != node)
                    .then(|| self.link[by as usize])
                    .flatten()
                    .map(|(p, t)| (p.to_string(), t.to_string())),
                absolute,
            }),
        }
    }

    fn frame(&mut self, link: u32) -> Frame<'a> {
        self.memo[link as usize] = Memo::InProgress;
        Frame {
            link,
            rest: self.link[link as usize].map(|(_, t)| t),
            node: self.parent[link as usize],
            virt: 0,
            hops: 0,
        }
    }

    /// The outcome of link node `start`, walking with an explicit stack (a
    /// chain of links may be as long as the case has links).
    fn resolve(&mut self, start: u32) -> Res {
        if let Memo::Done(r) = self.memo[start as usize] {
            return r;
        }
        let first = self.frame(start);
        let mut stack = vec![first];
        loop {
            let top = stack.len() - 1;
            match self.walk(&mut stack[top]) {
                Step::Need(next) => {
                    let f = self.frame(next);
                    stack.push(f);
                }
                Step::Done(mut r) => {
                    // Finish this frame, and every frame below that this
                    // outcome ends.
                    loop {
                        let done = stack.pop().expect("a frame is on the stack");
                        self.memo[done.link as usize] = Memo::Done(r);
                        match stack.last_mut() {
                            None => return r,
                            Some(below) => match below.apply(r) {
                                Some(end) => r = end,
                                None => break,
                            },
                        }
                    }
                }
            }
        }
    }

    /// Walk the rest of `f`'s target.
    fn walk(&mut self, f: &mut Frame<'a>) -> Step {
        let Some(mut rest) = f.rest else {
            return Step::Done(Res::Inside {
                node: f.node,
                virt: f.virt,
                hops: f.hops,
            });
        };
        if f.hops == 0 && f.virt == 0 && rest.starts_with('/') {
            return Step::Done(Res::Outside {
                hops: 0,
                by: f.link,
                absolute: true,
            });
        }
        loop {
            let (c, more) = match rest.split_once('/') {
                Some((c, more)) => (c, Some(more)),
                None => (rest, None),
            };
            self.steps += 1;
            match c {
                "" | "." => {}
                ".." if f.virt > 0 => f.virt -= 1,
                ".." if f.node == ROOT => {
                    return Step::Done(Res::Outside {
                        hops: f.hops,
                        by: f.link,
                        absolute: false,
                    })
                }
                ".." => f.node = self.parent[f.node as usize],
                _ if f.virt > 0 => f.virt += 1,
                name => match self.children.get(&(f.node, name)) {
                    None => f.virt = 1,
                    Some(&n) if self.link[n as usize].is_some() => {
                        f.hops += 1;
                        if f.hops > MAX_LINK_HOPS as u32 {
                            return Step::Done(Res::Loop);
                        }
                        f.rest = more;
                        match self.memo[n as usize] {
                            Memo::Done(r) => {
                                if let Some(end) = f.apply(r) {
                                    return Step::Done(end);
                                }
                            }
                            // A cycle: following `n` comes back here before
                            // the walk gets any further, for ever.
                            Memo::InProgress => return Step::Done(Res::Loop),
                            Memo::Unknown => return Step::Need(n),
                        }
                    }
                    Some(&n) => f.node = n,
                },
            }
            match more {
                Some(m) => rest = m,
                None => break,
            }
        }
        f.rest = None;
        Step::Done(Res::Inside {
            node: f.node,
            virt: f.virt,
            hops: f.hops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Compression, Entry, Totals};

    fn tree(links: &[(&str, &str)], dirs: &[&str]) -> CaseJson {
        let mut entries = vec![];
        for d in dirs {
            entries.push(Entry {
                path: d.to_string(),
                kind: Kind::Dir,
                size: None,
                sha256: None,
                target: None,
                mode: 0o755,
                mtime: 0,
                mtime_nsec: 0,
                offset: None,
            });
        }
        for (p, t) in links {
            entries.push(Entry {
                path: p.to_string(),
                kind: Kind::Symlink,
                size: None,
                sha256: None,
                target: Some(t.to_string()),
                mode: 0o777,
                mtime: 0,
                mtime_nsec: 0,
                offset: None,
            });
        }
        CaseJson {
            format: "casevault".into(),
            version: 1,
            case_id: "c".into(),
            sealed_at: String::new(),
            tool: String::new(),
            compression: Compression::None,
            entries,
            totals: Totals::default(),
            signer: None,
        }
    }

    fn status(links: &[(&str, &str)], dirs: &[&str], link: &str) -> LinkStatus {
        Links::new(&tree(links, dirs)).status(link)
    }

    fn outside(s: LinkStatus) -> bool {
        matches!(s, LinkStatus::Outside(_))
    }

    #[test]
    fn link_escape_rules() {
        let d = &["data", "data/sub"];
        assert!(outside(status(&[("data/l", "/etc/passwd")], d, "data/l")));
        assert!(outside(status(&[("data/l", "..")], d, "data/l")));
        assert!(outside(status(
            &[("data/sub/l", "../../x")],
            d,
            "data/sub/l"
        )));
        assert_eq!(
            status(&[("data/sub/l", "../x")], d, "data/sub/l"),
            LinkStatus::Inside
        );
        assert_eq!(
            status(&[("data/l", "sub/./x")], d, "data/l"),
            LinkStatus::Inside
        );
        // Names the case does not record resolve lexically.
        assert_eq!(
            status(&[("data/l", "no/such/../..")], d, "data/l"),
            LinkStatus::Inside
        );
        assert!(outside(status(&[("data/l", "no/../..")], d, "data/l")));
        let links = [
            ("data/up", "."),
            ("data/sub/deep", "../x"),
            ("data/a", "up/.."),
            ("data/sub/l", "deep"),
        ];
        let j = tree(&links, d);
        let mut l = Links::new(&j);
        // Through a link that points at the root, `..` leaves the tree even
        // though the text `up/..` looks harmless; the `..` is a's own.
        assert_eq!(
            l.status("data/a"),
            LinkStatus::Outside(Escape {
                target: "up/..".into(),
                via: None,
                absolute: false
            })
        );
        assert_eq!(l.status("data/sub/l"), LinkStatus::Inside);
        assert_eq!(l.status("data/up"), LinkStatus::Inside);
        // The message names the link whose target leaves.
        let j = tree(
            &[
                ("data/l1", "l2"),
                ("data/l2", "sub/l3"),
                ("data/sub/l3", "../../../etc"),
            ],
            d,
        );
        let s = Links::new(&j).status("data/l1");
        let LinkStatus::Outside(why) = s else {
            panic!("{s:?}")
        };
        assert_eq!(
            why.to_string(),
            r#"its target "l2" leads through the link "sub/l3" -> "../../../etc", whose target climbs above the case root"#
        );
    }

    /// Issue #10 item 8: a loop never leaves the case; only a resolution
    /// that reaches outside within the hop limit is "outside".
    #[test]
    fn loops_are_not_outside() {
        let d = &["data", "data/sub"];
        let two = [("data/p", "q"), ("data/q", "p")];
        assert_eq!(status(&two, d, "data/p"), LinkStatus::Loop);
        assert_eq!(status(&[("data/p", "p")], d, "data/p"), LinkStatus::Loop);
        assert_eq!(
            status(&[("data/p", "p/x/../..")], d, "data/p"),
            LinkStatus::Loop
        );
        // A cycle met on the way, before anything leaves, loops too.
        let via = [("data/a", "b/../.."), ("data/b", "c"), ("data/c", "b")];
        assert_eq!(status(&via, d, "data/a"), LinkStatus::Loop);
        // A cycle after an escape does not matter: the escape comes first.
        let esc = [("data/a", "../b"), ("data/b", "a")];
        assert!(outside(status(&esc, d, "data/a")));
        assert!(outside(status(&esc, d, "data/b")));
    }

    fn chain(n: usize, last: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = (0..n)
            .map(|i| (format!("data/h{i:02}"), format!("h{:02}", i + 1)))
            .collect();
        v.push((format!("data/h{n:02}"), last.to_string()));
        v
    }

    fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }

    #[test]
    fn hop_limit() {
        let d = &["data"];
        // h00 -> h01 -> ... -> h41 -> a.txt: from h00, 41 links to follow.
        let c = chain(41, "a.txt");
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        assert_eq!(l.status("data/h00"), LinkStatus::Loop);
        assert_eq!(l.status("data/h01"), LinkStatus::Inside);
        // The same chain ending in `..`: from h01 the escape comes at the
        // 40th link followed (outside); from h00 only at the 41st, which
        // the OS never follows.
        let c = chain(41, "..");
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        assert_eq!(l.status("data/h00"), LinkStatus::Loop);
        assert!(outside(l.status("data/h01")));
        assert!(outside(l.status("data/h41")));
        // A chain far longer than the limit whose prefix leaves is outside.
        let mut c = chain(100, "a.txt");
        c[10].1 = "../data/h11".into();
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        assert!(outside(l.status("data/h00")));
        assert_eq!(l.status("data/h11"), LinkStatus::Loop);
        assert_eq!(l.status("data/h60"), LinkStatus::Inside);
    }

    /// Issue #10 item 10: each link's target is walked once, however many
    /// links share a chain, so checking all links is linear.
    #[test]
    fn link_checks_are_linear() {
        let n = 100_000;
        let d = &["data"];
        // One long chain: every link is on every later link's way.
        let c = chain(n, "a.txt");
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        for (p, _) in &c {
            l.status(p);
        }
        assert!(l.steps <= 2 * (n as u64 + 1), "{} steps", l.steps);
        // Many links into one chain of 35 links with 4000-byte targets.
        let pad = "x/..".repeat(1000);
        let mut v: Vec<(String, String)> = (0..35)
            .map(|i| (format!("data/c{i}"), format!("{pad}/c{}", i + 1)))
            .collect();
        v.push(("data/c35".into(), "a.txt".into()));
        for i in 0..n {
            v.push((format!("data/m{i}"), "c0".into()));
        }
        let j = tree(&as_refs(&v), d);
        let mut l = Links::new(&j);
        for (p, _) in &v {
            assert_ne!(l.status(p), LinkStatus::Loop, "{p}");
        }
        assert!(l.steps <= 2 * n as u64 + 36 * 2002, "{} steps", l.steps);
    }
}
