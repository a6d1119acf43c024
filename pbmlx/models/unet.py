"""The conditional UNet of Stable Diffusion 1.x / InstructPix2Pix, in MLX (NHWC).

Numerically the reference is diffusers' ``UNet2DConditionModel`` with the block types SD 1.x
uses (``CrossAttnDownBlock2D``, ``DownBlock2D``, ``UNetMidBlock2DCrossAttn``, ``UpBlock2D``,
``CrossAttnUpBlock2D``). InstructPix2Pix is the same network with ``in_channels = 8``: the noisy
latents and the (unscaled) image latents concatenated on the channel axis.

Module and attribute names follow diffusers so a checkpoint's tensor names load as they are;
:func:`sanitize` only changes layouts (conv weights OIHW -> OHWI, 1x1 conv projections ->
linear weights). The resnet and resampling blocks here are also the VAE's (``vae.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from pbmlx.errors import PbmlxError
from pbmlx.kernels import cpu as cpu_kernels
from pbmlx.kernels import norm as kernel_norm
from pbmlx.models.layers import Conv2d, Linear

# Options of diffusers' UNet2DConditionModel that change the network in ways this
# implementation does not have, with the value that means "not used" (None and False are
# both "not used" where either is). A config that sets any other value is refused rather than
# silently mis-run.
UNSUPPORTED_OPTIONS: dict[str, Any] = {
    "class_embed_type": None,
    "num_class_embeds": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "time_cond_proj_dim": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "mid_block_only_cross_attention": None,
    "class_embeddings_concat": False,
    "cross_attention_norm": None,
    "attention_type": "default",
    "reverse_transformer_layers_per_block": None,
}
DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPE = "UNetMidBlock2DCrossAttn"
TRANSFORMER_NORM_EPS = 1e-6  # diffusers' Transformer2DModel GroupNorm eps (not the config's)
LAYER_NORM_EPS = 1e-5  # BasicTransformerBlock's LayerNorm eps
FF_MULT = 4  # GEGLU feed-forward inner size = FF_MULT * channels
MAX_PERIOD = 10000  # sinusoidal timestep embedding's longest period


def _per_block(value: Any, n: int, name: str) -> tuple:
    """A per-down-block setting given as one value or a list of ``n`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise PbmlxError(f"UNet config {name} has {len(value)} entries for {n} blocks.")
        return tuple(value)
    return (value,) * n


@dataclass
class UNetConfig:
    """The fields of a diffusers UNet ``config.json`` that shape the network (SD 1.5 defaults)."""

    in_channels: int = 4  # 8 for InstructPix2Pix: noisy latents + image latents
    out_channels: int = 4  # predicted noise, one per latent channel
    sample_size: int = 64  # training latent size (informative: any size divisible enough runs)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)  # channels per resolution
    layers_per_block: int | tuple[int, ...] = 2  # resnets per down block (up blocks have +1)
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    )
    up_block_types: tuple[str, ...] = (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    )
    # diffusers' naming quirk: for SD 1.x/2.x configs "attention_head_dim" is the NUMBER of
    # heads (8 for SD 1.5); "num_attention_heads", when present, wins.
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    cross_attention_dim: int = 768  # width of the text encoder's hidden states
    transformer_layers_per_block: int | tuple[int, ...] = 1
    use_linear_projection: bool = False  # SD 2.x: proj_in/out are Linear (SD 1.x: 1x1 conv)
    upcast_attention: bool = False  # compute attention in float32 (matters for float16 only)
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    act_fn: str = "silu"
    flip_sin_to_cos: bool = True  # timestep embedding order: cos then sin
    freq_shift: float = 0  # downscale_freq_shift of the sinusoidal embedding
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0  # the mid block's resnet output divisor
    mid_block_type: str = MID_BLOCK_TYPE
    center_input_sample: bool = False  # feed 2 * sample - 1 instead of sample
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown keys, kept

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> UNetConfig:
        """Build from a raw diffusers ``config.json`` dict: unknown keys are ignored; options
        this implementation does not have (:data:`UNSUPPORTED_OPTIONS`) raise PbmlxError."""
        for key, off in UNSUPPORTED_OPTIONS.items():
            value = config.get(key, off)
            values = value if isinstance(value, list) else [value]  # per-block lists
            unused = (off,) if off not in (None, False) else (None, False)
            if any(v not in unused for v in values):
                raise PbmlxError(f"UNet option {key}={value!r} is not supported by pbmlx.")
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in names}
        extra = {k: v for k, v in config.items() if k not in names}
        cfg = cls(**known, extra=extra)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise PbmlxError(
                f"UNet config has {len(self.down_block_types)} down and {len(self.up_block_types)} "
                f"up block types for {n} block_out_channels."
            )
        for t in self.down_block_types:
            if t not in DOWN_BLOCK_TYPES:
                raise PbmlxError(f"UNet down block type {t!r} is not supported by pbmlx.")
        for t in self.up_block_types:
            if t not in UP_BLOCK_TYPES:
                raise PbmlxError(f"UNet up block type {t!r} is not supported by pbmlx.")
        if self.mid_block_type != MID_BLOCK_TYPE:
            raise PbmlxError(
                f"UNet mid block type {self.mid_block_type!r} is not supported by pbmlx."
            )
        if self.act_fn not in ACTIVATIONS:
            raise PbmlxError(f"UNet act_fn {self.act_fn!r} is not supported by pbmlx.")
        for c, h in zip(self.block_out_channels, self.heads, strict=True):
            if c % h:
                raise PbmlxError(f"UNet block with {c} channels cannot be split into {h} heads.")

    @property
    def heads(self) -> tuple[int, ...]:
        """Attention heads per down block (see the ``attention_head_dim`` quirk above)."""
        heads = self.num_attention_heads or self.attention_head_dim
        return _per_block(heads, len(self.block_out_channels), "attention heads")

    @property
    def layers(self) -> tuple[int, ...]:
        return _per_block(self.layers_per_block, len(self.block_out_channels), "layers_per_block")

    @property
    def transformer_layers(self) -> tuple[int, ...]:
        return _per_block(
            self.transformer_layers_per_block,
            len(self.block_out_channels),
            "transformer_layers_per_block",
        )


def _mish(x: mx.array) -> mx.array:
    return x * mx.tanh(nn.softplus(x))


# SiLU and GELU go through pbmlx.kernels' dispatchers: fused C kernels on MLX's CPU backend,
# mlx.nn's ops elsewhere. GroupNorm fuses SiLU when given this table's entry.
ACTIVATIONS: dict[str, Callable[[mx.array], mx.array]] = {
    "silu": cpu_kernels.silu,
    "swish": cpu_kernels.silu,
    "gelu": cpu_kernels.gelu,  # exact (erf) GELU, as torch.nn.GELU()
    "mish": _mish,
    "relu": nn.relu,
}


# ---------------------------------------------------------------------------- free helpers


def timestep_embedding(
    timesteps: mx.array, dim: int, flip_sin_to_cos: bool, freq_shift: float
) -> mx.array:
    """Sinusoidal embedding of (possibly fractional) timesteps ``t`` (shape ``(B,)``).

    ``f_i = exp(-ln(10000) * i / (dim/2 - freq_shift))`` for ``i < dim/2``;
    embedding ``[sin(t f), cos(t f)]``, or ``[cos, sin]`` when ``flip_sin_to_cos``; a zero
    column is appended when ``dim`` is odd. Shape ``(B, dim)``, float32.
    """
    half = dim // 2
    exponent = -math.log(MAX_PERIOD) * mx.arange(half, dtype=mx.float32) / (half - freq_shift)
    args = timesteps.astype(mx.float32)[:, None] * mx.exp(exponent)[None, :]
    parts = [mx.cos(args), mx.sin(args)] if flip_sin_to_cos else [mx.sin(args), mx.cos(args)]
    if dim % 2:
        parts.append(mx.zeros((args.shape[0], 1), dtype=mx.float32))
    return mx.concatenate(parts, axis=-1)


def scaled_dot_product_attention(
    q: mx.array, k: mx.array, v: mx.array, heads: int, upcast: bool = False
) -> mx.array:
    """Multi-head softmax attention on ``(B, L, heads * d)`` projections -> ``(B, L, heads * d)``.

    ``softmax(q k^T / sqrt(d)) v`` per head (in float32 when ``upcast``): the fused CPU kernel
    on MLX's CPU backend, ``mx.fast.scaled_dot_product_attention`` elsewhere (see
    :mod:`pbmlx.kernels.cpu`).
    """
    dtype = q.dtype
    if upcast:
        q, k, v = (a.astype(mx.float32) for a in (q, k, v))
    return cpu_kernels.attention(q, k, v, heads).astype(dtype)


def resize_nearest(x: mx.array, size: tuple[int, int]) -> mx.array:
    """Nearest-neighbour resize of NHWC ``x`` to ``size = (H', W')``, as torch's ``'nearest'``.

    Source index ``floor(i * (H / H'))`` computed in float32 (torch's legacy nearest); an exact
    2x is a broadcast instead of a gather.
    """
    B, H, W, C = x.shape
    Ho, Wo = size
    if (Ho, Wo) == (2 * H, 2 * W):
        x = mx.broadcast_to(x[:, :, None, :, None, :], (B, H, 2, W, 2, C))
        return x.reshape(B, Ho, Wo, C)
    for axis, n_in, n_out in ((1, H, Ho), (2, W, Wo)):
        if n_in != n_out:
            scale = np.float32(n_in) / np.float32(n_out)
            src = np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale), n_in - 1)
            x = mx.take(x, mx.array(src.astype(np.int32)), axis=axis)
    return x


# ---------------------------------------------------------------------------- leaf blocks


class GroupNorm(nn.Module):
    """torch.nn.GroupNorm on NHWC: per sample and group of ``C/groups`` channels,
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (biased variance)."""

    def __init__(self, groups: int, channels: int, eps: float):
        super().__init__()
        if channels % groups:
            raise PbmlxError(f"{channels} channels cannot be split into {groups} norm groups.")
        self.groups = groups
        self.eps = eps
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def __call__(self, x: mx.array, act: Callable[[mx.array], mx.array] | None = None) -> mx.array:
        """``act(group_norm(x))``; SiLU is fused into the kernels (pbmlx.kernels.norm)."""
        return kernel_norm.group_norm(x, self.weight, self.bias, self.groups, self.eps, act)


class ResnetBlock2D(nn.Module):
    """``x + conv2(act(norm2(conv1(act(norm1(x))) + proj(temb))))``, with a 1x1 conv
    shortcut when the channel count changes. ``temb`` arrives already activated (the UNet
    applies the activation once for all blocks); the VAE passes none."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int | None,
        groups: int,
        eps: float,
        act: Callable[[mx.array], mx.array],
        output_scale_factor: float = 1.0,
    ):
        super().__init__()
        self.act = act
        self.output_scale_factor = output_scale_factor
        self.norm1 = GroupNorm(groups, in_channels, eps)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        if temb_channels is not None:
            self.time_emb_proj = Linear(temb_channels, out_channels)
        self.norm2 = GroupNorm(groups, out_channels, eps)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.conv_shortcut = Conv2d(in_channels, out_channels, 1)

    def __call__(self, x: mx.array, temb: mx.array | None = None) -> mx.array:
        h = self.conv1(self.norm1(x, self.act))
        if temb is not None:
            h = h + self.time_emb_proj(temb)[:, None, None, :]
        h = self.conv2(self.norm2(h, self.act))
        if "conv_shortcut" in self:
            x = self.conv_shortcut(x)
        out = x + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nn.Module):
    """3x3 conv with stride 2. With ``padding=0`` (the VAE) the input is first padded by one
    row/column at the bottom/right only, as the reference does."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding)

    def __call__(self, x: mx.array) -> mx.array:
        if self.padding == 0:
            x = mx.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)])
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling to ``size`` (default 2x), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def __call__(self, x: mx.array, size: tuple[int, int] | None = None) -> mx.array:
        _, H, W, _ = x.shape
        return self.conv(resize_nearest(x, size or (2 * H, 2 * W)))


class Attention(nn.Module):
    """Multi-head attention of diffusers' ``Attention``: no q/k/v bias, biased output."""

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        upcast: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.upcast = upcast
        self.to_q = Linear(query_dim, inner, bias=False)
        self.to_k = Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = [Linear(inner, query_dim)]  # to_out.1 is the reference's dropout

    def __call__(self, x: mx.array, context: mx.array | None = None) -> mx.array:
        context = x if context is None else context
        out = scaled_dot_product_attention(
            self.to_q(x), self.to_k(context), self.to_v(context), self.heads, self.upcast
        )
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """``a * gelu(b)`` where ``[a, b] = proj(x)`` split in halves (exact, erf GELU)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = Linear(dim, 2 * inner)

    def __call__(self, x: mx.array) -> mx.array:
        return cpu_kernels.geglu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = FF_MULT):
        super().__init__()
        # net.1 is the reference's dropout: an empty slot keeps net.2's name.
        self.net = [GEGLU(dim, dim * mult), nn.Identity(), Linear(dim * mult, dim)]

    def __call__(self, x: mx.array) -> mx.array:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention on the text, GEGLU feed-forward; each residual."""

    def __init__(self, dim: int, heads: int, context_dim: int, upcast: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn1 = Attention(dim, heads, dim // heads, upcast=upcast)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn2 = Attention(dim, heads, dim // heads, context_dim, upcast=upcast)
        self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ff = FeedForward(dim)

    def __call__(self, x: mx.array, context: mx.array) -> mx.array:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """GroupNorm, project in, transformer blocks over the ``H*W`` positions, project out, plus
    the input. In NHWC a 1x1 conv is a Linear over channels, so both of the reference's
    projection kinds are ``nn.Linear`` here (:func:`sanitize` squeezes the conv weights)."""

    def __init__(
        self, channels: int, heads: int, layers: int, context_dim: int, groups: int, upcast: bool
    ):
        super().__init__()
        self.norm = GroupNorm(groups, channels, TRANSFORMER_NORM_EPS)
        self.proj_in = Linear(channels, channels)
        self.transformer_blocks = [
            BasicTransformerBlock(channels, heads, context_dim, upcast) for _ in range(layers)
        ]
        self.proj_out = Linear(channels, channels)

    def __call__(self, x: mx.array, context: mx.array) -> mx.array:
        B, H, W, C = x.shape
        h = self.proj_in(self.norm(x).reshape(B, H * W, C))  # (B, HW, C): a view, no copy
        for block in self.transformer_blocks:
            h = block(h, context)
        return self.proj_out(h).reshape(B, H, W, C) + x


class DownBlock2D(nn.Module):
    """Resnets (each optionally followed by a transformer), then an optional stride-2 conv.
    Returns the output and every intermediate result the up path takes as a skip."""

    def __init__(
        self,
        cfg: UNetConfig,
        in_channels: int,
        out_channels: int,
        layers: int,
        heads: int | None,
        transformer_layers: int,
        add_downsample: bool,
    ):
        super().__init__()
        act = ACTIVATIONS[cfg.act_fn]
        temb = cfg.block_out_channels[0] * 4
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = [
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb, g, eps, act)
            for i in range(layers)
        ]
        if heads is not None:
            self.attentions = [
                Transformer2DModel(
                    out_channels,
                    heads,
                    transformer_layers,
                    cfg.cross_attention_dim,
                    g,
                    cfg.upcast_attention,
                )
                for _ in range(layers)
            ]
        if add_downsample:
            self.downsamplers = [Downsample2D(out_channels, cfg.downsample_padding)]

    def __call__(
        self, x: mx.array, temb: mx.array, context: mx.array
    ) -> tuple[mx.array, list[mx.array]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if "attentions" in self:
                x = self.attentions[i](x, context)
            skips.append(x)
        if "downsamplers" in self:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock2D(nn.Module):
    """Resnets fed the previous output concatenated with a skip (last in, first out), each
    optionally followed by a transformer, then an optional upsampler."""

    def __init__(
        self,
        cfg: UNetConfig,
        in_channels: int,
        prev_channels: int,
        out_channels: int,
        layers: int,
        heads: int | None,
        transformer_layers: int,
        add_upsample: bool,
    ):
        super().__init__()
        act = ACTIVATIONS[cfg.act_fn]
        temb = cfg.block_out_channels[0] * 4
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = []
        for i in range(layers):
            skip_channels = in_channels if i == layers - 1 else out_channels
            resnet_in = prev_channels if i == 0 else out_channels
            self.resnets.append(
                ResnetBlock2D(resnet_in + skip_channels, out_channels, temb, g, eps, act)
            )
        if heads is not None:
            self.attentions = [
                Transformer2DModel(
                    out_channels,
                    heads,
                    transformer_layers,
                    cfg.cross_attention_dim,
                    g,
                    cfg.upcast_attention,
                )
                for _ in range(layers)
            ]
        if add_upsample:
            self.upsamplers = [Upsample2D(out_channels)]

    def __call__(
        self,
        x: mx.array,
        skips: list[mx.array],
        temb: mx.array,
        context: mx.array,
        upsample_size: tuple[int, int] | None,
    ) -> mx.array:
        for i, resnet in enumerate(self.resnets):
            x = resnet(mx.concatenate([x, skips.pop()], axis=-1), temb)
            if "attentions" in self:
                x = self.attentions[i](x, context)
        if "upsamplers" in self:
            x = self.upsamplers[0](x, upsample_size)
        return x


class UNetMidBlock2DCrossAttn(nn.Module):
    """resnet, then (transformer, resnet) ``transformer`` times; here once, as in SD."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        act = ACTIVATIONS[cfg.act_fn]
        c = cfg.block_out_channels[-1]
        temb = cfg.block_out_channels[0] * 4
        g, eps, scale = cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor
        self.resnets = [ResnetBlock2D(c, c, temb, g, eps, act, scale) for _ in range(2)]
        self.attentions = [
            Transformer2DModel(
                c,
                cfg.heads[-1],
                cfg.transformer_layers[-1],
                cfg.cross_attention_dim,
                g,
                cfg.upcast_attention,
            )
        ]

    def __call__(self, x: mx.array, temb: mx.array, context: mx.array) -> mx.array:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class TimestepEmbedding(nn.Module):
    """``linear_2(act(linear_1(sinusoid)))``."""

    def __init__(self, in_dim: int, dim: int, act: Callable[[mx.array], mx.array]):
        super().__init__()
        self.act = act
        self.linear_1 = Linear(in_dim, dim)
        self.linear_2 = Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(self.act(self.linear_1(x)))


# ---------------------------------------------------------------------------- the model


class UNet2DConditionModel(nn.Module):
    """Noise prediction ``eps(sample, t, text)`` of a latent diffusion model, NHWC.

    ``sample``: ``(B, H, W, in_channels)`` latents (for InstructPix2Pix the noisy latents and the
    image latents concatenated, 8 channels; the reference's batch is 3). ``timestep``: a number
    or an array of shape ``()`` or ``(B,)``, may be fractional. ``encoder_hidden_states``:
    ``(B, L, cross_attention_dim)`` text-encoder hidden states. Returns ``(B, H, W,
    out_channels)``. Any ``H, W`` runs: when they are not multiples of ``2**(levels-1)`` the
    upsamplers resize to the matching skip's size, as the reference does.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        cfg = config
        boc = cfg.block_out_channels
        n = len(boc)
        heads, layers, tlayers = cfg.heads, cfg.layers, cfg.transformer_layers
        self.act = ACTIVATIONS[cfg.act_fn]
        temb = boc[0] * 4
        self.conv_in = Conv2d(
            cfg.in_channels, boc[0], cfg.conv_in_kernel, padding=(cfg.conv_in_kernel - 1) // 2
        )
        self.time_embedding = TimestepEmbedding(boc[0], temb, self.act)

        self.down_blocks = []
        out_c = boc[0]
        for i, kind in enumerate(cfg.down_block_types):
            in_c, out_c = out_c, boc[i]
            self.down_blocks.append(
                DownBlock2D(
                    cfg,
                    in_c,
                    out_c,
                    layers[i],
                    heads[i] if kind == "CrossAttnDownBlock2D" else None,
                    tlayers[i],
                    add_downsample=i < n - 1,
                )
            )
        self.mid_block = UNetMidBlock2DCrossAttn(cfg)

        rev = list(reversed(boc))
        rheads, rlayers, rtlayers = heads[::-1], layers[::-1], tlayers[::-1]
        self.up_blocks = []
        out_c = rev[0]
        for i, kind in enumerate(cfg.up_block_types):
            prev_c, out_c = out_c, rev[i]
            in_c = rev[min(i + 1, n - 1)]
            self.up_blocks.append(
                UpBlock2D(
                    cfg,
                    in_c,
                    prev_c,
                    out_c,
                    rlayers[i] + 1,
                    rheads[i] if kind == "CrossAttnUpBlock2D" else None,
                    rtlayers[i],
                    add_upsample=i < n - 1,
                )
            )
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, boc[0], cfg.norm_eps)
        self.conv_out = Conv2d(
            boc[0], cfg.out_channels, cfg.conv_out_kernel, padding=(cfg.conv_out_kernel - 1) // 2
        )

    def __call__(
        self,
        sample: mx.array,
        timestep: mx.array | float,
        encoder_hidden_states: mx.array,
    ) -> mx.array:
        cfg = self.config
        B = sample.shape[0]
        t = mx.broadcast_to(mx.array(timestep).reshape(-1), (B,))
        emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        # Every resnet applies the activation to the embedding before its projection: once here.
        temb = self.act(self.time_embedding(emb.astype(sample.dtype)))
        context = encoder_hidden_states

        if cfg.center_input_sample:
            sample = 2 * sample - 1.0
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context)
            skips.extend(block_skips)

        x = self.mid_block(x, temb, context)

        for block in self.up_blocks:
            n_res = len(block.resnets)
            block_skips, skips = skips[-n_res:], skips[:-n_res]
            # The upsampler goes to the next skip's size (2x unless H or W was odd somewhere).
            size = tuple(skips[-1].shape[1:3]) if skips else None
            x = block(x, block_skips, temb, context, size)

        return self.conv_out(self.conv_norm_out(x, self.act))


# ---------------------------------------------------------------------------- loading


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Adapt a diffusers UNet checkpoint to this module: conv kernels OIHW -> OHWI; the
    transformers' ``proj_in``/``proj_out`` stored as 1x1 convs (SD 1.x) become linear
    ``(O, I)`` weights. Names are unchanged."""
    out = {}
    for name, w in weights.items():
        if w.ndim == 4 and (".proj_in." in name or ".proj_out." in name):
            w = w.reshape(w.shape[0], w.shape[1])  # (O, I, 1, 1) -> (O, I)
        elif w.ndim == 4:
            # (O, I, kH, kW) -> (O, kH, kW, I), stored contiguous: a strided view would be
            # copied again by every convolution.
            w = mx.contiguous(w.transpose(0, 2, 3, 1))
        out[name] = w
    return out
