"""The model to export, as PyTorch modules in float32 with diffusers' parameter names.

``MODEL`` may be

* a diffusers InstructPix2Pix pipeline folder, or a Hugging Face Hub id of one (fetched as
  ``pbmlx convert`` fetches it: configs, tokenizer files, safetensors only): the networks are
  read with diffusers' and transformers' own ``from_pretrained``, so the modules exported are
  exactly the reference implementation;
* a folder written by ``pbmlx convert``: the networks are built from the ``config.json`` files
  it keeps (the source's own) and loaded from its MLX tensors, mapped back by
  :func:`mlx_to_torch_state` -- names are diffusers' already (the MLX models keep them); only
  layouts differ (NHWC convolution kernels, 1x1 projections stored as matrices), and
  quantized layers are dequantized (``w = scale * q + bias`` per group), so a quantized folder
  exports its quantized values, not the original weights.

Every check that needs no tensor comes first (pipeline layout, an 8-channel UNet, configs that
agree, tokenizer files, safetensors present), so a bad ``MODEL`` is refused before any
conversion time is spent. Problems raise :class:`~pbmlx.errors.PbmlxError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pbmlx.convert.to_mlx import (
    SCHEDULER_CONFIG,
    _check_pipeline,
    _check_tokenizer,
    _licence,
    component_files,
    resolve_source,
)

from pbmlx.errors import PbmlxError
from pbmlx.models.checkpoint import COMPONENTS, is_converted, read_manifest
from pbmlx.models.weights import CONFIG_NAME, read_config

TRANSFORMERS4_PREFIX = "text_model."  # transformers' CLIPTextModel nests its weights here


@dataclass
class TorchSource:
    """The three networks (float32, eval mode) and what the bundle copies beside them."""

    name: str  # MODEL as the user gave it
    folder: Path  # where its files are
    kind: str  # "diffusers" or "pbmlx"
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer_files: list[Path]
    scheduler_config: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    hub_id: str | None = None
    revision: str | None = None
    licence: dict[str, str] = field(default_factory=dict)
    quantized: dict[str, Any] | None = None  # a pbmlx folder's quantization entry

    @property
    def vae_factor(self) -> int:
        """Pixels per latent along a side: 2 ** (number of VAE down blocks - 1)."""
        return 2 ** (len(self.configs["vae"].get("block_out_channels", [0] * 4)) - 1)

    @property
    def unet_factor(self) -> int:
        """Latents per side must be a multiple of this for the UNet's plain down/up path."""
        return 2 ** (len(self.configs["unet"].get("block_out_channels", [0] * 4)) - 1)


def _refuse_text_to_image(folder: Path, unet_config: dict[str, Any], latent: int) -> None:
    if unet_config.get("in_channels", 4) != 2 * latent:
        raise PbmlxError(
            f"Model {folder} is not an InstructPix2Pix checkpoint: its UNet takes "
            f"{unet_config.get('in_channels', 4)} input channels, an InstructPix2Pix UNet "
            f"takes {2 * latent} (noisy latents + image latents)."
        )


def _torch_modules(folder: Path, name: str) -> Any:
    """One network of a diffusers folder, read by its own library, float32, eval mode."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    loaders = {
        "unet": lambda p: UNet2DConditionModel.from_pretrained(p, torch_dtype=torch.float32),
        "vae": lambda p: AutoencoderKL.from_pretrained(p, torch_dtype=torch.float32),
        "text_encoder": lambda p: CLIPTextModel.from_pretrained(p, dtype=torch.float32),
    }
    path = folder / name
    try:
        module = loaders[name](str(path))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # truncated file, wrong tensor shapes: one line naming the folder
        reason = (" ".join(str(e).split()) or type(e).__name__)[:300]
        raise PbmlxError(f"Model component {path} could not be loaded ({reason}).") from None
    return module.float().eval()


def _empty_modules(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The three networks built from their configs (random weights, to be overwritten)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return {
        "unet": UNet2DConditionModel.from_config(configs["unet"]),
        "vae": AutoencoderKL.from_config(configs["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"])),
    }


def dense_mlx_parameters(model: Any) -> dict[str, np.ndarray]:
    """Every parameter of an MLX module as float32 NumPy arrays, by module path; quantized
    layers (Linear, Embedding) become their dequantized dense ``weight``."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    out: dict[str, np.ndarray] = {}
    for path, module in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module):
        params = dict(tree_flatten(module.parameters()))
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            dense = mx.dequantize(
                params.pop("weight"),
                params.pop("scales"),
                params.pop("biases", None),
                group_size=module.group_size,
                bits=module.bits,
            )
            params["weight"] = dense
        for key, value in params.items():
            out[f"{path}.{key}"] = np.array(value.astype(mx.float32))
    return out


def mlx_to_torch_state(
    mlx_params: dict[str, np.ndarray], torch_module: Any, where: str
) -> dict[str, Any]:
    """A state dict for ``torch_module`` from MLX tensors with the same names.

    The inverse of the models' ``sanitize``: a 4-D torch tensor receives an NHWC kernel
    transposed back to OIHW, or an ``(O, I)`` matrix reshaped to ``(O, I, 1, 1)`` (1x1
    projections); names may carry transformers' ``text_model.`` prefix. Buffers that the MLX
    model computes instead of storing (e.g. ``position_ids``) keep the torch module's values.
    A parameter missing from ``mlx_params``, or of a shape that no rule maps, raises
    :class:`PbmlxError` naming it and ``where``.
    """
    import torch

    params = dict(torch_module.named_parameters())
    state: dict[str, Any] = {}
    for key, ref in torch_module.state_dict().items():
        name = key.removeprefix(TRANSFORMERS4_PREFIX)
        if name not in mlx_params:
            if key in params:
                raise PbmlxError(f"Tensor '{name}' is missing from {where}.")
            state[key] = ref  # a buffer
            continue
        value = mlx_params[name]
        want = tuple(ref.shape)
        if value.ndim == 4 and len(want) == 4:
            value = value.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        elif value.ndim == 2 and len(want) == 4:
            value = value.reshape(want)
        if tuple(value.shape) != want:
            raise PbmlxError(
                f"Tensor '{name}' of {where} has shape {tuple(mlx_params[name].shape)}, which "
                f"does not map to the reference's {want}."
            )
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return state


def _load_converted(
    folder: Path,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """``(modules, manifest, configs)`` of a ``pbmlx convert`` folder, as torch modules."""
    import mlx.core as mx

    from pbmlx.models.checkpoint import load_converted_component

    manifest = read_manifest(folder)
    configs = {c: read_config(folder / c / CONFIG_NAME) for c in COMPONENTS}
    _refuse_text_to_image(folder, configs["unet"], configs["vae"].get("latent_channels", 4))
    modules = _empty_modules(configs)
    for name, module in modules.items():
        mlx_model = load_converted_component(folder, name, mx.float32, manifest)
        where = str(folder / manifest["components"][name]["weights"])
        state = mlx_to_torch_state(dense_mlx_parameters(mlx_model), module, where)
        module.load_state_dict(state, strict=True)
        module.float().eval()
        del mlx_model
    return modules, manifest, configs


def load_source(model: str | Path) -> TorchSource:
    """The InstructPix2Pix model ``model`` (see the module docstring) as PyTorch modules."""
    text = str(model)
    local = Path(text).expanduser()
    if local.is_dir() and is_converted(local):
        modules, manifest, configs = _load_converted(local)
        tokenizer_files = _check_tokenizer(local, configs["text_encoder"])
        src = manifest.get("source") or {}
        return TorchSource(
            name=text,
            folder=local,
            kind="pbmlx",
            tokenizer_files=tokenizer_files,
            scheduler_config=read_config(local / SCHEDULER_CONFIG),
            configs=configs,
            hub_id=src.get("hub_id"),
            revision=src.get("revision"),
            licence=src.get("license") or {},
            quantized=manifest.get("quantization"),
            **modules,
        )

    src = resolve_source(model)
    configs = _check_pipeline(src.folder)  # refuses a 4-channel (text-to-image) UNet
    tokenizer_files = _check_tokenizer(src.folder, configs["text_encoder"])
    scheduler_config = read_config(src.folder / SCHEDULER_CONFIG)
    for name in COMPONENTS:
        component_files(src.folder / name, allow_pickle=False)  # safetensors, or a refusal
    modules = {name: _torch_modules(src.folder, name) for name in COMPONENTS}
    return TorchSource(
        name=text,
        folder=src.folder,
        kind="diffusers",
        tokenizer_files=tokenizer_files,
        scheduler_config=scheduler_config,
        configs=configs,
        hub_id=src.hub_id,
        revision=src.revision,
        licence=_licence(src.folder),
        **modules,
    )
