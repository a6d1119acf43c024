"""The export wrappers: one small PyTorch module per Core ML package, with named inputs.

Each wrapper's ``forward`` argument names become the package's input names (coremltools keeps
a ``torch.export`` program's placeholder names), and :class:`ExportSpec` names the outputs and
describes both. The numerics are the reference's, to the operation, except where said:

============  ============================================  =====================================
package       inputs (shape)                                output (shape)
============  ============================================  =====================================
TextEncoder   ``input_ids`` (1, 77) int32                   ``last_hidden_state`` (1, 77, D)
VAEEncoder    ``image`` (1, 3, H, W) in [0, 1]              ``image_latents`` (1, C, h, w):
                                                            ``mode(E(2 image - 1))``, unscaled
Unet          ``sample`` (B, 2C, h, w), ``timestep`` (B,),  ``noise_pred`` (B, C, h, w)
              ``encoder_hidden_states`` (B, 77, D)
VAEDecoder    ``latents`` (1, C, h, w)                      ``image`` (1, 3, H, W) in [0, 1]:
                                                            ``clip(D(latents / s) / 2 + 1/2)``
============  ============================================  =====================================

``B`` is 3 (the three guidance branches in one call) or 1; ``h = H / f`` with ``f`` the VAE
factor (8), ``s`` the VAE's ``scaling_factor``.

``--chunk-unet`` splits the UNet in two (:class:`UNetChunk1`, :class:`UNetChunk2`) at the up
block that best balances their weights: chunk 1 runs the time embedding, ``conv_in``, the down
blocks, the mid block and the first ``k`` up blocks, and outputs ``emb``, ``hidden`` and the
skip tensors the remaining up blocks need (``skip_0`` ...); chunk 2 takes those plus
``encoder_hidden_states`` and finishes. :func:`unet_in_parts` is diffusers'
``UNet2DConditionModel.forward`` for the configurations InstructPix2Pix uses, written as the
two halves; a test holds ``chunk2(chunk1(x))`` equal to the whole UNet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pbmlx.errors import PbmlxError

TEXT_LENGTH = 77  # CLIP's context: prompts are padded/truncated to this many tokens


@dataclass
class ExportSpec:
    """One package to export: the wrapper, a sample input per named input, the outputs."""

    name: str  # the package's resource name (TextEncoder, Unet, ...)
    module: nn.Module
    inputs: dict[str, torch.Tensor]  # in forward's argument order
    outputs: list[str]
    description: str
    input_descriptions: dict[str, str] = field(default_factory=dict)
    output_descriptions: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- wrappers


class TextEncoder(nn.Module):
    """CLIP's last hidden state for a batch of token ids (no final pooling)."""

    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, return_dict=False)[0]


class VAEEncoder(nn.Module):
    """``mode(E(2 image - 1))``: the image latents InstructPix2Pix conditions on, unscaled.

    Holds only the encoder half of the VAE (so the package's weights are all used): the mode
    of the diagonal Gaussian is its mean, the first ``C`` channels of ``quant_conv``'s
    output, as diffusers' ``AutoencoderKL.encode(...).latent_dist.mode()`` computes it."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv  # None when the config has use_quant_conv false
        self.latent_channels = int(vae.config.latent_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        moments = self.encoder(2.0 * image - 1.0)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments[:, : self.latent_channels]


class VAEDecoder(nn.Module):
    """``clip(D(latents / scaling_factor) / 2 + 1/2, 0, 1)``: pixels in [0, 1].

    Holds only the decoder half (``post_quant_conv`` then the decoder, as diffusers'
    ``AutoencoderKL.decode``)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv  # None when use_post_quant_conv is false
        self.decoder = vae.decoder
        self.scaling_factor = float(vae.config.scaling_factor)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents / self.scaling_factor
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        image = self.decoder(z)
        # = clip(image / 2 + 1/2, 0, 1); clipping first keeps coremltools from folding the
        # affine map into conv_out's weights (which then would not read back as the source's).
        return (image.clamp(-1.0, 1.0) + 1.0) * 0.5


class UNet(nn.Module):
    """The whole UNet: noise prediction for ``sample`` (noisy and image latents on channels)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


# ---------------------------------------------------------------------------- the UNet in two


def check_splittable(unet: nn.Module) -> None:
    """Refuse UNet options that :func:`unet_in_parts` does not reproduce."""
    cfg = unet.config
    unsupported = {
        "class_embed_type": cfg.get("class_embed_type"),
        "addition_embed_type": cfg.get("addition_embed_type"),
        "encoder_hid_dim_type": cfg.get("encoder_hid_dim_type"),
        "time_embedding_act_fn": cfg.get("time_embedding_act_fn"),
        "num_class_embeds": cfg.get("num_class_embeds"),
    }
    for option, value in unsupported.items():
        if value is not None:
            raise PbmlxError(
                f"--chunk-unet does not support a UNet with {option}={value!r} (not an "
                "InstructPix2Pix option)."
            )
    if unet.mid_block is None:
        raise PbmlxError("--chunk-unet needs a UNet with a mid block.")


def _upsample_size(unet: nn.Module, latent_shape: tuple[int, ...], skips: list, i: int):
    """What diffusers passes as ``upsample_size`` to up block ``i`` (None when the latent
    sides are multiples of the UNet's overall factor)."""
    factor = 2**unet.num_upsamplers
    forward_size = any(d % factor != 0 for d in latent_shape[-2:])
    is_final = i == len(unet.up_blocks) - 1
    return skips[-1].shape[2:] if forward_size and not is_final else None


def _up_block(unet: nn.Module, i: int, hidden, emb, skips, states, latent_shape):
    block = unet.up_blocks[i]
    n = len(block.resnets)
    mine, rest = skips[-n:], skips[:-n]
    size = _upsample_size(unet, latent_shape, rest, i) if rest else None
    kwargs: dict[str, Any] = {
        "hidden_states": hidden,
        "temb": emb,
        "res_hidden_states_tuple": tuple(mine),
        "upsample_size": size,
    }
    if getattr(block, "has_cross_attention", False):
        kwargs["encoder_hidden_states"] = states
    return block(**kwargs), rest


def unet_first_part(unet: nn.Module, k: int, sample, timestep, states):
    """Diffusers' forward up to (not including) up block ``k``:
    ``(emb, hidden, skips)`` with ``skips`` the skip tensors still to be consumed."""
    latent_shape = tuple(sample.shape)
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))
    hidden = unet.conv_in(sample)
    skips = [hidden]
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, res = block(hidden_states=hidden, temb=emb, encoder_hidden_states=states)
        else:
            hidden, res = block(hidden_states=hidden, temb=emb)
        skips.extend(res)
    if getattr(unet.mid_block, "has_cross_attention", False):
        hidden = unet.mid_block(hidden, emb, encoder_hidden_states=states)
    else:
        hidden = unet.mid_block(hidden, emb)
    for i in range(k):
        hidden, skips = _up_block(unet, i, hidden, emb, skips, states, latent_shape)
    return emb, hidden, skips


def unet_second_part(unet: nn.Module, k: int, hidden, emb, skips, states, latent_shape):
    """Diffusers' forward from up block ``k`` to the output."""
    skips = list(skips)
    for i in range(k, len(unet.up_blocks)):
        hidden, skips = _up_block(unet, i, hidden, emb, skips, states, latent_shape)
    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)


def unet_in_parts(unet: nn.Module, k: int, sample, timestep, states) -> torch.Tensor:
    """The whole forward as the two halves chained (what the chunked packages compute)."""
    emb, hidden, skips = unet_first_part(unet, k, sample, timestep, states)
    return unet_second_part(unet, k, hidden, emb, skips, states, tuple(sample.shape))


def balanced_split(unet: nn.Module) -> int:
    """The number ``k`` of up blocks chunk 1 runs: the one that makes the two chunks' parameter
    counts closest (each chunk should fit a phone's per-model memory limit)."""

    def count(modules) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    first = count([unet.time_proj, unet.time_embedding, unet.conv_in, *unet.down_blocks])
    first += count([unet.mid_block])
    total = count([unet])
    best_k, best_gap = 0, abs(total - 2 * first)
    for k, block in enumerate(unet.up_blocks, start=1):
        first += count([block])
        if abs(total - 2 * first) < best_gap:
            best_k, best_gap = k, abs(total - 2 * first)
    return best_k


class UNetChunk1(nn.Module):
    """The first half: ``(emb, hidden, skip_0, ..., skip_{m-1})``."""

    def __init__(self, unet: nn.Module, k: int) -> None:
        super().__init__()
        self.unet, self.k = unet, k

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        emb, hidden, skips = unet_first_part(
            self.unet, self.k, sample, timestep, encoder_hidden_states
        )
        return (emb, hidden, *skips)


class UNetChunk2(nn.Module):
    """The second half: ``noise_pred`` from chunk 1's outputs and ``encoder_hidden_states``.

    Arguments are ``hidden, emb, encoder_hidden_states, skip_0, ...``; the latent shape (which
    decides diffusers' upsample sizes) is fixed at export, as every shape is."""

    def __init__(self, unet: nn.Module, k: int, latent_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.unet, self.k, self.latent_shape = unet, k, tuple(latent_shape)

    def forward(self, hidden, emb, encoder_hidden_states, *skips) -> torch.Tensor:
        return unet_second_part(
            self.unet, self.k, hidden, emb, skips, encoder_hidden_states, self.latent_shape
        )


# ---------------------------------------------------------------------------- the specs


def _unet_inputs(unet: nn.Module, batch: int, latent_hw: tuple[int, int], text_dim: int):
    h, w = latent_hw
    gen = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(batch, unet.config.in_channels, h, w, generator=gen),
        "timestep": torch.full((batch,), 999.0),
        "encoder_hidden_states": torch.randn(batch, TEXT_LENGTH, text_dim, generator=gen),
    }


UNET_INPUT_DESCRIPTIONS = {
    "sample": "Noisy latents (scaled by the scheduler's scale_model_input) concatenated on "
    "channels with the image latents; batch in the order [text+image, image only, neither]",
    "timestep": "The scheduler's timestep for this step, one per batch row (all equal)",
    "encoder_hidden_states": "TextEncoder last_hidden_state per batch row: [instruction, "
    'empty prompt "", empty prompt ""]',
}
NOISE_PRED = "Predicted noise, one row per input row; combine the three rows with dual guidance"


def unet_specs(
    unet: nn.Module, *, batch: int, latent_hw: tuple[int, int], text_dim: int, chunk: bool
) -> list[ExportSpec]:
    """The UNet package, or its two chunks, for ``batch`` rows at ``latent_hw`` latents."""
    inputs = _unet_inputs(unet, batch, latent_hw, text_dim)
    if not chunk:
        return [
            ExportSpec(
                "Unet",
                UNet(unet).eval(),
                inputs,
                ["noise_pred"],
                "InstructPix2Pix UNet: noise prediction from noisy + image latents and text",
                UNET_INPUT_DESCRIPTIONS,
                {"noise_pred": NOISE_PRED},
            )
        ]
    check_splittable(unet)
    k = balanced_split(unet)
    first = UNetChunk1(unet, k).eval()
    with torch.no_grad():
        emb, hidden, *skips = first(**inputs)
    skip_names = [f"skip_{i}" for i in range(len(skips))]
    second_inputs = {
        "hidden": hidden,
        "emb": emb,
        "encoder_hidden_states": inputs["encoder_hidden_states"],
        **dict(zip(skip_names, skips, strict=True)),
    }
    chained = "feed to UnetChunk2's input of the same name"
    return [
        ExportSpec(
            "UnetChunk1",
            first,
            inputs,
            ["emb", "hidden", *skip_names],
            f"InstructPix2Pix UNet, part 1 of 2 (down blocks, mid block, {k} up blocks)",
            UNET_INPUT_DESCRIPTIONS,
            {
                "emb": f"Time embedding; {chained}",
                "hidden": f"Activations after up block {k}; {chained}",
                **{
                    n: f"Skip connection for the remaining up blocks; {chained}" for n in skip_names
                },
            },
        ),
        ExportSpec(
            "UnetChunk2",
            UNetChunk2(unet, k, tuple(inputs["sample"].shape)).eval(),
            second_inputs,
            ["noise_pred"],
            f"InstructPix2Pix UNet, part 2 of 2 (up blocks {k} on, output head)",
            {
                "hidden": "UnetChunk1 output hidden",
                "emb": "UnetChunk1 output emb",
                "encoder_hidden_states": UNET_INPUT_DESCRIPTIONS["encoder_hidden_states"],
                **{n: f"UnetChunk1 output {n}" for n in skip_names},
            },
            {"noise_pred": NOISE_PRED},
        ),
    ]


def text_encoder_spec(text_encoder: nn.Module) -> ExportSpec:
    return ExportSpec(
        "TextEncoder",
        TextEncoder(text_encoder).eval(),
        {"input_ids": torch.zeros(1, TEXT_LENGTH, dtype=torch.int32)},
        ["last_hidden_state"],
        "CLIP text encoder: token ids -> last hidden state (the UNet's text conditioning)",
        {
            "input_ids": "CLIP BPE token ids (vocab.json + merges.txt): <|startoftext|>, the "
            "lower-cased prompt, <|endoftext|>, padded with <|endoftext|> to 77"
        },
        {"last_hidden_state": "Hidden states of the final layer norm, one per token"},
    )


def vae_specs(vae: nn.Module, image_hw: tuple[int, int], factor: int) -> list[ExportSpec]:
    h, w = image_hw
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, vae.config.latent_channels, h // factor, w // factor, generator=gen)
    return [
        ExportSpec(
            "VAEEncoder",
            VAEEncoder(vae).eval(),
            {"image": torch.rand(1, 3, h, w, generator=gen)},
            ["image_latents"],
            "VAE encoder: the input photo -> image latents (the distribution's mode, unscaled)",
            {"image": "The photo at the working size, RGB, channels first, values in [0, 1]"},
            {"image_latents": "Image latents; NOT multiplied by the scaling factor"},
        ),
        ExportSpec(
            "VAEDecoder",
            VAEDecoder(vae).eval(),
            {"latents": latents},
            ["image"],
            "VAE decoder: denoised latents -> the edited photo",
            {"latents": "Denoised latents as the scheduler leaves them (scaled space)"},
            {"image": "The edited photo, RGB, channels first, values in [0, 1]"},
        ),
    ]


# ---------------------------------------------------------------------------- the references


def reference(name: str, source: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What package ``name`` must compute on ``inputs``, through the reference libraries' own
    public calls on the source's unmodified modules (diffusers' ``UNet2DConditionModel`` and
    ``AutoencoderKL``, transformers' ``CLIPTextModel``): the oracle of the parity proofs. For
    ``UnetChunk1``/``UnetChunk2`` the reference is the whole UNet's output (the chain's)."""
    with torch.no_grad():
        if name == "TextEncoder":
            return source.text_encoder(inputs["input_ids"], return_dict=False)[0]
        if name in ("Unet", "UnetChunk1", "UnetChunk2"):
            return source.unet(
                inputs["sample"],
                inputs["timestep"],
                inputs["encoder_hidden_states"],
                return_dict=False,
            )[0]
        if name == "VAEEncoder":
            return source.vae.encode(2.0 * inputs["image"] - 1.0).latent_dist.mode()
        if name == "VAEDecoder":
            latents = inputs["latents"] / source.vae.config.scaling_factor
            image = source.vae.decode(latents, return_dict=False)[0]
            return (image / 2.0 + 0.5).clamp(0.0, 1.0)
    raise ValueError(f"no reference for package {name!r}")


def run_spec(spec: ExportSpec, inputs: dict[str, torch.Tensor] | None = None):
    """The wrapper of ``spec`` on ``inputs`` (default: its sample inputs), without gradients."""
    with torch.no_grad():
        return spec.module(*(inputs or spec.inputs).values())
