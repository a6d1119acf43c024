"""The variational autoencoder of Stable Diffusion (diffusers' ``AutoencoderKL``), in MLX (NHWC).

``encode`` maps an image in ``[-1, 1]`` to the mean and log-variance of a diagonal Gaussian
over latents (8x smaller per side for SD); ``decode`` maps latents back to an image. Neither
applies ``scaling_factor``: the caller multiplies (text-to-image) or not (InstructPix2Pix's
image latents are the unscaled mode) and divides before decoding.

Names follow diffusers; :func:`sanitize` transposes conv kernels and maps the legacy attention
names (``query``/``key``/``value``/``proj_attn``, 1x1 conv weights) of older checkpoints. The
resnet and resampling blocks are the UNet's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn

from pbmlx.errors import PbmlxError
from pbmlx.models.layers import Conv2d, Linear
from pbmlx.models.unet import (
    ACTIVATIONS,
    Downsample2D,
    GroupNorm,
    ResnetBlock2D,
    Upsample2D,
    scaled_dot_product_attention,
)

ENCODER_BLOCK = "DownEncoderBlock2D"
DECODER_BLOCK = "UpDecoderBlock2D"
LOGVAR_RANGE = (-30.0, 20.0)  # the reference clamps the log-variance to this range
RESNET_EPS = 1e-6  # AutoencoderKL's blocks use this eps, not a config value
# Legacy attention names (diffusers < 0.14 checkpoints) -> current ones.
LEGACY_ATTENTION_NAMES = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}


@dataclass
class VAEConfig:
    """The fields of a diffusers ``AutoencoderKL`` ``config.json`` (SD 1.5 defaults)."""

    in_channels: int = 3  # image channels in
    out_channels: int = 3  # image channels out
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # encoder order
    layers_per_block: int = 2  # encoder resnets per block (decoder has one more)
    down_block_types: tuple[str, ...] = (ENCODER_BLOCK,) * 4
    up_block_types: tuple[str, ...] = (DECODER_BLOCK,) * 4
    norm_num_groups: int = 32
    act_fn: str = "silu"
    sample_size: int = 512  # training image size (informative)
    scaling_factor: float = 0.18215  # latents * scaling_factor have ~unit variance (SD 1.x)
    shift_factor: float | None = None  # subtracted before scaling (not used by SD 1.x)
    use_quant_conv: bool = True  # 1x1 conv after the encoder
    use_post_quant_conv: bool = True  # 1x1 conv before the decoder
    mid_block_add_attention: bool = True  # single-head self-attention in the mid blocks
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown keys, kept

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> VAEConfig:
        """Build from a raw diffusers ``config.json`` dict; unknown keys are ignored."""
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in names}
        cfg = cls(**known, extra={k: v for k, v in config.items() if k not in names})
        n = len(cfg.block_out_channels)
        if len(cfg.down_block_types) != n or len(cfg.up_block_types) != n:
            raise PbmlxError(
                f"VAE config has block types that do not match its {n} block_out_channels."
            )
        for t in (*cfg.down_block_types, *cfg.up_block_types):
            if t not in (ENCODER_BLOCK, DECODER_BLOCK):
                raise PbmlxError(f"VAE block type {t!r} is not supported by pbmlx.")
        if cfg.act_fn not in ACTIVATIONS:
            raise PbmlxError(f"VAE act_fn {cfg.act_fn!r} is not supported by pbmlx.")
        return cfg


class LatentDistribution(NamedTuple):
    """The encoder's diagonal Gaussian; unpacks as ``(mean, logvar)``, NHWC."""

    mean: mx.array
    logvar: mx.array

    def mode(self) -> mx.array:
        return self.mean

    def sample(self, key: mx.array) -> mx.array:
        """``mean + exp(logvar / 2) * n``, ``n ~ N(0, 1)`` drawn from ``key``."""
        noise = mx.random.normal(self.mean.shape, dtype=self.mean.dtype, key=key)
        return self.mean + mx.exp(0.5 * self.logvar) * noise


# ---------------------------------------------------------------------------- leaf blocks


class AttentionBlock(nn.Module):
    """Single-head self-attention over all positions with GroupNorm before and the input added
    after (diffusers' ``Attention`` with ``residual_connection``, biased projections)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels, RESNET_EPS)
        self.to_q = Linear(channels, channels)
        self.to_k = Linear(channels, channels)
        self.to_v = Linear(channels, channels)
        self.to_out = [Linear(channels, channels)]  # to_out.1 is the reference's dropout

    def __call__(self, x: mx.array) -> mx.array:
        B, H, W, C = x.shape
        h = self.group_norm(x).reshape(B, H * W, C)
        h = scaled_dot_product_attention(self.to_q(h), self.to_k(h), self.to_v(h), heads=1)
        return self.to_out[0](h).reshape(B, H, W, C) + x


class MidBlock(nn.Module):
    """resnet, attention, resnet (diffusers' ``UNetMidBlock2D`` without time embedding)."""

    def __init__(self, channels: int, groups: int, act, add_attention: bool):
        super().__init__()
        self.resnets = [
            ResnetBlock2D(channels, channels, None, groups, RESNET_EPS, act) for _ in range(2)
        ]
        if add_attention:
            self.attentions = [AttentionBlock(channels, groups)]

    def __call__(self, x: mx.array) -> mx.array:
        x = self.resnets[0](x)
        if "attentions" in self:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class EncoderBlock(nn.Module):
    """``DownEncoderBlock2D``: resnets then an optional asymmetric-padded stride-2 conv."""

    def __init__(self, in_c: int, out_c: int, layers: int, groups: int, act, downsample: bool):
        super().__init__()
        self.resnets = [
            ResnetBlock2D(in_c if i == 0 else out_c, out_c, None, groups, RESNET_EPS, act)
            for i in range(layers)
        ]
        if downsample:
            self.downsamplers = [Downsample2D(out_c, padding=0)]

    def __call__(self, x: mx.array) -> mx.array:
        for resnet in self.resnets:
            x = resnet(x)
        if "downsamplers" in self:
            x = self.downsamplers[0](x)
        return x


class DecoderBlock(nn.Module):
    """``UpDecoderBlock2D``: resnets then an optional 2x nearest upsample + conv."""

    def __init__(self, in_c: int, out_c: int, layers: int, groups: int, act, upsample: bool):
        super().__init__()
        self.resnets = [
            ResnetBlock2D(in_c if i == 0 else out_c, out_c, None, groups, RESNET_EPS, act)
            for i in range(layers)
        ]
        if upsample:
            self.upsamplers = [Upsample2D(out_c)]

    def __call__(self, x: mx.array) -> mx.array:
        for resnet in self.resnets:
            x = resnet(x)
        if "upsamplers" in self:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        act = ACTIVATIONS[cfg.act_fn]
        self.act = act
        boc, g = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = Conv2d(cfg.in_channels, boc[0], 3, padding=1)
        self.down_blocks = [
            EncoderBlock(boc[max(i - 1, 0)], boc[i], cfg.layers_per_block, g, act, i < len(boc) - 1)
            for i in range(len(boc))
        ]
        self.mid_block = MidBlock(boc[-1], g, act, cfg.mid_block_add_attention)
        self.conv_norm_out = GroupNorm(g, boc[-1], RESNET_EPS)
        self.conv_out = Conv2d(boc[-1], 2 * cfg.latent_channels, 3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        act = ACTIVATIONS[cfg.act_fn]
        self.act = act
        rev, g = list(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        self.conv_in = Conv2d(cfg.latent_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], g, act, cfg.mid_block_add_attention)
        self.up_blocks = [
            DecoderBlock(
                rev[max(i - 1, 0)], rev[i], cfg.layers_per_block + 1, g, act, i < len(rev) - 1
            )
            for i in range(len(rev))
        ]
        self.conv_norm_out = GroupNorm(g, rev[-1], RESNET_EPS)
        self.conv_out = Conv2d(rev[-1], cfg.out_channels, 3, padding=1)

    def __call__(self, z: mx.array) -> mx.array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.act(self.conv_norm_out(x)))


# ---------------------------------------------------------------------------- the model


class AutoencoderKL(nn.Module):
    """Images ``(B, H, W, 3)`` in ``[-1, 1]`` <-> latents ``(B, H/f, W/f, latent_channels)``,
    ``f = 2**(len(block_out_channels) - 1)`` (8 for SD). H and W should be multiples of ``f``."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        c = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.use_quant_conv:
            self.quant_conv = Conv2d(2 * c, 2 * c, 1)
        if config.use_post_quant_conv:
            self.post_quant_conv = Conv2d(c, c, 1)

    def encode(self, x: mx.array) -> LatentDistribution:
        """The latent Gaussian of image ``x``: ``(mean, logvar)``, logvar clamped to [-30, 20]."""
        h = self.encoder(x)
        if "quant_conv" in self:
            h = self.quant_conv(h)
        mean, logvar = mx.split(h, 2, axis=-1)
        return LatentDistribution(mean, mx.clip(logvar, *LOGVAR_RANGE))

    def decode(self, z: mx.array) -> mx.array:
        """The image (about ``[-1, 1]``, not clipped) of unscaled latents ``z``."""
        if "post_quant_conv" in self:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x: mx.array) -> mx.array:
        """Reconstruction through the mode: ``decode(encode(x).mean)``."""
        return self.decode(self.encode(x).mode())


# ---------------------------------------------------------------------------- loading


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Adapt a diffusers ``AutoencoderKL`` checkpoint: legacy attention names to ``to_q`` ...
    ``to_out.0``; attention projections stored as 1x1 convs squeezed to ``(O, I)``; other conv
    kernels OIHW -> OHWI."""
    out = {}
    for name, w in weights.items():
        for old, new in LEGACY_ATTENTION_NAMES.items():
            if ".attentions." in name and old in name:
                name = name.replace(old, new)
        if w.ndim == 4 and ".attentions." in name:
            w = w.reshape(w.shape[0], w.shape[1])  # (O, I, 1, 1) -> (O, I)
        elif w.ndim == 4:
            # (O, I, kH, kW) -> (O, kH, kW, I), stored contiguous: a strided view would be
            # copied again by every convolution.
            w = mx.contiguous(w.transpose(0, 2, 3, 1))
        out[name] = w
    return out
