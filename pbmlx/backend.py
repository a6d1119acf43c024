"""Which MLX backend pbmlx runs on, and an optimized BLAS for MLX's CPU backend on Linux.

The Linux ``mlx[cpu]`` wheel links libmlx against a bundled reference BLAS: a 1024x1024
float32 matmul runs at ~5 GFLOP/s on a 2-core x86 machine, where NumPy's OpenBLAS reaches
~150. libmlx takes exactly three symbols from that BLAS (``cblas_sgemm``, ``cblas_dgemm``,
``cblas_cgemm``). :func:`use_optimized_blas` loads scipy-openblas32 (the OpenBLAS that
NumPy and SciPy ship) and pbmlx's forwarding shim (``_cblas_shim.c``) into the global
symbol scope *before* ``mlx.core`` is first imported, so the dynamic linker binds libmlx's
references to OpenBLAS. ``pbmlx/__init__.py`` calls it first thing, so a user does nothing.

Set ``PBMLX_BLAS=bundled`` to keep MLX's own BLAS (for comparisons).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

BUNDLED = "bundled"
GEMM_SIZE = 1024  # matmul side used by doctor's GFLOP/s measurement
GEMM_REPEATS = 5


@dataclass
class BlasInfo:
    """What BLAS MLX's CPU backend uses in this process."""

    library: str  # path of the loaded BLAS, or "bundled" / "accelerate"
    optimized: bool
    reason: str  # why this library (or why the optimized one could not be used)

    def to_dict(self) -> dict:
        return asdict(self)


_INFO: BlasInfo | None = None


def _shim_path() -> Path | None:
    here = Path(__file__).parent
    found = sorted(here.glob("_cblas_shim*.so"))
    return found[0] if found else None


def use_optimized_blas() -> BlasInfo:
    """Give MLX's CPU backend an optimized BLAS; idempotent, never raises.

    Must run before ``mlx.core`` is imported anywhere in the process; if it already was,
    the bundled BLAS is bound and stays (reported with a warning).
    """
    global _INFO
    if _INFO is not None:
        return _INFO
    _INFO = _load()
    if (
        not _INFO.optimized
        and sys.platform.startswith("linux")
        and _INFO.reason != "PBMLX_BLAS=bundled"
    ):
        warnings.warn(
            f"pbmlx: MLX keeps its slow bundled BLAS ({_INFO.reason}); model inference will be "
            "much slower. `pbmlx doctor` shows details.",
            RuntimeWarning,
            stacklevel=3,
        )
    return _INFO


def _load() -> BlasInfo:
    if sys.platform == "darwin":
        return BlasInfo("accelerate", True, "macOS: MLX uses Accelerate and Metal")
    if not sys.platform.startswith("linux"):
        return BlasInfo(BUNDLED, False, f"no optimized BLAS set-up for {sys.platform}")
    if os.environ.get("PBMLX_BLAS", "").lower() == BUNDLED:
        return BlasInfo(BUNDLED, False, "PBMLX_BLAS=bundled")
    if "mlx.core" in sys.modules:
        return BlasInfo(BUNDLED, False, "mlx.core was imported before pbmlx")
    shim = _shim_path()
    if shim is None:
        return BlasInfo(
            BUNDLED, False, "pbmlx was installed without its CBLAS shim (no C compiler?)"
        )
    try:
        import scipy_openblas32
    except ImportError:
        return BlasInfo(BUNDLED, False, "scipy-openblas32 is not installed")
    lib = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
    try:
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(shim), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        return BlasInfo(BUNDLED, False, f"could not load OpenBLAS: {e}")
    return BlasInfo(str(lib), True, "scipy-openblas32 bound through pbmlx's CBLAS shim")


def blas_info() -> BlasInfo:
    return use_optimized_blas()


def backend() -> str:
    """The device MLX computes on by default: ``metal``, ``cuda`` or ``cpu``."""
    import mlx.core as mx

    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "cpu"


def default_load_dtype():
    """The dtype model weights are loaded in when the caller asks for none: on the CPU
    backend float32, so that half-precision weights (float16, bfloat16, and the scales of
    quantized layers) are upcast once, at load -- MLX's CPU half-precision matmul and
    convolution are slow fallbacks (a whole edit measured 16x slower than float32) and
    pbmlx's fused CPU kernels take float32; float32 weights are unchanged. On Metal and CUDA,
    ``None``: weights compute in the dtype they are stored in."""
    import mlx.core as mx

    return mx.float32 if backend() == "cpu" else None


HALF_PRECISION_ON_CPU = "float32 (upcast at load)"


def _time_best(fn, repeats: int) -> float:
    fn()  # warm-up: first call pays for allocation and thread start-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_gflops(n: int = GEMM_SIZE, repeats: int = GEMM_REPEATS) -> float:
    """Measured float32 GFLOP/s of an n x n MLX matmul on the default device (best of repeats)."""
    import mlx.core as mx

    a = mx.random.normal((n, n), key=mx.random.key(0))
    b = mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a, b)
    return 2 * n**3 / _time_best(lambda: mx.eval(a @ b), repeats) / 1e9


def numpy_gemm_gflops(n: int = GEMM_SIZE, repeats: int = GEMM_REPEATS) -> float:
    """The same measurement with NumPy (its own OpenBLAS), as the yardstick."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / _time_best(lambda: a @ b, repeats) / 1e9
