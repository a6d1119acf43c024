"""pbmlx's schedulers against diffusers' (the reference) and against closed-form oracles.

Tolerances and why:
- timesteps: identical (they are built with the same NumPy expressions);
- sigmas, alpha_bar, init_noise_sigma: 1e-6 relative. Both keep float32 betas, but diffusers
  makes them with torch.linspace, whose float32 rounding differs from NumPy's in the last bit
  on some entries (and with the CPU's SIMD width); measured: <= 3e-7 relative;
- trajectories (float32, a fixed fake eps, the same noise fed to both): 1e-5 absolute on the
  unit-scale quantities (the model input x / sqrt(sigma^2 + 1) and the final latents), and
  1e-5 relative to max|x| on the raw latents, which reach ~50 at sigma_max ~14.6 where a float32
  ulp is ~4e-6 and the 3e-7 sigma rounding alone moves them by ~1e-5. Measured: <= 4e-6 on the
  unit-scale quantities, <= 2e-6 relative on the raw latents.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

# isort: split
import mlx.core as mx

from pbmlx.diffuse.schedulers import (
    DDIMScheduler,
    EulerAncestralScheduler,
    EulerScheduler,
    SchedulerConfig,
    make_scheduler,
)
from pbmlx.errors import PbmlxError

# timbrooks/instruct-pix2pix scheduler/scheduler_config.json (public configuration).
IP2P_CONFIG = {
    "_class_name": "EulerAncestralDiscreteScheduler",
    "_diffusers_version": "0.12.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (a PNDM config: Euler and
# DDIM take the keys they know and their own defaults for the rest, e.g. the spacing).
SD15_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
CONFIGS = {
    "ip2p": IP2P_CONFIG,
    "sd15": SD15_CONFIG,
    "ip2p-leading": {**IP2P_CONFIG, "timestep_spacing": "leading"},
    "ip2p-trailing": {**IP2P_CONFIG, "timestep_spacing": "trailing", "steps_offset": 0},
    "linear-linspace": {"beta_schedule": "linear", "timestep_spacing": "linspace"},
    "cosine-vpred": {
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
    },
    "trained-betas": {
        "num_train_timesteps": 500,
        "trained_betas": np.linspace(1e-4, 0.03, 500).tolist(),
        "timestep_spacing": "leading",
        "set_alpha_to_one": True,
    },
    "ddim-clip": {**SD15_CONFIG, "clip_sample": True, "clip_sample_range": 1.5},
}
OURS = {"euler_a": EulerAncestralScheduler, "euler": EulerScheduler, "ddim": DDIMScheduler}
REFERENCE = {
    "euler_a": "EulerAncestralDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
}
STEP_COUNTS = [1, 2, 3, 7, 10, 20, 25, 50, 100, 999, 1000]


def _reference(name: str, config: dict):
    diffusers = pytest.importorskip("diffusers")
    return getattr(diffusers, REFERENCE[name]).from_config(config)


# -- schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("name", list(OURS))
def test_schedule_matches_diffusers(name, config_name):
    config = CONFIGS[config_name]
    ours = OURS[name].from_config(config)
    ref = _reference(name, config)
    np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=1e-6, atol=0)
    for n in STEP_COUNTS:
        if n > config.get("num_train_timesteps", 1000):
            continue
        ours.set_timesteps(n)
        ref.set_timesteps(n)
        want_t = ref.timesteps.numpy()
        assert ours.timesteps.dtype == want_t.dtype, n
        np.testing.assert_array_equal(ours.timesteps, want_t, err_msg=f"n={n}")
        np.testing.assert_allclose(
            ours.init_noise_sigma, float(ref.init_noise_sigma), rtol=1e-6, err_msg=f"n={n}"
        )
        if name != "ddim":
            want_s = ref.sigmas.numpy()
            assert ours.sigmas.dtype == np.float32 and ours.sigmas.shape == want_s.shape
            np.testing.assert_allclose(ours.sigmas, want_s, rtol=1e-6, atol=0, err_msg=f"n={n}")


# -- trajectories ----------------------------------------------------------------------------------

TRAJECTORIES = [
    ("euler_a", "ip2p", 20, 0.0),  # the InstructPix2Pix default
    ("euler_a", "ip2p", 4, 0.0),
    ("euler_a", "ip2p-leading", 10, 0.0),
    ("euler_a", "cosine-vpred", 12, 0.0),
    ("euler", "sd15", 20, 0.0),
    ("euler", "ip2p-trailing", 7, 0.0),
    ("euler", "cosine-vpred", 12, 0.0),
    ("ddim", "sd15", 20, 0.0),
    ("ddim", "ip2p-trailing", 9, 0.0),
    ("ddim", "ddim-clip", 10, 0.0),
    ("ddim", "sd15", 10, 0.7),  # eta > 0: stochastic DDIM
    ("ddim", "cosine-vpred", 12, 0.0),
]


def _nhwc(t) -> mx.array:
    return mx.array(t.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize(("name", "config_name", "steps", "eta"), TRAJECTORIES)
def test_trajectory_matches_diffusers(name, config_name, steps, eta):
    """Step by step, with eps(x_in, t) = 0.9 x_in + 0.1 c (a fixed fake denoiser) on each side.

    diffusers draws its noise from a torch generator; the same draws (NCHW -> NHWC) are fed to
    pbmlx as ``noise=``.
    """
    torch = pytest.importorskip("torch")
    config = CONFIGS[config_name]
    ref = _reference(name, config)
    ours = OURS[name].from_config(config)
    if name == "ddim":
        ours = DDIMScheduler(SchedulerConfig.from_dict(config), eta=eta)
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)

    shape = (2, 4, 12, 10)  # NCHW for diffusers; non-square so a transposition would show
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    c = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    gen_ref = torch.Generator().manual_seed(3)
    gen_ours = torch.Generator().manual_seed(3)
    extra = {"eta": eta} if name == "ddim" else {}

    x_ref = z * ref.init_noise_sigma
    x = _nhwc(z) * ours.init_noise_sigma
    c_ours = _nhwc(c)
    for i, t in enumerate(ref.timesteps):
        assert ours.timestep(i) == float(t)
        in_ref = ref.scale_model_input(x_ref, t)
        x_ref = ref.step(
            0.9 * in_ref + 0.1 * c, t, x_ref, generator=gen_ref, return_dict=False, **extra
        )[0]

        x_in = ours.scale_model_input(x, i)
        noise = None
        if ours.stochastic:
            noise = _nhwc(torch.randn(shape, generator=gen_ours))
        x = ours.step(0.9 * x_in + 0.1 * c_ours, i, x, noise=noise)

        want_in = in_ref.permute(0, 2, 3, 1).numpy()
        want = x_ref.permute(0, 2, 3, 1).numpy()
        assert x.dtype == mx.float32 and tuple(x.shape) == want.shape
        assert np.abs(np.array(x_in) - want_in).max() <= 1e-5, i
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(np.array(x) - want).max() <= 1e-5 * scale, i
    assert np.abs(np.array(x) - want).max() <= 1e-5


# -- closed-form oracles (no diffusers needed) ------------------------------------------------------


def _data(seed: int, shape=(1, 6, 5, 4)) -> tuple[mx.array, mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    return tuple(mx.array(rng.standard_normal(shape).astype(np.float32)) for _ in range(3))


@pytest.mark.parametrize("config_name", ["ip2p", "ip2p-leading", "linear-linspace"])
def test_euler_is_exact_for_a_perfect_denoiser(config_name):
    """x = x0 + sigma n and eps = n: Euler lands on x0 + sigma' n (the ODE is linear in sigma)."""
    sched = EulerScheduler.from_config(CONFIGS[config_name])
    sched.set_timesteps(10)
    x0, n, _ = _data(0)
    for i in range(10):
        s, s_next = (float(v) for v in sched.sigmas[i : i + 2])
        x = x0 + s * n
        assert np.allclose(np.array(sched.step(n, i, x)), np.array(x0 + s_next * n), atol=2e-5)


def test_euler_ancestral_splits_the_variance():
    """sigma_up^2 + sigma_down^2 = sigma'^2; with eps = n the step is x0 + sigma_down n + sigma_up z."""
    sched = EulerAncestralScheduler.from_config(IP2P_CONFIG)
    sched.set_timesteps(20)
    x0, n, z = _data(1)
    for i in range(20):
        s, s_next = (np.float64(v) for v in sched.sigmas[i : i + 2])
        up = np.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
        down = np.sqrt(s_next**2 - up**2)
        got = sched.step(n, i, x0 + float(s) * n, noise=z)
        want = np.array(x0) + down * np.array(n) + up * np.array(z)
        assert np.allclose(np.array(got), want, atol=3e-5), i
    assert sched.sigmas[-1] == 0.0


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_is_exact_for_a_perfect_denoiser(spacing):
    """x_t = sqrt(a) x0 + sqrt(1-a) n and eps = n: DDIM (eta 0) gives sqrt(a') x0 + sqrt(1-a') n."""
    sched = DDIMScheduler.from_config({**SD15_CONFIG, "timestep_spacing": spacing})
    sched.set_timesteps(10)
    x0, n, _ = _data(2)
    a_bar = sched.alphas_cumprod.astype(np.float64)
    for i in range(10):
        t = int(sched.timesteps[i])
        t_prev = t - 1000 // 10
        a, a_prev = a_bar[t], (a_bar[t_prev] if t_prev >= 0 else a_bar[0])
        x = float(np.sqrt(a)) * x0 + float(np.sqrt(1 - a)) * n
        want = np.sqrt(a_prev) * np.array(x0) + np.sqrt(1 - a_prev) * np.array(n)
        assert np.allclose(np.array(sched.step(n, i, x)), want, atol=2e-5), i


def test_sigmas_follow_the_formula():
    """sigma_t = sqrt((1 - abar_t) / abar_t), abar from the float64 scaled-linear betas: 1e-4 rel
    (float32 betas move the smallest sigmas by up to ~1e-5 relative)."""
    sched = EulerScheduler.from_config(IP2P_CONFIG)
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    abar = np.cumprod(1 - betas)
    sigma = np.sqrt((1 - abar) / abar)
    np.testing.assert_allclose(sched.train_sigmas, sigma, rtol=1e-4)
    sched.set_timesteps(1000)
    np.testing.assert_allclose(sched.sigmas[:-1], sigma[::-1], rtol=1e-4)


# -- seeds, dtypes, API ------------------------------------------------------------------------------


def test_seeded_noise_is_deterministic():
    sched = make_scheduler("euler_a", IP2P_CONFIG)
    sched.set_timesteps(20)
    x = mx.random.normal((1, 8, 8, 4), key=mx.random.key(0)) * sched.init_noise_sigma
    eps = 0.5 * x
    a = sched.step(eps, 3, x, key=mx.random.key(7))
    b = sched.step(eps, 3, x, key=mx.random.key(7))
    c = sched.step(eps, 3, x, key=mx.random.key(8))
    z = mx.random.normal(x.shape, key=mx.random.key(7))
    d = sched.step(eps, 3, x, noise=z)
    assert mx.array_equal(a, b).item()
    assert not mx.allclose(a, c).item()
    assert mx.array_equal(a, d).item()


def _run(seed: int, name: str = "euler_a") -> np.ndarray:
    sched = make_scheduler(name, IP2P_CONFIG)
    sched.set_timesteps(8)
    key, start = mx.random.split(mx.random.key(seed))
    keys = mx.random.split(key, 8)
    x = mx.random.normal((1, 4, 4, 4), key=start) * sched.init_noise_sigma
    for i in range(8):
        x = sched.step(0.9 * sched.scale_model_input(x, i), i, x, key=keys[i])
    return np.array(x)


def test_seeded_loop_reproduces():
    np.testing.assert_array_equal(_run(5), _run(5))
    assert not np.allclose(_run(5), _run(6))


def test_half_precision_model_output_keeps_its_dtype():
    for name in OURS:
        sched = make_scheduler(name, IP2P_CONFIG)
        sched.set_timesteps(5)
        x = mx.ones((1, 2, 2, 4), dtype=mx.float16)
        out = sched.step(x * 0.5, 0, x, key=mx.random.key(0))
        assert out.dtype == mx.float16, name


def test_config_parsing():
    config = SchedulerConfig.from_dict({**IP2P_CONFIG, "some_future_key": 3, "sigma_min": None})
    assert config.beta_schedule == "scaled_linear" and config.steps_offset == 1
    assert config.timestep_spacing is None
    assert EulerAncestralScheduler(config).spacing == "linspace"
    assert DDIMScheduler(config).spacing == "leading"
    assert make_scheduler("ddim", IP2P_CONFIG).config.clip_sample is False


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"use_karras_sigmas": True}, "use_karras_sigmas=True"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
        ({"timestep_spacing": "karras"}, "timestep_spacing='karras'"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule='sigmoid'"),
        ({"prediction_type": "sample"}, "prediction_type='sample'"),
        ({"num_train_timesteps": 0}, "num_train_timesteps=0"),
        ({"trained_betas": [0.1, 0.2]}, "2 trained_betas"),
        ({"beta_start": 0.5, "beta_end": 0.1}, "beta_start=0.5"),
    ],
)
def test_bad_configs_are_refused(patch, message):
    with pytest.raises(PbmlxError, match=message.replace("(", r"\(")) as info:
        SchedulerConfig.from_dict({**IP2P_CONFIG, **patch}, source="ckpt/scheduler_config.json")
    assert "ckpt/scheduler_config.json" in str(info.value)


def test_misuse_is_reported():
    with pytest.raises(PbmlxError, match="Unknown scheduler 'dpm'"):
        make_scheduler("dpm", IP2P_CONFIG)
    sched = make_scheduler("euler_a", IP2P_CONFIG)
    x = mx.zeros((1, 2, 2, 4))
    with pytest.raises(IndexError, match="set_timesteps"):
        sched.step(x, 0, x, key=mx.random.key(0))
    with pytest.raises(PbmlxError, match="Number of steps 0"):
        sched.set_timesteps(0)
    sched.set_timesteps(4)
    with pytest.raises(ValueError, match="exactly one of key"):
        sched.step(x, 0, x)
    with pytest.raises(ValueError, match="exactly one of key"):
        sched.step(x, 0, x, key=mx.random.key(0), noise=x)
    with pytest.raises(ValueError, match="noise has shape"):
        sched.step(x, 0, x, noise=mx.zeros((1, 2, 2, 3)))
    with pytest.raises(IndexError):
        sched.scale_model_input(x, 4)
    # The last Euler-Ancestral step adds no noise (sigma_up = 0), so it needs no key.
    assert sched.step(x, 3, x).shape == x.shape
    with pytest.raises(PbmlxError, match="eta"):
        DDIMScheduler(SchedulerConfig(), eta=-1.0)


def test_runtime_needs_no_torch():
    code = (
        "import sys, pbmlx.diffuse; "
        "bad = {'torch', 'diffusers', 'transformers'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
