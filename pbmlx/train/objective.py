"""The training objectives: InstructPix2Pix's noise-prediction loss and Diffusion-DPO.

Notation: ``z`` the edited image's latents (a sample of the VAE posterior, times the VAE's
``scaling_factor``), ``c_I`` the source image's latents (the posterior's mode, NOT scaled, as at
inference), ``c_T`` the instruction's text-encoder hidden states, ``c_0`` those of the empty
prompt, ``n ~ N(0, I)``, ``t`` uniform in ``[0, N)`` and ``a_t`` the training schedule's
``alphas_cumprod[t]``.

InstructPix2Pix (Brooks et al. 2023; diffusers' ``train_instruct_pix2pix.py``):

    x_t   = sqrt(a_t) z + sqrt(1 - a_t) n
    u     ~ U[0, 1) per example; d = the conditioning dropout (0.05)
    c_T' = c_0 if u < 2d else c_T                  (text dropped: u in [0, 2d))
    c_I' = 0 if d <= u < 3d else c_I               (image dropped: u in [d, 3d))
    loss  = mean((eps_theta([x_t, c_I'], t, c_T') - target)^2)

so each of "text only dropped" ``[0, d)``, "both dropped" ``[d, 2d)`` and "image only dropped"
``[2d, 3d)`` has probability ``d``. ``target`` is ``n`` for an epsilon-prediction model and
``sqrt(a_t) n - sqrt(1 - a_t) z`` for v-prediction. The mean runs over every element of the
batch.

Diffusion-DPO (Wallace et al. 2024), on a pair (edit ``w`` that passed, attempt ``l`` that
failed) of one source and instruction, with the same ``t`` and noise for both:

    e_m(x) = mean over elements of (eps_model(x_t) - target)^2, per example
    diff   = (e_theta(w) - e_ref(w)) - (e_theta(l) - e_ref(l))
    loss   = mean over pairs of -log sigmoid(-beta / 2 * diff)

where ``ref`` is the frozen starting model. The objectives take every random draw as an input,
so one step is reproducible from its inputs (and the PyTorch reference in the tests is fed the
same draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

DEFAULT_DROPOUT = 0.05
DEFAULT_DPO_BETA = 5000.0  # Wallace et al.'s beta for Stable Diffusion 1.5


@dataclass
class Batch:
    """One batch of training examples (NHWC latents, B examples)."""

    target_latents: mx.array  # z: (B, h, w, C), scaled
    image_latents: mx.array  # c_I: (B, h, w, C), unscaled mode
    text: mx.array  # c_T: (B, L, D)


@dataclass
class Draws:
    """The random draws of one step, explicit so that a step can be repeated exactly."""

    noise: mx.array  # n: like target_latents
    timesteps: mx.array  # t: (B,) int32
    dropout_u: mx.array  # u: (B,) float32 in [0, 1)


def draw(key: mx.array, shape: tuple[int, ...], num_train_timesteps: int) -> Draws:
    """The step's draws from one key: noise, timesteps and the dropout variable."""
    k_noise, k_t, k_u = mx.random.split(key, 3)
    b = shape[0]
    return Draws(
        noise=mx.random.normal(shape, key=k_noise),
        timesteps=mx.random.randint(0, num_train_timesteps, (b,), key=k_t).astype(mx.int32),
        dropout_u=mx.random.uniform(shape=(b,), key=k_u),
    )


def _bcast(v: mx.array, like: mx.array) -> mx.array:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def noisy_and_target(
    z: mx.array, noise: mx.array, t: mx.array, alphas_cumprod: mx.array, prediction_type: str
) -> tuple[mx.array, mx.array]:
    """``x_t`` and the regression target (see the module docstring)."""
    a = alphas_cumprod[t]
    sa, s1 = _bcast(mx.sqrt(a), z), _bcast(mx.sqrt(1.0 - a), z)
    x_t = sa * z + s1 * noise
    if prediction_type == "epsilon":
        return x_t, noise
    if prediction_type == "v_prediction":
        return x_t, sa * noise - s1 * z
    raise ValueError(f"prediction type {prediction_type!r} is not trainable here")


def conditioning(
    batch: Batch, null_text: mx.array, u: mx.array, dropout: float
) -> tuple[mx.array, mx.array]:
    """``(c_T', c_I')``: the text and image conditioning after dropout."""
    drop_text = _bcast(u < 2 * dropout, batch.text)
    text = mx.where(drop_text, mx.broadcast_to(null_text, batch.text.shape), batch.text)
    keep_image = 1.0 - ((u >= dropout) & (u < 3 * dropout)).astype(batch.image_latents.dtype)
    return text, batch.image_latents * _bcast(keep_image, batch.image_latents)


def ip2p_loss(
    unet: nn.Module,
    batch: Batch,
    draws: Draws,
    null_text: mx.array,
    alphas_cumprod: mx.array,
    *,
    dropout: float = DEFAULT_DROPOUT,
    prediction_type: str = "epsilon",
) -> mx.array:
    """InstructPix2Pix's training loss (module docstring), a float32 scalar."""
    x_t, target = noisy_and_target(
        batch.target_latents, draws.noise, draws.timesteps, alphas_cumprod, prediction_type
    )
    text, image = conditioning(batch, null_text, draws.dropout_u, dropout)
    dtype = unet.conv_in.weight.dtype
    model_in = mx.concatenate([x_t, image], axis=-1).astype(dtype)
    pred = unet(model_in, draws.timesteps, text.astype(dtype)).astype(mx.float32)
    return mx.mean(mx.square(pred - target.astype(mx.float32)))


def per_example_error(
    unet: nn.Module, x_t: mx.array, image: mx.array, t: mx.array, text: mx.array, target: mx.array
) -> mx.array:
    """``mean((eps(x_t) - target)^2)`` over each example's elements, shape (B,)."""
    dtype = unet.conv_in.weight.dtype
    pred = unet(mx.concatenate([x_t, image], axis=-1).astype(dtype), t, text.astype(dtype))
    err = mx.square(pred.astype(mx.float32) - target.astype(mx.float32))
    return mx.mean(err.reshape(err.shape[0], -1), axis=1)


def dpo_loss(
    unet: nn.Module,
    reference_errors: tuple[mx.array, mx.array],
    winner: Batch,
    loser_latents: mx.array,
    draws: Draws,
    alphas_cumprod: mx.array,
    *,
    beta: float = DEFAULT_DPO_BETA,
    prediction_type: str = "epsilon",
) -> mx.array:
    """Diffusion-DPO's loss (module docstring). ``reference_errors`` are the frozen model's
    ``(e_ref(w), e_ref(l))``, computed by the caller outside the gradient (see
    :func:`dpo_reference_errors`); ``winner`` holds the source and instruction, shared by
    the loser."""
    t = draws.timesteps
    xw, tw = noisy_and_target(
        winner.target_latents, draws.noise, t, alphas_cumprod, prediction_type
    )
    xl, tl = noisy_and_target(loser_latents, draws.noise, t, alphas_cumprod, prediction_type)
    ew = per_example_error(unet, xw, winner.image_latents, t, winner.text, tw)
    el = per_example_error(unet, xl, winner.image_latents, t, winner.text, tl)
    rw, rl = reference_errors
    diff = (ew - rw) - (el - rl)
    return mx.mean(-nn.log_sigmoid(-0.5 * beta * diff))


def dpo_reference_errors(
    reference: nn.Module,
    winner: Batch,
    loser_latents: mx.array,
    draws: Draws,
    alphas_cumprod: mx.array,
    prediction_type: str = "epsilon",
) -> tuple[mx.array, mx.array]:
    """The frozen model's per-example errors on the winner and the loser (no gradient)."""
    t = draws.timesteps
    xw, tw = noisy_and_target(
        winner.target_latents, draws.noise, t, alphas_cumprod, prediction_type
    )
    xl, tl = noisy_and_target(loser_latents, draws.noise, t, alphas_cumprod, prediction_type)
    ew = per_example_error(reference, xw, winner.image_latents, t, winner.text, tw)
    el = per_example_error(reference, xl, winner.image_latents, t, winner.text, tl)
    return mx.stop_gradient(ew), mx.stop_gradient(el)


def schedule_table(scheduler_config: dict) -> tuple[mx.array, int, str]:
    """``(alphas_cumprod, num_train_timesteps, prediction_type)`` of a scheduler config, the
    training schedule (float32, diffusers' table bit for bit)."""
    from pbmlx.diffuse.schedulers import SchedulerConfig, alphas_cumprod

    cfg = SchedulerConfig.from_dict(scheduler_config)
    table = alphas_cumprod(cfg)
    return (
        mx.array(np.asarray(table, dtype=np.float32)),
        cfg.num_train_timesteps,
        (cfg.prediction_type),
    )
