#!/usr/bin/env bash
# Fuzz casevault's hostile-input readers with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh TARGET SECONDS   run TARGET (payload | parsers | index | parity | salvage) for SECONDS
#   scripts/fuzz.sh seed             rebuild fuzz/seeds/ from freshly sealed vaults
#   scripts/fuzz.sh seed-salvage     rebuild fuzz/seeds/salvage/ only
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
    echo "usage: $0 (payload|parsers|index|parity|salvage) SECONDS | $0 seed | $0 seed-salvage" >&2
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
    salvage_seeds
    ls -l fuzz/seeds/*
}

# Seeds of the salvage target: three damage bytes, then a plaintext of a
# few 64 KiB age chunks (a 150 KB file), raw tar and cut into 16 KiB zstd
# frames (each with its content size and checksum, no seek table) so that
# a scan past damage has frames to resync at (FORMAT §14.4).
salvage_seeds() {
    cargo build --quiet
    local bin=target/debug/casevault tmp r
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    "$bin" keygen -o "$tmp/key" >"$tmp/recipient"
    r=$(cat "$tmp/recipient")
    mkdir -p "$tmp/SEED-2/sub"
    printf 'alpha\n' >"$tmp/SEED-2/a.txt"
    head -c 150000 /dev/urandom >"$tmp/SEED-2/sub/big.bin"
    seq 1 4000 >"$tmp/SEED-2/z.txt"
    "$bin" seal "$tmp/SEED-2" -o "$tmp/n.vault" -r "$r" --compress none
    "$bin" seal "$tmp/SEED-2" -o "$tmp/z.vault" -r "$r"
    age -d -i "$tmp/key" "$tmp/n.vault" >"$tmp/tar"
    mkdir -p "$tmp/pieces"
    split -b 16384 -a 3 "$tmp/tar" "$tmp/pieces/p"
    for p in "$tmp"/pieces/p*; do zstd -q -c --content-size "$p"; done >"$tmp/frames"
    rm -rf fuzz/seeds/salvage
    mkdir -p fuzz/seeds/salvage
    { printf '\x01\x01\x00'; cat "$tmp/frames"; } >fuzz/seeds/salvage/frames-mid
    { printf '\x01\x01\x00'; cat "$tmp/tar"; } >fuzz/seeds/salvage/tar-mid
    { printf '\x01\x02\x00'; age -d -i "$tmp/key" "$tmp/z.vault"; } >fuzz/seeds/salvage/v3-tail
}

[ $# -ge 1 ] || usage
case "$1" in
seed) seed ;;
seed-salvage) salvage_seeds ;;
payload | parsers | index | parity | salvage)
    [ $# -eq 2 ] || usage
    target=$1 secs=$2
    command -v cargo-fuzz >/dev/null 2>&1 || {
        echo "cargo-fuzz not found: cargo install --locked cargo-fuzz" >&2
        exit 1
    }
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" fuzz/logs
    cp -n "fuzz/seeds/$target/"* "fuzz/corpus/$target/" 2>/dev/null || true
    max_len=65536
    # Salvage needs vaults of several 64 KiB chunks to resync in.
    if [ "$target" = salvage ]; then max_len=300000; fi
    san=()
    if [ -n "${FUZZ_SANITIZER:-}" ]; then san=(--sanitizer "$FUZZ_SANITIZER"); fi
    RUSTC_BOOTSTRAP=1 cargo fuzz run "${san[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -max_len="$max_len" \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
        2>&1 | tee "fuzz/logs/$target.log"
    ;;
*) usage ;;
esac
