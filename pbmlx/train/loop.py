"""``pbmlx train``: fine-tune an InstructPix2Pix UNet in MLX on Pico-Banana-400K.

The run, step by step (``TrainConfig`` holds every setting):

1. The base model is loaded as float32 (a diffusers folder or hub id is first converted, float32,
   into ``<work>/base``); the VAE and the text encoder stay frozen and only encode.
2. Examples come from :func:`pbmlx.train.data.examples` (SFT records, or preference records with
   ``dpo``); they are encoded once each, through the cache folder when one is given.
3. Data order: example ``g`` of the run (``g = (step * accum + micro) * global_batch + j``) is
   entry ``g mod n`` of epoch ``g // n``'s permutation, ``numpy.random.default_rng([seed,
   epoch])``; the global batch is ``batch_size * processes``, and process ``r`` takes rows
   ``[r b, (r + 1) b)`` of it. The random draws of micro-step ``(step, micro)`` (noise,
   timesteps, dropout, the edit's posterior sample) come from one key that depends on the seed,
   the step and the micro-step only, drawn for the whole global batch. So the result depends
   on the seed and the settings, not on the number of processes or on interruptions.
4. Each micro-step's gradient (``mlx.nn.value_and_grad`` of the objective in
   :mod:`pbmlx.train.objective`) is summed over ``grad_accum`` micro-steps, averaged across
   processes (``mlx.nn.utils.average_gradients``: an all-reduce of ``mx.distributed``) and
   divided by ``grad_accum``; AdamW (``mlx.optimizers``) applies it with the learning rate of
   mlx-lm's ``build_schedule`` (linear warm-up, then cosine decay or constant).
5. LoRA (``lora_rank``): the attention projections (``to_q``, ``to_k``, ``to_v``,
   ``to_out.0``), with ``lora_conv`` also each transformer's ``proj_in`` / ``proj_out`` (1x1
   convolutions in the reference UNet), become mlx-lm's ``LoRALinear``; only their low-rank
   factors train. Saving fuses them (``LoRALinear.fuse``) into plain weights.
6. Checkpoints (every ``checkpoint_every`` steps, and at the end) go to
   ``<work>/checkpoints/step-NNNNNNN`` through a temporary folder and a rename: the trainable
   parameters, the optimizer state and ``state.json`` (step, losses, settings); a kill leaves
   the last complete checkpoint. ``resume`` continues from the newest one: same data, same
   draws, same optimizer state, so the run ends where an uninterrupted one would.
7. The output is a ``pbmlx convert`` folder (the base's files, the new UNet weights in the
   base's dtype, a manifest with fresh hashes and a ``training`` entry), written atomically;
   ``save_adapter`` also writes ``adapter/adapters.safetensors`` + ``adapter_config.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from pbmlx.errors import PbmlxError
from pbmlx.train import objective
from pbmlx.train.data import Encoded, Encoder, examples

CHECKPOINTS = "checkpoints"
STATE = "state.json"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
ADAPTER_DIR = "adapter"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_CONV_TARGETS = ("proj_in", "proj_out")


@dataclass
class TrainConfig:
    data: Path
    model: str
    out: Path
    resolution: int = 256
    batch_size: int = 1
    steps: int = 1000
    lr: float = 1e-4
    warmup: int = 0
    schedule: str = "cosine"  # or "constant"
    weight_decay: float = 1e-2
    grad_accum: int = 1
    grad_checkpoint: bool = False
    lora_rank: int | None = None
    lora_scale: float = 1.0
    lora_conv: bool = False
    dropout: float = objective.DEFAULT_DROPOUT
    seed: int = 0
    cache: Path | None = None
    work: Path | None = None  # checkpoints and a converted base; default <out>.train
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = False
    save_adapter: bool = False
    dpo: bool = False
    dpo_beta: float = objective.DEFAULT_DPO_BETA
    sources: Path | None = None
    edit_types: list[str] | None = None
    groups: list[str] | None = None
    instruction: str = "summarized"
    split: str | None = "train"
    limit: int | None = None
    progress: bool = True

    def work_dir(self) -> Path:
        return self.work or self.out.with_name(self.out.name + ".train")

    def settings(self) -> dict[str, Any]:
        """What must match between a run and its resumption."""
        keep = [
            "resolution",
            "batch_size",
            "steps",
            "lr",
            "warmup",
            "schedule",
            "weight_decay",
            "grad_accum",
            "lora_rank",
            "lora_scale",
            "lora_conv",
            "dropout",
            "seed",
            "dpo",
            "dpo_beta",
            "instruction",
            "split",
            "limit",
        ]
        d = asdict(self)
        return {k: d[k] for k in keep} | {"model": str(self.model), "data": str(self.data)}


@dataclass
class TrainResult:
    steps: int
    loss_first: float
    loss_last: float
    seconds: float
    output: str
    examples: int
    images_per_second: float
    peak_memory_bytes: int
    processes: int
    resumed_from: int | None
    adapter: str | None = None
    skipped: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- model


def _base_folder(cfg: TrainConfig, log: Callable[[str], None]) -> Path:
    """A converted folder for the base model (converted float32 into the work folder if the
    base is a diffusers folder or a hub id)."""
    from pbmlx.models.checkpoint import is_converted

    if Path(cfg.model).expanduser().is_dir() and is_converted(Path(cfg.model).expanduser()):
        return Path(cfg.model).expanduser()
    base = cfg.work_dir() / "base"
    if base.is_dir() and is_converted(base):
        return base
    from pbmlx.convert.to_mlx import convert

    log(f"converting {cfg.model} (float32) into {base}")
    return convert(cfg.model, base, dtype="float32")


def _model_key(folder: Path) -> str:
    from pbmlx.models.checkpoint import MARKER

    return hashlib.sha256((folder / MARKER).read_bytes()).hexdigest()[:16]


def apply_lora(unet: nn.Module, rank: int, scale: float, conv: bool) -> int:
    """Freeze ``unet`` and put mlx-lm ``LoRALinear`` layers on the targets (module docstring);
    returns how many layers were adapted."""
    from mlx_lm.tuner.lora import LoRALinear

    unet.freeze()
    targets = LORA_TARGETS + (LORA_CONV_TARGETS if conv else ())
    swaps = []
    for path, module in unet.named_modules():
        if isinstance(module, nn.Linear) and any(
            path == t or path.endswith("." + t) for t in targets
        ):
            swaps.append((path, LoRALinear.from_base(module, r=rank, scale=scale)))
    if not swaps:
        raise PbmlxError("The UNet has no attention projections to put LoRA layers on.")
    unet.update_modules(tree_unflatten(swaps))
    return len(swaps)


def fuse_lora(unet: nn.Module) -> None:
    """Replace every ``LoRALinear`` by its fused ``nn.Linear`` (``W + scale B^T A^T``)."""
    from mlx_lm.tuner.lora import LoRALinear

    fused = [(p, m.fuse()) for p, m in unet.named_modules() if isinstance(m, LoRALinear)]
    if fused:
        unet.update_modules(tree_unflatten(fused))


_CHECKPOINTED: dict[type, type] = {}


def gradient_checkpointing(unet: nn.Module) -> int:
    """Recompute the activations of every ResNet block and every transformer in the backward
    pass instead of keeping them (``mx.checkpoint``), for these instances only; returns how
    many. (Those layers take and return plain arrays; whole down/up blocks, which return lists
    of skips, lose their inputs' gradients under ``mx.checkpoint``.)"""
    from pbmlx.models.unet import ResnetBlock2D, Transformer2DModel

    layers = [m for _, m in unet.named_modules() if type(m) in (ResnetBlock2D, Transformer2DModel)]
    for layer in layers:
        cls = type(layer)
        if cls not in _CHECKPOINTED:

            def call(self, *args, __fn=cls.__call__):
                def inner(params, *args):
                    self.update(params)
                    return __fn(self, *args)

                return mx.checkpoint(inner)(self.trainable_parameters(), *args)

            _CHECKPOINTED[cls] = type(f"Checkpointed{cls.__name__}", (cls,), {"__call__": call})
        layer.__class__ = _CHECKPOINTED[cls]
    return len(layers)


# ---------------------------------------------------------------------------- checkpoints


def _checkpoint_dirs(work: Path) -> list[Path]:
    root = work / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE).is_file()]
    return sorted(done, key=lambda p: int(p.name[5:]))


def save_checkpoint(
    work: Path, step: int, model: nn.Module, opt: optim.Optimizer, state: dict, keep: int
) -> Path:
    """Write checkpoint ``step`` atomically (temporary folder, then rename); keep the newest
    ``keep``."""
    root = work / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    mx.save_safetensors(str(tmp / TRAINABLE), dict(tree_flatten(model.trainable_parameters())))
    opt_state = dict(tree_flatten(opt.state))
    mx.save_safetensors(str(tmp / OPTIMIZER), {k: mx.array(v) for k, v in opt_state.items()})
    (tmp / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in _checkpoint_dirs(work)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module, opt: optim.Optimizer) -> dict:
    model.update(tree_unflatten(list(mx.load(str(path / TRAINABLE)).items())))
    opt.state = tree_unflatten(list(mx.load(str(path / OPTIMIZER)).items()))
    return json.loads((path / STATE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- the run


def _step_key(seed: int, step: int, micro: int) -> mx.array:
    digest = hashlib.sha256(f"pbmlx-train:{seed}:{step}:{micro}".encode()).digest()
    return mx.random.key(int.from_bytes(digest[:8], "little") >> 1)


class _Order:
    """Which example is global example ``g`` (module docstring, point 3)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self._perms = n, seed, {}

    def __call__(self, g: int) -> int:
        epoch, pos = divmod(g, self.n)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._perms[epoch][pos])


def _rows(draws: objective.Draws, lo: int, hi: int) -> objective.Draws:
    return objective.Draws(draws.noise[lo:hi], draws.timesteps[lo:hi], draws.dropout_u[lo:hi])


def train(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> TrainResult:
    """Run ``cfg`` (module docstring); returns the summary ``pbmlx train --json`` prints."""
    from mlx.nn.utils import average_gradients
    from mlx_lm.tuner.utils import build_schedule

    from pbmlx.editor import load_pipeline

    log = log or (lambda m: print(m, file=sys.stderr))
    _check(cfg)
    world = mx.distributed.init()
    rank, size = world.rank(), world.size()
    say = log if rank == 0 else (lambda _: None)
    work = cfg.work_dir()
    if rank == 0:
        from pbmlx.convert.atomic import refuse_existing

        refuse_existing(cfg.out)
        work.mkdir(parents=True, exist_ok=True)
        if not cfg.resume and _checkpoint_dirs(work):
            raise PbmlxError(
                f"{work} already holds checkpoints of a run; continue it with --resume or "
                "remove them."
            )
    t_start = time.perf_counter()
    base = _base_folder(cfg, say) if rank == 0 else None
    if size > 1:  # every process waits for the conversion, then loads the same folder
        mx.eval(mx.distributed.all_sum(mx.array(1.0), stream=mx.cpu))
        base = _base_folder(cfg, lambda _: None)
    assert base is not None
    pipe = load_pipeline(base, dtype=mx.float32)
    unet = pipe.unet
    if pipe.unet.conv_in.weight.dtype != mx.float32:
        raise PbmlxError("Training needs float weights; train from a model that is not quantized.")
    from pbmlx.models.checkpoint import read_manifest

    if read_manifest(base).get("quantization"):
        raise PbmlxError(
            f"{cfg.model} is quantized; train from its float conversion (pbmlx convert without "
            "--quantize)."
        )
    alphas, n_train, prediction = objective.schedule_table(pipe.scheduler_config)
    scaling = pipe.vae.config.scaling_factor

    found, skipped = examples(
        cfg.data,
        preference=cfg.dpo,
        sources=cfg.sources,
        edit_types=cfg.edit_types,
        groups=cfg.groups,
        instruction=cfg.instruction,
        split=cfg.split,
        limit=cfg.limit,
    )
    if not found:
        raise PbmlxError(f"No usable training records in {cfg.data} ({_skips(skipped)}).")
    encoder = Encoder(pipe, cfg.resolution, _model_key(base), cfg.cache)
    null_text = encoder.null_text()

    reference = None
    if cfg.lora_rank:
        n_lora = apply_lora(unet, cfg.lora_rank, cfg.lora_scale, cfg.lora_conv)
        say(f"LoRA rank {cfg.lora_rank} on {n_lora} layers")
    elif cfg.dpo:
        reference = load_pipeline(base, dtype=mx.float32).unet  # the frozen starting model
        reference.freeze()
    if cfg.grad_checkpoint:
        gradient_checkpointing(unet)
    schedule = build_schedule(
        {
            "name": "cosine_decay" if cfg.schedule == "cosine" else "linear_schedule",
            "arguments": (
                [cfg.lr, max(1, cfg.steps - cfg.warmup), 0.0]
                if cfg.schedule == "cosine"
                else [cfg.lr, cfg.lr, 1]
            ),
            "warmup": cfg.warmup,
        }
    )
    opt = optim.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    opt.init(unet.trainable_parameters())

    step0, losses, resumed = 0, [], None
    if cfg.resume:
        done = _checkpoint_dirs(work)
        if not done:
            raise PbmlxError(f"--resume: {work / CHECKPOINTS} holds no checkpoint.")
        state = load_checkpoint(done[-1], unet, opt)
        if state["settings"] != cfg.settings():
            changed = sorted(
                k for k in cfg.settings() if state["settings"].get(k) != cfg.settings()[k]
            )
            raise PbmlxError(
                f"--resume: the settings differ from the run's ({', '.join(changed)})."
            )
        step0, losses, resumed = state["step"], state["losses"], state["step"]
        say(f"resuming at step {step0} from {done[-1]}")

    order = _Order(len(found), cfg.seed)
    b, global_b = cfg.batch_size, cfg.batch_size * size

    def loss_fn(batch, draws, ref_errors=None, loser=None):
        if cfg.dpo:
            return objective.dpo_loss(
                unet, ref_errors, batch, loser, draws, alphas, beta=cfg.dpo_beta,
                prediction_type=prediction,
            )  # fmt: skip
        return objective.ip2p_loss(
            unet, batch, draws, null_text, alphas, dropout=cfg.dropout, prediction_type=prediction
        )

    loss_and_grad = nn.value_and_grad(unet, loss_fn)
    bar = _bar(cfg, step0, rank)
    t0 = time.perf_counter()
    mx.reset_peak_memory()
    for step in range(step0, cfg.steps):
        grads, step_loss = None, 0.0
        for micro in range(cfg.grad_accum):
            key = _step_key(cfg.seed, step, micro)
            k_draw, k_post, k_loser = mx.random.split(key, 3)
            g0 = (step * cfg.grad_accum + micro) * global_b
            mine = [found[order(g0 + j)] for j in range(rank * b, (rank + 1) * b)]
            encs = [encoder.encode(ex) for ex in mine]
            shape_probe = encs[0].target_mean.shape
            all_draws = objective.draw(k_draw, (global_b, *shape_probe), n_train)
            draws = _rows(all_draws, rank * b, (rank + 1) * b)
            mean_full = mx.random.normal((global_b, *shape_probe), key=k_post)
            batch = _posterior(encs, mean_full[rank * b : (rank + 1) * b], scaling)
            if cfg.dpo:
                losers = [
                    encoder.encode(ex, ex.rejected[(g0 + j) % len(ex.rejected)])
                    for j, ex in zip(range(rank * b, (rank + 1) * b), mine, strict=True)
                ]
                n_l = mx.random.normal((global_b, *shape_probe), key=k_loser)
                loser = _posterior(losers, n_l[rank * b : (rank + 1) * b], scaling).target_latents
                if reference is not None:
                    ref = objective.dpo_reference_errors(
                        reference, batch, loser, draws, alphas, prediction
                    )
                else:  # LoRA: the starting model is the UNet with its LoRA layers off
                    layers = _lora_layers(unet)
                    scales = [m.scale for m in layers]
                    for m in layers:
                        m.scale = 0.0
                    ref = objective.dpo_reference_errors(
                        unet, batch, loser, draws, alphas, prediction
                    )
                    mx.eval(ref)
                    for m, scale in zip(layers, scales, strict=True):
                        m.scale = scale
                loss, g = loss_and_grad(batch, draws, ref, loser)
            else:
                loss, g = loss_and_grad(batch, draws)
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(loss, grads)
            step_loss += loss.item() / cfg.grad_accum
        grads = average_gradients(grads) if size > 1 else grads
        if cfg.grad_accum > 1:
            grads = tree_map(lambda x: x / cfg.grad_accum, grads)
        if size > 1:
            step_loss = mx.distributed.all_sum(mx.array(step_loss), stream=mx.cpu).item() / size
        opt.update(unet, grads)
        mx.eval(unet.trainable_parameters(), opt.state)
        losses.append(step_loss)
        if bar is not None:
            bar.update(1)
            rate = (step + 1 - step0) * global_b * cfg.grad_accum / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{step_loss:.4f}", img_s=f"{rate:.2f}")
        last = step + 1 == cfg.steps
        if rank == 0 and (
            (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0) or last
        ):
            state = {"step": step + 1, "losses": losses, "settings": cfg.settings()}
            save_checkpoint(work, step + 1, unet, opt, state, cfg.keep_checkpoints)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    trained = cfg.steps - step0
    adapter = None
    if rank == 0:
        adapter = save_model(cfg, base, unet, losses, skipped)
    if size > 1:
        mx.eval(mx.distributed.all_sum(mx.array(1.0), stream=mx.cpu))
    tenth = max(1, math.ceil(len(losses) / 10))
    return TrainResult(
        steps=cfg.steps,
        loss_first=float(np.mean(losses[:tenth])),
        loss_last=float(np.mean(losses[-tenth:])),
        seconds=time.perf_counter() - t_start,
        output=str(cfg.out),
        examples=len(found),
        images_per_second=trained * global_b * cfg.grad_accum / seconds if trained else 0.0,
        peak_memory_bytes=int(mx.get_peak_memory()),
        processes=size,
        resumed_from=resumed,
        adapter=adapter,
        skipped=skipped,
    )


def _lora_layers(unet: nn.Module) -> list:
    from mlx_lm.tuner.lora import LoRALinear

    return [m for _, m in unet.named_modules() if isinstance(m, LoRALinear)]


def _posterior(encs: list[Encoded], n: mx.array, scaling: float) -> objective.Batch:
    """The batch with the edits' latents sampled from their posteriors with noise ``n``."""
    mean = mx.stack([e.target_mean for e in encs])
    logvar = mx.stack([e.target_logvar for e in encs])
    z = (mean + mx.exp(0.5 * logvar) * n) * scaling
    return objective.Batch(
        z, mx.stack([e.image_latents for e in encs]), mx.stack([e.text for e in encs])
    )


def _skips(skipped: dict) -> str:
    reasons = skipped.get("skipped") or {}
    return ", ".join(f"{v} {k}" for k, v in reasons.items()) or "no records"


def _check(cfg: TrainConfig) -> None:
    positive = {
        "--steps": cfg.steps, "--batch-size": cfg.batch_size, "--resolution": cfg.resolution,
        "--grad-accum": cfg.grad_accum,
    }  # fmt: skip
    for name, v in positive.items():
        if not isinstance(v, int) or v < 1:
            raise PbmlxError(f"{name} must be a positive integer, got {v!r}.")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise PbmlxError(f"--lr must be a positive number, got {cfg.lr!r}.")
    if cfg.warmup < 0 or (cfg.warmup and cfg.warmup >= cfg.steps):
        raise PbmlxError(f"--warmup must be in [0, --steps), got {cfg.warmup}.")
    if cfg.lora_rank is not None and cfg.lora_rank < 1:
        raise PbmlxError(f"--lora-rank must be a positive integer, got {cfg.lora_rank}.")
    if not 0 <= cfg.dropout < 1 / 3:
        raise PbmlxError(f"--dropout must be in [0, 1/3), got {cfg.dropout}.")
    if cfg.schedule not in ("cosine", "constant"):
        raise PbmlxError(f"--schedule must be cosine or constant, got {cfg.schedule!r}.")
    if cfg.save_adapter and not cfg.lora_rank:
        raise PbmlxError("--save-adapter needs --lora-rank.")
    if not Path(cfg.data).exists():
        raise PbmlxError(f"Dataset folder {cfg.data} does not exist.")


def _bar(cfg: TrainConfig, step0: int, rank: int):
    if not cfg.progress or rank != 0:
        return None
    from tqdm import tqdm

    return tqdm(
        total=cfg.steps, initial=step0, desc="training", unit="step", file=sys.stderr,
        dynamic_ncols=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------- saving


def save_model(
    cfg: TrainConfig, base: Path, unet: nn.Module, losses: list[float], skipped: dict
) -> str | None:
    """Write ``cfg.out`` (module docstring, point 7); returns the adapter folder, if any."""
    from pbmlx import __version__
    from pbmlx.convert.atomic import atomic_folder
    from pbmlx.models.checkpoint import MARKER, WEIGHTS_NAME, read_manifest, sha256_file

    manifest = read_manifest(base)
    dtype = {"float16": mx.float16, "bfloat16": mx.bfloat16}.get(manifest.get("dtype"), mx.float32)
    adapter_out = None
    with atomic_folder(cfg.out) as tmp:
        for p in base.rglob("*"):
            rel = p.relative_to(base)
            if p.is_dir() or rel.as_posix() in (MARKER, f"unet/{WEIGHTS_NAME}"):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, tmp / rel)
        if cfg.save_adapter:
            adapter_out = tmp / ADAPTER_DIR
            adapter_out.mkdir()
            mx.save_safetensors(
                str(adapter_out / "adapters.safetensors"),
                dict(tree_flatten(unet.trainable_parameters())),
            )
            (adapter_out / "adapter_config.json").write_text(
                json.dumps(
                    {
                        "format": "mlx-lm LoRALinear (lora_a: (in, r), lora_b: (r, out))",
                        "rank": cfg.lora_rank,
                        "scale": cfg.lora_scale,
                        "targets": list(
                            LORA_TARGETS + (LORA_CONV_TARGETS if cfg.lora_conv else ())
                        ),
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
        fuse_lora(unet)
        weights = {k: v.astype(dtype) for k, v in tree_flatten(unet.parameters())}
        (tmp / "unet").mkdir(exist_ok=True)
        mx.save_safetensors(str(tmp / "unet" / WEIGHTS_NAME), weights, {"format": "mlx"})
        tenth = max(1, math.ceil(len(losses) / 10))
        manifest["pbmlx_version"] = __version__
        manifest["training"] = {
            "base": str(cfg.model),
            "data": str(cfg.data),
            "settings": cfg.settings(),
            "loss_first": float(np.mean(losses[:tenth])),
            "loss_last": float(np.mean(losses[-tenth:])),
            "records_skipped": skipped.get("skipped", {}),
        }
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        (tmp / MARKER).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return str(cfg.out / ADAPTER_DIR) if adapter_out is not None else None
