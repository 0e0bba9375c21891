#!/usr/bin/env bash
# CI: the README's asv commands work from a fresh clone, on a machine asv has never seen
# (a private HOME, so no ~/.asv-machine.json), against the installed divest.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q asv
home=$(mktemp -d)
trap 'rm -rf "$home" .asv/results/ci-check' EXIT
export HOME=$home
asv machine --yes --machine ci-check
asv check --python=same
# One cheap benchmark end to end: the suite imports, runs and records a result.
asv run --python=same --quick --machine ci-check --bench 'LogitsKL.time_kl_from_logits'
ls .asv/results/ci-check/*.json >/dev/null
