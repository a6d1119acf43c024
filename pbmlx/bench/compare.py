"""The same edit through the alternatives a user would pick: diffusers (PyTorch), Core ML.

``--compare diffusers`` runs diffusers' ``StableDiffusionInstructPix2PixPipeline`` on PyTorch's
best device here (``mps`` on a Mac, ``cuda``, else ``cpu`` with ``torch.set_num_threads(os.
cpu_count())``), under ``torch.inference_mode()``, on the working-size image pbmlx's editor
works on (the same ``fullres.to_working`` resize), with the same steps, guidance 7.5 / 1.5 and
the Euler-ancestral scheduler. torch, diffusers and transformers are imported here only, when
asked (they are not pbmlx runtime dependencies). The model: a ``--model`` diffusers folder
(the same weights pbmlx loads), or, with no model, the same configs as pbmlx's random model
(:mod:`pbmlx.bench.configs`) with independently drawn random weights: a latency comparison,
not a numerical one (pbmlx's numerical parity with diffusers is tested in tests/).

diffusers' stages are timed from inside its own call, synchronizing the device at each mark:
the text encoder's forward hooks (two calls: the instruction and the empty prompt), wrappers
around ``vae.encode`` and ``vae.decode``, the UNet's first forward (start of step 1) and
``callback_on_step_end`` (end of each step). Peak memory per stage: on CUDA
``torch.cuda.max_memory_allocated`` (reset at each stage's start); on the CPU the parameters'
bytes plus the resident-set growth over the stage; on MPS the memory allocated at the stage's
end (MPS has no peak counter).

``--coreml DIR`` (macOS only) times a bundle written by ``pbmlx export-coreml`` through
``Editor.from_coreml`` for each compute unit of :data:`COREML_UNITS`, with pbmlx's own
tokenizer, scheduler and guidance code, at the bundle's fixed working size.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pbmlx.bench import configs
from pbmlx.bench.memory import PeakRSS
from pbmlx.errors import PbmlxError

COREML_UNITS = ("CPU_AND_GPU", "CPU_AND_NE", "ALL")
DIFFUSERS_NEEDS = ("torch", "diffusers", "transformers")


def check_diffusers(folder: Path | None) -> None:
    """Refuse ``--compare diffusers`` when its libraries are missing or the model is not in
    diffusers' layout (a ``pbmlx convert`` folder cannot be read by diffusers)."""
    missing = [m for m in DIFFUSERS_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise PbmlxError(
            f"--compare diffusers needs {', '.join(missing)} (not installed): "
            'pip install "pbmlx[convert]" diffusers transformers, or drop --compare.'
        )
    if folder is not None and not (folder / "model_index.json").is_file():
        raise PbmlxError(
            f"--compare diffusers needs a diffusers-layout model (model_index.json); {folder} is "
            "not one (a `pbmlx convert` folder cannot be loaded by diffusers)."
        )


def check_coreml(folder: str) -> None:
    """Refuse ``--coreml`` off macOS, or when ``folder`` is not a bundle."""
    from pbmlx.diffuse.coreml import is_bundle

    if sys.platform != "darwin":
        raise PbmlxError("--coreml needs macOS: Core ML models do not run on this system.")
    if not is_bundle(Path(folder).expanduser()):
        raise PbmlxError(
            f"--coreml {folder} is not a Core ML bundle written by `pbmlx export-coreml`."
        )


def load_coreml(folder: str, unit: str):
    """(editor, seconds to load) of the bundle for compute unit ``unit``."""
    from pbmlx.editor import Editor

    t0 = time.perf_counter()
    editor = Editor.from_coreml(Path(folder).expanduser(), compute_units=unit)
    return editor, time.perf_counter() - t0


def torch_device() -> str:
    import torch

    if torch.backends.mps.is_available():
        return "mps"
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _write_tokenizer(folder: Path) -> None:
    """The byte-level tokenizer of :func:`pbmlx.bench.models.byte_level_tokenizer` as CLIP
    tokenizer files (transformers' ``CLIPTokenizer`` reads vocab.json + merges.txt)."""
    from tokenizers import pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _random_module(cls, config: dict[str, Any], device: str, seed: int):
    """``cls(**config)`` with seeded random weights on ``device``: built on the meta device
    (no default initialisation to pay for), materialised empty, then filled as pbmlx's random
    model is (:func:`pbmlx.bench.models.randomize`: normal / sqrt(fan_in) for matrices and
    kernels, ones for norm scales, zeros for biases)."""
    import torch

    with torch.device("meta"):
        module = cls(**config)
    if any(True for _ in module.named_buffers()):  # buffers need their real init
        module = cls(**config)
    else:
        module = module.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    tile = torch.randn(1 << 20, generator=gen)
    with torch.no_grad():
        for i, (name, p) in enumerate(module.named_parameters()):
            if p.ndim >= 2:
                n = p.numel()
                values = torch.roll(tile, -(i * 7919) % tile.numel()).repeat(n // tile.numel() + 1)
                p.copy_((values[:n] / np.sqrt(p[0].numel())).reshape(p.shape))
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return module.to(device).eval()


@dataclass
class _Marks:
    seconds: dict[str, float]
    memory: dict[str, int | None]
    step_ends: list[float]
    first_unet: float | None = None


class DiffusersEditor:
    """diffusers' InstructPix2Pix pipeline with per-stage timing (see the module docstring)."""

    def __init__(self, pipe, device: str, dtype: str, load_seconds: float, note: str) -> None:
        import torch

        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.engine = f"diffusers ({device})"
        self.load_seconds = load_seconds
        self.load_note = note
        self.param_bytes = sum(
            p.numel() * p.element_size()
            for m in (pipe.unet, pipe.vae, pipe.text_encoder)
            for p in m.parameters()
        )
        self.load_memory = self.param_bytes
        self.memory_method = {
            "cuda": "torch.cuda.max_memory_allocated",
            "mps": "MPS allocated at stage end (no peak counter)",
            "cpu": "parameters + resident growth",
        }[device]
        if device == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)

    @classmethod
    def build(
        cls, folder: Path | None, model_configs: dict[str, dict], *, dtype: str, seed: int = 0
    ) -> DiffusersEditor:
        """From a diffusers folder (``from_pretrained``), or from ``model_configs`` with random
        weights; float32, or float16 when pbmlx's compared variant is float16."""
        import torch
        from diffusers import (
            AutoencoderKL,
            EulerAncestralDiscreteScheduler,
            StableDiffusionInstructPix2PixPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        device = torch_device()
        tdtype = torch.float16 if dtype == "float16" else torch.float32
        t0 = time.perf_counter()
        if folder is not None:
            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
                str(folder), torch_dtype=tdtype, safety_checker=None, requires_safety_checker=False
            )
            note = f"from_pretrained({folder})"
        else:
            with tempfile.TemporaryDirectory(prefix="pbmlx-bench-tok-") as tmp:
                _write_tokenizer(Path(tmp))
                tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=configs.TEXT_TOKENS)
            text_cfg = model_configs.get("text_encoder", configs.IP2P_TEXT)
            text = CLIPTextModel(CLIPTextConfig(**text_cfg)).eval()
            pipe = StableDiffusionInstructPix2PixPipeline(
                vae=_random_module(AutoencoderKL, model_configs["vae"], "cpu", seed + 1),
                text_encoder=text,
                tokenizer=tokenizer,
                unet=_random_module(UNet2DConditionModel, model_configs["unet"], "cpu", seed),
                scheduler=EulerAncestralDiscreteScheduler(**configs.IP2P_SCHEDULER),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            note = "built from the same configs, random weights (latency only)"
        pipe = pipe.to(device) if tdtype == torch.float32 else pipe.to(device, tdtype)
        pipe.set_progress_bar_config(disable=True)
        load = time.perf_counter() - t0
        return cls(pipe, device, dtype, load, note)

    # -- timing --

    def _sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        elif self.device == "mps":
            torch.mps.synchronize()

    def _memory_start(self, rss: PeakRSS | None) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif rss is not None:
            rss.mark()

    def _memory_end(self, rss: PeakRSS | None) -> int | None:
        import torch

        if self.device == "cuda":
            return int(torch.cuda.max_memory_allocated())
        if self.device == "mps":
            return int(torch.mps.current_allocated_memory())
        growth = rss.growth if rss is not None else None
        return None if growth is None else self.param_bytes + growth

    @contextlib.contextmanager
    def _instrumented(self, marks: _Marks, rss: PeakRSS | None):
        """Hooks and wrappers that fill ``marks`` during one pipeline call."""
        pipe = self.pipe
        started: list[float] = []

        def text_pre(module, args):
            self._sync()
            if "text_encode" not in marks.seconds and not started:  # the first of the two calls
                self._memory_start(rss)
            started.append(time.perf_counter())

        def text_post(module, args, output):
            self._sync()
            marks.seconds["text_encode"] = marks.seconds.get("text_encode", 0.0) + (
                time.perf_counter() - started.pop()
            )
            marks.memory["text_encode"] = self._memory_end(rss)

        def unet_pre(module, args):
            if marks.first_unet is None:
                self._sync()
                self._memory_start(rss)
                marks.first_unet = time.perf_counter()

        def timed(name: str, fn):
            def run(*args, **kwargs):
                self._sync()
                self._memory_start(rss)
                t0 = time.perf_counter()
                out = fn(*args, **kwargs)
                self._sync()
                marks.seconds[name] = time.perf_counter() - t0
                marks.memory[name] = self._memory_end(rss)
                return out

            return run

        hooks = [
            pipe.text_encoder.register_forward_pre_hook(text_pre),
            pipe.text_encoder.register_forward_hook(text_post),
            pipe.unet.register_forward_pre_hook(unet_pre),
        ]
        pipe.vae.encode = timed("image_encode", pipe.vae.encode)
        pipe.vae.decode = timed("decode", pipe.vae.decode)
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            for name in ("encode", "decode"):
                pipe.vae.__dict__.pop(name, None)

    def time_edit(
        self,
        photo: np.ndarray,
        size: int,
        steps: int,
        *,
        variant: str,
        seed: int = 0,
        on_step=None,
    ):
        """The edit of ``photo`` at working size ``size`` (pbmlx's resize), ``steps`` steps,
        as a :class:`pbmlx.bench.runner.EditRun` (no restore stage: diffusers has none)."""
        import torch
        from PIL import Image

        from pbmlx.bench.runner import INSTRUCTION, EditRun
        from pbmlx.diffuse import fullres

        rgb = photo.astype(np.float32) / 255.0
        f = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)
        work = fullres.working_size(rgb.shape[1], rgb.shape[0], longest=size, multiple=max(8, f))
        t0 = time.perf_counter()
        small = np.asarray(fullres.to_working(rgb, work), dtype=np.float32)
        resize = time.perf_counter() - t0
        image = Image.fromarray((np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8))
        marks = _Marks({}, {}, [])

        def step_end(pipe, i, t, kwargs):
            self._sync()
            marks.step_ends.append(time.perf_counter())
            marks.memory["denoise"] = self._memory_end(rss)
            if on_step is not None:
                on_step(len(marks.step_ends), steps)
            return {}

        generator = torch.Generator(device="cpu").manual_seed(seed)
        with PeakRSS() as rss, self._instrumented(marks, rss), torch.inference_mode():
            self.pipe(
                INSTRUCTION,
                image=image,
                num_inference_steps=steps,
                guidance_scale=7.5,
                image_guidance_scale=1.5,
                generator=generator,
                output_type="np",
                callback_on_step_end=step_end,
            )
        starts = [marks.first_unet, *marks.step_ends[:-1]]
        step_seconds = [b - a for a, b in zip(starts, marks.step_ends, strict=True)]
        seconds = {
            "text_encode": marks.seconds["text_encode"],
            "image_encode": marks.seconds["image_encode"],
            "denoise": sum(step_seconds),
            "decode": marks.seconds["decode"],
            "resize": resize,
        }
        method = self.memory_method
        return EditRun(
            engine=self.engine,
            variant=variant,
            size=size,
            working=(int(work[0]), int(work[1])),
            photo=(photo.shape[1], photo.shape[0]),
            measured_steps=steps,
            step_seconds=step_seconds,
            seconds=seconds,
            peak_memory_bytes=dict(marks.memory),
            memory_methods={k: method for k in marks.memory},
            compute_dtype=self.dtype,
        )


def best_run(runs: list) -> Any:
    """One run made of the best (smallest) time of each stage and step over ``runs`` (all of
    one engine, size and step count), the largest peak memory of each stage."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    steps = [min(r.step_seconds[i] for r in runs) for i in range(len(first.step_seconds))]
    seconds = {k: min(r.seconds[k] for r in runs) for k in first.seconds}
    seconds["denoise"] = sum(steps)
    memory = {
        k: max((r.peak_memory_bytes.get(k) or 0) for r in runs) or None
        for k in first.peak_memory_bytes
    }
    return replace(first, step_seconds=steps, seconds=seconds, peak_memory_bytes=memory)


COMPARED_STAGES = ("text_encode", "image_encode", "denoise_step", "decode")


def comparison_rows(pbmlx_run, other_run, steps: tuple[int, ...], pairs: int) -> list[dict]:
    """pbmlx against the other engine, stage by stage and for whole edits of ``steps`` steps
    (the networks' stages only: diffusers has no full-resolution restore, so both totals leave
    out resize and restore). ``ratio = pbmlx / other`` (< 1: pbmlx is faster)."""

    def stage(run, name):
        return run.steady_step if name == "denoise_step" else run.seconds[name]

    def model_total(run, n):
        return sum(run.seconds[k] for k in ("text_encode", "image_encode", "decode")) + (
            run.denoise_seconds(n)
        )

    size = f"{pbmlx_run.working[0]}x{pbmlx_run.working[1]}"
    rows = []
    names = [*COMPARED_STAGES, *(f"edit, {n} steps (networks only)" for n in steps)]
    for name in names:
        if name in COMPARED_STAGES:
            a, b = stage(pbmlx_run, name), stage(other_run, name)
        else:
            n = int(name.split(", ")[1].split()[0])
            a, b = model_total(pbmlx_run, n), model_total(other_run, n)
        rows.append(
            {
                "stage": name,
                "size": size,
                "variant": pbmlx_run.variant,
                "pbmlx": pbmlx_run.engine,
                "other": other_run.engine,
                "pbmlx_seconds": a,
                "other_seconds": b,
                "ratio": a / b if b else None,
                "runs_each": pairs,
                "note": f"best of {pairs} alternating run(s) each",
            }
        )
    return rows
