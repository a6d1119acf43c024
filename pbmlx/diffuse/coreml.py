"""Editing through a Core ML bundle (``pbmlx export-coreml``) with pbmlx's own pipeline.

The bundle's packages stand in for the three MLX networks inside
:class:`~pbmlx.diffuse.pipeline.InstructPix2PixPipeline`, so the tokenizer, the scheduler,
the batch of three and the dual-guidance formula are the very code the MLX editor runs (one
place for the guidance numerics); only the networks' arithmetic moves to Core ML (the GPU or
the Neural Engine). Each adapter below converts between the pipeline's NHWC ``mx.array``s and
the packages' channels-first NumPy arrays, by the names ``pbmlx-coreml.json`` records:

- :class:`CoreMLTextEncoder` -- ``TextEncoder`` row by row (its batch is 1);
- :class:`CoreMLVAE` -- ``VAEEncoder`` (takes pixels in [0, 1]: the pipeline's ``2 I - 1`` is
  undone) and ``VAEDecoder`` (takes the latents before ``/ scaling_factor`` and returns pixels
  in [0, 1]: the pipeline's division and ``/ 2 + 1/2`` are undone around it);
- :class:`CoreMLUNet` -- ``Unet`` once for the three rows (``unet_batch`` 3) or once per row
  (1), or ``UnetChunk1`` then ``UnetChunk2`` (their outputs fed by name).

Packages are loaded with coremltools, whose runtime exists only on macOS; elsewhere
:func:`load_predictors` raises :class:`PbmlxError`. Anything with a ``predict(dict) -> dict``
method can stand in for a package (the tests drive the adapters with the PyTorch export
modules on Linux).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import mlx.core as mx
import numpy as np

from pbmlx.errors import PbmlxError
from pbmlx.pixels import model_to_unit, unit_to_model

MANIFEST = "pbmlx-coreml.json"
FORMAT = "pbmlx-coreml-instruct-pix2pix"
FORMAT_VERSION = 1
COMPUTE_UNITS = ("ALL", "CPU_AND_GPU", "CPU_AND_NE", "CPU_ONLY")


class Predictor(Protocol):
    def predict(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def is_bundle(folder: Path | str) -> bool:
    """Whether ``folder`` is a Core ML bundle written by ``pbmlx export-coreml``."""
    return (Path(folder) / MANIFEST).is_file()


def read_bundle(folder: Path | str) -> dict[str, Any]:
    """The checked ``pbmlx-coreml.json`` of ``folder``."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PbmlxError(
            f"{folder} is not a Core ML bundle (no {MANIFEST}; make one with `pbmlx "
            "export-coreml`)."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PbmlxError(f"Core ML bundle manifest {path} is not readable JSON ({e}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PbmlxError(f"Core ML bundle manifest {path} does not declare format {FORMAT!r}.")
    if not isinstance(manifest.get("format_version"), int) or not (
        1 <= manifest["format_version"] <= FORMAT_VERSION
    ):
        raise PbmlxError(
            f"Core ML bundle manifest {path} has format_version "
            f"{manifest.get('format_version')!r}; this pbmlx reads 1 to {FORMAT_VERSION}."
        )
    needed = ["TextEncoder", "VAEEncoder", "VAEDecoder", *manifest.get("unet", [])]
    models = manifest.get("models") or {}
    for name in needed:
        if name not in models or not (Path(folder) / models[name].get("file", "")).exists():
            raise PbmlxError(f"Core ML bundle {folder} has no {name} package.")
    return manifest


def load_predictors(
    folder: Path | str, manifest: dict[str, Any], compute_units: str = "ALL"
) -> dict[str, Predictor]:
    """The bundle's packages loaded by Core ML for ``compute_units`` (macOS only)."""
    if compute_units not in COMPUTE_UNITS:
        raise PbmlxError(f"Compute units {compute_units!r} must be one of {COMPUTE_UNITS}.")
    if sys.platform != "darwin":
        raise PbmlxError(
            f"Core ML runs only on macOS, and this is {sys.platform}: export bundles here "
            "with `pbmlx export-coreml`, run them on a Mac (or use the MLX editor with "
            "--model pointing at a diffusers or `pbmlx convert` folder)."
        )
    try:
        import coremltools as ct
    except ImportError:
        raise PbmlxError(
            "Running a Core ML bundle needs coremltools (pip install 'pbmlx[coreml]')."
        ) from None
    units = getattr(ct.ComputeUnit, compute_units)
    return {
        name: ct.models.MLModel(str(Path(folder) / entry["file"]), compute_units=units)
        for name, entry in manifest["models"].items()
    }


def _nchw(x: mx.array) -> np.ndarray:
    return np.ascontiguousarray(np.array(x.astype(mx.float32)).transpose(0, 3, 1, 2))


def _nhwc(x: np.ndarray) -> mx.array:
    return mx.array(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1))


# The pipeline reads a network's compute dtype from its first layer's weight; Core ML packages
# take and return float32 whatever they compute in.
_FLOAT32_LAYER = SimpleNamespace(weight=SimpleNamespace(dtype=mx.float32))


class CoreMLTextEncoder:
    """``TextEncoder`` as the pipeline's text encoder: ``(N, 77)`` ids -> hidden states."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def __call__(self, ids: mx.array) -> SimpleNamespace:
        rows = [
            self.predictor.predict({"input_ids": np.asarray(row[None], dtype=np.int32)})[
                "last_hidden_state"
            ]
            for row in np.array(ids)
        ]
        return SimpleNamespace(last_hidden_state=mx.array(np.concatenate(rows).astype(np.float32)))


class _Latents:
    def __init__(self, z: mx.array) -> None:
        self.z = z

    def mode(self) -> mx.array:
        return self.z


class CoreMLVAE:
    """``VAEEncoder`` + ``VAEDecoder`` as the pipeline's VAE (NHWC, pixels in [-1, 1])."""

    def __init__(self, encoder: Predictor, decoder: Predictor, manifest: dict[str, Any]) -> None:
        self.encoder_package, self.decoder_package = encoder, decoder
        latents = manifest["latents"]
        factor = int(manifest["working_size"]["vae_factor"])
        self.config = SimpleNamespace(
            latent_channels=int(latents["channels"]),
            scaling_factor=float(latents["scaling_factor"]),
            block_out_channels=[0] * (int(math.log2(factor)) + 1),  # factor = 2 ** (n - 1)
        )
        self.encoder = SimpleNamespace(conv_in=_FLOAT32_LAYER)
        self.decoder = SimpleNamespace(conv_in=_FLOAT32_LAYER)

    def encode(self, image: mx.array) -> _Latents:
        # The package takes [0, 1]: undo the pipeline's to_model_input exactly (no clipping).
        pixels = model_to_unit(_nchw(image), clip=False)
        out = self.encoder_package.predict({"image": pixels})["image_latents"]
        return _Latents(_nhwc(out))

    def decode(self, z: mx.array) -> mx.array:
        latents = _nchw(z) * self.config.scaling_factor  # the package divides by it itself
        pixels = self.decoder_package.predict({"latents": latents})["image"]
        return _nhwc(unit_to_model(pixels))  # the pipeline maps [-1, 1] back to [0, 1]


class CoreMLUNet:
    """``Unet`` (or ``UnetChunk1`` + ``UnetChunk2``) as the pipeline's UNet."""

    def __init__(self, predictors: dict[str, Predictor], manifest: dict[str, Any]) -> None:
        self.names = list(manifest["unet"])
        self.predictors = [predictors[n] for n in self.names]
        first = manifest["models"][self.names[0]]
        sample = next(i for i in first["inputs"] if i["name"] == "sample")
        self.batch = int(sample["shape"][0])
        channels = int(manifest["latents"]["channels"])
        self.config = SimpleNamespace(in_channels=int(sample["shape"][1]), out_channels=channels)
        self.conv_in = _FLOAT32_LAYER

    def _call(self, sample: np.ndarray, t: np.ndarray, states: np.ndarray) -> np.ndarray:
        data = {"sample": sample, "timestep": t, "encoder_hidden_states": states}
        out = self.predictors[0].predict(data)
        if len(self.predictors) == 2:  # chunk 2 takes chunk 1's outputs by name
            out = self.predictors[1].predict({**out, "encoder_hidden_states": states})
        return out["noise_pred"]

    def __call__(self, x: mx.array, timestep: Any, states: mx.array) -> mx.array:
        sample = _nchw(x)
        rows = sample.shape[0]
        hidden = np.asarray(states, dtype=np.float32)
        t = np.full((self.batch,), float(np.asarray(timestep).reshape(-1)[0]), np.float32)
        if self.batch == rows:
            return _nhwc(self._call(sample, t, hidden))
        if self.batch != 1:
            raise PbmlxError(f"The bundle's UNet takes {self.batch} rows; the pipeline has {rows}.")
        eps = [self._call(sample[i : i + 1], t, hidden[i : i + 1]) for i in range(rows)]
        return _nhwc(np.concatenate(eps))


def load_coreml_pipeline(
    folder: Path | str,
    *,
    compute_units: str = "ALL",
    predictors: dict[str, Predictor] | None = None,
) -> tuple[Any, tuple[int, int]]:
    """``(pipeline, (width, height))``: an :class:`InstructPix2PixPipeline` whose networks
    are the bundle's packages, and the working size they were exported for. ``predictors``
    replaces loading the packages with Core ML (tests)."""
    from pbmlx.diffuse.pipeline import InstructPix2PixPipeline
    from pbmlx.models.tokenizer import CLIPTokenizer

    folder = Path(folder)
    manifest = read_bundle(folder)
    if predictors is None:
        predictors = load_predictors(folder, manifest, compute_units)
    scheduler = manifest.get("scheduler") or {}
    pipeline = InstructPix2PixPipeline(
        tokenizer=CLIPTokenizer.from_folder(folder),
        text_encoder=CoreMLTextEncoder(predictors["TextEncoder"]),
        vae=CoreMLVAE(predictors["VAEEncoder"], predictors["VAEDecoder"], manifest),
        unet=CoreMLUNet(predictors, manifest),
        scheduler_config=scheduler.get("config") or {},
        scheduler_source=f"scheduler config in {folder / MANIFEST}",
    )
    size = manifest["working_size"]
    return pipeline, (int(size["width"]), int(size["height"]))
