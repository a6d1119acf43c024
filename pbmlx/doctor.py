"""``pbmlx doctor``: what pbmlx runs on here, measured.

Reports the MLX backend (``metal`` / ``cuda`` / ``cpu``), the BLAS MLX's CPU backend uses, a
measured float32 GEMM rate (``gemm_gflops``) beside NumPy's on the same matmul in the same run
(``numpy_gemm_gflops``), what half-precision models compute in here
(``half_precision_models_compute_in``), and the versions of the pieces that matter.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys

from pbmlx import backend

PACKAGES = ("mlx", "numpy", "pillow", "huggingface-hub", "coremltools", "pillow-heif")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor(*, gemm_size: int = backend.GEMM_SIZE) -> dict:
    """Measure and describe this machine; the keys are pbmlx's doctor schema."""
    info = backend.blas_info()
    report = {
        "backend": backend.backend(),
        "blas": info.to_dict(),
        "gemm_size": gemm_size,
        "gemm_gflops": round(backend.gemm_gflops(gemm_size), 2),
        "numpy_gemm_gflops": round(backend.numpy_gemm_gflops(gemm_size), 2),
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "versions": {name: _version(name) for name in PACKAGES},
        # What a float16/bfloat16 (or quantized float16) model computes in on this backend.
        "half_precision_models_compute_in": (
            backend.HALF_PRECISION_ON_CPU if backend.backend() == "cpu" else "their own dtype"
        ),
    }
    report["gemm_vs_numpy"] = round(report["gemm_gflops"] / report["numpy_gemm_gflops"], 3)
    from pbmlx.kernels import cpu, dispatch

    cpu_info = cpu.info()
    # Which implementation the kernel dispatchers pick here (pbmlx.kernels.dispatch.choose).
    report["kernels"] = {
        "implementation": dispatch.choose(),
        "cpu_kernels": cpu_info.available,
        "cpu_kernels_reason": cpu_info.reason,
    }
    return report


def _print_human(r: dict) -> None:
    blas = r["blas"]
    print(f"backend      {r['backend']}")
    print(
        f"BLAS         {blas['library']} ({'optimized' if blas['optimized'] else 'NOT optimized'}: {blas['reason']})"
    )
    print(
        f"GEMM         {r['gemm_gflops']:.1f} GFLOP/s float32 {r['gemm_size']}^2 "
        f"(NumPy {r['numpy_gemm_gflops']:.1f}, ratio {r['gemm_vs_numpy']:.2f})"
    )
    print(f"half models  compute in {r['half_precision_models_compute_in']}")
    k = r["kernels"]
    cpu_kernels = "built" if k["cpu_kernels"] else "not built"
    print(
        f"kernels      {k['implementation']} (CPU kernels {cpu_kernels}: {k['cpu_kernels_reason']})"
    )
    print(f"python       {r['python']} on {r['platform']}")
    for name, v in r["versions"].items():
        print(f"{name:<12} {v or 'not installed'}")


def main(args: argparse.Namespace) -> int:
    report = doctor()
    if args.json:
        print(json.dumps(report))
    else:
        _print_human(report)
    return 0


def add_parser(sub, parents) -> None:
    p = sub.add_parser("doctor", parents=parents, help="report backend, BLAS and measured speed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)
