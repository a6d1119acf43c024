"""Folders written by ``pbmlx convert``: telling them apart, reading their manifest, loading them.

A converted folder holds the three networks in MLX layout, already cast and (optionally)
quantized, beside the tokenizer and scheduler files::

    pbmlx.json                     the manifest (MARKER): format version, source, dtype,
                                   quantization, SHA-256 of every file
    README.md                      model card
    unet/         config.json + model.safetensors   (safetensors metadata {"format": "mlx"})
    vae/          config.json + model.safetensors
    text_encoder/ config.json + model.safetensors
    tokenizer/    vocab.json, merges.txt, ... (copied unchanged)
    scheduler/    scheduler_config.json (copied unchanged)

``config.json`` is the source checkpoint's own, so the module is built exactly as from the
diffusers folder. Quantized layers are recorded by path in the manifest; loading builds the
float module, swaps those layers for MLX quantized layers with the recorded ``bits`` and
``group_size`` (:func:`quantize_layers`), then loads the tensors strictly: a missing, extra or
misshapen tensor raises :class:`~pbmlx.errors.PbmlxError` naming it and its file, as for a
diffusers folder.

:data:`COMPONENTS` is the one table saying how each component is built and how a source
checkpoint's tensors are adapted (its model file's ``sanitize``); the converter uses it too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from pbmlx.errors import PbmlxError
from pbmlx.models import clip_text, unet, vae
from pbmlx.models.clip_text import CLIPTextConfig, CLIPTextModel
from pbmlx.models.unet import UNet2DConditionModel, UNetConfig
from pbmlx.models.vae import AutoencoderKL, VAEConfig
from pbmlx.models.weights import CONFIG_NAME, load_strict, read_config, read_safetensors

MARKER = "pbmlx.json"  # the manifest; its presence marks a converted folder
FORMAT = "pbmlx-instruct-pix2pix"  # the manifest's "format" value
FORMAT_VERSION = 1  # bumped when the folder layout or the manifest changes incompatibly
WEIGHTS_NAME = "model.safetensors"  # each component's weights in a converted folder
QUANTIZATION_BITS = (2, 3, 4, 5, 6, 8)  # what MLX's affine quantization supports
QUANTIZATION_GROUP_SIZES = (32, 64, 128)
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing


@dataclass(frozen=True)
class Component:
    """One network of the pipeline: its folder name, how to build it from its raw
    ``config.json``, and how a diffusers/transformers checkpoint's tensors are adapted to it
    (names and layouts; every rule lives in that model file's ``sanitize``)."""

    name: str
    build: Callable[[dict[str, Any]], nn.Module]
    sanitize: Callable[[dict[str, mx.array]], dict[str, mx.array]]


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "text_encoder",
            lambda cfg: CLIPTextModel(CLIPTextConfig.from_dict(cfg)),
            clip_text.sanitize,
        ),
        Component("vae", lambda cfg: AutoencoderKL(VAEConfig.from_dict(cfg)), vae.sanitize),
        Component(
            "unet", lambda cfg: UNet2DConditionModel(UNetConfig.from_dict(cfg)), unet.sanitize
        ),
    )
}


def is_converted(folder: Path | str) -> bool:
    """Whether ``folder`` was written by ``pbmlx convert`` (it holds :data:`MARKER`)."""
    return (Path(folder) / MARKER).is_file()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of the file's bytes (read in chunks: weight files are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- the manifest


def _bad(path: Path, what: str) -> PbmlxError:
    return PbmlxError(f"Manifest {path} {what}.")


def read_manifest(folder: Path | str) -> dict[str, Any]:
    """The checked contents of ``folder/pbmlx.json``.

    Guarantees to the caller: ``format_version <= FORMAT_VERSION``; ``components`` names the
    three of :data:`COMPONENTS`, each with a relative ``weights`` path; ``quantization`` is
    ``None`` or ``{"bits", "group_size", "mode", "layers": {component: [layer path, ...]}}``
    with supported values. Anything else raises :class:`PbmlxError` naming the manifest.
    """
    path = Path(folder) / MARKER
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PbmlxError(
            f"Model folder {folder} has no {MARKER}: it was not written by `pbmlx convert`."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"is not readable JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad(path, f"does not declare format {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise _bad(path, f"has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise _bad(
            path,
            f"has format_version {version}, newer than this pbmlx reads ({FORMAT_VERSION}); "
            "upgrade pbmlx",
        )
    components = manifest.get("components")
    if not isinstance(components, dict):
        raise _bad(path, "has no components object")
    for name in COMPONENTS:
        entry = components.get(name)
        weights = entry.get("weights") if isinstance(entry, dict) else None
        if not isinstance(weights, str) or Path(weights).is_absolute() or ".." in weights:
            raise _bad(path, f"has no relative weights path for component {name!r}")
    q = manifest.get("quantization")
    if q is not None:
        if not isinstance(q, dict):
            raise _bad(path, "has a quantization entry that is not an object")
        if q.get("bits") not in QUANTIZATION_BITS:
            raise _bad(path, f"has unsupported quantization bits {q.get('bits')!r}")
        if q.get("group_size") not in QUANTIZATION_GROUP_SIZES:
            raise _bad(path, f"has unsupported quantization group_size {q.get('group_size')!r}")
        if q.get("mode", "affine") != "affine":
            raise _bad(path, f"has unsupported quantization mode {q.get('mode')!r}")
        layers = q.get("layers")
        if not isinstance(layers, dict) or any(
            c not in COMPONENTS or not isinstance(v, list) or not all(isinstance(s, str) for s in v)
            for c, v in layers.items()
        ):
            raise _bad(path, "has a quantization.layers entry that is not {component: [paths]}")
    return manifest


def verify_converted(folder: Path | str) -> None:
    """Check every file the manifest lists against its recorded size and SHA-256; raises
    :class:`PbmlxError` naming the first file that is missing or differs. (Loading does not do
    this by itself: hashing gigabytes on every load would defeat lazy loading.)"""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise _bad(folder / MARKER, "lists no files")
    for rel, entry in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            raise PbmlxError(f"File {path} listed in {MARKER} is missing.")
        if path.stat().st_size != entry.get("bytes"):
            raise PbmlxError(
                f"File {path} has {path.stat().st_size} bytes but {MARKER} records "
                f"{entry.get('bytes')}: it was changed or truncated after conversion."
            )
        if sha256_file(path) != entry.get("sha256"):
            raise PbmlxError(
                f"File {path} does not match the SHA-256 in {MARKER}: it was changed after "
                "conversion."
            )


# ---------------------------------------------------------------------------- loading


def quantize_layers(
    model: nn.Module, layers: Iterable[str], *, bits: int, group_size: int, source: str = ""
) -> None:
    """Replace the layers of ``model`` at ``layers`` (module paths as :func:`mlx.nn.quantize`
    names them, e.g. ``down_blocks.0.attentions.0.proj_in``) by MLX affine-quantized layers,
    in place: ``w ~ scale * q + bias`` per group of ``group_size`` input weights, ``q`` in
    ``[0, 2**bits)``. A path that is not a quantizable layer of the model raises PbmlxError
    naming it (and ``source``, where the list came from)."""
    wanted = set(layers)
    done: set[str] = set()
    where = f" (listed in {source})" if source else ""

    def chosen(path: str, module: nn.Module) -> bool:
        if path not in wanted:
            return False
        if not hasattr(module, "to_quantized"):
            raise PbmlxError(
                f"Layer '{path}'{where} is a {type(module).__name__}, which cannot be quantized."
            )
        done.add(path)
        return True

    nn.quantize(model, group_size=group_size, bits=bits, mode="affine", class_predicate=chosen)
    missing = sorted(wanted - done)
    if missing:
        raise PbmlxError(
            f"Quantized layer '{missing[0]}'{where} does not exist in the model its config builds."
        )
    from pbmlx.backend import backend

    if backend() == "cpu":
        # MLX's CPU quantized matmul runs at ~1.3 GFLOP/s here against ~50 for a float32 GEMM
        # (an 8-bit full-size UNet step: 121 s vs 8 s; `pbmlx bench`): on the CPU the layers
        # keep their quantized weights (the memory saving stays) and expand them per call.
        for _, module in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module):
            if type(module) is nn.QuantizedLinear:
                module.__class__ = ExpandingQuantizedLinear


class ExpandingQuantizedLinear(nn.QuantizedLinear):
    """A quantized linear layer that computes ``x W^T + b`` with ``W = dequantize(q, scales,
    biases)`` expanded for each call (in the scales' dtype, float32 on the CPU backend) and a
    dense matmul, instead of MLX's quantized matmul: same parameters, same results to float32
    rounding, the dense GEMM's speed. Only the one layer's expanded weight is alive at a time,
    so a quantized model keeps its memory saving. Used on the CPU backend
    (:func:`quantize_layers`); on Metal and CUDA the quantized kernels are the fast path."""

    def __call__(self, x: mx.array) -> mx.array:
        w = mx.dequantize(
            self["weight"],
            scales=self["scales"],
            biases=self.get("biases"),
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
        )
        y = x @ w.astype(x.dtype).T
        if "bias" in self:
            y = y + self["bias"]
        return y


def build_component(name: str, config_file: Path) -> nn.Module:
    """The network ``name`` (random init) built from its ``config.json``; a config it cannot
    be built from raises :class:`PbmlxError` naming the file."""
    component = COMPONENTS[name]
    config = read_config(config_file)
    try:
        return component.build(config)
    except PbmlxError as e:
        raise PbmlxError(f"Model config {config_file}: {e}") from None
    except (TypeError, ValueError, KeyError) as e:
        raise PbmlxError(f"Model config {config_file} is not valid for its {name} ({e}).") from None


def load_converted_component(
    folder: Path | str,
    name: str,
    dtype: mx.Dtype | None = None,
    manifest: dict[str, Any] | None = None,
) -> nn.Module:
    """One network (``"text_encoder"``, ``"vae"`` or ``"unet"``) of a converted folder, in eval
    mode, weights loaded lazily and strictly; quantized as the manifest records. ``dtype``
    casts floating tensors (quantization scales included); default: as stored. Pass the
    already-read ``manifest`` to avoid reading it again."""
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    config_file = folder / name / CONFIG_NAME
    model = build_component(name, config_file)
    q = manifest.get("quantization")
    layers = (q or {}).get("layers", {}).get(name, [])
    if layers:
        quantize_layers(
            model, layers, bits=q["bits"], group_size=q["group_size"], source=str(folder / MARKER)
        )
    weights_file = folder / manifest["components"][name]["weights"]
    if not weights_file.is_file():
        raise PbmlxError(f"Weights file {weights_file} listed in {MARKER} does not exist.")
    weights, origin, mlx_layout = read_safetensors([weights_file])
    if not mlx_layout:
        # Converted files always say {"format": "mlx"}: this one was replaced by another.
        raise PbmlxError(
            f"Weights file {weights_file} is not in MLX layout (its safetensors metadata lacks "
            "format: mlx), so it was not written by `pbmlx convert`."
        )
    load_strict(
        model, weights, origin=origin, files=[weights_file], config_file=config_file, dtype=dtype
    )
    model.eval()
    return model


def load_converted(
    folder: Path | str, dtype: mx.Dtype | None = None
) -> tuple[CLIPTextModel, AutoencoderKL, UNet2DConditionModel]:
    """``(text_encoder, vae, unet)`` of a folder written by ``pbmlx convert``; see
    :func:`load_converted_component`."""
    manifest = read_manifest(folder)
    text_encoder, autoencoder, denoiser = (
        load_converted_component(folder, name, dtype, manifest)
        for name in ("text_encoder", "vae", "unet")
    )
    return text_encoder, autoencoder, denoiser  # type: ignore[return-value]
