"""Time one full-size InstructPix2Pix UNet step: pbmlx (MLX) against diffusers (PyTorch), same run.

    .venv/bin/python benchmarks/unet_step.py [--sizes 256 512] [--repeats 3] [--json out.json]

The network is the SD 1.5 UNet with 8 input channels (timbrooks/instruct-pix2pix's
``unet/config.json``, 859.5M parameters), float32, with random weights: diffusers builds it
from the config after ``torch.manual_seed(--seed)``, writes it with ``save_pretrained`` to a
temporary folder, and pbmlx loads that folder through ``load_unet`` (sanitize + strict load,
the path a real checkpoint takes), so both sides run the same weights. One step is the
reference pipeline's batch of 3 (text + image, empty + image, empty + no image) at one image
size: latents ``(3, 8, size/8, size/8)``, 77 x 768 text states, timestep 981.

Each size is run once per framework as a warm-up (which also checks that the two outputs agree:
``max_abs_diff``), then ``--repeats`` times, alternating diffusers and pbmlx so that both see
the same background load. Reported per size: best and median seconds per step of each, the
ratios ``pbmlx / diffusers`` (< 1: pbmlx is faster) and peak memory:

- pbmlx: ``mx.get_peak_memory()`` over the timed steps (weights included);
- diffusers: the parameters' bytes plus the resident-set growth over a step
  (:class:`pbmlx.bench.memory.PeakRSS`: the kernel's peak, reset at the step's start, or
  sampled every 5 ms; PyTorch's CPU allocator returns large blocks to the system, so the growth
  is its activations); the process's ``ru_maxrss`` (both frameworks together) is in the JSON.

diffusers runs with ``torch.set_num_threads(os.cpu_count())`` under ``torch.inference_mode()``,
with its default attention (``F.scaled_dot_product_attention``). The load average before and
after is printed: the numbers are only comparable within one run. Not a test.
"""

from __future__ import annotations

# isort: off
import pbmlx  # (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from pbmlx.backend import backend, blas_info
from pbmlx.bench.memory import PeakRSS
from pbmlx.models import load_unet

BATCH = 3  # InstructPix2Pix's dual classifier-free guidance batch
TEXT_LEN, TEXT_DIM = 77, 768  # CLIP ViT-L/14 hidden states
TIMESTEP = 981  # the first of 20 Euler steps; the value does not change the work
VAE_FACTOR = 8  # image pixels per latent
DEFAULT_SIZES = [256, 512]
DEFAULT_REPEATS = 2
GB = 1e9


@dataclass
class Row:
    size: int  # image side in pixels (square); latents are size / 8
    latent: int
    diffusers_s: list[float] = field(default_factory=list)
    pbmlx_s: list[float] = field(default_factory=list)
    diffusers_best_s: float = 0.0
    pbmlx_best_s: float = 0.0
    diffusers_median_s: float = 0.0
    pbmlx_median_s: float = 0.0
    ratio_best: float = 0.0  # pbmlx / diffusers
    ratio_median: float = 0.0
    max_abs_diff: float = 0.0  # between the two outputs (warm-up step)
    ref_max_abs: float = 0.0  # the reference output's scale, for max_abs_diff
    pbmlx_peak_gb: float = 0.0
    diffusers_peak_gb: float = 0.0


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build_models(seed: int, workdir: Path):
    """The diffusers UNet (seeded random weights) and pbmlx's UNet loaded from its save."""
    import sys

    import torch
    from diffusers import UNet2DConditionModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_ip2p import IP2P_UNET_CONFIG  # the real config, kept beside the tiny ones

    torch.manual_seed(seed)
    ref = UNet2DConditionModel(**IP2P_UNET_CONFIG).eval()
    ref.save_pretrained(str(workdir / "unet"), safe_serialization=True)
    unet = load_unet(workdir / "unet")
    mx.eval(unet.parameters())  # read the weights now, not inside the first timed step
    return ref, unet


def run(sizes: list[int], repeats: int, seed: int, log: Callable[[str], None]) -> list[Row]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pbmlx-unet-bench-") as tmp:
        ref, unet = build_models(seed, Path(tmp))
    n_params = sum(p.numel() for p in ref.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    log(f"built both UNets ({n_params / 1e6:.1f}M parameters) in {time.perf_counter() - t0:.0f} s")

    rows = []
    for size in sizes:
        n = size // VAE_FACTOR
        rng = np.random.default_rng(seed)
        sample = rng.standard_normal((BATCH, 8, n, n)).astype(np.float32)
        context = rng.standard_normal((BATCH, TEXT_LEN, TEXT_DIM)).astype(np.float32)
        sample_t, context_t = torch.from_numpy(sample), torch.from_numpy(context)
        sample_mx = mx.array(np.ascontiguousarray(sample.transpose(0, 2, 3, 1)))  # NHWC
        context_mx, t_mx = mx.array(context), mx.array(TIMESTEP)

        def step_diffusers():
            with torch.inference_mode():
                return ref(sample_t, TIMESTEP, context_t).sample  # noqa: B023

        def step_pbmlx():
            out = unet(sample_mx, t_mx, context_mx)  # noqa: B023
            mx.eval(out)
            return out

        row = Row(size=size, latent=n)
        # Warm-up (allocations, thread pools, compiled kernels) and the agreement check.
        ref_out = step_diffusers().numpy()
        ours = np.array(step_pbmlx()).transpose(0, 3, 1, 2)
        row.max_abs_diff = float(np.abs(ours.astype(np.float64) - ref_out).max())
        row.ref_max_abs = float(np.abs(ref_out).max())
        del ref_out, ours
        gc.collect()

        mx.reset_peak_memory()
        torch_growth = 0
        for _ in range(repeats):
            with PeakRSS() as rss:
                row.diffusers_s.append(timed(step_diffusers))
            torch_growth = max(torch_growth, rss.peak - rss.start_bytes)
            row.pbmlx_s.append(timed(step_pbmlx))
            log(f"  {size}px: diffusers {row.diffusers_s[-1]:.2f} s, pbmlx {row.pbmlx_s[-1]:.2f} s")
        row.pbmlx_peak_gb = mx.get_peak_memory() / GB
        row.diffusers_peak_gb = (param_bytes + torch_growth) / GB
        row.diffusers_best_s, row.pbmlx_best_s = min(row.diffusers_s), min(row.pbmlx_s)
        row.diffusers_median_s = statistics.median(row.diffusers_s)
        row.pbmlx_median_s = statistics.median(row.pbmlx_s)
        row.ratio_best = row.pbmlx_best_s / row.diffusers_best_s
        row.ratio_median = row.pbmlx_median_s / row.diffusers_median_s
        rows.append(row)
        print(
            f"{size:>5} {n:>4}x{n:<4} {row.diffusers_best_s:>9.2f} {row.pbmlx_best_s:>9.2f} "
            f"{row.ratio_best:>8.2f} {row.ratio_median:>9.2f} {row.diffusers_peak_gb:>8.2f} "
            f"{row.pbmlx_peak_gb:>8.2f} {row.max_abs_diff:>10.2g}",
            flush=True,
        )
    return rows


def main() -> None:
    import diffusers
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="image sides")
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed steps per size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results as JSON to this path")
    ap.add_argument("--quiet", action="store_true", help="no per-step lines")
    args = ap.parse_args()
    for s in args.sizes:
        if s <= 0 or s % (VAE_FACTOR * 8):
            ap.error(f"--sizes {s}: the image side must be a positive multiple of 64")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    env = {
        "pbmlx": pbmlx.__version__,
        "mlx": mx.__version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "backend": backend(),
        "blas": blas_info().library,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "load_before": os.getloadavg(),
    }
    print("  ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    log = (lambda _: None) if args.quiet else (lambda s: print(s, flush=True))
    rows_header = (
        f"{'size':>5} {'latent':^9} {'diffusers':>9} {'pbmlx':>9} {'ratio':>8} {'ratio':>9} "
        f"{'torch GB':>8} {'mlx GB':>8} {'max diff':>10}\n"
        f"{'px':>5} {'':9} {'best s':>9} {'best s':>9} {'best':>8} {'median':>9}"
    )
    print(rows_header, flush=True)
    rows = run(args.sizes, args.repeats, args.seed, log)
    env["load_after"] = os.getloadavg()
    env["max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    print(f"load average before {env['load_before']}, after {env['load_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": [asdict(r) for r in rows]}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
