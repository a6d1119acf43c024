"""Training throughput of the full-size InstructPix2Pix UNet (random weights), full and LoRA.

    .venv/bin/python benchmarks/train_step.py [--resolution 256] [--batch 1] [--steps 3]
                                              [--modes full lora] [--json out.json]

One training step is what ``pbmlx train`` runs per micro-step: InstructPix2Pix's loss
(:func:`pbmlx.train.objective.ip2p_loss`) on a batch of cached latents and text states, its
gradient (``mlx.nn.value_and_grad``), and an AdamW update; "lora" puts mlx-lm's ``LoRALinear``
(rank 8) on the attention projections first (:func:`pbmlx.train.loop.apply_lora`). The UNet is
timbrooks/instruct-pix2pix's configuration (859.5M parameters) with MLX's default random
initialisation, float32. Reported per mode: seconds per step (best of ``--steps`` after one
warm-up step), images per second, MLX's peak memory, and the FLOPs of one image's step
(3x the UNet's forward FLOPs: the backward pass costs about twice the forward; counted from the
config's layer shapes by :func:`pbmlx.bench.flops.unet_flops`, not guessed) with the achieved
FLOP/s, and what an epoch of Pico-Banana-400K's 257,730 SFT records costs in FLOPs.
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import argparse
import json
import os
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from pbmlx.bench.flops import unet_flops
from pbmlx.models.unet import UNet2DConditionModel, UNetConfig
from pbmlx.train import objective

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_ip2p import IP2P_UNET_CONFIG, SCHEDULER_CONFIG

SFT_RECORDS = 257_730


def run(mode: str, resolution: int, batch: int, steps: int) -> dict:
    from pbmlx.train.loop import apply_lora

    latent = resolution // 8
    model = UNet2DConditionModel(UNetConfig.from_dict(IP2P_UNET_CONFIG))
    mx.eval(model.parameters())
    flops = unet_flops(IP2P_UNET_CONFIG, latent) * 3 * batch
    if mode == "lora":
        apply_lora(model, 8, 1.0, False)
    params = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    alphas, n_train, _ = objective.schedule_table(SCHEDULER_CONFIG)
    opt = optim.AdamW(learning_rate=1e-5)
    null = mx.zeros((1, 77, 768))

    def loss_fn(b, d):
        return objective.ip2p_loss(model, b, d, null, alphas)

    step = nn.value_and_grad(model, loss_fn)
    times = []
    mx.reset_peak_memory()
    for i in range(steps + 1):
        key = mx.random.key(i)
        b = objective.Batch(
            mx.random.normal((batch, latent, latent, 4), key=key),
            mx.random.normal((batch, latent, latent, 4), key=mx.random.split(key)[0]),
            mx.random.normal((batch, 77, 768), key=mx.random.split(key)[1]),
        )
        d = objective.draw(key, (batch, latent, latent, 4), n_train)
        mx.eval(b.target_latents, b.image_latents, b.text, d.noise)
        t0 = time.perf_counter()
        loss, grads = step(b, d)
        opt.update(model, grads)
        mx.eval(loss, model.trainable_parameters(), opt.state)
        if i:  # the first step builds the optimizer state: a warm-up
            times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "mode": mode,
        "resolution": resolution,
        "batch": batch,
        "trainable_parameters": params,
        "seconds_per_step": best,
        "images_per_second": batch / best,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
        "step_tflop": flops / 1e12,
        "achieved_gflop_s": flops / best / 1e9,
        "epoch_pflop": flops / batch * SFT_RECORDS / 1e15,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [run(m, args.resolution, args.batch, args.steps) for m in args.modes]
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}; {mx.default_device()}")
    for r in rows:
        print(
            f"{r['mode']:5} {r['resolution']} px batch {r['batch']}: {r['seconds_per_step']:.2f} "
            f"s/step, {r['images_per_second']:.3f} images/s, peak {r['peak_memory_gb']:.1f} GB, "
            f"{r['trainable_parameters'] / 1e6:.1f}M trainable, {r['step_tflop']:.2f} TFLOP/step "
            f"({r['achieved_gflop_s']:.0f} GFLOP/s); an epoch of {SFT_RECORDS} records: "
            f"{r['epoch_pflop']:.0f} PFLOP"
        )
    if args.json:
        args.json.write_text(json.dumps({"load": load, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
