"""Random generator handling: None, an int seed or a numpy Generator."""

from __future__ import annotations

import numbers

import numpy as np


def as_generator(rng) -> np.random.Generator:
    """Returns a numpy Generator from None, an int seed or a Generator."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool):
        if int(rng) < 0:
            raise ValueError(f"rng seed must be non-negative; got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator; got {type(rng).__name__}"
    )


def seed(rng, bits: int = 64) -> int:
    """One integer seed of `bits` bits drawn from `rng` (None, an int seed or a
    Generator): the only way a Python generator reaches the Rust samplers, which derive
    a counter-based stream per task from it."""
    return int(as_generator(rng).integers(0, 2**bits, dtype=np.uint64))
