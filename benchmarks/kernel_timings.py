"""Each kernel against its MLX-op reference on the backend present, and the adjust engine
against PIL on 1 MP and 12 MP photos, in the same run.

    .venv/bin/python benchmarks/kernel_timings.py [--json out.json] [--repeats 7] [--sizes 1 12]

Rows:

- ``kernel`` rows: one dispatcher on realistic inputs, timed as the best of N evaluated calls
  with the default path (the kernel, where the backend has one) and inside
  ``reference_only()`` (the MLX ops); ``ratio`` = kernel / reference (< 1: the kernel is
  faster). ``GB/s`` is the bytes the kernel must read and write once divided by its time, and
  ``of peak`` that against the machine's copy bandwidth measured here (a large ``np.copyto``:
  on the CPU the practical peak of a streaming kernel). Where the backend has no kernel for an
  op the row says ``reference`` and has no ratio.
- ``adjust vs PIL`` rows: the adjust stage, 8-bit codes in and out as ``pbmlx edit`` runs it
  (``apply_ops(codes, plan, out_dtype=uint8)``), against ``ImageEnhance.Brightness`` and the
  ``Brightness -> Contrast -> Color`` chain (PIL image in and out), alternating the two sides so
  both see the same load; ``with conv.`` adds the PIL-image <-> numpy conversions a Python user
  of both libraries would pay. Targets (issue 9), at 12 MP: one op <= 0.5x PIL's time, the
  three-op chain <= 0.3x.
- ``memory``: the peak resident memory a 12 MP ``pbmlx edit "brighten this picture"`` adds
  (VmHWM reset after a warm-up; a subprocess per case), against the decoded image's float32
  size. Target: <= 2x.

The load average is printed with the results: ratios measured under load favour neither side
reliably (PIL is single-threaded, the kernels use every core). Not a test.
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np
from pbmlx.kernels import adjust as ka
from pbmlx.kernels import cpu, dispatch
from pbmlx.kernels.dispatch import reference_only
from pbmlx.kernels.guidance import guided_step
from pbmlx.kernels.image_io import to_model_input, to_uint8
from pbmlx.kernels.norm import group_norm
from PIL import Image, ImageEnhance

from pbmlx.adjust import apply_ops
from pbmlx.bench.runner import alternating
from pbmlx.diffuse.schedulers import make_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_ip2p import SCHEDULER_CONFIG

SIZES = {1: (1224, 816), 12: (4240, 2832)}  # megapixels -> (width, height)
BRIGHTNESS = [{"op": "brightness", "amount": 0.2}]
CHAIN = [
    {"op": "brightness", "amount": 0.2},
    {"op": "contrast", "amount": 0.2},
    {"op": "saturation", "amount": 0.2},
]


def photo(width: int, height: int) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee()).resize((width, height), Image.Resampling.LANCZOS)


def best_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: kernel builds, allocations, thread start-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if isinstance(out, mx.array):
            mx.eval(out)
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth() -> float:
    """Bytes per second of a 256 MB copy (read + write), best of 5: the streaming peak here."""
    src = np.ones(1 << 26, dtype=np.float32)
    dst = np.empty_like(src)
    t = best_s(lambda: np.copyto(dst, src), 5)
    return 2 * src.nbytes / t


def kernel_rows(repeats: int, peak: float) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    backend = dispatch.device_backend()

    def add(name: str, fn: Callable[[], object], nbytes: int, has_kernel: bool) -> None:
        t_ref = best_s(lambda: _ref(fn), repeats)
        row = {"kernel": name, "backend": backend, "reference_ms": t_ref * 1e3}
        if has_kernel:
            t = best_s(fn, repeats)
            gbs = nbytes / t / 1e9
            row.update(kernel_ms=t * 1e3, ratio=t / t_ref, gb_s=gbs, of_peak=gbs * 1e9 / peak)
        rows.append(row)

    gpu = backend in ("metal", "cuda")
    u8 = np.asarray(photo(*SIZES[12]))
    n = u8.size
    for label, plan in (("brightness", BRIGHTNESS), ("brightness+contrast+saturation", CHAIN)):
        steps = [(s["op"], s["amount"]) for s in plan]
        passes = 1 + sum(s[0] == "contrast" for s in steps)
        add(
            f"adjust_chain {label}, 12 MP codes",
            lambda steps=steps: ka.adjust_chain(u8, steps, 0, mx.uint8),
            n * (passes + 1),
            True,
        )
    x = mx.array(u8[:1024, :1536] / np.float32(255))
    add("blur sigma 3, 1.5 MP", lambda: ka.gaussian_blur(x, 3.0), 4 * x.size * 4, gpu)
    add("unsharp sigma 1, 1.5 MP", lambda: ka.unsharp(x, 0.5, 1.0), 4 * x.size * 5, gpu)
    # The UNet's largest GroupNorm at 512 px: (3, 64, 64, 320), 32 groups, with SiLU.
    h = mx.array(rng.standard_normal((3, 64, 64, 320), dtype=np.float32))
    w, b = mx.ones((320,)), mx.zeros((320,))
    add(
        "group_norm+silu (3, 64, 64, 320)",
        lambda: group_norm(h, w, b, 32, 1e-5, act=cpu.silu),
        8 * h.size,
        gpu or (backend == "cpu" and cpu.info().available),
    )
    sched = make_scheduler("euler_a", SCHEDULER_CONFIG)  # timbrooks/instruct-pix2pix's
    sched.set_timesteps(20)
    eps3 = mx.array(rng.standard_normal((3, 64, 64, 4), dtype=np.float32))
    lat = mx.array(rng.standard_normal((1, 64, 64, 4), dtype=np.float32))
    key = mx.random.key(0)
    add(
        "guided_step euler_a (64 x 64 x 4 latents)",
        lambda: guided_step(eps3, lat, sched, 3, 7.5, 1.5, key=key),
        4 * (eps3.size + 3 * lat.size),
        gpu,
    )
    img = mx.array(u8[:512, :512])
    add("image to model input (512 px)", lambda: to_model_input(img), img.size * 5, gpu)
    y = mx.array(rng.uniform(-1, 1, (512, 512, 3)).astype(np.float32))
    add("model output to codes (512 px)", lambda: to_uint8(y), y.size * 5, gpu)
    return rows


def _ref(fn: Callable[[], object]) -> object:
    with reference_only():
        out = fn()
        if isinstance(out, mx.array):
            mx.eval(out)
        return out


def pil_rows(sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    for mp in sizes:
        im = photo(*SIZES[mp])
        codes = np.asarray(im)
        cases = [
            ("brightness", BRIGHTNESS, lambda im=im: ImageEnhance.Brightness(im).enhance(1.2)),
            (
                "brightness+contrast+saturation",
                CHAIN,
                lambda im=im: ImageEnhance.Color(
                    ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.2)).enhance(1.2)
                ).enhance(1.2),
            ),
        ]
        for label, plan, pil in cases:

            def stage(plan=plan, codes=codes) -> np.ndarray:
                return apply_ops(codes, plan, out_dtype=mx.uint8)

            def e2e(plan=plan, im=im) -> Image.Image:
                return Image.fromarray(apply_ops(np.asarray(im), plan, out_dtype=mx.uint8))

            t_stage, t_pil = alternating(stage, pil, repeats)
            t_e2e, t_pil2 = alternating(e2e, pil, repeats)
            t_pil = min(t_pil, t_pil2)
            rows.append(
                {
                    "case": label,
                    "megapixels": round(codes.shape[0] * codes.shape[1] / 1e6, 1),
                    "pbmlx_ms": t_stage * 1e3,
                    "pbmlx_with_pil_conversions_ms": t_e2e * 1e3,
                    "pil_ms": t_pil * 1e3,
                    "ratio": t_stage / t_pil,
                    "ratio_with_conversions": t_e2e / t_pil,
                }
            )
    return rows


_MEMORY_CHILD = r"""
import sys, time
import pbmlx
from pbmlx.flow import edit_file
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
src, out, instruction = sys.argv[1:4]
edit_file(src, [instruction], output=out, overwrite=True)  # warm-up: imports, kernel builds
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM (the peak) to the current resident size
base = status("VmRSS:")
edit_file(src, [instruction], output=out, overwrite=True)
print(status("VmHWM:") - base)
"""


def memory_row(tmp: Path) -> dict | None:
    if not Path("/proc/self/clear_refs").exists():
        return None  # Linux only (the peak-reset file); macOS users: /usr/bin/time -l
    w, h = SIZES[12]
    src = tmp / "photo_12mp.jpg"
    photo(w, h).save(src, quality=92)
    instruction = "brighten this picture"
    run = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(src), str(tmp / "out.jpg"), instruction],
        capture_output=True,
        text=True,
        check=True,
    )
    added = int(run.stdout.strip().splitlines()[-1])
    f32 = w * h * 3 * 4
    return {
        "case": f"pbmlx edit '{instruction}', 12 MP JPEG",
        "peak_added_mb": added / 1e6,
        "float32_image_mb": f32 / 1e6,
        "ratio": added / f32,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 12], choices=sorted(SIZES))
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    import tempfile

    peak = copy_bandwidth()
    kernels = kernel_rows(args.repeats, peak)
    pil = pil_rows(args.sizes, args.repeats)
    memory = None
    if not args.no_memory:
        with tempfile.TemporaryDirectory() as tmp:
            memory = memory_row(Path(tmp))
    load = os.getloadavg()
    print(f"backend {dispatch.device_backend()}, copy bandwidth {peak / 1e9:.1f} GB/s, "
          f"load average {load[0]:.2f}")  # fmt: skip
    print(f"{'kernel':56} {'kernel ms':>10} {'ref ms':>9} {'ratio':>6} {'GB/s':>6} {'of peak':>8}")
    for r in kernels:
        if "kernel_ms" in r:
            print(
                f"{r['kernel']:56} {r['kernel_ms']:10.2f} {r['reference_ms']:9.2f} "
                f"{r['ratio']:6.2f} {r['gb_s']:6.1f} {r['of_peak']:8.0%}"
            )
        else:
            print(f"{r['kernel']:56} {'reference':>10} {r['reference_ms']:9.2f}")
    print(f"\n{'adjust stage vs PIL (8-bit in and out)':40} {'MP':>5} {'pbmlx ms':>9} "
          f"{'PIL ms':>8} {'ratio':>6} {'with conv.':>11}")  # fmt: skip
    for r in pil:
        print(
            f"{r['case']:40} {r['megapixels']:5.1f} {r['pbmlx_ms']:9.1f} {r['pil_ms']:8.1f} "
            f"{r['ratio']:6.2f} {r['ratio_with_conversions']:11.2f}"
        )
    if memory:
        print(
            f"\n{memory['case']}: peak +{memory['peak_added_mb']:.0f} MB = "
            f"{memory['ratio']:.2f}x the float32 image ({memory['float32_image_mb']:.0f} MB)"
        )
    if args.json:
        doc = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": load},
            "mlx": mx.__version__,
            "backend": dispatch.device_backend(),
            "copy_bandwidth_gb_s": peak / 1e9,
            "kernels": kernels,
            "adjust_vs_pil": pil,
            "memory": memory,
        }
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
