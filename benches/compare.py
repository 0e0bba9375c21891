"""Prints divest against every installed peer, as ratios measured in the same run.

    python benches/compare.py [--quick] [--only kde,ot,...] [--levels avx2,avx512]

It prints the SIMD level it runs at; ``--levels`` times divest at each listed level in the
same run (the peers once) and prints one ratio per level.

Same as ``python -m divest bench``; the cases live in ``divest/_bench/<family>.py``.
"""

import argparse
import sys

from divest._bench import run_compare

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=None)
    p.add_argument("--levels", default=None)
    a = p.parse_args()
    sys.exit(run_compare(quick=a.quick, only=a.only, levels=a.levels))
