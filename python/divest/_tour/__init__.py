"""The tour: each family computes something on built-in data, times it, and repeats the
computation with every installed peer, printing the ratio. One module per family; a
section is a function ``run(report, quick, figures)``."""

from __future__ import annotations

import importlib
import platform
import time

import numpy as np

#: Family sections in order: (name, module). Add a family by adding a line here.
SECTIONS = [
    ("kde", "divest._tour.kde"),
    ("ot", "divest._tour.ot"),
    ("dpp", "divest._tour.dpp"),
    ("divergence", "divest._tour.divergence"),
    ("dcov", "divest._tour.dcov"),
]


class Report:
    """Prints aligned lines for one tour."""

    def __init__(self):
        self.failures = []

    def header(self, title: str) -> None:
        print()
        print(f"== {title} " + "=" * max(0, 70 - len(title)))

    def line(self, text: str) -> None:
        print(f"   {text}")

    def timing(self, what: str, seconds: float, peers=()) -> None:
        """`peers`: (name, seconds or None, note) tuples; prints divest's time and ratios."""
        print(f"   {what}: divest {seconds * 1e3:9.1f} ms")
        for name, t, note in peers:
            if t is None:
                print(f"      {name:<34} {note}")
            else:
                print(f"      {name:<34} {t * 1e3:9.1f} ms   divest is {t / seconds:6.1f}x faster"
                      + (f"   ({note})" if note else ""))

    def check(self, ok: bool, what: str) -> None:
        print(f"   [{'ok' if ok else 'MISMATCH'}] {what}")
        if not ok:
            self.failures.append(what)


def timed(f, repeat: int = 3):
    """(median seconds, last result) of `repeat` calls of f()."""
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def optional(module: str):
    """Imports a peer if installed, else None."""
    try:
        return importlib.import_module(module)
    except Exception:
        return None


def run_tour(quick: bool = False, figures: bool = True, only=None) -> int:
    import divest
    from divest import _core

    wanted = None if only is None else {s.strip() for s in only.split(",")}
    print(f"divest {divest.__version__} tour: {divest.get_num_threads()} threads, "
          f"SIMD {_core.simd_level()}, numpy {np.__version__}, Python {platform.python_version()}")
    report = Report()
    for name, mod in SECTIONS:
        if wanted is not None and name not in wanted:
            continue
        importlib.import_module(mod).run(report, quick=quick, figures=figures)
    print()
    if report.failures:
        print(f"tour finished with {len(report.failures)} mismatch(es): {report.failures}")
        return 1
    print("tour finished: every check passed")
    return 0
