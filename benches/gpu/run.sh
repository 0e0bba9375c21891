#!/usr/bin/env bash
# All GPU tests, then the GPU benchmarks, in under 10 minutes; timings as JSON.
# usage: benches/gpu/run.sh [OUT_DIR]   (needs CuPy, a CUDA GPU, and divest installed)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-benches/gpu/out}
PY=${PYTHON:-python3}
mkdir -p "$out"
"$PY" - <<'PY'
import divest._backend as b, sys
if not b.gpu_available():
    sys.exit("no usable GPU: " + str(b._probe))
PY
echo "== GPU tests (pytest -m gpu), at most 4 minutes"
timeout 240 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider \
    --junitxml="$out/gpu-tests.xml" 2>&1 | tail -40
tests_rc=${PIPESTATUS[0]}
echo "== benchmarks, at most 5 minutes"
timeout 330 "$PY" benches/gpu/bench.py --out "$out/gpu-bench.json" --budget 270
bench_rc=$?
echo "tests rc=$tests_rc bench rc=$bench_rc; results in $out"
exit $(( tests_rc != 0 || bench_rc != 0 ))
