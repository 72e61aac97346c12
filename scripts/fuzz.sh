#!/usr/bin/env bash
# Fuzz casevault's hostile-input readers with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh TARGET SECONDS   run TARGET (payload | parsers | index | parity) for SECONDS
#   scripts/fuzz.sh seed             rebuild fuzz/seeds/ from freshly sealed vaults
#
# The toolchain is stable Rust: cargo-fuzz needs nightly flags, so this sets
# RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=none skips AddressSanitizer (casevault
# forbids unsafe code; libFuzzer's coverage guidance stays). The corpus grows
# in fuzz/corpus/TARGET (not committed), findings land in
# fuzz/artifacts/TARGET, the log in fuzz/logs/TARGET.log; libFuzzer's final
# lines give executions (stat::number_of_executed_units) and coverage
# (cov:, ft:). See docs/TESTING.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    echo "usage: $0 (payload|parsers|index|parity) SECONDS | $0 seed" >&2
    exit 2
}

seed() {
    cargo build --quiet
    local bin=target/debug/casevault tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    "$bin" keygen -o "$tmp/key" >"$tmp/recipient"
    mkdir -p "$tmp/SEED-1/sub dir" "$tmp/SEED-1/empty"
    printf 'alpha\n' >"$tmp/SEED-1/a.txt"
    printf 'caf\xc3\xa9 %% 100\n' >"$tmp/SEED-1/sub dir/b 100%.txt"
    : >"$tmp/SEED-1/sub dir/empty.txt"
    head -c 3000 /dev/urandom >"$tmp/SEED-1/random.bin"
    ln -s a.txt "$tmp/SEED-1/link"
    local r
    r=$(cat "$tmp/recipient")
    "$bin" seal "$tmp/SEED-1" -o "$tmp/z.vault" -r "$r"
    "$bin" seal "$tmp/SEED-1" -o "$tmp/n.vault" -r "$r" --compress none
    rm -rf fuzz/seeds
    mkdir -p fuzz/seeds/payload fuzz/seeds/parsers "$tmp/x"
    age -d -i "$tmp/key" "$tmp/z.vault" >fuzz/seeds/payload/zstd.bin
    age -d -i "$tmp/key" "$tmp/n.vault" >fuzz/seeds/payload/none.bin
    tar -x -C "$tmp/x" -f fuzz/seeds/payload/none.bin
    local bag="$tmp/x/SEED-1"
    { printf '\x00'; cat "$bag/manifest-sha256.txt"; } >fuzz/seeds/parsers/manifest
    { printf '\x00'; cat "$bag/tagmanifest-sha256.txt"; } >fuzz/seeds/parsers/tagmanifest
    { printf '\x01'; cat "$bag/casevault.json"; } >fuzz/seeds/parsers/json
    { printf '\x02'; cat "$bag/bag-info.txt"; } >fuzz/seeds/parsers/bag-info
    printf '\x0330 path=SEED-1/data/a/b/c.txt\n12 size=123\n20 mtime=1.500000000\n' \
        >fuzz/seeds/parsers/pax
    mkdir -p fuzz/seeds/index
    { printf '\x00'; cat "$bag/casevault-locator.txt"; } >fuzz/seeds/index/locator
    { printf '\x01'; cat fuzz/seeds/payload/zstd.bin; } >fuzz/seeds/index/seek-table
    { printf '\x02\x02\x00'; head -c 128 /dev/zero | zstd -q -c --content-size; } \
        >fuzz/seeds/index/frame
    { printf '\x03'; cat fuzz/seeds/payload/zstd.bin; } >fuzz/seeds/index/frames
    ls -l fuzz/seeds/*
}

[ $# -ge 1 ] || usage
case "$1" in
seed) seed ;;
payload | parsers | index | parity)
    [ $# -eq 2 ] || usage
    target=$1 secs=$2
    command -v cargo-fuzz >/dev/null 2>&1 || {
        echo "cargo-fuzz not found: cargo install --locked cargo-fuzz" >&2
        exit 1
    }
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" fuzz/logs
    cp -n "fuzz/seeds/$target/"* "fuzz/corpus/$target/" 2>/dev/null || true
    san=()
    if [ -n "${FUZZ_SANITIZER:-}" ]; then san=(--sanitizer "$FUZZ_SANITIZER"); fi
    RUSTC_BOOTSTRAP=1 cargo fuzz run "${san[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
        2>&1 | tee "fuzz/logs/$target.log"
    ;;
*) usage ;;
esac
