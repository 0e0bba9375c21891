#!/usr/bin/env bash
# Build the release artefacts into DIR (default dist/):
#   * one abi3 wheel for CPython >= 3.9, linked with zig against glibc 2.17
#     (manylinux2014), so it installs on old and new Linux alike; unwinding goes through
#     the system's libgcc_s, never a second, static unwinder (see scripts/zig-link.sh);
#   * the source distribution.
# maturin and ziglang come from the package index into a private build venv
# (target/build-venv), so nothing is installed into the caller's environment.
# The wheel keeps run-time SIMD dispatch: one binary runs at the best level the CPU has.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
venv=target/build-venv
if [ ! -x "$venv/bin/maturin" ] || ! "$venv/bin/python" -c "import ziglang" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "maturin>=1.16,<2" "ziglang>=0.17,<0.18"
fi
# maturin runs zig as `python -m ziglang`: the build venv's python must come first.
export PATH="$PWD/$venv/bin:$PATH"
mkdir -p "$out"
arch=$(uname -m)
triple=$arch-unknown-linux-gnu
export DIVEST_ZIG_PYTHON="$PWD/$venv/bin/python"
export DIVEST_ZIG_TARGET=$arch-linux-gnu.2.17
linker_var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER
export "$linker_var=$PWD/scripts/zig-link.sh"
# maturin audits the result against the manylinux2014 policy (glibc <= 2.17 symbols,
# allowed libraries only) and refuses to tag a wheel that breaks it.
maturin build --release --target "$triple" --compatibility manylinux2014 --out "$out"
maturin sdist --out "$out"
ls -l "$out"
