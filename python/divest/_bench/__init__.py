"""Comparison benchmarks: divest against every installed peer, as ratios measured in the
same run (medians of repeats). ``python -m divest bench`` and ``benches/compare.py`` print
them. One module per family, each exposing ``cases(quick) -> list[Case]``; the inputs come
from :mod:`divest._bench.workloads` (shared with the asv suite and the tour), and the
timing rule is :func:`median_time` (shared with the tour)."""

from __future__ import annotations

import importlib
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: Families in order: (name, module). Add a family by adding a line here.
FAMILIES = [
    ("kde", "divest._bench.kde"),
    ("kdegrid", "divest._bench.kdegrid"),
    ("kdebounds", "divest._bench.kdebounds"),
    ("kdebounds_nd", "divest._bench.kdebounds_nd"),
    ("ot", "divest._bench.ot"),
    ("dpp", "divest._bench.dpp"),
    ("divergence", "divest._bench.divergence"),
    ("dcov", "divest._bench.dcov"),
    ("depstats", "divest._bench.depstats"),
    ("kdebw", "divest._bench.kdebw"),
    ("kderobust", "divest._bench.kderobust"),
    ("kdecdf", "divest._bench.kdecdf"),
    ("kdemixed", "divest._bench.kdemixed"),
]


@dataclass
class Case:
    """One workload: divest's callable and the peers' callables on the same inputs."""

    name: str
    divest: Callable[[], object]
    peers: dict = field(default_factory=dict)  # peer name -> callable (or a string: why skipped)
    repeat: int = 3
    check: Callable[[object, object], float] | None = None  # (divest out, peer out) -> error
    note: Callable[[], str] | None = None  # an extra line under divest's time (e.g. memory)


def rel_error(a, b) -> float:
    """Largest relative difference of `a` from the reference `b` (scalars or arrays)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def median_time(f, repeat, budget: float = 1.0):
    """Median of `repeat` timed calls after one warm-up call. The warm-up absorbs what the
    previous measurement left behind (a pool or BLAS threads still spinning slow the next
    call, up to 2x here). A call slower than `budget` seconds is instead timed at most
    twice (the second time when under 5 budgets) and the faster kept: a slow peer is not
    judged on one disturbed call, and the slowest peers do not dominate the run."""
    t0 = time.perf_counter()
    out = f()
    first = time.perf_counter() - t0
    if first > budget:
        times = [first]
        if first < 5 * budget:
            t0 = time.perf_counter()
            out = f()
            times.append(time.perf_counter() - t0)
        return float(min(times)), out
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def peak_python_memory(f) -> float:
    """Peak bytes allocated through Python/NumPy during f() (Rust allocations excluded)."""
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_compare(quick: bool = False, only=None, levels=None) -> int:
    """Prints every case of the families in `only` (all when None). `levels` (e.g.
    ``"avx2,avx512"``) times divest once per SIMD level in the same run, the peers once,
    and prints a ratio per level."""
    import divest
    from divest import _core

    wanted = None if only is None else {s.strip() for s in only.split(",")}
    lvls = None if levels is None else [s.strip() for s in levels.split(",") if s.strip()]
    print(
        f"divest {divest.__version__}: {divest.get_num_threads()} threads; "
        "median of repeats; ratio = peer time / divest time (>1: divest faster)"
    )
    print(
        f"SIMD level: {_core.simd_level()} (CPU supports {_core.simd_detected()}; "
        "set DIVEST_SIMD=scalar|avx2|avx512 to cap it)"
    )
    if lvls is not None:
        try:
            for lv in lvls:
                _core.set_simd_level(lv)
        finally:
            _core.set_simd_level(None)
        print(f"divest timed at each of: {', '.join(lvls)}")
    for fam, mod in FAMILIES:
        if wanted is not None and fam not in wanted:
            continue
        for case in importlib.import_module(mod).cases(quick):
            if lvls is not None:
                _levels_case(fam, case, lvls)
                continue
            td, out = median_time(case.divest, case.repeat)
            print(f"\n{fam}: {case.name}\n  {'divest':<40} {td:10.4f} s")
            if case.note is not None:
                print(f"  {case.note()}")
            for peer, f in case.peers.items():
                if isinstance(f, str):
                    print(f"  {peer:<40} {'skipped':>10}   {f}")
                    continue
                tp, pout = median_time(f, max(1, min(case.repeat, 3)))
                extra = ""
                if case.check is not None:
                    extra = f"   max rel. difference {case.check(out, pout):.1e}"
                print(f"  {peer:<40} {tp:10.4f} s   ratio {tp / td:7.2f}x{extra}")
    return 0


def _levels_case(fam: str, case: Case, lvls: list) -> None:
    """One case with divest timed at each SIMD level of `lvls` and the peers once."""
    from divest import _core

    times = {}
    out = None
    try:
        for lv in lvls:
            _core.set_simd_level(lv)
            times[lv], out = median_time(case.divest, case.repeat)
    finally:
        _core.set_simd_level(None)
    print(f"\n{fam}: {case.name}")
    for lv in lvls:
        print(f"  {'divest (' + lv + ')':<40} {times[lv]:10.4f} s")
    if case.note is not None:
        print(f"  {case.note()}")
    for peer, f in case.peers.items():
        if isinstance(f, str):
            print(f"  {peer:<40} {'skipped':>10}   {f}")
            continue
        tp, pout = median_time(f, max(1, min(case.repeat, 3)))
        extra = ""
        if case.check is not None:
            extra = f"   max rel. difference {case.check(out, pout):.1e}"
        ratios = "  ".join(f"{lv} {tp / times[lv]:7.2f}x" for lv in lvls)
        print(f"  {peer:<40} {tp:10.4f} s   ratio {ratios}{extra}")
