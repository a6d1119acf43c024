"""Time the adjust engine against PIL on the same photo, in the same run.

    .venv/bin/python benchmarks/adjust.py [--json out.json] [--repeats 5] [--sizes 1 12]

The photo is skimage's ``coffee`` (600 x 400) resized with Lanczos to ~1 MP (1224 x 816) and
~12 MP (4240 x 2832). Each case is timed after one warm-up run as the best of N runs:

- ``pbmlx``: the engine alone, an evaluated (H, W, 3) float32 ``mx.array`` in and out;
- ``pbmlx e2e``: what a user of PIL would compare with: 8-bit PIL image in, 8-bit PIL image out
  (``np.asarray`` -> ``apply_ops(codes, plan, out_dtype=uint8)`` -> ``Image.fromarray``: the
  8-bit codes go to the fused kernels and come back, as in ``pbmlx edit``);
- ``PIL``: the equivalent PIL call where one exists (ImageEnhance.Contrast / Color,
  ImageOps.grayscale / invert, ImageFilter.GaussianBlur / UnsharpMask), on the 8-bit image.

``speedup`` is PIL time / pbmlx e2e time (> 1: pbmlx is faster). Rows without a PIL equivalent
(exposure, grain, vignette, ...) time pbmlx only. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

# isort: off
import pbmlx  # (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import mlx.core as mx
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from pbmlx.adjust import SPECS, apply_ops
from pbmlx.adjust.ops import SHARPEN_SIGMA
from pbmlx.backend import backend, blas_info

SIZES = {1: (1224, 816), 12: (4240, 2832)}  # megapixels -> (width, height), 3:2 like the photo
DEFAULT_REPEATS = 5


def _grayscale_rgb(im: Image.Image) -> Image.Image:
    return ImageOps.grayscale(im).convert("RGB")


def _blur_sigma(im: Image.Image, amount: float) -> float:
    return amount / 100.0 * max(im.size)


# name, pbmlx plan, PIL equivalent (or None)
CASES: list[tuple[str, list[dict], Callable[[Image.Image], Image.Image] | None]] = [
    (
        "contrast 0.25",
        [{"op": "contrast", "amount": 0.25}],
        lambda im: ImageEnhance.Contrast(im).enhance(1.25),
    ),
    (
        "saturation 0.3",
        [{"op": "saturation", "amount": 0.3}],
        lambda im: ImageEnhance.Color(im).enhance(1.3),
    ),
    ("grayscale 1", [{"op": "grayscale", "amount": 1.0}], _grayscale_rgb),
    ("invert 1", [{"op": "invert", "amount": 1.0}], ImageOps.invert),
    (
        "blur 0.3",
        [{"op": "blur", "amount": 0.3}],
        lambda im: im.filter(ImageFilter.GaussianBlur(_blur_sigma(im, 0.3))),
    ),
    (
        "blur 5 (max)",
        [{"op": "blur", "amount": 5.0}],
        lambda im: im.filter(ImageFilter.GaussianBlur(_blur_sigma(im, 5.0))),
    ),
    (
        "sharpen 0.5",
        [{"op": "sharpen", "amount": 0.5}],
        lambda im: im.filter(ImageFilter.UnsharpMask(SHARPEN_SIGMA, 50, 0)),
    ),
    (
        "exposure+contrast+saturation",
        [
            {"op": "exposure", "amount": 0.5},
            {"op": "contrast", "amount": 0.25},
            {"op": "saturation", "amount": 0.3},
        ],
        lambda im: ImageEnhance.Color(ImageEnhance.Contrast(im).enhance(1.25)).enhance(1.3),
    ),
    ("grain+vignette", [{"op": "grain", "amount": 0.3}, {"op": "vignette", "amount": 0.4}], None),
] + [
    (f"{name} {spec.moderate:g}", [{"op": name, "amount": spec.moderate}], None)
    for name, spec in SPECS.items()
    if name not in {"contrast", "saturation", "grayscale", "invert", "blur", "sharpen"}
]


@dataclass
class Row:
    case: str
    megapixels: float
    pbmlx_ms: float
    pbmlx_e2e_ms: float
    pil_ms: float | None
    speedup: float | None  # pil_ms / pbmlx_e2e_ms


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocation, thread start-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def engine(img: mx.array, plan: list[dict]) -> mx.array:
    out = apply_ops(img, plan, seed=0)
    mx.eval(out)
    return out


def end_to_end(im: Image.Image, plan: list[dict]) -> Image.Image:
    return Image.fromarray(apply_ops(np.asarray(im), plan, seed=0, out_dtype=mx.uint8))


def photo(width: int, height: int) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee()).resize((width, height), Image.Resampling.LANCZOS)


def run(sizes: list[int], repeats: int) -> list[Row]:
    rows = []
    for mp in sizes:
        w, h = SIZES[mp]
        im = photo(w, h)
        img = mx.array(np.asarray(im)).astype(mx.float32) / 255.0
        mx.eval(img)
        n = repeats if mp <= 1 else max(2, repeats // 2)  # 12 MP runs are long: fewer repeats
        for case, plan, pil_fn in CASES:
            t_engine = best_ms(lambda: engine(img, plan), n)  # noqa: B023
            t_e2e = best_ms(lambda: end_to_end(im, plan), n)  # noqa: B023
            t_pil = best_ms(lambda: pil_fn(im), n) if pil_fn else None  # noqa: B023
            rows.append(
                Row(case, w * h / 1e6, t_engine, t_e2e, t_pil, t_pil / t_e2e if t_pil else None)
            )
            print(fmt(rows[-1]), flush=True)
    return rows


def fmt(r: Row) -> str:
    pil = f"{r.pil_ms:10.1f}" if r.pil_ms is not None else f"{'-':>10}"
    sp = f"{r.speedup:8.2f}x" if r.speedup is not None else f"{'-':>9}"
    return f"{r.case:30s} {r.megapixels:6.1f} {r.pbmlx_ms:10.1f} {r.pbmlx_e2e_ms:10.1f} {pil} {sp}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results as JSON to this path")
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 12], choices=sorted(SIZES))
    args = ap.parse_args()

    env = {
        "mlx": mx.__version__,
        "pillow": Image.__version__,
        "backend": backend(),
        "blas": blas_info().library,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "pbmlx": pbmlx.__version__,
    }
    print("  ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{'case':30s} {'MP':>6} {'pbmlx ms':>10} {'e2e ms':>10} {'PIL ms':>10} {'speedup':>9}")
    rows = run(args.sizes, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": [asdict(r) for r in rows]}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
