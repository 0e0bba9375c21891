"""Prints divest against every installed peer, as ratios measured in the same run.

    python benches/compare.py [--quick] [--only kde,ot,...]

Same as ``python -m divest bench``; the cases live in ``divest/_bench/<family>.py``.
"""

import argparse
import sys

from divest._bench import run_compare

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=None)
    a = p.parse_args()
    sys.exit(run_compare(quick=a.quick, only=a.only))
