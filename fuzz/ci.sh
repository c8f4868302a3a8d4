#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for a short, bounded time on
# the stable toolchain (no sanitizer). Usage: fuzz/ci.sh [SECONDS_PER_TARGET]
# Default 60 s per target; 0 only builds. Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-${FUZZ_SECONDS:-60}}"
targets=(frame_decoder session)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

start=$SECONDS
cargo fuzz build -s none
echo "fuzz targets built in $((SECONDS - start)) s"

if [ "$seconds" -gt 0 ]; then
    for target in "${targets[@]}"; do
        # A fresh corpus each run keeps CI independent of leftovers; any
        # crash input lands in fuzz/artifacts/$target and fails the script.
        corpus="$(mktemp -d)"
        echo "fuzzing $target for $seconds s"
        cargo fuzz run -s none "$target" "$corpus" -- \
            -max_total_time="$seconds" -print_final_stats=1
        rm -rf "$corpus"
    done
fi
echo "fuzz: ${#targets[@]} targets ok in $((SECONDS - start)) s"
