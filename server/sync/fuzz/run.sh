#!/usr/bin/env bash
# Runs every fuzz target of sfs-sync for the given number of seconds each (default 60) and fails
# on the first crash, timeout, out-of-memory or broken invariant. Installs cargo-fuzz if it is
# missing. Works on the stable toolchain: `-s none` builds with libFuzzer's coverage
# instrumentation but without a sanitizer, the part that would need nightly.
#
#   server/sync/fuzz/run.sh [seconds]   fuzz every target
#   server/sync/fuzz/run.sh seeds       rewrite seeds/ from the fixture's honest traffic
#
# The working corpus grows in corpus/<target> (not committed); the committed seeds in
# seeds/<target> are read as a second corpus directory. A crash leaves its input in
# artifacts/<target>/; replay it with `cargo fuzz run -s none <target> <file>`, and with
# SFS_FUZZ_TRACE=1 to see what each step did. SFS_FUZZ_STRICT_PANICS=1 also fails on panics the
# engine catches by design.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="$PWD/target"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo fuzz build -s none
if [ "${1:-}" = seeds ]; then
    rm -rf seeds
    "$CARGO_TARGET_DIR"/*/release/write_seeds seeds
    exit 0
fi

seconds="${1:-60}"
for target in frame_decode receive_path; do
    mkdir -p "corpus/$target"
    echo "== $target for ${seconds}s"
    cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1
done
