"""Strict loading of one model component (text encoder, VAE or UNet) from its folder.

A component folder is what diffusers/transformers ``save_pretrained`` writes, or what
``pbmlx convert`` writes: ``config.json`` beside one safetensors file (or a sharded set with a
``*.safetensors.index.json``). Loading is:

1. read ``config.json`` and build the module from it (the model file's ``Config.from_dict``);
2. read the safetensors with ``mx.load`` (lazy: nothing is copied until evaluated);
3. adapt names and layouts once with the component's ``sanitize`` -- unless every file says
   ``format: mlx`` in its safetensors metadata (:data:`MLX_FORMAT`), i.e. it was written by
   pbmlx already in MLX layout (a 3x3 conv with 3 input channels has the same shape in OIHW and
   OHWI, so the layout cannot be told from shapes alone);
4. check that every parameter the config implies exists with the right shape and that the
   checkpoint has nothing the config does not use; any difference raises
   :class:`~pbmlx.errors.PbmlxError` naming the tensor and the file;
5. load into the module (optionally casting floating tensors to one dtype).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from pbmlx.errors import PbmlxError

CONFIG_NAME = "config.json"
MLX_FORMAT = "mlx"  # safetensors metadata {"format": "mlx"}: tensors already in MLX layout
# The single-file names diffusers and transformers write, in the order they are looked for.
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
MAX_NAMED = 3  # how many offending tensor names an error message lists

M = TypeVar("M", bound=nn.Module)


def read_config(path: Path | str) -> dict[str, Any]:
    """The JSON object in ``path`` (a component's ``config.json``)."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise PbmlxError(f"Model config {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PbmlxError(f"Model config {path} is not readable JSON ({e}).") from None
    if not isinstance(config, dict):
        raise PbmlxError(f"Model config {path} is not a JSON object.")
    return config


def weight_files(folder: Path | str, variant: str | None = None) -> list[Path]:
    """The safetensors files holding one component's weights, found in ``folder``.

    Order of preference: a ``*.safetensors.index.json`` (sharded checkpoint: the files its
    ``weight_map`` names), the standard single-file names (``diffusion_pytorch_model`` /
    ``model``, with ``.{variant}`` before the suffix when a variant such as ``fp16`` is asked),
    else the folder's only ``*.safetensors`` file. Pickle-only folders are refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PbmlxError(f"Model folder {folder} does not exist.")
    infix = f".{variant}" if variant else ""
    indexes = sorted(folder.glob(f"*{infix}.safetensors.index.json"))
    if variant is None:
        indexes = [p for p in indexes if p.name.count(".") == 3]  # name.safetensors.index.json
    if indexes:
        index = indexes[0]
        weight_map = read_config(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise PbmlxError(f"Safetensors index {index} has no weight_map.")
        files = [folder / name for name in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise PbmlxError(f"Shard {f} listed in {index.name} does not exist.")
        return files
    for name in WEIGHT_NAMES:
        stem, suffix = name.rsplit(".", 1)
        path = folder / f"{stem}{infix}.{suffix}"
        if path.is_file():
            return [path]
    found = sorted(folder.glob("*.safetensors"))
    if variant is None:
        found = [p for p in found if p.name.count(".") == 1]
    if len(found) == 1:
        return found
    if found:
        names = ", ".join(p.name for p in found)
        raise PbmlxError(
            f"Model folder {folder} holds several safetensors files ({names}) and no index."
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PbmlxError(
            f"Model folder {folder} has only pickle weights ({', '.join(pickles)}); "
            "pbmlx loads safetensors only (convert them with `pbmlx convert --allow-pickle`)."
        )
    raise PbmlxError(f"Model folder {folder} has no safetensors weights.")


def read_safetensors(files: list[Path]) -> tuple[dict[str, mx.array], dict[str, Path], bool]:
    """Read ``files`` lazily with ``mx.load``.

    Returns ``(tensors, origin, mlx_layout)``: the tensors by name, the file each came from,
    and whether every file declares ``format: mlx`` (already converted by pbmlx).
    """
    tensors: dict[str, mx.array] = {}
    origin: dict[str, Path] = {}
    mlx_layout = True
    for path in files:
        try:
            arrays, metadata = mx.load(str(path), return_metadata=True)
        except Exception as e:  # mlx raises bare RuntimeError/ValueError for bad files
            raise PbmlxError(
                f"Weights file {path} is not a readable safetensors file ({e})."
            ) from None
        mlx_layout = mlx_layout and metadata.get("format") == MLX_FORMAT
        for name, array in arrays.items():
            if name in tensors:
                raise PbmlxError(f"Tensor '{name}' appears in both {origin[name]} and {path}.")
            tensors[name] = array
            origin[name] = path
    return tensors, origin, mlx_layout


def _where(name: str, origin: dict[str, Path], files: list[Path]) -> str:
    """The file a (possibly renamed by sanitize) tensor came from, for error messages."""
    if name in origin:
        return str(origin[name])
    if len(files) == 1:
        return str(files[0])
    return "the checkpoint (" + ", ".join(str(f) for f in files) + ")"


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:MAX_NAMED])
    more = len(names) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def load_strict(
    model: nn.Module,
    weights: dict[str, mx.array],
    *,
    origin: dict[str, Path] | None = None,
    files: list[Path] | None = None,
    config_file: Path | str | None = None,
    dtype: mx.Dtype | None = None,
) -> None:
    """Load ``weights`` (already in the model's names and layout) into ``model``, strictly.

    Every parameter of ``model`` must be present with the same shape, and every tensor of
    ``weights`` must be a parameter of ``model``; otherwise :class:`PbmlxError` names the first
    offending tensor(s), the file they came from (``origin``/``files``) and the config that
    implied the expected shapes. Floating tensors are cast to ``dtype`` when it is given.
    """
    origin = origin or {}
    files = files or sorted(set(origin.values()))
    config = f" (config {config_file})" if config_file else ""
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing:
        what, verb = ("Tensors", "are") if len(missing) > 1 else ("Tensor", "is")
        hint = (
            f" ({len(unexpected)} of its tensors are unused: config and weights do not match)"
            if unexpected
            else ""
        )
        raise PbmlxError(
            f"{what} {_listed(missing)} expected by the model{config} {verb} missing from "
            f"{_where(missing[0], origin, files)}{hint}."
        )
    for name, param in expected.items():
        got = weights[name]
        if tuple(got.shape) != tuple(param.shape):
            raise PbmlxError(
                f"Tensor '{name}' in {_where(name, origin, files)} has shape {tuple(got.shape)} "
                f"(in MLX layout) but the model{config} expects {tuple(param.shape)}."
            )
    if unexpected:
        what, verb = ("Tensors", "are") if len(unexpected) > 1 else ("Tensor", "is")
        raise PbmlxError(
            f"{what} {_listed(unexpected)} in {_where(unexpected[0], origin, files)} {verb} not "
            f"used by the model{config}: the weights and the config do not match."
        )
    if dtype is not None:
        weights = {
            k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
            for k, v in weights.items()
        }
    model.load_weights(list(weights.items()), strict=True)


def load_component(
    folder: Path | str,
    build: Callable[[dict[str, Any]], M],
    sanitize: Callable[[dict[str, mx.array]], dict[str, mx.array]],
    *,
    dtype: mx.Dtype | None = None,
    variant: str | None = None,
) -> M:
    """Build a component from ``folder/config.json`` with ``build`` and load its weights strictly.

    ``build`` turns the raw config dict into the module (e.g. ``lambda c:
    UNet2DConditionModel(UNetConfig.from_dict(c))``); a :class:`PbmlxError` it raises is
    re-raised naming the config file. ``sanitize`` adapts diffusers/transformers tensors and
    is skipped for files pbmlx wrote in MLX layout. The module is returned in eval mode.
    """
    folder = Path(folder)
    config_file = folder / CONFIG_NAME
    raw = read_config(config_file)
    try:
        model = build(raw)
    except PbmlxError as e:
        raise PbmlxError(f"Model config {config_file}: {e}") from None
    except (TypeError, ValueError, KeyError) as e:
        raise PbmlxError(
            f"Model config {config_file} is not valid for this component ({e})."
        ) from None
    files = weight_files(folder, variant)
    weights, origin, mlx_layout = read_safetensors(files)
    if not mlx_layout:
        weights = sanitize(weights)
    load_strict(model, weights, origin=origin, files=files, config_file=config_file, dtype=dtype)
    model.eval()
    return model
