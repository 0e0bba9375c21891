"""Which engine runs a call: decided where the arrays enter, from their types alone.

NumPy arrays (and lists, scalars, anything else NumPy converts) go to the Rust engine.
CuPy arrays, and PyTorch CUDA tensors (taken without a copy through DLPack), go to the GPU
path in :mod:`divest._gpu`. One call may not mix the two: nothing is copied between host
and device behind the caller's back, so a NumPy array next to a CuPy array is a TypeError.

This module never imports CuPy or touches a GPU until a device array arrives: the type is
recognised by the name of the module that defines it. Whether a usable GPU exists is
probed once (``cupy.cuda.runtime.getDeviceCount()``, which raises rather than returning 0
when CuPy is installed but no driver is) and cached.
"""

from __future__ import annotations

import threading

__all__ = ["is_device", "on_gpu", "route", "gpu", "gpu_available", "GPUUnavailableError"]


class GPUUnavailableError(RuntimeError):
    """A CuPy array (or CUDA tensor) was passed, but no usable CUDA GPU or CuPy exists."""


_lock = threading.Lock()
_probe: tuple[bool, str] | None = None  # (usable, reason when not)


def _kind(a) -> str | None:
    """ "cupy" for a CuPy array, "torch" for a PyTorch tensor on a CUDA device, else None.
    Reads only the type's module name (and a tensor's ``is_cuda``): imports nothing."""
    mod = type(a).__module__ or ""
    if mod == "cupy" or mod.startswith("cupy."):
        return "cupy"
    if mod == "torch" or mod.startswith("torch."):
        try:
            return "torch" if bool(getattr(a, "is_cuda", False)) else None
        except Exception:
            return None
    return None


def is_device(a) -> bool:
    """True for a CuPy array or a CUDA tensor."""
    return _kind(a) is not None


def _probe_gpu() -> tuple[bool, str]:
    try:
        import cupy
    except Exception as exc:  # not installed, or a broken install
        return False, f"CuPy cannot be imported ({type(exc).__name__}: {exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver: CuPy raises instead of returning 0
        return False, f"no CUDA driver or device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "no CUDA device is visible (CUDA_VISIBLE_DEVICES?)"
    return True, ""


def gpu_available() -> bool:
    """Whether CuPy imports and sees at least one CUDA device (probed once, cached)."""
    global _probe
    with _lock:
        if _probe is None:
            _probe = _probe_gpu()
        return _probe[0]


def _reset_probe() -> None:
    """Forget the cached probe (tests)."""
    global _probe
    with _lock:
        _probe = None


def on_gpu(*arrays) -> bool:
    """True when the call's arrays are on the GPU, False when they are host data.

    ``None`` arguments are ignored. A device array next to a host array (NumPy, a list, a
    CPU tensor) is a TypeError; device arrays without a usable GPU raise
    :class:`GPUUnavailableError`.
    """
    kinds = [_kind(a) for a in arrays if a is not None]
    if not any(kinds):
        return False
    if not all(kinds):
        host = [type(a).__name__ for a in arrays if a is not None and _kind(a) is None]
        raise TypeError(
            "divest does not mix host and GPU arrays in one call: some arguments are CuPy "
            f"arrays or CUDA tensors and others are host data ({', '.join(host)}); move them "
            "to one place first (cupy.asarray(...) or cupy.asnumpy(...))"
        )
    if not gpu_available():
        assert _probe is not None
        raise GPUUnavailableError(
            "divest got CuPy arrays (or CUDA tensors) but cannot use a GPU: "
            f"{_probe[1]}. Install CuPy for your CUDA version (pip install 'divest[cuda12]' "
            "or 'divest[cuda13]') on a machine with an NVIDIA driver, or pass NumPy arrays"
        )
    return True


def gpu():
    """The GPU implementation module (imported on first use; it imports CuPy)."""
    from . import _gpu

    return _gpu


def route(*arrays):
    """The GPU module when the arrays are device arrays (see :func:`on_gpu`), else None:
    the one-line hook at the top of each public function."""
    return gpu() if on_gpu(*arrays) else None
