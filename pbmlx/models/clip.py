"""CLIP (transformers' ``CLIPModel``) in MLX: images and texts embedded in one space.

The judge's text-image model. Two towers and two projections, as in a Hugging Face CLIP
checkpoint (``openai/clip-vit-base-patch32`` is :data:`DEFAULT_CLIP`):

- vision: the image, cut into ``patch x patch`` patches by a stride-``patch`` convolution (no
  bias), a learned class token prepended, learned position embeddings added, ``pre_layrnorm``
  (transformers' spelling, kept so tensor names map 1:1), a bidirectional pre-norm transformer
  (the text encoder's layer with ``causal=False``), then ``post_layernorm`` of the class token
  and ``visual_projection`` (no bias);
- text: :class:`pbmlx.models.clip_text.CLIPTextModel` (causal, final LayerNorm, pooled at the
  end-of-text token), then ``text_projection`` (no bias);
- similarity: ``logits_per_image = exp(logit_scale) * normalize(image) @ normalize(text).T``
  (``logit_scale`` is stored as a log, as in the checkpoint).

Images go in as NHWC floats in ``[0, 1]``; :class:`CLIPPreprocessor` does CLIP's own
preprocessing from the checkpoint's ``preprocessor_config.json`` (see its docstring). Texts go
in as strings, tokenized by :class:`pbmlx.models.tokenizer.CLIPTokenizer` from the same folder.

Loading is strict (:func:`pbmlx.models.weights.load_component`): a missing, misshapen or
unused tensor raises :class:`~pbmlx.errors.PbmlxError` naming it. :func:`sanitize` only drops
the ``position_ids`` buffers and moves the patch convolution from OIHW to MLX's OHWI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from pbmlx import hub
from pbmlx.errors import PbmlxError
from pbmlx.models.clip_text import (
    ACTIVATIONS,
    LEGACY_EOS_TOKEN_ID,
    CLIPEncoder,
    CLIPTextConfig,
    CLIPTextModel,
)
from pbmlx.models.layers import Conv2d, Linear
from pbmlx.models.tokenizer import CLIPTokenizer
from pbmlx.models.weights import load_component, read_config
from pbmlx.pixels import as_unit

DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # the judge's small default (151M parameters)
PREPROCESSOR_NAME = "preprocessor_config.json"
# What a hub download fetches: config, safetensors weights (never pickles), tokenizer files and
# the image preprocessing config.
HUB_FILES = (
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    PREPROCESSOR_NAME,
)

# The normalization constants OpenAI's CLIP was trained with (used when a checkpoint has no
# preprocessor_config.json).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIL_BILINEAR, PIL_BICUBIC = 2, 3  # PIL's resample numbers, as preprocessor configs store them


# ---------------------------------------------------------------------------- configs


def _known(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in config.items() if k in names}


@dataclass
class CLIPVisionConfig:
    """The fields of a transformers ``CLIPVisionConfig`` (ViT-B/32 as defaults)."""

    hidden_size: int = 768
    intermediate_size: int = 3072  # MLP width
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224  # the square input side the position embeddings were learned for
    patch_size: int = 32  # image_size // patch_size patches per side
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> CLIPVisionConfig:
        """Build from a ``vision_config`` dict; unknown keys are ignored."""
        cfg = cls(**_known(cls, config))
        if cfg.hidden_act not in ACTIVATIONS:
            raise PbmlxError(f"CLIP vision hidden_act {cfg.hidden_act!r} is not supported.")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise PbmlxError(
                f"CLIP vision hidden_size {cfg.hidden_size} cannot be split into "
                f"{cfg.num_attention_heads} heads."
            )
        if cfg.num_channels != 3:
            raise PbmlxError(f"CLIP vision num_channels is {cfg.num_channels}; pbmlx feeds RGB.")
        if not 0 < cfg.patch_size <= cfg.image_size:
            raise PbmlxError(
                f"CLIP vision patch_size {cfg.patch_size} does not fit image_size {cfg.image_size}."
            )
        return cfg

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size


@dataclass
class CLIPConfig:
    """A transformers ``CLIPModel`` ``config.json``: the two towers and the shared width."""

    text: CLIPTextConfig
    vision: CLIPVisionConfig
    projection_dim: int = 512  # width of the shared embedding space

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> CLIPConfig:
        """Build from a raw ``config.json`` dict; ``text_config_dict`` / ``vision_config_dict``
        (older files) override ``text_config`` / ``vision_config`` key by key, as transformers
        reads them."""
        towers = []
        for name in ("text_config", "vision_config"):
            if config.get(name) is None and config.get(f"{name}_dict") is None:
                raise PbmlxError(f"CLIP config has no {name}: it is not a CLIPModel config.")
            towers.append({**(config.get(name) or {}), **(config.get(f"{name}_dict") or {})})
        text, vision = towers
        return cls(
            text=CLIPTextConfig.from_dict(text),
            vision=CLIPVisionConfig.from_dict(vision),
            projection_dim=int(config.get("projection_dim", 512)),
        )


# ---------------------------------------------------------------------------- preprocessing


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (PIL's BICUBIC), support 2."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    """The linear kernel (PIL's BILINEAR), support 1."""
    return np.maximum(1.0 - np.abs(x), 0.0)


_FILTERS = {PIL_BICUBIC: (_bicubic, 2.0), PIL_BILINEAR: (_triangle, 1.0)}


def resample_matrix(in_size: int, out_size: int, resample: int = PIL_BICUBIC) -> np.ndarray:
    """The ``(out_size, in_size)`` float64 matrix of a 1-D resize, PIL's convolution resampling.

    With ``s = in_size / out_size`` and ``f = max(s, 1)`` (when shrinking, the kernel is widened
    by ``f`` so every input pixel contributes: antialiasing), output pixel ``i`` is centred at
    ``c = (i + 0.5) s`` and
    ``out[i] = sum_j k((j + 0.5 - c) / f) in[j] / sum_j k((j + 0.5 - c) / f)``
    over ``j`` in ``[round(c - support f), round(c + support f))`` clipped to the image, the
    window and rounding PIL (``Resample.c``) uses.
    """
    kernel, support = _FILTERS[resample]
    scale = in_size / out_size
    widen = max(scale, 1.0)
    support *= widen
    centers = (np.arange(out_size) + 0.5) * scale
    lo = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)  # C's (int) cast
    hi = np.minimum(np.trunc(centers + support + 0.5), in_size).astype(np.int64)
    taps = math.ceil(support) * 2 + 1  # the widest window
    j = lo[:, None] + np.arange(taps)  # (out, taps) input indices
    inside = j < hi[:, None]
    w = np.where(inside, kernel((j + 0.5 - centers[:, None]) / widen), 0.0)
    w /= w.sum(axis=1, keepdims=True)
    m = np.zeros((out_size, in_size))
    rows = np.broadcast_to(np.arange(out_size)[:, None], j.shape)
    m[rows[inside], j[inside]] = w[inside]
    return m


def _size_pair(value: Any, what: str, source: str) -> tuple[int, int]:
    """``(height, width)`` from an int or a ``{"height", "width"}`` dict."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, dict) and {"height", "width"} <= value.keys():
        return int(value["height"]), int(value["width"])
    raise PbmlxError(f"{what} {value!r} in {source} is neither a size nor height/width.")


@dataclass(frozen=True)
class CLIPPreprocessor:
    """CLIP's image preprocessing (transformers' ``CLIPImageProcessor``), in MLX on floats.

    ``images (B, H, W, 3)`` in ``[0, 1]`` -> ``pixel_values (B, crop_h, crop_w, 3)``:

    1. resize so the shorter side is ``shortest_edge`` (the longer ``int(shortest_edge * long /
       short)``, transformers' rule), or to ``resize_hw`` when the config gives height/width,
       with :func:`resample_matrix` (PIL's filter, antialiased) in PIL's two passes: each row
       to the new width, clip to ``[0, 1]``, each column to the new height, clip -- what PIL
       does to 8-bit images (the clips catch bicubic's overshoot at edges), but in float:
       nothing is rounded to 8 bits;
    2. center crop: top ``(h - crop_h) // 2``, left ``(w - crop_w) // 2`` -- only the kept
       rows and columns of the resize are computed;
    3. ``(x - image_mean) / image_std`` per channel.
    """

    shortest_edge: int | None = 224
    resize_hw: tuple[int, int] | None = None  # a fixed (height, width) instead of shortest_edge
    crop_hw: tuple[int, int] = (224, 224)
    resample: int = PIL_BICUBIC
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD

    @classmethod
    def from_dict(
        cls, config: dict[str, Any], image_size: int, source: str = PREPROCESSOR_NAME
    ) -> CLIPPreprocessor:
        """Read a ``preprocessor_config.json`` dict for a model of input side ``image_size``.

        Missing keys take CLIP's defaults (shortest edge and crop ``image_size``, bicubic,
        OpenAI's mean/std); the crop must be ``image_size`` square. Raises :class:`PbmlxError`
        naming ``source`` for what pbmlx cannot honour.
        """
        try:
            return cls._parse(config, image_size, source)
        except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type
            raise PbmlxError(f"Preprocessor config {source} is malformed ({e}).") from None

    @classmethod
    def _parse(cls, config: dict[str, Any], image_size: int, source: str) -> CLIPPreprocessor:
        for flag in ("do_resize", "do_center_crop"):
            if config.get(flag, True) is False:
                raise PbmlxError(f"{flag}: false in {source} is not supported by pbmlx's CLIP.")
        size = config.get("size", image_size)
        shortest, resize_hw = None, None
        if isinstance(size, dict) and "shortest_edge" in size:
            if size.get("longest_edge") is not None:
                raise PbmlxError(f"size.longest_edge in {source} is not supported.")
            shortest = int(size["shortest_edge"])
        elif isinstance(size, int) and not isinstance(size, bool):
            shortest = size  # CLIP resizes the shortest edge to an int size
        else:
            resize_hw = _size_pair(size, "size", source)
        crop_hw = _size_pair(config.get("crop_size", image_size), "crop_size", source)
        if crop_hw != (image_size, image_size):
            raise PbmlxError(
                f"crop_size {crop_hw} in {source} does not match the model's image_size "
                f"{image_size}."
            )
        smallest = (shortest, shortest) if shortest is not None else resize_hw
        if smallest[0] < crop_hw[0] or smallest[1] < crop_hw[1]:
            raise PbmlxError(f"Resize size {size!r} in {source} is smaller than the crop.")
        resample = config.get("resample", PIL_BICUBIC)
        if resample not in _FILTERS:
            raise PbmlxError(
                f"resample {resample!r} in {source} is not supported (2 bilinear, 3 bicubic)."
            )
        if config.get("do_normalize", True):
            mean = tuple(float(v) for v in config.get("image_mean", OPENAI_CLIP_MEAN))
            std = tuple(float(v) for v in config.get("image_std", OPENAI_CLIP_STD))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise PbmlxError(f"image_mean/image_std in {source} must be 3 values, std > 0.")
        return cls(shortest, resize_hw, crop_hw, resample, mean, std)

    @classmethod
    def from_folder(cls, folder: Path | str, image_size: int) -> CLIPPreprocessor:
        """The checkpoint's ``preprocessor_config.json``, or CLIP's defaults without one."""
        path = Path(folder) / PREPROCESSOR_NAME
        config = read_config(path) if path.is_file() else {}
        return cls.from_dict(config, image_size, str(path))

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of an ``height x width`` image after step 1."""
        if self.shortest_edge is None:
            return self.resize_hw  # type: ignore[return-value]
        s = self.shortest_edge
        if width <= height:
            return int(s * height / width), s
        return s, int(s * width / height)

    def __call__(self, images: np.ndarray | mx.array) -> mx.array:
        """``pixel_values (B, crop_h, crop_w, 3)`` float32 from ``images`` (see the class)."""
        x = as_image_batch(images)
        B, H, W, C = x.shape
        h, w = self.resized_size(H, W)
        ch, cw = self.crop_hw
        top, left = (h - ch) // 2, (w - cw) // 2
        rows = resample_matrix(H, h, self.resample)[top : top + ch]  # (ch, H)
        cols = resample_matrix(W, w, self.resample)[left : left + cw]  # (cw, W)
        xm = mx.array(x)
        # Horizontal pass first, as PIL: one GEMM (B*H*C, W) @ (W, cw).
        t = xm.transpose(0, 1, 3, 2).reshape(B * H * C, W) @ mx.array(
            np.ascontiguousarray(cols.T), dtype=mx.float32
        )
        t = mx.clip(t, 0.0, 1.0).reshape(B, H, C * cw)
        t = mx.array(rows, dtype=mx.float32) @ t  # (B, ch, C * cw)
        t = t.reshape(B, ch, C, cw).transpose(0, 1, 3, 2)  # (B, ch, cw, C)
        t = mx.clip(t, 0.0, 1.0)
        mean = mx.array(self.image_mean, dtype=mx.float32)
        std = mx.array(self.image_std, dtype=mx.float32)
        return (t - mean) / std


def as_image_batch(images: np.ndarray | mx.array) -> np.ndarray:
    """``images`` as a float32 ``(B, H, W, 3)`` array in ``[0, 1]``.

    Accepts ``(B, H, W, 3)`` or one ``(H, W, 3)`` image; floats must lie in ``[0, 1]``, uint8 is
    divided by 255. Anything else raises :class:`PbmlxError`.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape:
        raise PbmlxError(f"CLIP expects RGB images of shape (B, H, W, 3), got {x.shape}.")
    if x.dtype == np.uint8:
        return as_unit(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise PbmlxError(f"CLIP expects float images in [0, 1] or uint8, got {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise PbmlxError(f"CLIP expects images in [0, 1], got values in [{lo:g}, {hi:g}].")
    return x


# ---------------------------------------------------------------------------- vision tower


class CLIPVisionEmbeddings(nn.Module):
    """Patch embeddings with a class token in front, plus learned positions."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        D, P = cfg.hidden_size, cfg.patch_size
        self.class_embedding = mx.zeros((D,))
        self.patch_embedding = Conv2d(cfg.num_channels, D, P, stride=P, bias=False)
        self.position_embedding = nn.Embedding(cfg.grid**2 + 1, D)

    def __call__(self, pixels: mx.array) -> mx.array:
        B = pixels.shape[0]
        patches = self.patch_embedding(pixels)  # (B, grid, grid, D)
        D = patches.shape[-1]
        patches = patches.reshape(B, -1, D)  # (B, grid^2, D), row-major like transformers
        cls = mx.broadcast_to(self.class_embedding.astype(patches.dtype), (B, 1, D))
        return mx.concatenate([cls, patches], axis=1) + self.position_embedding.weight


class CLIPVisionTransformer(nn.Module):
    """``pixel_values (B, S, S, 3)`` -> the pooled image state ``(B, hidden_size)``:
    ``post_layernorm(encoder(pre_layrnorm(embeddings))[:, 0])``."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = CLIPEncoder(cfg, causal=False)  # type: ignore[arg-type]
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, pixels: mx.array) -> mx.array:
        x = self.pre_layrnorm(self.embeddings(pixels))
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x[:, 0])


# ---------------------------------------------------------------------------- the model


def l2_normalize(x: mx.array) -> mx.array:
    """``x / ||x||`` along the last axis, in float32."""
    x = x.astype(mx.float32)
    return x * mx.rsqrt(mx.sum(x * x, axis=-1, keepdims=True))


class CLIPModel(nn.Module):
    """CLIP's two towers, their projections and ``logit_scale`` (see the module docstring).

    Build one with :meth:`from_pretrained`; a model built from a config alone has random
    weights, CLIP's default preprocessing and no tokenizer (so no :meth:`encode_text`).
    """

    def __init__(
        self,
        config: CLIPConfig,
        preprocessor: CLIPPreprocessor | None = None,
        tokenizer: CLIPTokenizer | None = None,
    ):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextModel(config.text)
        self.vision_model = CLIPVisionTransformer(config.vision)
        self.visual_projection = Linear(
            config.vision.hidden_size, config.projection_dim, bias=False
        )
        self.text_projection = Linear(config.text.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = mx.array(math.log(1 / 0.07))  # CLIP's init; the checkpoint sets it
        size = config.vision.image_size
        self.preprocessor = preprocessor or CLIPPreprocessor(size, None, (size, size))
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | Path = DEFAULT_CLIP, dtype: mx.Dtype | None = None
    ) -> CLIPModel:
        """Load a Hugging Face CLIP checkpoint: a local folder, or a hub id downloaded with
        ``huggingface_hub.snapshot_download`` (:data:`HUB_FILES` only: safetensors, never
        pickles). The folder holds ``config.json``, ``model.safetensors`` (or shards), the
        tokenizer files and optionally ``preprocessor_config.json``. Weights load strictly,
        cast to ``dtype`` when given. Raises :class:`PbmlxError` for an unreachable id, a
        missing folder, or a bad config, tensor or tokenizer.
        """
        folder = resolve_checkpoint(path_or_hub_id)
        model = load_component(
            folder, lambda c: cls(CLIPConfig.from_dict(c)), sanitize, dtype=dtype
        )
        cfg = model.config
        model.preprocessor = CLIPPreprocessor.from_folder(folder, cfg.vision.image_size)
        model.tokenizer = CLIPTokenizer.from_folder(folder)
        if model.tokenizer.max_length > cfg.text.max_position_embeddings:
            raise PbmlxError(
                f"The tokenizer in {folder} pads to {model.tokenizer.max_length} tokens but the "
                f"text model has {cfg.text.max_position_embeddings} positions."
            )
        return model

    # -- raw features (transformers' get_image_features / get_text_features) --

    def get_image_features(self, pixel_values: mx.array) -> mx.array:
        """Projected, unnormalized image features ``(B, projection_dim)`` of preprocessed
        ``pixel_values (B, image_size, image_size, 3)``."""
        pixel_values = mx.array(pixel_values)  # also takes NumPy
        S = self.config.vision.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (S, S, 3):
            raise PbmlxError(
                f"CLIP pixel_values must be (B, {S}, {S}, 3), got {tuple(pixel_values.shape)}."
            )
        dtype = self.visual_projection.weight.dtype
        return self.visual_projection(self.vision_model(pixel_values.astype(dtype)))

    def get_text_features(self, input_ids: mx.array) -> mx.array:
        """Projected, unnormalized text features ``(B, projection_dim)`` of token ids."""
        return self.text_projection(self.text_model(mx.array(input_ids)).pooler_output)

    # -- the judge's API --

    def encode_image(self, images: np.ndarray | mx.array) -> mx.array:
        """L2-normalized embeddings ``(B, projection_dim)`` float32 of ``images (B, H, W, 3)``
        in ``[0, 1]`` or uint8, or one ``(H, W, 3)`` image (any size; preprocessed by
        :attr:`preprocessor`)."""
        return l2_normalize(self.get_image_features(self.preprocessor(images)))

    def encode_text(self, texts: str | list[str]) -> mx.array:
        """L2-normalized embeddings ``(B, projection_dim)`` float32 of ``texts``."""
        if self.tokenizer is None:
            raise PbmlxError("This CLIP model has no tokenizer (load it with from_pretrained).")
        if not isinstance(texts, str) and len(texts) == 0:
            raise PbmlxError("encode_text needs at least one text.")
        ids = self.tokenizer.encode(texts)  # (B, max_length)
        # Only positions up to the pooled token matter (the mask is causal), so the padding
        # after the longest text is cut: same result, far less compute for short prompts.
        end = int(_pooled_positions(ids, self.config.text.eos_token_id).max()) + 1
        return l2_normalize(self.get_text_features(mx.array(ids[:, :end])))

    def logits(self, image_embeds: mx.array, text_embeds: mx.array) -> mx.array:
        """``exp(logit_scale) * image_embeds @ text_embeds.T`` ``(B_image, B_text)``, CLIP's
        ``logits_per_image`` for normalized embeddings."""
        return mx.exp(self.logit_scale.astype(mx.float32)) * (image_embeds @ text_embeds.T)


def _pooled_positions(ids: np.ndarray, eos_token_id: int) -> np.ndarray:
    """The position :class:`CLIPTextModel` pools in each row of ``ids`` (its rule, in NumPy)."""
    if eos_token_id == LEGACY_EOS_TOKEN_ID:
        return ids.argmax(axis=-1)
    return (ids == eos_token_id).argmax(axis=-1)


# ---------------------------------------------------------------------------- loading


def resolve_checkpoint(path_or_hub_id: str | Path) -> Path:
    """A local checkpoint folder for ``path_or_hub_id``: the folder itself when it exists,
    else the hub snapshot of :data:`HUB_FILES` (:func:`pbmlx.hub.local_folder_or_snapshot`).
    Raises :class:`PbmlxError` naming the value."""
    return hub.local_folder_or_snapshot(path_or_hub_id, HUB_FILES, what="CLIP model")


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Drop the ``position_ids`` buffers (positions are ``0..L-1`` by construction); move the
    patch convolution from PyTorch's OIHW to MLX's OHWI."""
    out = {}
    for name, w in weights.items():
        if name.endswith("embeddings.position_ids"):
            continue
        if name == "vision_model.embeddings.patch_embedding.weight" and w.ndim == 4:
            w = w.transpose(0, 2, 3, 1)
        out[name] = w
    return out
