"""Samplers of the reverse diffusion: Euler-Ancestral (the default), Euler and DDIM.

Each is configured from a checkpoint's ``scheduler/scheduler_config.json`` (any diffusers
scheduler's config: unknown keys are ignored, keys a scheduler lacks take its own default) and
reproduces diffusers' ``EulerAncestralDiscreteScheduler`` / ``EulerDiscreteScheduler`` /
``DDIMScheduler`` for the same config: the same timesteps, the same sigmas, the same update.
Latents are MLX arrays of any layout (pbmlx uses NHWC); the schedule is kept in NumPy.

Noise schedule (training), t = 0 .. N-1, N = ``num_train_timesteps``:

    beta_t   = linspace(beta_start, beta_end, N)                      "linear"
             = linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2     "scaled_linear" (SD 1.x)
             = 1 - abar(t+1) / abar(t), abar(u) = cos((u/N + 0.008) / 1.008 * pi/2) ** 2,
               capped at 0.999                                        "squaredcos_cap_v2"
    alpha_bar_t = prod_{s <= t} (1 - beta_s)
    sigma_t     = sqrt((1 - alpha_bar_t) / alpha_bar_t)               (x_t = x_0 + sigma_t * eps)

betas are float32 and alpha_bar is rounded to float32, as diffusers stores them, so that the
sigmas agree with diffusers' to float32 rounding (a float64 schedule differs by up to 1e-4
relative at the smallest sigmas, where 1 - alpha_bar is tiny).

Inference timesteps for n steps (``timestep_spacing``):

    "linspace": linspace(0, N-1, n) reversed (fractional for Euler, rounded for DDIM)
    "leading":  (arange(n) * (N // n)) reversed, + steps_offset
    "trailing": round(arange(N, 0, -N/n)) - 1

Euler family (sigma space): ``sigmas[i]`` = sigma_t interpolated linearly in t at
``timesteps[i]``, plus a final 0; the model sees ``x / sqrt(sigma_i**2 + 1)``. DDIM works in
alpha_bar space and the model sees ``x`` unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, TypeVar

import mlx.core as mx
import numpy as np

from pbmlx.errors import PbmlxError

DEFAULT_SCHEDULER = "euler_a"
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
MAX_BETA = 0.999  # cap of the cosine schedule's betas (diffusers' betas_for_alpha_bar)

# Config keys whose other values change the numerics in ways pbmlx does not implement: a config
# that sets one of them to anything else is refused rather than sampled wrongly.
_ONLY_SUPPORTED = {
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "rescale_betas_zero_snr": False,
    "thresholding": False,
    "interpolation_type": "linear",
    "timestep_type": "discrete",
    "final_sigmas_type": "zero",
}


@dataclass(frozen=True)
class SchedulerConfig:
    """The scheduler settings pbmlx reads from ``scheduler_config.json`` (diffusers' keys)."""

    num_train_timesteps: int = 1000  # N: length of the training noise schedule
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"  # one of BETA_SCHEDULES
    trained_betas: tuple[float, ...] | None = None  # explicit betas, overriding the schedule
    prediction_type: str = "epsilon"  # what the UNet predicts: eps, or v = a*eps - s*x0
    timestep_spacing: str | None = None  # None: each scheduler's diffusers default
    steps_offset: int = 0  # added to "leading" timesteps (SD 1.x checkpoints use 1)
    set_alpha_to_one: bool = True  # DDIM: alpha_bar after the last step is 1 (else alpha_bar_0)
    clip_sample: bool = True  # DDIM: clamp the predicted x0 to +-clip_sample_range
    clip_sample_range: float = 1.0

    @classmethod
    def from_dict(cls, config: dict, source: str = "scheduler config") -> SchedulerConfig:
        """Read a raw ``scheduler_config.json`` dict; unknown keys are ignored.

        Raises :class:`PbmlxError` naming ``source`` and the key when a value is invalid or
        asks for a feature pbmlx does not implement (Karras sigmas, zero-SNR rescaling, ...).
        """
        if not isinstance(config, dict):
            raise PbmlxError(f"The {source} is not a JSON object.")
        for key, supported in _ONLY_SUPPORTED.items():
            value = config.get(key)
            if value is not None and value != supported:
                raise PbmlxError(
                    f"The {source} sets {key}={value!r}; pbmlx supports only {supported!r}."
                )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in known and v is not None}
        try:
            if "trained_betas" in values:
                values["trained_betas"] = tuple(float(b) for b in values["trained_betas"])
            parsed = cls(**values)
            parsed._validate(source)
        except (TypeError, ValueError) as e:  # e.g. a string where a number belongs
            raise PbmlxError(f"The {source} is malformed ({e}).") from e
        return parsed

    def _validate(self, source: str) -> None:
        n = self.num_train_timesteps
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise PbmlxError(f"The {source} has num_train_timesteps={n!r}; it must be an int >= 2.")
        checks = (
            ("beta_schedule", self.beta_schedule, BETA_SCHEDULES),
            ("prediction_type", self.prediction_type, PREDICTION_TYPES),
        )
        for key, value, allowed in checks:
            if value not in allowed:
                raise PbmlxError(f"The {source} has {key}={value!r}; pbmlx supports {allowed}.")
        spacing = self.timestep_spacing
        if spacing is not None and spacing not in TIMESTEP_SPACINGS:
            raise PbmlxError(
                f"The {source} has timestep_spacing={spacing!r}; pbmlx supports {TIMESTEP_SPACINGS}."
            )
        if self.trained_betas is not None and len(self.trained_betas) != n:
            raise PbmlxError(
                f"The {source} has {len(self.trained_betas)} trained_betas for "
                f"num_train_timesteps={n}."
            )
        uses_range = self.trained_betas is None and self.beta_schedule != "squaredcos_cap_v2"
        if uses_range and not 0 < self.beta_start <= self.beta_end < 1:
            raise PbmlxError(
                f"The {source} has beta_start={self.beta_start!r}, beta_end={self.beta_end!r}; "
                "they must satisfy 0 < beta_start <= beta_end < 1."
            )


def betas(config: SchedulerConfig) -> np.ndarray:
    """The training betas, float32 ``(N,)`` (formulas in the module docstring)."""
    n = config.num_train_timesteps
    if config.trained_betas is not None:
        return np.asarray(config.trained_betas, dtype=np.float32)
    if config.beta_schedule == "linear":
        return np.linspace(config.beta_start, config.beta_end, n).astype(np.float32)
    if config.beta_schedule == "scaled_linear":
        root = np.linspace(config.beta_start**0.5, config.beta_end**0.5, n).astype(np.float32)
        return root * root  # squared in float32, as diffusers does
    # squaredcos_cap_v2, in float64 then rounded.
    u = np.arange(n + 1, dtype=np.float64) / n
    abar = np.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.minimum(1 - abar[1:] / abar[:-1], MAX_BETA).astype(np.float32)


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), float32 ``(N,)``.

    The running product is taken in float64 and rounded once per entry, which is what
    PyTorch's CPU ``cumprod`` does for float32: given the same betas, the table is diffusers'
    bit for bit.
    """
    alphas = np.float32(1) - betas(config)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def spaced_timesteps(config: SchedulerConfig, spacing: str, n: int) -> np.ndarray:
    """The n inference timesteps, descending, float64 (possibly fractional for "linspace")."""
    total = config.num_train_timesteps
    if spacing == "linspace":
        return np.linspace(0, total - 1, n)[::-1].copy()
    if spacing == "leading":
        return (np.arange(n) * (total // n)).round()[::-1] + float(config.steps_offset)
    # trailing: same float arange as diffusers so that rounding ties fall the same way.
    return np.arange(total, 0, -total / n).round() - 1


def _check_steps(config: SchedulerConfig, n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= config.num_train_timesteps:
        raise PbmlxError(
            f"Number of steps {n!r} must be an int from 1 to {config.num_train_timesteps}."
        )


def _noise_for(x: mx.array, key: mx.array | None, noise: mx.array | None) -> mx.array:
    """Standard normal noise shaped like ``x``: the caller's, or drawn from ``key``."""
    if (key is None) == (noise is None):
        raise ValueError("step() needs exactly one of key= (an mx.random key) or noise=.")
    if noise is not None:
        if tuple(noise.shape) != tuple(x.shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, latents {tuple(x.shape)}.")
        return noise.astype(mx.float32)
    return mx.random.normal(x.shape, dtype=mx.float32, key=key)


@dataclass(frozen=True)
class StepCoefficients:
    """The scalars of one :meth:`Scheduler.step`, float32 values exactly as ``step`` uses them,
    so that a fused kernel given them performs the same float32 operations (eps: the model
    output, z: the noise, both elementwise).

    ``family == "sigma"`` (Euler, Euler-Ancestral), ``values`` keys
    ``sigma, dt, noise_std, x0_eps, x0_div``::

        x0 = x0_eps * eps + x / x0_div
        x' = x + (x - x0) / sigma * dt  [+ noise_std * z]

    ``family == "ddim"``, keys
    ``x0_x, x0_eps, x0_div, hat_eps, hat_x, clip, clip_range, a_x0, a_dir, noise_std``::

        x0     = (x0_x * x - x0_eps * eps) / x0_div,  clamped to +-clip_range if clip != 0
        eps^   = hat_eps * eps + hat_x * x
        x'     = a_x0 * x0 + a_dir * eps^  [+ noise_std * z]

    The bracketed term is added iff ``noise`` (then ``step`` needs ``key=`` or ``noise=``).
    """

    family: str
    values: dict[str, float]
    noise: bool


_S = TypeVar("_S", bound="Scheduler")


class Scheduler:
    """Common interface: ``set_timesteps(n)`` then, for i in range(n), run the model on
    ``scale_model_input(x, i)`` at ``timesteps[i]`` and take ``x = step(eps, i, x, key=k_i)``.

    Start from ``x = init_noise_sigma * N(0, I)``. ``step`` computes in float32 and returns the
    model output's dtype (diffusers' rule).
    """

    name: ClassVar[str]
    default_spacing: ClassVar[str]
    stochastic: bool = False  # does step() draw noise (needs key= or noise=)?

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.spacing = config.timestep_spacing or self.default_spacing
        self.alphas_cumprod = alphas_cumprod(config)  # (N,) float32
        self.num_inference_steps = 0
        self.timesteps = np.zeros(0, dtype=np.float32)

    @classmethod
    def from_config(
        cls: type[_S], config: dict | SchedulerConfig, source: str = "scheduler config"
    ) -> _S:
        """Build from a raw ``scheduler_config.json`` dict (or a parsed config)."""
        if not isinstance(config, SchedulerConfig):
            config = SchedulerConfig.from_dict(config, source)
        return cls(config)

    def set_timesteps(self, num_inference_steps: int) -> None:
        raise NotImplementedError

    @property
    def init_noise_sigma(self) -> float:
        raise NotImplementedError

    def scale_model_input(self, x: mx.array, step_index: int) -> mx.array:
        raise NotImplementedError

    def step(
        self,
        eps: mx.array,
        step_index: int,
        x: mx.array,
        *,
        key: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> mx.array:
        raise NotImplementedError

    def step_coefficients(self, step_index: int) -> StepCoefficients:
        """The per-step scalars of :meth:`step` (see :class:`StepCoefficients`)."""
        raise NotImplementedError

    def timestep(self, step_index: int) -> float:
        """The timestep the model is conditioned on at ``step_index``."""
        self._check_index(step_index)
        return float(self.timesteps[step_index])

    def _check_index(self, step_index: int) -> None:
        if not 0 <= step_index < self.num_inference_steps:
            raise IndexError(
                f"step_index {step_index} is outside 0..{self.num_inference_steps - 1}"
                " (call set_timesteps first)."
            )


class _SigmaScheduler(Scheduler):
    """Shared part of the Euler samplers: the sigma schedule and the input scaling."""

    default_spacing = "linspace"

    def __init__(self, config: SchedulerConfig) -> None:
        super().__init__(config)
        a = self.alphas_cumprod
        self.train_sigmas = np.sqrt((np.float32(1) - a) / a)  # (N,) float32, sigma_t
        self.sigmas = np.zeros(1, dtype=np.float32)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """timesteps (n,) float32 and sigmas (n + 1,) float32, the last sigma 0."""
        _check_steps(self.config, num_inference_steps)
        t = spaced_timesteps(self.config, self.spacing, num_inference_steps).astype(np.float32)
        grid = np.arange(self.config.num_train_timesteps)
        sigmas = np.interp(t.astype(np.float64), grid, self.train_sigmas)
        self.timesteps = t
        self.sigmas = np.append(sigmas, 0.0).astype(np.float32)
        self.num_inference_steps = num_inference_steps

    @property
    def init_noise_sigma(self) -> float:
        """Std of the starting noise: sigma_max, or sqrt(sigma_max**2 + 1) for "leading"."""
        top = self.sigmas.max()
        if self.spacing == "leading":
            return float(np.sqrt(top * top + np.float32(1)))
        return float(top)

    def scale_model_input(self, x: mx.array, step_index: int) -> mx.array:
        """x / sqrt(sigma_i**2 + 1): the model was trained on unit-variance inputs."""
        self._check_index(step_index)
        s = self.sigmas[step_index]
        return x / float(np.sqrt(s * s + np.float32(1)))

    def _x0_coefficients(self, sigma: np.float32) -> tuple[np.float32, np.float32]:
        """(c_eps, c_div) with the predicted x0 = c_eps * eps + x / c_div (float32)."""
        if self.config.prediction_type == "epsilon":
            return -sigma, np.float32(1)
        # v-prediction: x0 = -sigma / sqrt(sigma^2 + 1) * v + x / (sigma^2 + 1)
        s2p1 = sigma * sigma + np.float32(1)
        return -sigma / np.sqrt(s2p1), s2p1

    def _denoised(self, eps: mx.array, sigma: np.float32, x: mx.array) -> mx.array:
        """Predicted x0 at noise level sigma (the model output is eps or v)."""
        if self.config.prediction_type == "epsilon":
            # = c_eps * eps + x / 1 to the bit (negation and division by 1 are exact).
            return x - float(sigma) * eps
        c_eps, c_div = self._x0_coefficients(sigma)
        return eps * float(c_eps) + x / float(c_div)

    def _step_sigmas(self, step_index: int) -> tuple[np.float32, np.float32, np.float32]:
        """(sigma, the sigma the deterministic part steps to, std of the added noise)."""
        raise NotImplementedError

    def step_coefficients(self, step_index: int) -> StepCoefficients:
        self._check_index(step_index)
        sigma, target, up = self._step_sigmas(step_index)
        c_eps, c_div = self._x0_coefficients(sigma)
        values = {"sigma": sigma, "dt": target - sigma, "noise_std": up}
        values |= {"x0_eps": c_eps, "x0_div": c_div}
        return StepCoefficients("sigma", {k: float(v) for k, v in values.items()}, bool(up > 0))


class EulerAncestralScheduler(_SigmaScheduler):
    """Euler-Ancestral (k-diffusion's ``sample_euler_ancestral``); the default sampler.

    From sigma to sigma' = sigmas[i + 1], with x0 the denoised prediction:

        sigma_up   = sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)
        sigma_down = sqrt(sigma'^2 - sigma_up^2)
        x' = x + (x - x0) / sigma * (sigma_down - sigma) + sigma_up * z,   z ~ N(0, I)

    z comes from ``key`` (``mx.random.normal``) or is passed as ``noise``.
    """

    name = "euler_a"
    stochastic = True

    def _step_sigmas(self, step_index: int) -> tuple[np.float32, np.float32, np.float32]:
        """(sigma, sigma_down, sigma_up), float32."""
        sigma, sigma_next = self.sigmas[step_index], self.sigmas[step_index + 1]
        s2, n2 = sigma * sigma, sigma_next * sigma_next
        sigma_up = np.sqrt(n2 * (s2 - n2) / s2)
        sigma_down = np.sqrt(max(n2 - sigma_up * sigma_up, np.float32(0)))
        return sigma, sigma_down, sigma_up

    def step(
        self,
        eps: mx.array,
        step_index: int,
        x: mx.array,
        *,
        key: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> mx.array:
        self._check_index(step_index)
        sigma, sigma_down, sigma_up = self._step_sigmas(step_index)

        x = x.astype(mx.float32)
        x0 = self._denoised(eps, sigma, x)
        derivative = (x - x0) / float(sigma)
        x_prev = x + derivative * float(sigma_down - sigma)
        if sigma_up > 0:
            x_prev = x_prev + _noise_for(x, key, noise) * float(sigma_up)
        return x_prev.astype(eps.dtype)


class EulerScheduler(_SigmaScheduler):
    """Euler (Karras et al. 2022, Algorithm 2 without churn); deterministic.

    x' = x + (x - x0) / sigma * (sigma' - sigma)
    """

    name = "euler"

    def _step_sigmas(self, step_index: int) -> tuple[np.float32, np.float32, np.float32]:
        """(sigma, sigma_next, 0), float32."""
        return self.sigmas[step_index], self.sigmas[step_index + 1], np.float32(0)

    def step(
        self,
        eps: mx.array,
        step_index: int,
        x: mx.array,
        *,
        key: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> mx.array:
        self._check_index(step_index)
        sigma, sigma_next, _ = self._step_sigmas(step_index)
        x = x.astype(mx.float32)
        x0 = self._denoised(eps, sigma, x)
        derivative = (x - x0) / float(sigma)
        return (x + derivative * float(sigma_next - sigma)).astype(eps.dtype)


class DDIMScheduler(Scheduler):
    """DDIM (Song et al. 2021, eq. 12), deterministic for ``eta = 0`` (the pipeline default).

    With a = alpha_bar_t, a' = alpha_bar at t' = t - N // n (1, or alpha_bar_0 per
    ``set_alpha_to_one``, once t' < 0):

        x0     = (x - sqrt(1 - a) eps) / sqrt(a)           (clamped if clip_sample)
        std    = eta * sqrt((1 - a') / (1 - a) * (1 - a / a'))
        x'     = sqrt(a') x0 + sqrt(1 - a' - std^2) eps + std * z
    """

    name = "ddim"
    default_spacing = "leading"

    def __init__(self, config: SchedulerConfig, eta: float = 0.0) -> None:
        super().__init__(config)
        if eta < 0:
            raise PbmlxError(f"DDIM eta {eta!r} must be >= 0.")
        self.eta = float(eta)
        self.stochastic = self.eta > 0
        self.final_alpha_cumprod = (
            np.float32(1) if config.set_alpha_to_one else self.alphas_cumprod[0]
        )
        self.timesteps = np.zeros(0, dtype=np.int64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """timesteps (n,) int64, descending."""
        _check_steps(self.config, num_inference_steps)
        t = spaced_timesteps(self.config, self.spacing, num_inference_steps)
        if self.spacing == "linspace":
            t = t.round()
        self.timesteps = t.astype(np.int64)
        self.num_inference_steps = num_inference_steps

    @property
    def init_noise_sigma(self) -> float:
        return 1.0

    def scale_model_input(self, x: mx.array, step_index: int) -> mx.array:
        self._check_index(step_index)
        return x

    def _step_scalars(self, step_index: int) -> dict[str, np.float32]:
        """sqrt(a), sqrt(1 - a), sqrt(a'), sqrt(1 - a' - std^2) and std, float32."""
        t = int(self.timesteps[step_index])
        # diffusers steps back by N // n whatever the spacing; kept for parity.
        t_prev = t - self.config.num_train_timesteps // self.num_inference_steps
        a = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha_cumprod
        b, b_prev = np.float32(1) - a, np.float32(1) - a_prev
        variance = (b_prev / b) * (np.float32(1) - a / a_prev)
        std = np.float32(self.eta) * np.sqrt(variance)
        return {
            "sqrt_a": np.sqrt(a),
            "sqrt_b": np.sqrt(b),
            "sqrt_a_prev": np.sqrt(a_prev),
            "c_dir": np.sqrt(np.float32(1) - a_prev - std * std),
            "std": std,
        }

    def step_coefficients(self, step_index: int) -> StepCoefficients:
        self._check_index(step_index)
        s = self._step_scalars(step_index)
        one, zero = np.float32(1), np.float32(0)
        if self.config.prediction_type == "epsilon":  # x0 = (x - sqrt_b eps) / sqrt_a, eps^ = eps
            x0 = {"x0_x": one, "x0_eps": s["sqrt_b"], "x0_div": s["sqrt_a"]}
            hat = {"hat_eps": one, "hat_x": zero}
        else:  # x0 = sqrt_a x - sqrt_b v, eps^ = sqrt_a v + sqrt_b x
            x0 = {"x0_x": s["sqrt_a"], "x0_eps": s["sqrt_b"], "x0_div": one}
            hat = {"hat_eps": s["sqrt_a"], "hat_x": s["sqrt_b"]}
        clip = {
            "clip": float(self.config.clip_sample),
            "clip_range": float(np.float32(self.config.clip_sample_range)),
        }
        update = {"a_x0": s["sqrt_a_prev"], "a_dir": s["c_dir"], "noise_std": s["std"]}
        values = {k: float(v) for k, v in (x0 | hat | clip | update).items()}
        return StepCoefficients("ddim", values, self.eta > 0)

    def step(
        self,
        eps: mx.array,
        step_index: int,
        x: mx.array,
        *,
        key: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> mx.array:
        self._check_index(step_index)
        s = self._step_scalars(step_index)

        x = x.astype(mx.float32)
        if self.config.prediction_type == "epsilon":
            x0 = (x - float(s["sqrt_b"]) * eps) / float(s["sqrt_a"])
            eps_hat = eps
        else:  # v-prediction
            x0 = float(s["sqrt_a"]) * x - float(s["sqrt_b"]) * eps
            eps_hat = float(s["sqrt_a"]) * eps + float(s["sqrt_b"]) * x
        if self.config.clip_sample:
            r = self.config.clip_sample_range
            x0 = mx.clip(x0, -r, r)

        direction = float(s["c_dir"]) * eps_hat
        x_prev = float(s["sqrt_a_prev"]) * x0 + direction
        if self.eta > 0:
            x_prev = x_prev + float(s["std"]) * _noise_for(x, key, noise)
        return x_prev.astype(eps.dtype)


SCHEDULERS: dict[str, type[Scheduler]] = {
    EulerAncestralScheduler.name: EulerAncestralScheduler,
    EulerScheduler.name: EulerScheduler,
    DDIMScheduler.name: DDIMScheduler,
}


def make_scheduler(
    name: str, config: dict | SchedulerConfig, source: str = "scheduler config"
) -> Scheduler:
    """The scheduler called ``name`` (one of :data:`SCHEDULERS`) configured from ``config``."""
    if name not in SCHEDULERS:
        raise PbmlxError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")
    return SCHEDULERS[name].from_config(config, source)
