"""Training examples: Pico-Banana records -> pixels -> latents and text states (cached).

An :class:`Example` is what one record contributes: the source photo, the edited image (and,
for preference records, the failed attempts), the instruction. :func:`examples` collects them
from the readers of :mod:`pbmlx.data` (paths only: 257,730 SFT records are a few tens of MB).

Pixels (:func:`pixels`): both images are read with :func:`pbmlx.load.read_image`; an edit of
another size than its source is first resized to the source's size (Pico-Banana's outputs are
not always pixel-aligned); then the shorter side is resized to ``resolution`` (PIL bicubic) and
the centre square cropped, values mapped to ``[-1, 1]``. The crop is deterministic, so encoded
latents can be cached.

Encoding (:class:`Encoder`): the source's latents are the VAE posterior's mode (unscaled, as at
inference); the edit's posterior ``(mean, logvar)`` is kept, and a sample
``mean + exp(logvar / 2) n`` (times the VAE scaling factor) is drawn at each use, from the
step's key, as diffusers' training script does; the instruction's text-encoder hidden states.
With a cache folder each example's three arrays are computed once and stored as
``<key>.safetensors``; the key hashes the model (its manifest, which holds every weight file's SHA-256), the two image
files (path, size, modification time), the instruction and the resolution, so a changed input
is never served stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from PIL import Image

from pbmlx.errors import PbmlxError
from pbmlx.load import read_image
from pbmlx.pixels import codes_to_unit, unit_to_codes, unit_to_model


@dataclass(frozen=True)
class Example:
    source: Path
    output: Path
    instruction: str
    edit_type: str
    rejected: tuple[Path, ...] = ()


@dataclass
class Encoded:
    image_latents: mx.array  # (h, w, C) unscaled mode of the source
    target_mean: mx.array  # (h, w, C) posterior mean of the edit
    target_logvar: mx.array  # (h, w, C)
    text: mx.array  # (L, D)


def examples(
    data: Path,
    *,
    preference: bool = False,
    sources: Path | None = None,
    edit_types=None,
    groups=None,
    instruction: str = "summarized",
    split: str | None = "train",
    val_fraction: float = 0.05,
    limit: int | None = None,
) -> tuple[list[Example], dict]:
    """The training examples of ``data`` (SFT records, or preference records with
    ``preference``) and the readers' statistics (skips by reason)."""
    from pbmlx.data import ReadStats, read_preference, read_sft

    stats = ReadStats()
    reader = read_preference if preference else read_sft
    out = [
        Example(r.source, r.output, r.instruction, r.edit_type, tuple(r.rejected))
        for r in reader(
            data,
            sources=sources,
            edit_types=edit_types,
            groups=groups,
            instruction=instruction,
            split=split,
            val_fraction=val_fraction,
            limit=limit,
            stats=stats,
        )
        if not preference or r.rejected
    ]
    return out, stats.summary()


def _square(rgb: np.ndarray, resolution: int) -> np.ndarray:
    h, w, _ = rgb.shape
    scale = resolution / min(h, w)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    im = Image.fromarray(unit_to_codes(rgb)).resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return np.asarray(im.crop((left, top, left + resolution, top + resolution)))


def pixels(source: Path, edited: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The source and the edit as float32 ``(R, R, 3)`` in ``[-1, 1]`` (module docstring): the
    squared images' 8-bit codes ``u`` -> ``u / 127.5 - 1`` (:func:`pbmlx.pixels.unit_to_model`)."""
    src = read_image(source).rgb
    out = read_image(edited).rgb
    if out.shape[:2] != src.shape[:2]:
        im = Image.fromarray(unit_to_codes(out))
        out = codes_to_unit(
            np.asarray(im.resize((src.shape[1], src.shape[0]), Image.Resampling.BICUBIC))
        )
    return unit_to_model(_square(src, resolution)), unit_to_model(_square(out, resolution))


def _file_key(p: Path) -> str:
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


class Encoder:
    """Latents and text states of examples, through a pipeline's VAE and text encoder, with an
    optional on-disk cache (module docstring)."""

    def __init__(
        self, pipeline, resolution: int, model_key: str, cache: Path | None = None
    ) -> None:
        self.pipe = pipeline
        self.resolution = resolution
        self.cache = cache
        self.factor = pipeline.vae_factor
        if resolution % (8 * self.factor):
            raise PbmlxError(
                f"--resolution {resolution} must be a multiple of {8 * self.factor} "
                "(the UNet halves the latents three times)."
            )
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        self._model_key = model_key  # identifies the VAE and text-encoder weights
        self._null: mx.array | None = None

    def null_text(self) -> mx.array:
        """Hidden states of the empty prompt, ``(1, L, D)``: the dropped text."""
        if self._null is None:
            self._null = self._text("")[None]
        return self._null

    def _text(self, instruction: str) -> mx.array:
        ids = mx.array(self.pipe.tokenizer.encode([instruction]))
        return self.pipe.text_encoder(ids).last_hidden_state[0].astype(mx.float32)

    def _compute(self, ex: Example, edited: Path) -> Encoded:
        src, out = pixels(ex.source, edited, self.resolution)
        dtype = self.pipe.vae.encoder.conv_in.weight.dtype
        batch = mx.array(np.stack([src, out])).astype(dtype)
        dist = self.pipe.vae.encode(batch)
        enc = Encoded(
            image_latents=dist.mean[0].astype(mx.float32),
            target_mean=dist.mean[1].astype(mx.float32),
            target_logvar=dist.logvar[1].astype(mx.float32),
            text=self._text(ex.instruction),
        )
        mx.eval(enc.image_latents, enc.target_mean, enc.target_logvar, enc.text)
        return enc

    def encode(self, ex: Example, edited: Path | None = None) -> Encoded:
        """``ex`` encoded with ``edited`` as the target (default: its passed edit)."""
        edited = ex.output if edited is None else edited
        if self.cache is None:
            return self._compute(ex, edited)
        key = hashlib.sha256(
            json.dumps(
                [
                    self._model_key,
                    _file_key(ex.source),
                    _file_key(edited),
                    ex.instruction,
                    self.resolution,
                ]
            ).encode()
        ).hexdigest()[:32]
        path = self.cache / f"{key}.safetensors"
        if path.is_file():
            try:
                a = mx.load(str(path))
                return Encoded(a["image_latents"], a["target_mean"], a["target_logvar"], a["text"])
            except (OSError, ValueError, RuntimeError, KeyError):
                pass  # a damaged entry is recomputed
        enc = self._compute(ex, edited)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.safetensors")
        mx.save_safetensors(
            str(tmp),
            {
                "image_latents": enc.image_latents,
                "target_mean": enc.target_mean,
                "target_logvar": enc.target_logvar,
                "text": enc.text,
            },
        )
        os.replace(tmp, path)  # atomic: a killed run leaves no half-written entry
        return enc
