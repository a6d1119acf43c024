"""FLOPs of the editor's networks, counted from their configs (no model is built or run).

What is counted, and the unit: floating-point operations of the matrix products, two per
multiply-add (the convention of FLOP/s peaks and of ``torch.utils.flop_counter``):

- a linear layer on ``M`` rows, ``K`` inputs, ``N`` outputs: ``2 M K N`` (a 1x1 convolution is
  one, on ``B H W`` rows);
- a ``k x k`` convolution with ``C`` inputs and ``O`` outputs producing ``B x Ho x Wo``:
  ``2 B Ho Wo O C k^2``;
- attention of ``L`` queries over ``S`` keys with ``heads x d = D`` channels, ``B`` sequences:
  ``2 B L S D`` for ``q k^T`` and the same for ``p v``, so ``4 B L S D`` (the whole score
  matrix, causal masks included, as every kernel computes it).

Not counted: biases, normalization, activations, softmax, residual adds, resampling and the
sampler's update (together under 1 % of a UNet step's FLOPs at 256-512 px, and bound by memory
rather than arithmetic, so they do not belong in a comparison against a compute peak).
Quantization does not change the count (a quantized linear layer does the same products).

The walks below follow the block structure of the networks as diffusers and pbmlx build them
from the same ``config.json`` (``pbmlx.models.unet``, ``pbmlx.models.vae``,
``pbmlx.models.clip_text``): down blocks with their skips, the mid block, up blocks eating the
skips last-in first-out, spatial sizes rounded as the stride-2 convolutions round them.
``tests/test_bench.py`` checks them against ``torch.utils.flop_counter.FlopCounterMode`` on
the diffusers/transformers modules built from the same configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pbmlx.models.clip_text import CLIPTextConfig
from pbmlx.models.unet import UNetConfig
from pbmlx.models.vae import VAEConfig


def linear(rows: int, inputs: int, outputs: int) -> float:
    """``2 rows inputs outputs``: one linear layer (or 1x1 convolution) on ``rows`` rows."""
    return 2.0 * rows * inputs * outputs


def conv(batch: int, h_out: int, w_out: int, c_in: int, c_out: int, k: int) -> float:
    """``2 B Ho Wo O C k^2``: a ``k x k`` convolution producing ``(B, Ho, Wo, O)``."""
    return 2.0 * batch * h_out * w_out * c_out * c_in * k * k


def attention(batch: int, queries: int, keys: int, channels: int) -> float:
    """``4 B L S D``: ``q k^T`` and ``p v`` over all heads (``D = heads x head_dim``)."""
    return 4.0 * batch * queries * keys * channels


def resnet(batch: int, h: int, w: int, c_in: int, c_out: int, temb: int | None) -> float:
    """A ResnetBlock2D: two 3x3 convolutions, the time-embedding projection (UNet only) and a
    1x1 shortcut when the channel count changes."""
    f = conv(batch, h, w, c_in, c_out, 3) + conv(batch, h, w, c_out, c_out, 3)
    if temb is not None:
        f += linear(batch, temb, c_out)
    if c_in != c_out:
        f += conv(batch, h, w, c_in, c_out, 1)
    return f


def transformer(
    batch: int, tokens: int, channels: int, layers: int, context_dim: int, text_len: int
) -> float:
    """A Transformer2DModel over ``tokens = H W`` positions: projections in and out, and per
    layer self-attention (q, k, v, out projections + products), cross-attention on the
    ``text_len`` text states (k and v from ``context_dim``) and the GEGLU feed-forward
    (``C -> 8C`` then ``4C -> C``)."""
    rows = batch * tokens
    c = channels
    per_layer = (
        4 * linear(rows, c, c)
        + attention(batch, tokens, tokens, c)  # self-attention
        + 2 * linear(rows, c, c)
        + 2 * linear(batch * text_len, context_dim, c)
        + attention(batch, tokens, text_len, c)  # cross-attention
        + linear(rows, c, 8 * c)
        + linear(rows, 4 * c, c)  # GEGLU feed-forward
    )
    return 2 * linear(rows, c, c) + layers * per_layer


def _unet_config(config: dict[str, Any] | UNetConfig) -> UNetConfig:
    return config if isinstance(config, UNetConfig) else UNetConfig.from_dict(config)


def _vae_config(config: dict[str, Any] | VAEConfig) -> VAEConfig:
    return config if isinstance(config, VAEConfig) else VAEConfig.from_dict(config)


def _text_config(config: dict[str, Any] | CLIPTextConfig) -> CLIPTextConfig:
    return config if isinstance(config, CLIPTextConfig) else CLIPTextConfig.from_dict(config)


def unet_flops(
    config: dict[str, Any] | UNetConfig,
    height: int,
    width: int | None = None,
    *,
    batch: int = 1,
    text_len: int = 77,
) -> float:
    """FLOPs of one UNet forward pass on ``batch`` latents of ``height x width`` (width
    defaults to height) with ``text_len`` text states. One InstructPix2Pix denoising step is
    ``batch = 3`` (the guidance batch)."""
    cfg = _unet_config(config)
    width = height if width is None else width
    boc, n = cfg.block_out_channels, len(cfg.block_out_channels)
    temb = 4 * boc[0]
    ctx = cfg.cross_attention_dim
    layers, tlayers = cfg.layers, cfg.transformer_layers
    f = linear(batch, boc[0], temb) + linear(batch, temb, temb)  # time embedding MLP
    h, w, c = height, width, boc[0]
    f += conv(batch, h, w, cfg.in_channels, c, cfg.conv_in_kernel)
    skips = [c]
    sizes = [(h, w)]
    for i, kind in enumerate(cfg.down_block_types):
        for _ in range(layers[i]):
            f += resnet(batch, h, w, c, boc[i], temb)
            c = boc[i]
            if kind == "CrossAttnDownBlock2D":
                f += transformer(batch, h * w, c, tlayers[i], ctx, text_len)
            skips.append(c)
            sizes.append((h, w))
        if i < n - 1:  # stride-2 3x3 convolution with downsample_padding on every side
            p = cfg.downsample_padding
            h, w = (h + 2 * p - 3) // 2 + 1, (w + 2 * p - 3) // 2 + 1
            f += conv(batch, h, w, c, c, 3)
            skips.append(c)
            sizes.append((h, w))
    f += 2 * resnet(batch, h, w, c, c, temb)  # the mid block
    f += transformer(batch, h * w, c, tlayers[-1], ctx, text_len)
    rev, rtlayers = boc[::-1], tlayers[::-1]
    rlayers = layers[::-1]
    for i, kind in enumerate(cfg.up_block_types):
        for _ in range(rlayers[i] + 1):
            skip_c = skips.pop()
            sizes.pop()
            f += resnet(batch, h, w, c + skip_c, rev[i], temb)
            c = rev[i]
            if kind == "CrossAttnUpBlock2D":
                f += transformer(batch, h * w, c, rtlayers[i], ctx, text_len)
        if i < n - 1:  # nearest upsampling to the next skip's size, then a 3x3 convolution
            h, w = sizes[-1]
            f += conv(batch, h, w, c, c, 3)
    return f + conv(batch, h, w, boc[0], cfg.out_channels, cfg.conv_out_kernel)


def _vae_mid(batch: int, h: int, w: int, c: int, add_attention: bool) -> float:
    """resnet, single-head self-attention over the ``h w`` positions (q, k, v, out), resnet."""
    f = 2 * resnet(batch, h, w, c, c, None)
    if add_attention:
        f += 4 * linear(batch * h * w, c, c) + attention(batch, h * w, h * w, c)
    return f


def vae_encoder_flops(
    config: dict[str, Any] | VAEConfig, height: int, width: int | None = None, *, batch: int = 1
) -> float:
    """FLOPs of ``VAE.encode`` on ``batch`` images of ``height x width`` pixels (the encoder and
    the 1x1 ``quant_conv``)."""
    cfg = _vae_config(config)
    width = height if width is None else width
    boc = cfg.block_out_channels
    h, w, c = height, width, boc[0]
    f = conv(batch, h, w, cfg.in_channels, c, 3)
    for i in range(len(boc)):
        for _ in range(cfg.layers_per_block):
            f += resnet(batch, h, w, c, boc[i], None)
            c = boc[i]
        if i < len(boc) - 1:  # padded by one row and column at the end, then stride 2
            h, w = (h + 1 - 3) // 2 + 1, (w + 1 - 3) // 2 + 1
            f += conv(batch, h, w, c, c, 3)
    f += _vae_mid(batch, h, w, c, cfg.mid_block_add_attention)
    f += conv(batch, h, w, c, 2 * cfg.latent_channels, 3)
    if cfg.use_quant_conv:
        f += conv(batch, h, w, 2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
    return f


def vae_decoder_flops(
    config: dict[str, Any] | VAEConfig,
    latent_height: int,
    latent_width: int | None = None,
    *,
    batch: int = 1,
) -> float:
    """FLOPs of ``VAE.decode`` on ``batch`` latents of ``latent_height x latent_width`` (the
    1x1 ``post_quant_conv`` and the decoder, which upsamples 2x per block but the last)."""
    cfg = _vae_config(config)
    latent_width = latent_height if latent_width is None else latent_width
    rev = cfg.block_out_channels[::-1]
    h, w, c = latent_height, latent_width, cfg.latent_channels
    f = 0.0
    if cfg.use_post_quant_conv:
        f += conv(batch, h, w, c, c, 1)
    f += conv(batch, h, w, c, rev[0], 3)
    c = rev[0]
    f += _vae_mid(batch, h, w, c, cfg.mid_block_add_attention)
    for i in range(len(rev)):
        for _ in range(cfg.layers_per_block + 1):
            f += resnet(batch, h, w, c, rev[i], None)
            c = rev[i]
        if i < len(rev) - 1:
            h, w = 2 * h, 2 * w
            f += conv(batch, h, w, c, c, 3)
    return f + conv(batch, h, w, c, cfg.out_channels, 3)


def text_encoder_flops(
    config: dict[str, Any] | CLIPTextConfig, *, batch: int = 1, tokens: int | None = None
) -> float:
    """FLOPs of the CLIP text encoder on ``batch`` sequences of ``tokens`` (default: its
    ``max_position_embeddings``, what SD pipelines pad to): per layer q, k, v and out
    projections, causal attention (counted whole) and the MLP. The embeddings are lookups."""
    cfg = _text_config(config)
    tokens = cfg.max_position_embeddings if tokens is None else tokens
    rows, d = batch * tokens, cfg.hidden_size
    per_layer = (
        4 * linear(rows, d, d)
        + attention(batch, tokens, tokens, d)
        + 2 * linear(rows, d, cfg.intermediate_size)
    )
    return cfg.num_hidden_layers * per_layer


@dataclass(frozen=True)
class EditFlops:
    """FLOPs of each stage of one InstructPix2Pix edit at a working size (``pbmlx``'s pipeline,
    :mod:`pbmlx.diffuse.pipeline`): the text encoder on ``[instruction, ""]`` (2 sequences of
    77 tokens), the VAE encoder on the image, the UNet on the guidance batch of 3 per step, the
    VAE decoder on the final latents. ``denoise(steps) = steps x denoise_step``."""

    text_encode: float
    image_encode: float
    denoise_step: float
    decode: float

    def denoise(self, steps: int) -> float:
        return steps * self.denoise_step

    def total(self, steps: int) -> float:
        return self.text_encode + self.image_encode + self.denoise(steps) + self.decode


def edit_flops(
    unet: dict[str, Any] | UNetConfig,
    vae: dict[str, Any] | VAEConfig,
    text: dict[str, Any] | CLIPTextConfig,
    width: int,
    height: int,
    *,
    text_len: int = 77,
) -> EditFlops:
    """:class:`EditFlops` of an edit whose working image is ``width x height`` pixels (both
    multiples of the VAE's factor ``2 ** (len(block_out_channels) - 1)``)."""
    vcfg = _vae_config(vae)
    f = 2 ** (len(vcfg.block_out_channels) - 1)
    lh, lw = height // f, width // f
    return EditFlops(
        text_encode=text_encoder_flops(text, batch=2, tokens=text_len),
        image_encode=vae_encoder_flops(vcfg, height, width),
        denoise_step=unet_flops(unet, lh, lw, batch=3, text_len=text_len),
        decode=vae_decoder_flops(vcfg, lh, lw),
    )
