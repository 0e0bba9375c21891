#!/usr/bin/env bash
# For a lent GPU machine with no network (CuPy, PyTorch and compute-sanitizer installed,
# no Rust): install a divest wheel built here and carried in .whl/, then run every GPU test
# and benchmark (benches/gpu/run.sh), writing to $OUT. Build the wheel first, here:
#   echo /.whl/ >> .git/info/exclude; maturin build --release -o .whl
# and name .whl in the run's carry.
set -uo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl/divest-*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv || true
bash benches/gpu/run.sh "${OUT:-benches/gpu/out}"
