//! Property test (issue #6): random trees — names with spaces, Unicode and
//! BagIt's special characters, deep nesting, empty files and directories,
//! symlinks (relative, dangling) — seal then unseal to an identical tree.
//! Few cases, so that the normal suite stays fast; each is a real run of
//! the binary.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use proptest::prelude::*;

use crate::util::*;

/// One node of a generated tree.
#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    Dir(Vec<(String, Node)>),
    Link(String),
}

fn name() -> impl Strategy<Value = String> {
    // Spaces, Unicode (NFC and NFD forms), `%`, LF and CR, a leading dash.
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "Z", "0", " ", "-", "_", ".", "%", "ü", "u\u{308}", "名", "前", "\n", "\r", "é",
        ]),
        1..8,
    )
    .prop_map(|parts| parts.concat())
    .prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Node::File),
        1 => Just(Node::Dir(vec![])),
        1 => prop::sample::select(vec!["x", "../x", "a/b", "nowhere", "."]).prop_map(|t| Node::Link(t.to_string())),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop::collection::vec((name(), inner), 0..5).prop_map(Node::Dir)
    })
}

fn build(dir: &Path, entries: &[(String, Node)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, node) in entries {
        let p = dir.join(name);
        if p.symlink_metadata().is_ok() {
            continue; // duplicate generated name
        }
        match node {
            Node::File(data) => fs::write(&p, data).unwrap(),
            Node::Dir(children) => build(&p, children),
            Node::Link(target) => symlink(target, &p).unwrap(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(entries in prop::collection::vec((name(), node()), 0..6)) {
        let fx = Fx::new();
        let case = fx.cases().join("PROP-1");
        build(&case, &entries);
        let vault = fx.vault("prop.vault");
        fx.seal(&case, &vault, &[]);
        let dest = fx.dest("prop");
        let a = unseal_cmd(&vault, &dest, &fx.key.path)
            // Generated links may point out of the case (`../x`); the tree is
            // ours, so recreate them verbatim and compare.
            .arg("--allow-external-links")
            .assert();
        prop_assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr_of(&a));
        assert_same_tree(&case, &dest, true);
    }
}
