"""Time the local judge on a 1 MP pair, with and without a CLIP provider.

    .venv/bin/python benchmarks/judge.py [--repeats 5] [--json out.json] [--clip CLIP_DIR]

The photo is skimage's ``coffee`` resized with Lanczos to 1224 x 816 (1 MP); the edited image
is a PIL edit of it. Cases, each timed after one warm-up run as the median of N runs of
``Judge(...)(source, edited, instruction)`` (reading both images from memory, aligning,
measuring, mapping, weighing):

- ``adjust``: "brighten this picture" (planner route ``adjust``: the statistics provider,
  which also runs the adjust engine on the source for the expected result);
- ``generative, no CLIP``: "add a red ball to the picture" (route ``diffusion``, compliance
  not available: the other three criteria);
- ``generative, CLIP``: the same with a CLIP provider: ``--clip DIR`` (a real checkpoint, e.g.
  openai/clip-vit-base-patch32 downloaded), else a random-weight CLIP with ViT-B/32's shapes
  (151M parameters; timing only: its scores mean nothing);
- ``misaligned``: the brightened image cropped by 8 % and resized (the registration search).

Also prints the time of the CLIP part alone (two image encodings + one text batch). Not a
test: numbers depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from pbmlx.backend import backend
from pbmlx.judge.core import Judge

SIZE = (1224, 816)  # 1 MP, 3:2 like the photo
DEFAULT_REPEATS = 5


def _photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee()).resize(SIZE, Image.Resampling.LANCZOS)


def _red_ball(im: Image.Image) -> Image.Image:
    x = np.asarray(im, np.float32).copy()
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    x[(yy - 0.6 * h) ** 2 + (xx - 0.6 * w) ** 2 < (0.12 * h) ** 2] = (230, 25, 20)
    return Image.fromarray(x.astype(np.uint8))


def _random_vit_b32(folder: Path) -> Path:
    """A random-weight CLIP with openai/clip-vit-base-patch32's shapes (timing only), written
    by the judge tests' checkpoint builder (MLX layout, byte-level tokenizer)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_clip import write_tiny_clip

    from pbmlx.bench.configs import CLIP_B32

    text = {k: v for k, v in CLIP_B32["text_config"].items() if k != "vocab_size"}
    vision = CLIP_B32["vision_config"]
    return write_tiny_clip(
        folder, text=text, vision=vision, projection_dim=CLIP_B32["projection_dim"]
    )


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--clip", help="a CLIP checkpoint folder or hub id (default: random ViT-B/32)")
    args = ap.parse_args()

    src = _photo()
    bright = ImageEnhance.Brightness(src).enhance(1.2)
    ball = _red_ball(src)
    w, h = SIZE
    cropped = bright.resize(SIZE, Image.Resampling.LANCZOS, box=(0.08 * w, 0.08 * h, w, h))
    no_clip = Judge(model=None)
    rows = {
        "adjust": _time(lambda: no_clip(src, bright, "brighten this picture"), args.repeats),
        "generative, no CLIP": _time(
            lambda: no_clip(src, ball, "add a red ball to the picture"), args.repeats
        ),
        "misaligned": _time(lambda: no_clip(src, cropped, "brighten this picture"), args.repeats),
    }
    clip_note = "none"
    with tempfile.TemporaryDirectory() as tmp:
        where = args.clip or _random_vit_b32(Path(tmp) / "clip-b32-random")
        if where:
            from pbmlx.models.clip import CLIPModel

            model = CLIPModel.from_pretrained(where)
            clip_note = str(args.clip) if args.clip else "random weights, ViT-B/32 shapes"
            with_clip = Judge(model=model)
            rows["generative, CLIP"] = _time(
                lambda: with_clip(src, ball, "add a red ball to the picture"), args.repeats
            )
            small = np.asarray(src.resize((512, 341)), np.float32)[None] / 255.0

            def clip_only():
                import mlx.core as mx

                mx.eval(model.encode_image(small), model.encode_image(small))
                mx.eval(model.encode_text(["add a red ball to the picture", "a photo"]))

            rows["CLIP part alone"] = _time(clip_only, args.repeats)
    print(f"judge on a {w}x{h} pair ({w * h / 1e6:.1f} MP), backend {backend()}, CLIP: {clip_note}")
    for name, t in rows.items():
        print(f"  {name:<22} {t * 1000:8.0f} ms")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "size": list(SIZE),
                    "backend": backend(),
                    "machine": platform.platform(),
                    "clip": clip_note,
                    "median_seconds": rows,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
