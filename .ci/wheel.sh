#!/usr/bin/env bash
# CI: build the portable release wheel and the sdist (scripts/build-wheels.sh), then
# install the wheel into a fresh venv with no Rust toolchain on PATH and run the tour
# and the tests against it. A file missing from the wheel, a link to the build machine's
# libraries or a glibc symbol newer than 2.17 cannot land.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# DIVEST_DIST=DIR checks artefacts built earlier by scripts/build-wheels.sh DIR.
dist=${DIVEST_DIST:-$work/dist}
[ -n "${DIVEST_DIST:-}" ] || bash scripts/build-wheels.sh "$dist"
wheel=$(ls "$dist"/divest-*-abi3-*manylinux*2_17*.whl)
sdist=$(ls "$dist"/divest-*.tar.gz)

echo "== the wheel's extension asks for nothing newer than glibc 2.17"
python3 -m zipfile -e "$wheel" "$work/unpacked"
so=$(ls "$work"/unpacked/divest/_core*.so)
newest=$(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
echo "newest glibc symbol version: $newest"
[ "$(printf '%s\nGLIBC_2.17\n' "$newest" | sort -V | tail -1)" = "GLIBC_2.17" ]
if objdump -p "$so" | grep NEEDED | grep -v -E 'lib(c|m|dl|pthread|rt|gcc_s)\.so|ld-linux'; then
    echo "the extension links a library outside the manylinux2014 set" >&2
    exit 1
fi

echo "== the sdist carries what a source build needs"
listing=$(tar tzf "$sdist")
for f in Cargo.toml Cargo.lock pyproject.toml README.md src/lib.rs python/divest/__init__.py python/divest/_core.pyi python/divest/py.typed; do
    grep -q "/$f\$" <<<"$listing" || { echo "sdist lacks $f" >&2; exit 1; }
done

echo "== install the wheel without Rust, run the tour and the tests"
python3 -m venv "$work/venv"
# A PATH without cargo, rustc or rustup: a wheel that tried to build would fail here.
clean_path=$(tr ':' '\n' <<<"$PATH" | grep -v -E '\.cargo|rustup' | paste -sd: -)
(
    export PATH="$work/venv/bin:$clean_path"
    unset VIRTUAL_ENV
    ! command -v cargo >/dev/null
    pip install -q --upgrade pip
    pip install -q --only-binary divest "$wheel[test]"
    cd "$work"
    python -c "import divest, sys; assert divest.__file__.startswith(sys.prefix), divest.__file__; print('divest', divest.__version__, 'from', divest.__file__)"
    python -m divest tour > "$work/tour.log" || { cat "$work/tour.log"; exit 1; }
    tail -3 "$work/tour.log"
    python -m pytest -q -p no:cacheprovider --rootdir "$repo" -c "$repo/pyproject.toml" "$repo/tests"
)
