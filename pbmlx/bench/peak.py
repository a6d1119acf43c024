"""The device's peak FLOP/s: published figures for Apple GPUs, a measured GEMM elsewhere.

On a Mac the MLX backend is the GPU, whose float32 peak is ``cores x 128 ALUs x 2 FLOP (one
fused multiply-add) x clock``. :data:`APPLE_GPUS` lists, per chip, its GPU core counts and
clock, and where the figure comes from:

- M1 and M2 families: Apple's own published TFLOPS (M1 2.6, M1 Pro 5.2, M1 Max 10.4, M1 Ultra
  21; M2 3.6, M2 Pro 6.8, M2 Max 13.6, M2 Ultra 27.2, for the largest GPU of each), which the
  formula reproduces with a 1.278 GHz (M1) and 1.398 GHz (M2) clock;
- M3 and M4 families: Apple published no TFLOPS; the clock is the one public GPU databases
  report (1.398 GHz for M3, 1.470 GHz for M4), so these are third-party figures.

The chip is matched by name (``sysctl -n machdep.cpu.brand_string``, e.g. ``Apple M2 Max``)
and its GPU core count read from the IORegistry (``gpu-core-count``), falling back to the
largest configuration of that chip when it cannot be read (said in the result). Half
precision runs at the same rate as float32 on these GPUs, so one peak serves every dtype.

Elsewhere (CUDA, or MLX's CPU backend), and on a Mac whose chip is not in the table, the peak
is measured: the best float32 GEMM rate of MLX on the default device
(:func:`pbmlx.backend.gemm_gflops`, best of a few square matmuls of two sizes). That is the
practical peak of the matrix units the networks run on, not a datasheet figure, and it is
what "fraction of peak" is measured against; on a Mac the measured GEMM is reported beside the
published figure too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, dataclass

ALUS_PER_CORE = 128  # FP32 lanes per Apple GPU core (M1-M4)
FLOP_PER_FMA = 2

APPLE = "Apple: published TFLOPS"
THIRD_PARTY = "third-party: Apple publishes no TFLOPS for this chip; public GPU-database clock"


@dataclass(frozen=True)
class AppleGPU:
    chip: str  # the marketing name as sysctl reports it, e.g. "Apple M2 Max"
    cores: tuple[int, ...]  # GPU core counts sold, smallest first
    clock_ghz: float
    source: str

    def tflops(self, cores: int) -> float:
        """Float32 TFLOPS of the ``cores``-core GPU: ``cores x 128 x 2 x clock``."""
        return cores * ALUS_PER_CORE * FLOP_PER_FMA * self.clock_ghz / 1e3


APPLE_GPUS: tuple[AppleGPU, ...] = (
    AppleGPU("Apple M1", (7, 8), 1.278, APPLE),
    AppleGPU("Apple M1 Pro", (14, 16), 1.278, APPLE),
    AppleGPU("Apple M1 Max", (24, 32), 1.278, APPLE),
    AppleGPU("Apple M1 Ultra", (48, 64), 1.278, APPLE),
    AppleGPU("Apple M2", (8, 10), 1.398, APPLE),
    AppleGPU("Apple M2 Pro", (16, 19), 1.398, APPLE),
    AppleGPU("Apple M2 Max", (30, 38), 1.398, APPLE),
    AppleGPU("Apple M2 Ultra", (60, 76), 1.398, APPLE),
    AppleGPU("Apple M3", (8, 10), 1.398, THIRD_PARTY),
    AppleGPU("Apple M3 Pro", (14, 18), 1.398, THIRD_PARTY),
    AppleGPU("Apple M3 Max", (30, 40), 1.398, THIRD_PARTY),
    AppleGPU("Apple M3 Ultra", (60, 80), 1.398, THIRD_PARTY),
    AppleGPU("Apple M4", (8, 10), 1.470, THIRD_PARTY),
    AppleGPU("Apple M4 Pro", (16, 20), 1.470, THIRD_PARTY),
    AppleGPU("Apple M4 Max", (32, 40), 1.470, THIRD_PARTY),
)


@dataclass
class Peak:
    """The peak a run is measured against. ``flops_per_s`` is the one used for fractions."""

    flops_per_s: float
    source: str  # "published" or "measured GEMM"
    detail: str  # the chip and core count, or the matmul sizes
    measured_gemm_flops_per_s: float | None = None
    published_flops_per_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def match_apple_gpu(brand: str) -> AppleGPU | None:
    """The table entry whose chip name ``brand`` is (``"Apple M2 Max"``; case and spacing are
    normalised; ``"Apple M2"`` does not match ``"Apple M2 Pro"``)."""
    name = " ".join(brand.split()).lower()
    for gpu in APPLE_GPUS:
        if gpu.chip.lower() == name:
            return gpu
    return None


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def apple_gpu_cores() -> int | None:
    """The GPU core count from the IORegistry (``ioreg -rc AGXAccelerator``), or None."""
    try:
        out = subprocess.run(
            ["ioreg", "-rc", "AGXAccelerator"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'"gpu-core-count"\s*=\s*(\d+)', out)
    return int(m.group(1)) if m else None


def chip_name() -> str | None:
    """``machdep.cpu.brand_string`` on macOS (``"Apple M2 Max"``), None elsewhere."""
    return _sysctl("machdep.cpu.brand_string") if sys.platform == "darwin" else None


def published_peak(brand: str | None, cores: int | None) -> tuple[float, str] | None:
    """(FLOP/s, description) of an Apple GPU from :data:`APPLE_GPUS`, or None if ``brand`` is
    not in the table. An unknown or unsold core count falls back to the chip's largest GPU."""
    gpu = match_apple_gpu(brand) if brand else None
    if gpu is None:
        return None
    if cores in gpu.cores:
        note = f"{cores}-core GPU"
    else:
        got = "unknown" if cores is None else f"{cores}, not in the table"
        cores = gpu.cores[-1]
        note = f"{cores}-core GPU assumed (core count {got})"
    return gpu.tflops(cores) * 1e12, (
        f"{gpu.chip} {note}: {cores} x {ALUS_PER_CORE} x 2 x {gpu.clock_ghz} GHz; {gpu.source}"
    )


def measured_gemm_peak(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 3) -> float:
    """The best float32 GEMM FLOP/s of MLX on the default device over square matmuls of
    ``sizes`` (:func:`pbmlx.backend.gemm_gflops`, best of ``repeats`` each)."""
    from pbmlx.backend import gemm_gflops

    return max(gemm_gflops(n, repeats) for n in sizes) * 1e9


def device_peak(backend: str, *, gemm_sizes: tuple[int, ...] | None = None) -> Peak:
    """The peak for ``backend`` (``metal``, ``cuda`` or ``cpu``), see the module docstring."""
    if gemm_sizes is None:
        gemm_sizes = (2048, 4096) if backend in ("metal", "cuda") else (1024, 2048)
    measured = measured_gemm_peak(gemm_sizes)
    gemm = f"float32 MLX matmul, best of {' and '.join(f'{n}^2' for n in gemm_sizes)}"
    if backend == "metal":
        published = published_peak(chip_name(), apple_gpu_cores())
        if published is not None:
            return Peak(published[0], "published", published[1], measured, published[0])
    return Peak(measured, "measured GEMM", gemm, measured, None)
