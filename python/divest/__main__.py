"""Command line: ``python -m divest tour`` and ``python -m divest bench``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="run every family on built-in data, against installed peers")
    tour.add_argument("--quick", action="store_true", help="smaller problems")
    tour.add_argument("--no-figure", action="store_true", help="do not save figures")
    tour.add_argument("--only", default=None, help="comma-separated families to run")
    bench = sub.add_parser(
        "bench", help="print divest against installed peers (benches/compare.py)"
    )
    bench.add_argument("--quick", action="store_true")
    bench.add_argument("--only", default=None)
    args = parser.parse_args(argv)
    if args.command == "tour":
        from ._tour import run_tour

        return run_tour(quick=args.quick, figures=not args.no_figure, only=args.only)
    from ._bench import run_compare

    return run_compare(quick=args.quick, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
