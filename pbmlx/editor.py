"""The generative editor: an InstructPix2Pix model loaded from a folder or a hub id, run on photos.

``Editor.from_pretrained(path_or_hub_id)`` finds the model (:func:`resolve_model`: a local
folder, else a Hugging Face Hub id downloaded by :mod:`pbmlx.hub`, safetensors and the files
it needs only), then builds it with the loader for its layout (:func:`load_pipeline`: a
diffusers pipeline folder, ``model_index.json`` + ``unet/ vae/ text_encoder/ tokenizer/
scheduler/``, or a folder written by ``pbmlx convert``, marked by ``pbmlx.json``). Weights are
read lazily (``mx.load``): nothing is copied into memory until the first edit evaluates it, so
loading is instant, and a ``--low-memory`` run frees the text encoder once the prompt is
encoded and decodes in tiles.

``Editor.edit(image, instruction)`` runs the pipeline (:mod:`pbmlx.diffuse.pipeline`) at
working size (longest side ``size``, sides multiples of 8) and brings the result back to the
photo's own resolution (:mod:`pbmlx.diffuse.fullres`). Its sampler settings are one
:class:`~pbmlx.diffuse.settings.SamplerSettings` (``settings=``), or its fields as keywords.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from PIL import Image

from pbmlx import hub, pixels
from pbmlx.diffuse.pipeline import InstructPix2PixPipeline, Progress
from pbmlx.diffuse.settings import (  # noqa: F401  (DEFAULT_SIZE is importable from here too)
    DEFAULT_SIZE,
    WORKING_MULTIPLE,
    SamplerSettings,
    resolve,
)
from pbmlx.errors import PbmlxError
from pbmlx.models import load_text_encoder, load_unet, load_vae
from pbmlx.models.tokenizer import CLIPTokenizer
from pbmlx.models.weights import PICKLE_SUFFIXES, read_config

MODEL_INDEX = "model_index.json"  # marks a diffusers pipeline folder
CONVERTED_MARKER = "pbmlx.json"  # marks a folder written by `pbmlx convert`
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
# What a hub download fetches: configs, tokenizer files and the three components' safetensors
# (single file or shards with their index; diffusers' names, or a `pbmlx convert` folder's).
# Not the fp16/ema variants, not pickles, not the safety checker. fnmatch patterns, relative
# to the repository root.
HUB_PATTERNS = [
    MODEL_INDEX,
    CONVERTED_MARKER,
    SCHEDULER_CONFIG,
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    *(f"{c}/config.json" for c in WEIGHT_COMPONENTS),
    *(f"{c}/model.safetensors" for c in WEIGHT_COMPONENTS),  # a `pbmlx convert` folder's
    *(
        f"{c}/{stem}{suffix}"
        for c, stem in (
            ("unet", "diffusion_pytorch_model"),
            ("vae", "diffusion_pytorch_model"),
            ("text_encoder", "model"),
        )
        for suffix in (
            ".safetensors",
            ".safetensors.index.json",
            "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].safetensors",
        )
    ),
]


@dataclass
class EditorResult:
    """An edited photo at its own resolution, with how it was made (provenance) and the cost."""

    rgb: np.ndarray  # float32 (H, W, 3) in [0, 1], the input's size
    alpha: np.ndarray | None  # float32 (H, W), the input's alpha carried over unchanged
    instruction: str
    model: str  # the folder or hub id it was loaded from
    seed: int
    steps: int
    guidance: float
    image_guidance: float
    scheduler: str
    working_size: tuple[int, int]  # (width, height) the model ran at
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    peak_memory_bytes: int = 0
    backend: str = "mlx"  # what ran the networks: "mlx" or "coreml"
    compute_dtype: str = "float32"  # the UNet's weights' dtype, what its matmuls ran in

    @property
    def image(self) -> Image.Image:
        """The result as an 8-bit RGB (or RGBA) PIL image (:func:`pbmlx.pixels.to_pil`)."""
        return pixels.to_pil(self.rgb, self.alpha)

    @property
    def size(self) -> tuple[int, int]:
        return (self.rgb.shape[1], self.rgb.shape[0])

    def to_dict(self) -> dict:
        """JSON-ready provenance: model, seed, steps, guidance, sizes, seconds, peak memory."""
        return {
            "instruction": self.instruction,
            "model": self.model,
            "backend": self.backend,
            "compute_dtype": self.compute_dtype,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "image_guidance": self.image_guidance,
            "scheduler": self.scheduler,
            "size": list(self.size),
            "working_size": list(self.working_size),
            "stages": {k: round(v, 4) for k, v in self.seconds.items()},
            "peak_memory_bytes": self.peak_memory_bytes,
        }


# ---------------------------------------------------------------------------- finding a model


def resolve_model(path_or_hub_id: str | Path) -> Path:
    """The local folder holding the model: ``path_or_hub_id`` itself when it exists, else the
    snapshot of that Hub id (:func:`pbmlx.hub.local_folder_or_snapshot`, only
    :data:`HUB_PATTERNS`). Raises :class:`PbmlxError` naming it when it is neither, or when a
    hub repository has no safetensors weights for a component."""
    folder = hub.local_folder_or_snapshot(path_or_hub_id, HUB_PATTERNS)
    if not hub.is_local(path_or_hub_id):
        _check_hub_weights(str(path_or_hub_id), folder)
    return folder


def _check_hub_weights(repo_id: str, folder: Path) -> None:
    """A hub snapshot of a diffusers pipeline must have safetensors for every component."""
    if not (folder / CONVERTED_MARKER).is_file():
        for c in WEIGHT_COMPONENTS:
            if not any((folder / c).glob("*.safetensors")):
                raise PbmlxError(
                    f"Hub model {repo_id!r} has no safetensors weights for its {c}: pbmlx loads "
                    "safetensors only and refuses pickle checkpoints (.bin/.ckpt/.pt); convert "
                    "them with `pbmlx convert --allow-pickle` if you trust the source."
                )


# ---------------------------------------------------------------------------- loading layouts


def _dtype(dtype: mx.Dtype | str | None) -> mx.Dtype | None:
    if dtype is None or isinstance(dtype, mx.Dtype):
        return dtype
    if dtype not in DTYPES:
        raise PbmlxError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def _refuse_pickles(folder: Path) -> None:
    """A component folder with pickle weights and no safetensors is refused by name, before
    anything is read (pickle files can run code when loaded; pbmlx never loads them)."""
    for c in WEIGHT_COMPONENTS:
        sub = folder / c
        if sub.is_dir() and not any(sub.glob("*.safetensors")):
            pickles = sorted(p.name for p in sub.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise PbmlxError(
                    f"Model folder {sub} has only pickle weights ({', '.join(pickles)}); pbmlx "
                    "loads safetensors only (convert them with `pbmlx convert --allow-pickle`)."
                )


def _assemble(
    folder: Path,
    load: Callable[[str], nn.Module],
    *,
    low_memory: bool,
) -> InstructPix2PixPipeline:
    """The pipeline from ``folder``'s ``tokenizer/`` and ``scheduler/`` and the three networks
    ``load(name)`` builds (``name`` in :data:`WEIGHT_COMPONENTS`)."""
    for c in ("tokenizer", "scheduler"):
        if not (folder / c).is_dir():
            raise PbmlxError(f"Model folder {folder / c} does not exist (the model needs it).")
    scheduler_file = folder / SCHEDULER_CONFIG
    return InstructPix2PixPipeline(
        tokenizer=CLIPTokenizer.from_folder(folder / "tokenizer"),
        text_encoder=load("text_encoder"),
        reload_text_encoder=lambda: load("text_encoder"),
        vae=load("vae"),
        unet=load("unet"),
        scheduler_config=read_config(scheduler_file),
        scheduler_source=f"scheduler config {scheduler_file}",
        low_memory=low_memory,
    )


def load_diffusers_pipeline(
    folder: Path, *, dtype: mx.Dtype | None = None, low_memory: bool = False
) -> InstructPix2PixPipeline:
    """An InstructPix2Pix pipeline from a diffusers-layout folder (what ``save_pretrained``
    writes and the Hub serves): strict, lazy loading of each component."""
    read_config(folder / MODEL_INDEX)  # a readable JSON object, or a PbmlxError naming it
    for c in WEIGHT_COMPONENTS:
        if not (folder / c).is_dir():
            raise PbmlxError(
                f"Model folder {folder / c} does not exist (a diffusers pipeline has one)."
            )
    _refuse_pickles(folder)
    loaders = {"text_encoder": load_text_encoder, "vae": load_vae, "unet": load_unet}
    return _assemble(
        folder, lambda name: loaders[name](folder / name, dtype=dtype), low_memory=low_memory
    )


def load_converted_pipeline(
    folder: Path, *, dtype: mx.Dtype | None = None, low_memory: bool = False
) -> InstructPix2PixPipeline:
    """An InstructPix2Pix pipeline from a folder written by ``pbmlx convert`` (marked by
    :data:`CONVERTED_MARKER`; layout and manifest in :mod:`pbmlx.models.checkpoint`): MLX
    layout, possibly quantized, loaded lazily and strictly."""
    from pbmlx.models.checkpoint import load_converted_component, read_manifest

    manifest = read_manifest(folder)
    return _assemble(
        folder,
        lambda name: load_converted_component(folder, name, dtype, manifest),
        low_memory=low_memory,
    )


def load_pipeline(
    folder: Path, *, dtype: mx.Dtype | None = None, low_memory: bool = False
) -> InstructPix2PixPipeline:
    """The pipeline in ``folder``, by layout: the one place where layouts are told apart."""
    if (folder / CONVERTED_MARKER).is_file():
        return load_converted_pipeline(folder, dtype=dtype, low_memory=low_memory)
    if (folder / MODEL_INDEX).is_file():
        return load_diffusers_pipeline(folder, dtype=dtype, low_memory=low_memory)
    raise PbmlxError(
        f"Model folder {folder} has neither {MODEL_INDEX} (a diffusers pipeline) nor "
        f"{CONVERTED_MARKER} (written by `pbmlx convert`)."
    )


# ---------------------------------------------------------------------------- the editor


def _as_rgb(image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 RGB ``(H, W, 3)`` in [0, 1] and optional alpha ``(H, W)`` from a PIL image or
    an array (uint8, uint16, or float in [0, 1]; ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``):
    :func:`pbmlx.pixels.to_unit_rgb`."""
    if not isinstance(image, (Image.Image, np.ndarray)):
        raise PbmlxError(
            f"Editor.edit takes a PIL image or a numpy array, not {type(image).__name__}."
        )
    return pixels.to_unit_rgb(image)


class Editor:
    """An InstructPix2Pix editor; see the module docstring. Build with :meth:`from_pretrained`."""

    def __init__(
        self,
        pipeline: InstructPix2PixPipeline,
        *,
        model: str,
        backend: str = "mlx",
        fixed_size: tuple[int, int] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.model = model
        self.backend = backend  # "mlx", or "coreml" for an exported bundle
        # A Core ML bundle's packages have fixed shapes: every photo is worked on at exactly
        # this (width, height), whatever its aspect ratio, and restored to its own size.
        self.fixed_size = fixed_size

    @classmethod
    def from_coreml(
        cls, folder: str | Path, *, compute_units: str = "ALL", predictors: dict | None = None
    ) -> Editor:
        """An editor running a Core ML bundle written by ``pbmlx export-coreml`` (macOS: see
        :mod:`pbmlx.diffuse.coreml`; ``predictors`` stand in for the packages in tests)."""
        from pbmlx.diffuse.coreml import load_coreml_pipeline

        pipeline, size = load_coreml_pipeline(
            folder, compute_units=compute_units, predictors=predictors
        )
        return cls(pipeline, model=str(folder), backend="coreml", fixed_size=size)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        dtype: mx.Dtype | str | None = None,
        low_memory: bool = False,
    ) -> Editor:
        """Load a model folder (diffusers layout, ``pbmlx convert`` output, or a Core ML
        bundle from ``pbmlx export-coreml``, see :meth:`from_coreml`) or a hub id
        (downloaded, safetensors only).

        ``dtype`` (``mx.float16``, ``"bfloat16"``, ...) casts the weights; default: as stored
        on Metal and CUDA, float32 on the CPU backend (half-precision weights upcast at load:
        :func:`pbmlx.backend.default_load_dtype`).
        ``low_memory`` frees the text encoder after each prompt and decodes in tiles. Any
        problem (missing folder, unreachable hub id, pickle-only weights, truncated file,
        missing or misshapen tensor, a config that does not match) raises :class:`PbmlxError`
        naming the file or tensor.
        """
        from pbmlx.diffuse.coreml import is_bundle

        if hub.is_local(path_or_hub_id) and is_bundle(Path(str(path_or_hub_id)).expanduser()):
            return cls.from_coreml(Path(str(path_or_hub_id)).expanduser())
        from pbmlx.backend import default_load_dtype

        folder = resolve_model(path_or_hub_id)
        dtype = _dtype(dtype) or default_load_dtype()
        pipeline = load_pipeline(folder, dtype=dtype, low_memory=low_memory)
        return cls(pipeline, model=str(path_or_hub_id))

    def check_settings(
        self, settings: SamplerSettings | None = None, **fields: object
    ) -> SamplerSettings:
        """The settings :meth:`edit` would run with, checked against this model: raises
        :class:`PbmlxError` naming the first setting it would refuse, so a caller can refuse
        before reading a photo.

        ``settings`` (default ``SamplerSettings()``) with ``fields`` (``steps=``, ``seed=``,
        ... as in :class:`~pbmlx.diffuse.settings.SamplerSettings`; None: not given) in place
        (:func:`~pbmlx.diffuse.settings.resolve`). Beyond the settings' own checks, the step
        count must fit the model's scheduler (at most its ``num_train_timesteps``).
        """
        settings = resolve(settings, **fields)
        self.pipeline.scheduler(settings.scheduler, settings.steps)
        return settings

    def edit(
        self,
        image: Image.Image | np.ndarray,
        instruction: str,
        *,
        settings: SamplerSettings | None = None,
        progress: Progress | None = None,
        **fields: Any,
    ) -> EditorResult:
        """Edit ``image`` following ``instruction``; the result has the input's size.

        Sampler settings: ``settings`` (default ``SamplerSettings()``: 20 steps, guidance 7.5,
        image guidance 1.5, size 512, euler_a, seed 0), with each keyword in ``fields``
        (``steps``, ``guidance``, ``image_guidance``, ``size``, ``seed``, ``scheduler``; None:
        not given) in its field's place (another name is a TypeError): ``edit(im, text, steps=4)`` and ``edit(im, text,
        settings=SamplerSettings(steps=4))`` are the same edit.

        The model runs at ``fullres.working_size(W, H, longest=size, multiple=8)``; the edit is
        then brought back to full resolution with ``fullres.restore_full_resolution``, which
        keeps the original's detail where the edit changed nothing. Same inputs and seed ->
        the same output on the same machine. ``progress(done, steps)`` after each step.
        """
        from pbmlx.diffuse import fullres

        if not isinstance(instruction, str) or not instruction.strip():
            raise PbmlxError("The instruction is empty.")
        settings = self.check_settings(settings, **fields)
        rgb, alpha = _as_rgb(image)
        H, W, _ = rgb.shape
        multiple = max(WORKING_MULTIPLE, self.pipeline.vae_factor)
        t0 = time.perf_counter()
        work = self.fixed_size or fullres.working_size(
            W, H, longest=settings.size, multiple=multiple
        )
        small = np.asarray(fullres.to_working(rgb, work), dtype=np.float32)
        t_resize = time.perf_counter() - t0

        out = self.pipeline.generate(small, instruction, settings=settings, progress=progress)
        t1 = time.perf_counter()
        full = fullres.restore_full_resolution(rgb, small, out.image)
        full = np.asarray(full, dtype=np.float32)
        seconds = {**out.seconds, "resize": t_resize, "restore": time.perf_counter() - t1}
        return EditorResult(
            rgb=full,
            alpha=alpha,
            instruction=instruction,
            model=self.model,
            seed=settings.seed,
            steps=settings.steps,
            guidance=settings.guidance,
            image_guidance=settings.image_guidance,
            scheduler=settings.scheduler,
            working_size=(int(work[0]), int(work[1])),
            seconds=seconds,
            peak_memory_bytes=out.peak_memory_bytes,
            backend=self.backend,
            compute_dtype=(  # Core ML packages compute in float16 (see export-coreml)
                "float16"
                if self.backend == "coreml"
                else str(self.pipeline.dtype).removeprefix("mlx.core.")
            ),
        )
