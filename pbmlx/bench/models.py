"""The editors ``pbmlx bench`` times: full-size random ones, or a given model, per variant.

A *variant* is how the weights are stored and computed: ``float32``, ``float16``, ``8-bit`` or
``4-bit`` (MLX affine quantization of the layers ``pbmlx convert --quantize`` quantizes: the
UNet's and text encoder's linear layers and the token embedding, group size 64; never the
VAE's convolutions, see :mod:`pbmlx.convert.to_mlx`). Quantized variants keep their scales in
float16 on Metal and CUDA (what ``pbmlx convert`` writes) and in float32 on the CPU backend (what
pbmlx upcasts them to at load there, :func:`pbmlx.backend.default_load_dtype`).

Without a model (:func:`random_pipeline`) the three networks are built directly as pbmlx MLX
modules from :mod:`pbmlx.bench.configs` and filled with seeded random weights; no file is
read or written and torch is not needed. With a model folder or hub id
(:func:`load_model_pipeline`) the pipeline is loaded the way ``Editor.from_pretrained`` loads
it, then cast or quantized in memory for each variant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from pbmlx.bench import configs
from pbmlx.errors import PbmlxError

VARIANTS = configs.VARIANTS
QUANT_BITS = {"8-bit": 8, "4-bit": 4}
GROUP_SIZE = 64  # pbmlx convert's default group size
RANDOM_MODEL = "random weights, timbrooks/instruct-pix2pix configs"
TILE = 1 << 20  # random values drawn once and reused cyclically (see randomize)


@dataclass
class Built:
    """A pipeline ready to time, with what it took to get it."""

    pipeline: Any  # pbmlx.diffuse.pipeline.InstructPix2PixPipeline
    seconds: float  # building or loading it, weights materialised
    peak_memory_bytes: int  # MLX's peak while doing so (the resident weights)
    compute_dtype: str  # what the networks' matmuls run in
    parameters: int  # parameter count of the three networks (quantized: the float count)
    configs: dict[str, dict[str, Any]]  # unet / vae / text_encoder config.json dicts
    quantized_layers: int = 0


def _built(
    pipeline: Any, t0: float, params: int, model: dict[str, dict[str, Any]], quantized: int
) -> Built:
    """:class:`Built` for ``pipeline``, made since ``perf_counter()`` was ``t0`` (MLX's peak
    memory since its reset: the resident weights)."""
    return Built(
        pipeline,
        time.perf_counter() - t0,
        int(mx.get_peak_memory()),
        _dtype_name(pipeline),
        params,
        model,
        quantized,
    )


def byte_level_tokenizer():
    """A CLIP tokenizer with no merges: every UTF-8 byte is a token (ids < 514, inside CLIP's
    vocabulary). Prompts are padded to 77 tokens as always, so the text encoder does the same
    work as with the real 49408-token BPE; only the ids differ."""
    from tokenizers import pre_tokenizers

    from pbmlx.models.tokenizer import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer({t: i for i, t in enumerate(tokens)}, [], source="pbmlx bench")


def randomize(model: nn.Module, seed: int) -> None:
    """Give every matrix or kernel of ``model`` (ndim >= 2) seeded normal values scaled by
    ``1 / sqrt(fan_in)`` (``fan_in = prod(shape[1:])``: activations keep about unit scale
    through the depth); vectors keep the modules' own init (norm scales 1, biases 0).

    Why not MLX's own initializers: drawing the UNet's 860M values one by one takes ~15 s on a
    2-core CPU, longer than the edit stages being timed. Here :data:`TILE` normal values are
    drawn once and repeated, each tensor starting at its own offset; no layer's cost depends
    on its values, and the activations stay finite, which is all a latency benchmark needs.
    """
    rng = np.random.default_rng(seed)
    tile = rng.standard_normal(TILE, dtype=np.float32)
    new = []
    for i, (name, p) in enumerate(tree_flatten(model.parameters())):
        if p.ndim < 2:
            continue
        start = (i * 7919) % TILE  # a different phase per tensor
        values = np.resize(np.roll(tile, -start), p.size).reshape(p.shape)
        values *= np.float32(1.0 / np.sqrt(np.prod(p.shape[1:])))
        new.append((name, mx.array(values)))
    model.update(tree_unflatten(new))


def _quantize(name: str, model: nn.Module, bits: int) -> int:
    """Quantize the layers ``pbmlx convert --quantize bits`` would (same selection, same
    group size); returns how many."""
    from pbmlx.convert.to_mlx import quantizable_layers
    from pbmlx.models.checkpoint import quantize_layers

    layers = quantizable_layers(name, model, GROUP_SIZE)
    if layers:
        quantize_layers(model, layers, bits=bits, group_size=GROUP_SIZE)
    return len(layers)


def _is_quantized(model: nn.Module) -> bool:
    return any(
        isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))
        for _, m in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module)
    )


def variant_dtype(variant: str, backend: str) -> mx.Dtype:
    """The dtype the variant's float tensors are held in on ``backend``."""
    if variant == "float32" or backend == "cpu":
        return mx.float32  # the CPU backend upcasts half precision at load
    return mx.float16


def _count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def _finish(components: dict[str, nn.Module], variant: str, backend: str) -> tuple[int, int]:
    """Cast (and quantize) the three networks for ``variant`` in place; evaluate the weights.
    Returns (parameters before quantization, quantized layers)."""
    dtype = variant_dtype(variant, backend)
    params = 0
    quantized = 0
    for name, model in components.items():
        params += _count(model)
        model.set_dtype(dtype)
        if variant in QUANT_BITS and not _is_quantized(model):
            quantized += _quantize(name, model, QUANT_BITS[variant])
        model.eval()
        mx.eval(model.parameters())
    return params, quantized


def _assemble(components, tokenizer, scheduler_config, source):
    from pbmlx.diffuse.pipeline import InstructPix2PixPipeline

    return InstructPix2PixPipeline(
        tokenizer=tokenizer,
        text_encoder=components["text_encoder"],
        vae=components["vae"],
        unet=components["unet"],
        scheduler_config=scheduler_config,
        scheduler_source=source,
    )


def random_pipeline(variant: str, backend: str, seed: int = 0) -> Built:
    """timbrooks/instruct-pix2pix's architecture with seeded random weights, as ``variant``."""
    from pbmlx.models import (
        AutoencoderKL,
        CLIPTextConfig,
        CLIPTextModel,
        UNet2DConditionModel,
        UNetConfig,
        VAEConfig,
    )

    mx.reset_peak_memory()
    t0 = time.perf_counter()
    components = {
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(configs.IP2P_TEXT)),
        "vae": AutoencoderKL(VAEConfig.from_dict(configs.IP2P_VAE)),
        "unet": UNet2DConditionModel(UNetConfig.from_dict(configs.IP2P_UNET)),
    }
    for i, model in enumerate(components.values()):
        randomize(model, seed + i)
    params, quantized = _finish(components, variant, backend)
    pipeline = _assemble(
        components, byte_level_tokenizer(), configs.IP2P_SCHEDULER, "pbmlx bench (random)"
    )
    model = {"unet": configs.IP2P_UNET, "vae": configs.IP2P_VAE, "text_encoder": configs.IP2P_TEXT}
    return _built(pipeline, t0, params, model, quantized)


def resolve_model(model: str) -> Path:
    """The local folder of ``model`` (a folder or a hub id), as the editor resolves it; a
    Core ML bundle is refused here (it is timed with ``--coreml``)."""
    from pbmlx.diffuse.coreml import is_bundle
    from pbmlx.editor import resolve_model as editor_resolve

    folder = editor_resolve(model)
    if is_bundle(folder):
        raise PbmlxError(
            f"Model {model} is a Core ML bundle; time it with --coreml {model} (macOS) and give "
            "--model an MLX or diffusers model folder."
        )
    return folder


def model_configs(folder: Path) -> dict[str, dict[str, Any]]:
    """The three networks' ``config.json`` dicts of a model folder (either layout)."""
    from pbmlx.models.weights import read_config

    return {c: read_config(folder / c / "config.json") for c in ("unet", "vae", "text_encoder")}


def load_model_pipeline(folder: Path, variant: str, backend: str) -> Built:
    """The model in ``folder`` loaded as ``Editor.from_pretrained`` does, then made
    ``variant`` in memory (a model that is already quantized stays as stored)."""
    from pbmlx.editor import load_pipeline

    mx.reset_peak_memory()
    t0 = time.perf_counter()
    pipeline = load_pipeline(folder, dtype=variant_dtype(variant, backend))
    components = {
        "text_encoder": pipeline.text_encoder,
        "vae": pipeline.vae,
        "unet": pipeline.unet,
    }
    params, quantized = _finish(components, variant, backend)
    return _built(pipeline, t0, params, model_configs(folder), quantized)


def stored_quantization(folder: Path) -> int | None:
    """The bits a ``pbmlx convert --quantize`` folder was quantized to, or None."""
    from pbmlx.models.checkpoint import is_converted, read_manifest

    if not is_converted(folder):
        return None
    q = read_manifest(folder).get("quantization")
    return int(q["bits"]) if q else None


def _dtype_name(pipeline) -> str:
    return str(pipeline.dtype).removeprefix("mlx.core.")
