"""The InstructPix2Pix editor's three networks in MLX, one file per component.

- :mod:`pbmlx.models.clip_text` -- CLIP text encoder (prompt -> hidden states);
- :mod:`pbmlx.models.vae` -- AutoencoderKL (image <-> latents);
- :mod:`pbmlx.models.unet` -- the conditional UNet (noise prediction; 8 input channels);
- :mod:`pbmlx.models.weights` -- strict loading shared by the three.

Each ``load_*`` takes a component folder (``config.json`` + safetensors, as diffusers,
transformers or ``pbmlx convert`` write them, e.g. ``<pipeline>/unet``) and returns the module
with its weights loaded; a bad folder raises :class:`~pbmlx.errors.PbmlxError`.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from pbmlx.models import clip_text, unet, vae
from pbmlx.models.clip_text import CLIPTextConfig, CLIPTextModel, CLIPTextOutput
from pbmlx.models.unet import UNet2DConditionModel, UNetConfig
from pbmlx.models.vae import AutoencoderKL, LatentDistribution, VAEConfig
from pbmlx.models.weights import load_component

__all__ = [
    "AutoencoderKL",
    "CLIPTextConfig",
    "CLIPTextModel",
    "CLIPTextOutput",
    "LatentDistribution",
    "UNet2DConditionModel",
    "UNetConfig",
    "VAEConfig",
    "load_text_encoder",
    "load_unet",
    "load_vae",
]


def load_text_encoder(
    folder: Path | str, dtype: mx.Dtype | None = None, variant: str | None = None
) -> CLIPTextModel:
    """The CLIP text encoder in ``folder`` (a pipeline's ``text_encoder/``)."""
    return load_component(
        folder,
        lambda c: CLIPTextModel(CLIPTextConfig.from_dict(c)),
        clip_text.sanitize,
        dtype=dtype,
        variant=variant,
    )


def load_vae(
    folder: Path | str, dtype: mx.Dtype | None = None, variant: str | None = None
) -> AutoencoderKL:
    """The autoencoder in ``folder`` (a pipeline's ``vae/``)."""
    return load_component(
        folder,
        lambda c: AutoencoderKL(VAEConfig.from_dict(c)),
        vae.sanitize,
        dtype=dtype,
        variant=variant,
    )


def load_unet(
    folder: Path | str, dtype: mx.Dtype | None = None, variant: str | None = None
) -> UNet2DConditionModel:
    """The conditional UNet in ``folder`` (a pipeline's ``unet/``)."""
    return load_component(
        folder,
        lambda c: UNet2DConditionModel(UNetConfig.from_dict(c)),
        unet.sanitize,
        dtype=dtype,
        variant=variant,
    )
