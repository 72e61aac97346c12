#!/usr/bin/env bash
# Build casevault and run the main job on the shipped sample case:
# keygen, seal, verify (sidecar only, then every file), list, report, unseal,
# and check that the unsealed folder equals the original.
#
# Needs only Rust (cargo) and the base tools of a Debian system.
# Exits non-zero on any failure. Everything happens in a temporary
# directory that is removed at the end.
#
# CASEVAULT_BIN=/usr/bin/casevault bash examples/demo.sh runs the demo
# against an installed casevault (the Debian package's, say) instead of
# building one; scripts/test-deb does that.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ -n "${CASEVAULT_BIN:-}" ]; then
    bin=$CASEVAULT_BIN
    [ -x "$bin" ] || { echo "demo: CASEVAULT_BIN=$bin is not an executable" >&2; exit 1; }
    echo "==> using $bin ($("$bin" --version))"
else
    echo "==> building: cargo build --release --locked"
    cargo build --release --locked --quiet
    target_dir=${CARGO_TARGET_DIR:-target}
    case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
    bin="$target_dir/release/casevault"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/casevault-demo.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# Git keeps neither empty directories nor file modes beyond the exec bit,
# so the demo adds an empty directory, a relative symlink and an unusual
# mode to its own copy of the sample case.
case_dir="$work/CASE-2024-0042"
cp -R examples/sample-case "$case_dir"
mkdir "$case_dir/05_exports"
ln -s ../01_cdr/cdr_2024-03.csv "$case_dir/04_analysis/cdr_latest.csv"
chmod 0640 "$case_dir/02_extraction/device_01 Samsung/report.xml"
echo "==> sample case copied to $case_dir (plus an empty dir and a symlink)"

run() {
    echo "\$ casevault $*"
    "$bin" "$@"
}

echo "==> keygen: one identity for the investigator"
echo "\$ casevault keygen -o $work/investigator.key"
recipient=$("$bin" keygen -o "$work/investigator.key")
echo "$recipient"

echo "==> seal: the case into one encrypted vault plus its .sha256 sidecar"
run seal "$case_dir" -o "$work/CASE-2024-0042.vault" -r "$recipient"

echo "==> verify without a key: sidecar and age header only"
run verify "$work/CASE-2024-0042.vault"

echo "==> verify with the key: decrypt and check every file"
run verify "$work/CASE-2024-0042.vault" -i "$work/investigator.key"

echo "==> list: every entry with size and SHA-256"
run list "$work/CASE-2024-0042.vault" -i "$work/investigator.key"

echo "==> report: one self-contained HTML page on the vault (every file checked)"
run report "$work/CASE-2024-0042.vault" -i "$work/investigator.key" -o "$work/CASE-2024-0042.report.html"
grep -q "VERIFIED: every file was decrypted and checked." "$work/CASE-2024-0042.report.html"

echo "==> unseal: restore the case folder"
run unseal "$work/CASE-2024-0042.vault" -o "$work/restored" -i "$work/investigator.key"

echo "==> compare: diff -r, then modes, mtimes and symlink targets"
diff -r --no-dereference "$case_dir" "$work/restored"
meta() {
    (cd "$1" && find . -mindepth 1 \( -type l -printf '%p %y -> %l\n' \) \
        -o \( -printf '%p %y %m %T@\n' \) | LC_ALL=C sort)
}
if ! diff <(meta "$case_dir") <(meta "$work/restored"); then
    echo "demo: FAILED: modes, mtimes or symlinks differ (see above)" >&2
    exit 1
fi
echo "==> demo OK: the unsealed case is identical to the original"
