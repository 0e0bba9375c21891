"""Dispatch without a GPU: the probe reports none, nothing crashes, device arrays get a
clear error, host and device arrays are never mixed. CuPy arrays are simulated by a class
whose module is named like CuPy's (so these tests run where CuPy is not installed)."""

import subprocess
import sys
import types

import numpy as np
import pytest

import divest
import divest.cuda
from divest import _backend


class FakeCupyArray:
    """Looks like a CuPy array to divest's type check, and to nothing else."""

    shape = (3, 2)
    ndim = 2
    dtype = np.dtype(np.float64)


FakeCupyArray.__module__ = "cupy._core.core"


class FakeTensor:
    def __init__(self, cuda):
        self.is_cuda = cuda


FakeTensor.__module__ = "torch"


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(_backend, "_probe_gpu", lambda: (False, "no CUDA driver (simulated)"))
    _backend._reset_probe()
    yield
    _backend._reset_probe()


def test_import_divest_imports_no_cupy_and_touches_no_gpu():
    code = (
        "import sys, divest, divest.cuda; import numpy as np; "
        "divest.energy_distance(np.zeros((3, 1)), np.ones((2, 1))); "
        "assert 'cupy' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kinds_are_read_from_the_type_alone():
    assert not _backend.is_device(np.zeros(2))
    assert not _backend.is_device([1.0])
    assert _backend.is_device(FakeCupyArray())
    assert _backend.is_device(FakeTensor(True))
    assert not _backend.is_device(FakeTensor(False))  # CPU tensors are host data
    assert _backend.on_gpu(np.zeros(2), None, [1.0], 3.0) is False
    assert _backend.route(np.zeros(2)) is None


def test_probe_without_cupy_or_driver_says_no(monkeypatch):
    _backend._reset_probe()
    # A CuPy whose runtime raises, as CuPy does when no driver is installed.
    fake = types.ModuleType("cupy")
    calls = []

    def count():
        calls.append(1)
        raise RuntimeError("cudaErrorInsufficientDriver")

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    try:
        assert _backend.gpu_available() is False
        assert _backend.gpu_available() is False
        assert len(calls) == 1  # probed once, cached
        assert "no CUDA driver" in _backend._probe[1]
        # No CuPy at all.
        _backend._reset_probe()
        monkeypatch.setitem(sys.modules, "cupy", None)
        assert _backend.gpu_available() is False
        assert "CuPy cannot be imported" in _backend._probe[1]
        # A device count of 0.
        _backend._reset_probe()
        fake.cuda.runtime.getDeviceCount = lambda: 0
        monkeypatch.setitem(sys.modules, "cupy", fake)
        assert _backend.gpu_available() is False
    finally:
        _backend._reset_probe()
    assert divest.cuda.is_available() in (True, False)


def test_device_arrays_without_gpu_get_a_clear_error(no_gpu):
    with pytest.raises(_backend.GPUUnavailableError, match="cannot use a GPU.*divest\\[cuda12\\]"):
        _backend.on_gpu(FakeCupyArray())
    with pytest.raises(RuntimeError, match="no CUDA driver \\(simulated\\)"):
        _backend.on_gpu(FakeTensor(True))


def test_mixing_host_and_device_is_a_type_error(no_gpu):
    with pytest.raises(TypeError, match="does not mix host and GPU arrays.*ndarray"):
        _backend.on_gpu(FakeCupyArray(), np.zeros(3))
    with pytest.raises(TypeError, match="list"):
        _backend.on_gpu([1.0, 2.0], FakeCupyArray())


X = FakeCupyArray()
H = np.random.default_rng(0).normal(size=(3, 2))
P = np.array([0.5, 0.5])

# Every public function with a GPU hook, called with device arrays only and then mixed.
CALLS = {
    "kde_logpdf": (lambda a, b: divest.kde_logpdf(a, b)),
    "KDE": (lambda a, b: divest.KDE(a, weights=b)),
    "energy_distance": (lambda a, b: divest.energy_distance(a, b)),
    "dcov_sqr": (lambda a, b: divest.dcov_sqr(a, b)),
    "dcor_sqr": (lambda a, b: divest.dcor_sqr(a, b)),
    "dcor": (lambda a, b: divest.dcor(a, b)),
    "mmd": (lambda a, b: divest.mmd(a, b)),
    "cs_divergence": (lambda a, b: divest.cs_divergence(a, b)),
    "kl": (lambda a, b: divest.kl(a, b)),
    "js": (lambda a, b: divest.js(a, b)),
    "js_distance": (lambda a, b: divest.js_distance(a, b)),
    "tv": (lambda a, b: divest.tv(a, b)),
    "hellinger": (lambda a, b: divest.hellinger(a, b)),
    "sinkhorn": (
        lambda a, b: (
            divest.sinkhorn(None, None, a, 0.1) if b is None else divest.sinkhorn(b, None, a, 0.1)
        )
    ),
    "sinkhorn_batch": (lambda a, b: divest.sinkhorn_batch(a, a if b is None else b, a, 0.1)),
    "sinkhorn_divergence": (
        lambda a, b: divest.sinkhorn_divergence(a, a if b is None else b, eps=0.1)
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_public_functions_route_device_arrays(no_gpu, name):
    call = CALLS[name]
    with pytest.raises(_backend.GPUUnavailableError):
        call(X, None)
    with pytest.raises(TypeError, match="does not mix"):
        call(X, H[:, 0] if name == "KDE" else H)


def test_host_kde_refuses_device_points(no_gpu):
    kde = divest.KDE(H)
    with pytest.raises(TypeError, match="does not mix"):
        kde.logpdf(X)
    with pytest.raises(TypeError, match="does not mix"):
        kde.score(X)


def test_host_calls_never_probe(monkeypatch):
    def boom():
        raise AssertionError("probed")

    monkeypatch.setattr(_backend, "_probe_gpu", boom)
    _backend._reset_probe()
    try:
        assert divest.energy_distance(H, H + 1) > 0
        assert divest.kl(P, P) == 0
        assert np.isfinite(divest.KDE(H).logpdf(H)).all()
        assert _backend._probe is None
    finally:
        _backend._reset_probe()


def test_kernel_source_ships_and_every_kernel_is_instantiated():
    import re

    src = divest.cuda.source()  # package data: fails if the wheel lacks kernels.cu
    globals_ = set(re.findall(r"__global__\s+void\s+(\w+)\s*\(", src))
    assert globals_ == set(divest.cuda.KERNELS) | set(divest.cuda.FIXED_KERNELS)
    names = divest.cuda.name_expressions()
    assert len(names) == len(set(names))
    for k in globals_:
        assert f"{k}<float" in " ".join(names) and f"{k}<double" in " ".join(names)
    assert [divest.cuda.fixed_dim(d) for d in (1, 3, 5, 64, 65)] == [1, 3, 8, 64, None]
