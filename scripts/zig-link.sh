#!/bin/sh
# Linker for the portable wheel (used by scripts/build-wheels.sh; not for direct use).
# zig links against glibc 2.17's symbol versions, as `maturin build --zig` does, with one
# difference: Rust's `-lgcc_s` stays the system's libgcc_s.so.1 (a manylinux2014 library,
# versions GCC_3.0 to GCC_4.2.0) instead of becoming zig's static libunwind. With two
# unwinders in one process, glibc's forced unwind (pthread_exit, which CPython < 3.14 calls
# when a daemon thread wakes during interpreter shutdown) entered divest's frames through
# libgcc_s and crashed in the static copy. libgcc_s itself needs a newer glibc symbol than
# 2.17 (_dl_find_object), which the target system's own libgcc_s resolves at run time,
# hence --allow-shlib-undefined.
set -eu
gcc_s=$(gcc -print-file-name=libgcc_s.so.1)
for a in "$@"; do
    if [ "$a" = "-lgcc_s" ]; then
        set -- "$@" -Wl,--allow-shlib-undefined "$gcc_s"
    else
        set -- "$@" "$a"
    fi
    shift
done
export CARGO_ZIGBUILD_ZIG_COMMAND="$DIVEST_ZIG_PYTHON"
export CARGO_ZIGBUILD_ZIG_COMMAND_ARGS='-m ziglang'
exec maturin zig cc -- -g -fno-sanitize=all -target "$DIVEST_ZIG_TARGET" "$@"
