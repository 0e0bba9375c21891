"""The tour: each family computes something on built-in data, times it, and repeats the
computation with every installed peer, printing the ratio. One module per family; a
section is a function ``run(report, quick, figures)``.

Every line that prints a ratio times a workload of ``divest._bench.workloads`` (the one
the benchmarks time, at the sizes of ``python -m divest bench``) with the benchmarks'
timing rule, :func:`divest._bench.median_time`: one warm-up call, then the median of the
repeats (a call over a second is timed at most twice)."""

from __future__ import annotations

import importlib
import platform

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
        """`peers`: (name, seconds or None, note) tuples; prints divest's time and the
        ratios peer time / divest time (> 1: divest faster)."""
        print(f"   {what}: divest {seconds * 1e3:9.1f} ms")
        for name, t, note in peers:
            if t is None:
                print(f"      {name:<34} {note}")
            else:
                extra = f"   ({note})" if note else ""
                print(f"      {name:<34} {t * 1e3:9.1f} ms   ratio {t / seconds:6.1f}x{extra}")

    def check(self, ok: bool, what: str) -> None:
        print(f"   [{'ok' if ok else 'MISMATCH'}] {what}")
        if not ok:
            self.failures.append(what)


def optional(module: str):
    """Imports a peer if installed, else None."""
    try:
        return importlib.import_module(module)
    except Exception:
        return None


def save_figure(report: Report, filename: str, draw) -> None:
    """Draws a figure with matplotlib (Agg back end) if installed and saves it:
    ``draw(plt)`` returns the figure."""
    plt = optional("matplotlib.pyplot")
    if plt is None:
        report.line("matplotlib not installed: no figure")
        return
    import matplotlib

    matplotlib.use("Agg")
    fig = draw(plt)
    fig.tight_layout()
    fig.savefig(filename, dpi=100)
    plt.close(fig)
    report.line(f"figure saved: {filename}")


def run_tour(quick: bool = False, figures: bool = True, only=None) -> int:
    import divest
    from divest import _core

    wanted = None if only is None else {s.strip() for s in only.split(",")}
    print(
        f"divest {divest.__version__} tour: {divest.get_num_threads()} threads, "
        f"SIMD {_core.simd_level()}, numpy {np.__version__}, Python {platform.python_version()}"
    )
    print("times: one warm-up call, then the median of repeats; ratio = peer / divest time")
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
