"""Weights read back from a saved ``.mlpackage``: the proof that works where Core ML cannot run.

Core ML's runtime exists only on Apple platforms, but a package's weights are plain data:
coremltools reads them on any OS (``decompress_weights`` turns palettized lookup tables back
into dense float16 tensors; ``get_weights_metadata`` lists every constant). Loading those
tensors into the export wrapper that produced the package and running it in PyTorch shows
what the package computes up to float16 arithmetic: the compression error, measured.

Names: coremltools names a parameter's constant after its module path in the wrapper, dots
turned to underscores, with ``p_`` in front and ``_to_fp16`` (cast) and ``_palettized``
(compressed) behind; :func:`state_from_package` matches each of the wrapper's state-dict
entries to its constant that way and checks the shape. A parameter that no constant matches
is reported, not guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SUFFIXES = ("_palettized", "_to_fp16")  # stripped, innermost last


def package_weights(package: Path | str) -> dict[str, np.ndarray]:
    """Every constant of the saved package, decompressed, by name (float16 or as stored)."""
    import coremltools as ct
    from coremltools.optimize.coreml import decompress_weights, get_weights_metadata

    mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
    dense = decompress_weights(mlmodel)
    return {
        name: np.asarray(meta.val)
        for name, meta in get_weights_metadata(dense, weight_threshold=0).items()
    }


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name.removeprefix("p_")


def state_from_package(
    package: Path | str, wrapper: Any
) -> tuple[dict[str, Any], list[str], list[str]]:
    """``(state, by_value, missing)``: ``wrapper``'s parameters (not buffers) as read back
    from ``package``, float32 torch tensors in the parameters' shapes.

    A parameter is found by name (see the module docstring) -- every weight large enough to
    be palettized keeps its name -- or else by value: some small parameters lose their names
    to graph rewrites (a GroupNorm's scale and shift become a ``batch_norm``'s ``gamma`` and
    ``beta``; the text encoder's position embedding, gathered at the fixed positions 0..76,
    is folded into one constant), and those are taken from the constant whose float16 values
    are exactly the parameter's (``by_value`` lists them). A parameter found neither way is
    in ``missing`` (e.g. one the package does not use)."""
    import torch

    weights = package_weights(package)
    consts: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        consts.setdefault(_base(name), value)
    by_bytes = {
        np.ascontiguousarray(v, dtype=np.float16).tobytes(): v
        for v in weights.values()
        if v.dtype == np.float16
    }
    state: dict[str, Any] = {}
    by_value: list[str] = []
    missing: list[str] = []
    for key, ref in wrapper.named_parameters():
        value = consts.get(key.replace(".", "_"))
        if value is None or value.size != ref.numel():
            half = ref.detach().numpy().astype(np.float16)
            value = by_bytes.get(half.tobytes())
            if value is None:
                missing.append(key)
                continue
            by_value.append(key)
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32).reshape(ref.shape))
    return state, by_value, missing


def run_with_package_weights(package: Path | str, spec: Any) -> tuple[np.ndarray, list, list]:
    """``(output, by_value, missing)``: the first output of a copy of ``spec``'s export module
    loaded with the weights read back from ``package`` (:func:`state_from_package`; a missing
    parameter keeps the module's own value), on ``spec``'s sample inputs."""
    import copy

    import torch

    state, by_value, missing = state_from_package(package, spec.module)
    module = copy.deepcopy(spec.module)
    module.load_state_dict(state, strict=False)
    with torch.no_grad():
        out = module(*spec.inputs.values())
    out = out if isinstance(out, torch.Tensor) else out[0]
    return out.numpy(), by_value, missing


def psnr(out: np.ndarray, ref: np.ndarray) -> float:
    """Peak signal-to-noise ratio of ``out`` against ``ref`` in dB, with the reference's peak
    absolute value as the peak (Apple's definition for its Core ML conversions)::

        PSNR = 20 log10(max |ref|) - 10 log10(mean((out - ref)^2))

    ``inf`` when they are equal."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    mse = float(np.mean((out - ref) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(20 * np.log10(np.abs(ref).max()) - 10 * np.log10(mse))
