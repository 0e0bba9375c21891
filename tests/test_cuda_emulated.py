"""The CUDA kernels themselves, run without a GPU: kernels.cu is compiled by g++ against a
CPU stand-in for CUDA's threads, barriers and warp shuffles (tests/cuda_emu/shim.h), under
AddressSanitizer where available (so a tile read past the end of an array fails, as
compute-sanitizer would report on a GPU), and every kernel is compared with the
array-API algorithms on NumPy (tests/cuda_emu/check.py). Skipped without a C++20 g++."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import divest.cuda

HERE = Path(__file__).parent / "cuda_emu"


def _build(tmp: Path, asan: bool) -> Path | None:
    src = divest.cuda.source()
    src = src.replace(
        "extern __shared__ unsigned char smem_raw[];", "unsigned char* smem_raw = g_smem;"
    )
    (tmp / "kernels_emu.cu").write_text(src.replace("__shared__", "static"))
    for f in ("shim.h", "driver.cpp"):
        shutil.copy(HERE / f, tmp / f)
    lib = tmp / "libemu.so"
    flags = ["-fsanitize=address", "-fno-omit-frame-pointer"] if asan else []
    cmd = ["g++", "-std=c++20", "-O1", "-g", *flags, "-shared", "-fPIC", f"-I{tmp}"]
    out = subprocess.run(
        [*cmd, str(tmp / "driver.cpp"), "-o", str(lib)], capture_output=True, text=True
    )
    return lib if out.returncode == 0 else None


def test_kernels_on_the_cpu_stand_in(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    env = dict(os.environ)
    libasan = subprocess.run(
        ["g++", "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    asan_env = dict(env, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0")
    # AddressSanitizer must be able to start inside this Python at all (some containers
    # forbid its memory layout); otherwise the kernels run without it.
    sane = subprocess.run([sys.executable, "-c", "import numpy"], env=asan_env, capture_output=True)
    lib = _build(tmp_path, asan=True) if sane.returncode == 0 and os.path.isabs(libasan) else None
    if lib is not None:
        env = asan_env
    else:
        lib = _build(tmp_path, asan=False)
        if lib is None:
            pytest.skip("g++ cannot build the C++20 stand-in (std::barrier)")
    out = subprocess.run(
        [sys.executable, str(HERE / "check.py"), str(lib)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "all kernels agree" in out.stdout
