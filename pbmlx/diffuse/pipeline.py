"""InstructPix2Pix sampling: the one place for its guidance numerics (diffusers' reference is
``StableDiffusionInstructPix2PixPipeline``; this is the same computation in MLX, NHWC).

For an image ``I`` (``H x W``, multiples of the VAE factor ``f``) and an instruction ``T``:

1. text: hidden states of ``[T, "", ""]`` (the batch of three; CLIP's last hidden state);
2. image latents: ``z_I = mode(VAE.encode(2 I - 1))``, NOT multiplied by ``scaling_factor``;
   the UNet's image channels are the batch ``[z_I, z_I, 0]``;
3. start: ``x = init_noise_sigma * n``, ``n ~ N(0, I)`` of shape ``(1, H/f, W/f, C)``;
4. each step ``i``: ``u = scale_model_input(x, i)``; the UNet sees ``concat([u, u, u], axis=0)``
   concatenated on channels with the image latents, at ``timesteps[i]``, with the text batch,
   and returns ``[e_text, e_img, e_uncond]`` = ``[eps(img, txt), eps(img, 0), eps(0, 0)]``;

       eps = e_uncond + s_txt (e_text - e_img) + s_img (e_img - e_uncond)

   (:func:`guide`; s_txt = ``guidance`` 7.5, s_img = ``image_guidance`` 1.5 by default), then
   ``x = scheduler.step(eps, i, x, ...)``;
5. decode: ``image = clip(VAE.decode(x / scaling_factor) / 2 + 1/2, 0, 1)``.

Randomness comes from one ``mx.random`` key, split into a start key (step 3) and one key per
step (used by stochastic samplers only), or from injected noise (:class:`InjectedNoise`, for
parity with another RNG). The step loop :meth:`InstructPix2PixPipeline.denoise` is a
generator: the caller evaluates each yielded latent and shows progress;
:meth:`~InstructPix2PixPipeline.generate` runs all five stages and reports per-stage seconds
and the peak memory.

Diffusers' Euler-Ancestral draws one noise per step including the last (whose sigma_up is 0
and which it therefore does not use); pbmlx draws nothing when sigma_up = 0, so to reproduce a
diffusers run inject its initial latents and its per-step draws in order.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from pbmlx.diffuse.schedulers import DEFAULT_SCHEDULER, Scheduler, make_scheduler
from pbmlx.diffuse.settings import (  # noqa: F401  (the defaults are importable from here too)
    DEFAULT_GUIDANCE,
    DEFAULT_IMAGE_GUIDANCE,
    DEFAULT_STEPS,
    SamplerSettings,
    check_guidance,
    resolve,
)
from pbmlx.errors import PbmlxError
from pbmlx.kernels.guidance import guided_step
from pbmlx.kernels.image_io import from_model_output, to_model_input
from pbmlx.models.clip_text import CLIPTextModel
from pbmlx.models.tokenizer import CLIPTokenizer
from pbmlx.models.unet import UNet2DConditionModel
from pbmlx.models.vae import AutoencoderKL

STAGES = ("text_encode", "image_encode", "denoise", "decode")
# Low-memory decoding: tiles of DECODE_TILE latents per side (256 px for SD's 8x VAE) that
# overlap by DECODE_OVERLAP latents (128 px), blended with linear ramps across the overlap. A
# 512 px image (64 latents) is 3 x 3 tiles, whose largest activations are a quarter of the
# whole image's.
DECODE_TILE = 32
DECODE_OVERLAP = 16

Progress = Callable[[int, int], None]  # (steps done, steps in all)


@dataclass
class InjectedNoise:
    """Standard normal noise supplied from outside (e.g. drawn by diffusers' torch generator).

    ``initial``: ``(1, h, w, C)`` NHWC, multiplied by ``init_noise_sigma`` to start; ``steps``:
    one ``(1, h, w, C)`` draw per step, in order, for stochastic samplers (Euler-Ancestral);
    deterministic samplers ignore it.
    """

    initial: mx.array
    steps: Sequence[mx.array] = ()


@dataclass
class PipelineResult:
    """One edit at working size: the image, the final latents and what it cost."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    latents: mx.array  # (1, H/f, W/f, C) final latents, in scaled space (before / scaling_factor)
    seconds: dict[str, float] = field(default_factory=dict)  # STAGES -> seconds
    peak_memory_bytes: int = 0


def guide(eps: mx.array, guidance: float, image_guidance: float) -> mx.array:
    """Dual classifier-free guidance of InstructPix2Pix.

    ``eps`` is the UNet output for the batch ``[text + image, empty + image, empty + no image]``
    (``3 B`` rows, in that order); returns ``B`` rows::

        e_uncond + guidance * (e_text - e_img) + image_guidance * (e_img - e_uncond)

    i.e. ``eps(0,0) + s_img (eps(img,0) - eps(0,0)) + s_txt (eps(img,txt) - eps(img,0))``,
    summed in the reference's order.
    """
    e_text, e_img, e_uncond = mx.split(eps, 3, axis=0)
    return e_uncond + guidance * (e_text - e_img) + image_guidance * (e_img - e_uncond)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``0..n`` with at least ``overlap``
    shared between neighbours; the last tile ends at ``n``. One tile when ``n <= tile``."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    return [*starts, n - tile]


def _ramp(length: int, fade: int, rise: bool, fall: bool) -> np.ndarray:
    """Blend weights along one tile axis: linear from ~0 to 1 over the first ``fade`` samples
    when a neighbour precedes (``rise``), back down over the last ``fade`` when one follows.
    Strictly positive, so every pixel has weight."""
    w = np.ones(length, dtype=np.float32)
    fade = min(fade, length)
    ramp = (np.arange(fade, dtype=np.float32) + 0.5) / fade if fade else np.zeros(0, np.float32)
    if rise:
        w[:fade] = np.minimum(w[:fade], ramp)
    if fall:
        w[length - fade :] = np.minimum(w[length - fade :], ramp[::-1])
    return w


def decode_in_tiles(
    vae: AutoencoderKL,
    z: mx.array,
    *,
    tile: int = DECODE_TILE,
    overlap: int = DECODE_OVERLAP,
) -> mx.array:
    """``vae.decode(z)`` (unscaled latents ``(B, h, w, C)``) computed so that the decoder's large
    activations never exist for the whole image at once:

    1. ``post_quant_conv``, ``conv_in`` and the mid block (whose attention spans all
       positions) run on the whole latent, at latent resolution (64 x 64 for a 512 px SD
       image), where activations are small -- so the attention is exact;
    2. the up blocks and the output head (2x to 8x the latent resolution: where the memory goes)
       run tile by tile on the mid block's output, in tiles of ``tile`` latents per side
       overlapping by ``overlap``, each evaluated before the next, and are blended in pixel
       space with weights ramping linearly across each overlap, normalized per pixel.

    An approximation: in step 2 each GroupNorm takes its statistics over the tile, not the
    whole image, and a tile's convolutions see zero padding where the image has neighbours
    (the blend hides the seams this would leave). The error on the tiny test VAE is measured in
    tests/test_pipeline.py. A latent no larger than one tile is decoded whole, exactly as
    ``vae.decode``. Step 1's attention weights are ``(h w)^2`` numbers: 64 MiB in float32 at
    64 x 64 latents, but 1 GiB at 128 x 128 (a 1024 px SD image), where they become the peak.
    """
    if not 0 <= overlap < tile:
        raise ValueError("overlap must be in [0, tile)")
    B, h, w, _ = z.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return vae.decode(z)
    decoder = vae.decoder
    if "post_quant_conv" in vae:
        z = vae.post_quant_conv(z)
    x = decoder.mid_block(decoder.conv_in(z))
    mx.eval(x)

    def head(t: mx.array) -> mx.array:  # the rest of vae.Decoder, from its up blocks on
        for block in decoder.up_blocks:
            t = block(t)
        return decoder.conv_out(decoder.act(decoder.conv_norm_out(t)))

    f = 2 ** (len(vae.config.block_out_channels) - 1)
    total = np.zeros((B, h * f, w * f, vae.config.out_channels), np.float32)
    weight = np.zeros((1, h * f, w * f, 1), np.float32)
    for y0, x0 in itertools.product(ys, xs):
        th, tw = min(tile, h - y0), min(tile, w - x0)
        part = head(x[:, y0 : y0 + th, x0 : x0 + tw])
        wy = _ramp(th * f, overlap * f, y0 > 0, y0 + th < h)
        wx = _ramp(tw * f, overlap * f, x0 > 0, x0 + tw < w)
        wt = (wy[:, None] * wx[None, :])[None, :, :, None]  # (1, th f, tw f, 1)
        py, px = slice(y0 * f, (y0 + th) * f), slice(x0 * f, (x0 + tw) * f)
        total[:, py, px] += np.array(part.astype(mx.float32)) * wt  # evaluates this tile
        weight[:, py, px] += wt
    return mx.array(total / weight)


class InstructPix2PixPipeline:
    """The three networks, the tokenizer and the scheduler config of one InstructPix2Pix model.

    ``text_encoder`` may be dropped after each prompt (``low_memory``); ``reload_text_encoder``
    brings it back for the next one (weights load lazily, so this is cheap until evaluated).
    With ``low_memory`` the decoder also runs in overlapping tiles (:meth:`decode`).
    """

    def __init__(
        self,
        *,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel | None,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler_config: dict,
        scheduler_source: str = "scheduler config",
        reload_text_encoder: Callable[[], CLIPTextModel] | None = None,
        low_memory: bool = False,
        decode_tile: int = DECODE_TILE,
        decode_overlap: int = DECODE_OVERLAP,
    ) -> None:
        if text_encoder is None and reload_text_encoder is None:
            raise ValueError("give a text_encoder or a reload_text_encoder")
        channels = vae.config.latent_channels
        if unet.config.in_channels != 2 * channels:
            raise PbmlxError(
                f"The UNet takes {unet.config.in_channels} input channels; an InstructPix2Pix "
                f"UNet takes {2 * channels} (noisy latents + image latents of the "
                f"{channels}-channel VAE): this is not an InstructPix2Pix model."
            )
        if unet.config.out_channels != channels:
            raise PbmlxError(
                f"The UNet predicts {unet.config.out_channels} channels but the VAE's latents "
                f"have {channels}."
            )
        if not 0 <= decode_overlap < decode_tile:
            raise ValueError("decode_overlap must be in [0, decode_tile)")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.reload_text_encoder = reload_text_encoder
        self.vae = vae
        self.unet = unet
        self.scheduler_config = scheduler_config
        self.scheduler_source = scheduler_source
        self.low_memory = low_memory
        self.decode_tile = decode_tile
        self.decode_overlap = decode_overlap
        # Scheduler names are checked and configs parsed now, not after minutes of work.
        make_scheduler(DEFAULT_SCHEDULER, scheduler_config, scheduler_source)

    # -- properties of the model ---------------------------------------------------------

    @property
    def vae_factor(self) -> int:
        """Pixels per latent along a side: ``2 ** (len(block_out_channels) - 1)`` (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def dtype(self) -> mx.Dtype:
        """The UNet's compute dtype (its weights')."""
        return self.unet.conv_in.weight.dtype

    def scheduler(self, name: str, steps: int) -> Scheduler:
        """A fresh scheduler ``name`` with the model's config, set to ``steps`` steps."""
        s = make_scheduler(name, self.scheduler_config, self.scheduler_source)
        s.set_timesteps(steps)
        return s

    # -- stages --------------------------------------------------------------------------

    def encode_prompt(self, instruction: str) -> mx.array:
        """Hidden states of ``[instruction, "", ""]``: ``(3, L, D)`` in the UNet's dtype.

        With ``low_memory`` the text encoder is evaluated, then dropped and MLX's buffer cache
        cleared; the next call reloads it.
        """
        if self.text_encoder is None:
            self.text_encoder = self.reload_text_encoder()  # type: ignore[misc]
        ids = mx.array(self.tokenizer.encode([instruction, ""]))  # (2, L)
        hidden = self.text_encoder(ids).last_hidden_state  # (2, L, D)
        text, empty = hidden[0:1], hidden[1:2]
        states = mx.concatenate([text, empty, empty], axis=0).astype(self.dtype)  # (3, L, D)
        if self.low_memory:
            mx.eval(states)
            self.text_encoder = None
            mx.clear_cache()
        return states

    def encode_image(self, image: mx.array) -> mx.array:
        """Unscaled image latents: the mode of ``VAE.encode(image)``, ``image`` NHWC in [-1, 1]
        -> ``(B, H/f, W/f, C)`` (diffusers' ``retrieve_latents(..., "argmax")``)."""
        dtype = self.vae.encoder.conv_in.weight.dtype
        return self.vae.encode(image.astype(dtype)).mode()

    def image_conditioning(self, image_latents: mx.array) -> mx.array:
        """The UNet's image channels for the batch of three: ``[z, z, 0]``, UNet dtype."""
        z = image_latents.astype(self.dtype)
        return mx.concatenate([z, z, mx.zeros_like(z)], axis=0)

    def denoise(
        self,
        text_states: mx.array,
        image_latents: mx.array,
        settings: SamplerSettings | None = None,
        *,
        key: mx.array | None = None,
        noise: InjectedNoise | None = None,
    ) -> Iterator[mx.array]:
        """The step loop: yields the latents ``(1, h, w, C)`` (float32, lazy) after each step.

        ``text_states`` from :meth:`encode_prompt`; ``image_latents`` ``(1, h, w, C)`` from
        :meth:`encode_image`; ``settings.steps``, ``guidance``, ``image_guidance`` and
        ``scheduler`` (default ``SamplerSettings()``; its ``seed`` and ``size`` are not used
        here). Randomness from exactly one of ``key`` (an ``mx.random`` key, split into a start
        key and one key per step) or ``noise``. The caller should ``mx.eval`` each yielded array
        before asking for the next (the graph otherwise grows with every step).
        """
        settings = settings if settings is not None else SamplerSettings()
        steps = settings.steps
        sched = self.scheduler(settings.scheduler, steps)
        if (key is None) == (noise is None):
            raise ValueError("denoise() needs exactly one of key= or noise=")
        batch, h, w, channels = image_latents.shape
        shape = (1, h, w, channels)
        if batch != 1 or channels != self.latent_channels:
            raise ValueError(f"image_latents must be (1, h, w, {self.latent_channels})")
        if noise is not None:
            if tuple(noise.initial.shape) != shape:
                raise ValueError(f"initial noise is {tuple(noise.initial.shape)}, not {shape}")
            if sched.stochastic and len(noise.steps) < steps:
                raise ValueError(f"{sched.name} needs {steps} step noises, got {len(noise.steps)}")
            start = noise.initial.astype(mx.float32)
            step_keys = None
        else:
            start_key, steps_key = mx.random.split(key)
            start = mx.random.normal(shape, dtype=mx.float32, key=start_key)
            step_keys = mx.random.split(steps_key, steps)  # (steps, 2)

        conditioning = self.image_conditioning(image_latents)  # (3, h, w, C)
        x = start * sched.init_noise_sigma
        for i in range(steps):
            u = sched.scale_model_input(x, i).astype(self.dtype)
            model_in = mx.concatenate([mx.concatenate([u, u, u], axis=0), conditioning], axis=-1)
            eps3 = self.unet(model_in, sched.timestep(i), text_states)  # (3, h, w, C)
            # guide() then sched.step(), fused into one kernel where the backend has it.
            step_noise = step_key = None
            if sched.stochastic and noise is not None:
                step_noise = noise.steps[i]
            elif sched.stochastic:
                step_key = step_keys[i]
            x = guided_step(
                eps3,
                x,
                sched,
                i,
                settings.guidance,
                settings.image_guidance,
                noise=step_noise,
                key=step_key,
            )
            yield x

    def decode(self, latents: mx.array, *, tiled: bool | None = None) -> mx.array:
        """Latents (scaled space) -> image ``(B, H, W, 3)`` in [0, 1]:
        ``clip(VAE.decode(latents / scaling_factor) / 2 + 1/2, 0, 1)``.

        ``tiled`` (default: ``low_memory``) decodes overlapping tiles (:meth:`decode_tiles`).
        """
        z = latents / self.vae.config.scaling_factor
        z = z.astype(self.vae.decoder.conv_in.weight.dtype)
        tiled = self.low_memory if tiled is None else tiled
        image = self.decode_tiles(z) if tiled else self.vae.decode(z)
        return from_model_output(image)  # clip(image / 2 + 1/2, 0, 1) in float32

    def decode_tiles(
        self,
        z: mx.array,
        tile: int | None = None,
        overlap: int | None = None,
    ) -> mx.array:
        """``VAE.decode(z)`` (unscaled latents ``(B, h, w, C)``) with the full-resolution part
        computed in overlapping tiles, each evaluated before the next, so that the decoder's
        large activations are those of one tile (see :func:`decode_in_tiles`)."""
        return decode_in_tiles(
            self.vae,
            z,
            tile=self.decode_tile if tile is None else tile,
            overlap=self.decode_overlap if overlap is None else overlap,
        )

    # -- everything ----------------------------------------------------------------------

    def generate(
        self,
        image: np.ndarray | mx.array,
        instruction: str,
        *,
        settings: SamplerSettings | None = None,
        key: mx.array | None = None,
        noise: InjectedNoise | None = None,
        progress: Progress | None = None,
        **fields: Any,
    ) -> PipelineResult:
        """Edit ``image`` (``(H, W, 3)`` in [0, 1]; H, W multiples of :attr:`vae_factor`)
        following ``instruction``; returns the edited image at the same size.

        Sampler settings: ``settings`` (default ``SamplerSettings()``: 20 steps, guidance 7.5,
        image guidance 1.5, euler_a, seed 0), with each keyword in ``fields`` (``steps``,
        ``guidance``, ``image_guidance``, ``scheduler``, ``seed``; None: not given) in place
        of its field (:func:`pbmlx.diffuse.settings.resolve`; another name is a TypeError);
        ``settings.size`` is
        not used (the image is already at working size). Randomness: ``noise`` if given, else
        ``key``, else ``mx.random.key(settings.seed)``. ``progress(done, steps)`` is called
        after each evaluated step. Peak memory is MLX's peak over this call (the counter is
        reset at its start).
        """
        settings = resolve(settings, **fields)
        image = mx.array(image) if not isinstance(image, mx.array) else image
        if image.ndim != 3 or image.shape[-1] != 3:
            raise PbmlxError(f"The image to edit must be (H, W, 3), not {tuple(image.shape)}.")
        H, W, _ = image.shape
        f = self.vae_factor
        if H % f or W % f or min(H, W) < f:
            raise PbmlxError(
                f"The working image is {W}x{H}; its sides must be positive multiples of {f}."
            )
        if noise is None and key is None:
            key = mx.random.key(settings.seed)
        mx.reset_peak_memory()
        seconds: dict[str, float] = {}

        t0 = time.perf_counter()
        text_states = self.encode_prompt(instruction)
        mx.eval(text_states)
        t1 = time.perf_counter()
        seconds["text_encode"] = t1 - t0

        image_latents = self.encode_image(to_model_input(image)[None])  # image * 2 - 1
        mx.eval(image_latents)
        t2 = time.perf_counter()
        seconds["image_encode"] = t2 - t1

        latents = None
        loop = self.denoise(
            text_states,
            image_latents,
            settings,
            key=None if noise is not None else key,
            noise=noise,
        )
        for i, latents in enumerate(loop):
            mx.eval(latents)
            if progress is not None:
                progress(i + 1, settings.steps)
        t3 = time.perf_counter()
        seconds["denoise"] = t3 - t2
        del text_states

        decoded = self.decode(latents)[0]
        out = np.array(decoded)  # (H, W, 3)
        t4 = time.perf_counter()
        seconds["decode"] = t4 - t3
        return PipelineResult(out, latents, seconds, int(mx.get_peak_memory()))
