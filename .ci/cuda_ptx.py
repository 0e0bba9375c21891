"""Compiles divest's CUDA kernels to PTX with NVRTC for several architectures.

Needs only the NVRTC shared library (the ``nvidia-cuda-nvrtc-cu12`` wheel, or
``$NVRTC_LIB``): no GPU, no driver, no CuPy. Fails on any compile error or warning-free
instance missing. Usage: python .ci/cuda_ptx.py [sm_70 sm_80 sm_90]
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def _load_module_file():
    # divest/cuda/__init__.py only, without importing divest (its extension may be unbuilt).
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_divest_cuda", ROOT / "python" / "divest" / "cuda" / "__init__.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _libnvrtc() -> ctypes.CDLL:
    cands = [os.environ.get("NVRTC_LIB", "")]
    try:
        import nvidia.cuda_nvrtc as pkg

        for base in pkg.__path__:
            cands += sorted(glob.glob(os.path.join(base, "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    cands += ["libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so"]
    for c in cands:
        if not c:
            continue
        try:
            return ctypes.CDLL(c)
        except OSError:
            continue
    sys.exit("NVRTC not found: pip install nvidia-cuda-nvrtc-cu12, or set NVRTC_LIB")


def compile_ptx(lib, src: str, names: list[str], arch: str) -> int:
    """Compiles; returns the PTX size. Raises SystemExit with NVRTC's log on failure."""
    prog = ctypes.c_void_p()
    check = _checker(lib)
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"kernels.cu", 0, None, None))
    for n in names:
        check(lib.nvrtcAddNameExpression(prog, n.encode()))
    mod = _load_module_file()
    opts = [o.encode() for o in mod.NVRTC_OPTIONS] + [f"--gpu-architecture=compute_{arch[3:]}".encode()]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    res = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    if res != 0:
        raise SystemExit(f"NVRTC failed for {arch}:\n{text}")
    lines = [ln for ln in text.splitlines() if "are deprecated" not in ln]
    if any("warning" in ln for ln in lines):
        raise SystemExit(f"NVRTC warnings for {arch} (treated as errors):\n{text}")
    for n in names:  # every instance must exist in the PTX
        lowered = ctypes.c_char_p()
        check(lib.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(lowered)))
    check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)))
    ptx = ctypes.create_string_buffer(size.value)
    check(lib.nvrtcGetPTX(prog, ptx))
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return size.value


def _checker(lib):
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(code):
        if code != 0:
            raise SystemExit(f"NVRTC error {code}: {lib.nvrtcGetErrorString(code).decode()}")

    return check


def main(argv):
    archs = argv or ["sm_70", "sm_80", "sm_90"]
    lib = _libnvrtc()
    mod = _load_module_file()
    src = mod.SOURCE_PATH.read_text()
    names = mod.name_expressions()
    for arch in archs:
        size = compile_ptx(lib, src, names, arch)
        print(f"{arch}: {len(names)} kernel instances, {size} bytes of PTX")


if __name__ == "__main__":
    main(sys.argv[1:])
