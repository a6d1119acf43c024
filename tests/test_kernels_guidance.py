"""The fused dual guidance + sampler step (``kernels/guided_step.metal`` / ``.cu``, reference and
dispatcher in ``pbmlx.kernels.guidance``).

What each group proves:

(a) the reference (``guide`` then ``Scheduler.step``, the pipeline's numerics) against an
    independent float64 NumPy implementation of the guidance and of each sampler's update,
    written from the papers' formulas on the float32 schedule tables; and the documented
    coefficient form (:class:`StepCoefficients`) evaluated in float32 NumPy reproduces ``step``;
(b) the Metal kernel traced by MLX (``verbose=True`` inside ``mx.export_function``): the body and
    helpers present verbatim, the generated signature (buffer names, types, address spaces,
    indices), the template values, and a snapshot per variant;
(c) that exact generated Metal source compiled as C++ and run thread by thread on the CPU, and
    the CUDA twin the same way, against the reference: every scheduler (incl. v-prediction,
    clipping, DDIM with eta), first / middle / last steps, element counts not a multiple of the
    threadgroup, a single element, batch 2 (the [text, image, uncond] layout of 6 rows), float16
    predictions and latents; and the dispatcher's kernel path run end to end on the emulator
    (noise drawn from ``key``, dtype conversion, fallbacks);
(d) the kernels on a real Metal / CUDA device against the reference (skipped elsewhere);
(e) the dispatcher's default path against the forced reference on the machine running the tests.

Tolerances, in units of ``u = 2**-24`` (float32 unit roundoff) times ``mag``: the same
expression evaluated on absolute values (|inputs|, |coefficients|), a first-order bound on the
size of every intermediate; an update of k float32 operations is within about k u mag of the
exact value. The Euler derivative (x - x0) / sigma cancels, but its error is multiplied by
|dt| <= sigma back, which ``mag`` accounts for; DDIM's division by sqrt(alpha_bar) (down to
0.07) likewise.

- (a) reference vs float64: ``16 u mag`` (about ten float32 operations, plus the host's float32
  coefficients, e.g. Euler-Ancestral's sigma_down = sqrt(sigma'^2 - sigma_up^2));
- (a) coefficient form vs reference, (c) emulated kernel vs reference: ``8 u mag``. The kernel
  performs the reference's float32 operations in the reference's order, and on x86-64 the two
  agree to the bit (clang contracts nothing without FMA in the base ISA); the margin allows FMA
  contraction of a * b + c, which clang does by default on FMA hosts such as aarch64;
- (d) device kernel vs reference: ``64 u mag``: Metal compiles with fast math (division to 2.5
  ulp, free contraction), NVRTC contracts to FMA; about a dozen operations;
- (e) on the CPU backend the dispatcher runs the reference: equal to the bit; on a GPU backend
  the (d) tolerance.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
from gpu_emulation import (
    check_snapshot,
    clangxx,
    compile_cuda,
    compile_metal,
    cuda_source,
    traced_sources,
)
from pbmlx.kernels import guidance as G
from pbmlx.kernels.dispatch import choose, device_backend, reference_only
from pbmlx.kernels.source import read

from pbmlx.diffuse.schedulers import (
    DDIMScheduler,
    EulerAncestralScheduler,
    EulerScheduler,
    Scheduler,
    SchedulerConfig,
)

U = 2.0**-24
TOL_ORACLE = 16  # (a), in u * mag (module docstring)
TOL_SAME_OPS = 8  # (a) coefficient form, (c) emulation
TOL_DEVICE = 64  # (d), (e) on a GPU
GUIDANCE, IMAGE_GUIDANCE = 7.5, 1.5  # the pipeline's defaults
STEPS = 6
KERNEL_STEP = G.kernel_step  # the real launcher (tests of the dispatcher replace G's)

# timbrooks/instruct-pix2pix's scheduler config (the keys pbmlx reads).
IP2P = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
CASES: dict[str, tuple[type[Scheduler], dict, float]] = {  # name: (class, config changes, eta)
    "euler_a": (EulerAncestralScheduler, {}, 0.0),
    "euler_a_v": (EulerAncestralScheduler, {"prediction_type": "v_prediction"}, 0.0),
    "euler": (EulerScheduler, {}, 0.0),
    "euler_v": (EulerScheduler, {"prediction_type": "v_prediction"}, 0.0),
    "ddim": (DDIMScheduler, {}, 0.0),
    "ddim_clip_eta": (DDIMScheduler, {"clip_sample": True, "set_alpha_to_one": True}, 0.5),
    "ddim_v_clip": (
        DDIMScheduler,
        {"prediction_type": "v_prediction", "clip_sample": True, "clip_sample_range": 2.5},
        0.0,
    ),
}
STEP_INDICES = (0, STEPS // 2, STEPS - 1)  # the last Euler-A step adds no noise
SHAPES = {  # latents (B, h, w, C); the kernel's threadgroup is 256
    "odd": (1, 5, 7, 4),  # 140 elements: one partial group
    "ragged": (1, 17, 19, 4),  # 1292 = 5 * 256 + 12
    "one": (1, 1, 1, 1),  # a single element (size-1 buffers are `constant` in Metal)
    "batch2": (2, 3, 5, 4),  # eps3 has 6 rows: [text x2, image x2, uncond x2]
    "sd512": (1, 64, 64, 4),  # a 512 px image: 16384 elements, whole groups
}

needs_clang = pytest.mark.skipif(
    clangxx() is None and os.environ.get("CI") != "true",
    reason="clang++ is not installed (CI installs it and fails without it)",
)


def make(case: str, steps: int = STEPS) -> Scheduler:
    cls, changes, eta = CASES[case]
    config = SchedulerConfig.from_dict({**IP2P, **changes})
    sched = cls(config, eta=eta) if cls is DDIMScheduler else cls(config)
    sched.set_timesteps(steps)
    return sched


def draw(sched: Scheduler, i: int, shape, seed: int, eps_dtype=np.float32, x_dtype=np.float32):
    """Predictions (3B, ...) like a UNet's (three close estimates), latents at the step's noise
    level, and standard normal noise: NumPy arrays."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape)
    eps3 = np.concatenate([base + s * rng.standard_normal(shape) for s in (0.3, 0.2, 0.1)])
    scale = np.sqrt(float(sched.sigmas[i]) ** 2 + 1) if hasattr(sched, "sigmas") else 1.0
    x = scale * rng.standard_normal(shape)
    z = rng.standard_normal(shape).astype(np.float32)
    return eps3.astype(eps_dtype), x.astype(x_dtype), z


def run_reference(sched, i, eps3, x, z) -> np.ndarray:
    noise = mx.array(z) if sched.step_coefficients(i).noise else None
    out = G.reference(mx.array(eps3), mx.array(x), sched, i, GUIDANCE, IMAGE_GUIDANCE, noise=noise)
    assert out.dtype == mx.float32
    return np.array(out)


# ---------------------------------------------------------------------- the float64 oracle


def oracle(sched: Scheduler, i: int, eps3, x, z, g=GUIDANCE, ig=IMAGE_GUIDANCE):
    """(x' in float64, mag): guidance and the sampler's update from the papers' formulas;
    ``mag`` is the same computation on absolute values (the tolerances' scale)."""
    eps3, x, z = (np.asarray(a, dtype=np.float64) for a in (eps3, x, z))
    b = x.shape[0]
    et, ei, eu = eps3[:b], eps3[b : 2 * b], eps3[2 * b :]
    e = eu + g * (et - ei) + ig * (ei - eu)
    me = abs(eu) + g * (abs(et) + abs(ei)) + ig * (abs(ei) + abs(eu))
    ax, az = abs(x), abs(z)
    v_pred = sched.config.prediction_type == "v_prediction"
    if isinstance(sched, DDIMScheduler):
        t = int(sched.timesteps[i])
        tp = t - sched.config.num_train_timesteps // sched.num_inference_steps
        a = float(sched.alphas_cumprod[t])
        ap = float(sched.alphas_cumprod[tp]) if tp >= 0 else float(sched.final_alpha_cumprod)
        sa, sb = np.sqrt(a), np.sqrt(1 - a)
        if v_pred:  # Salimans & Ho: x0 = sqrt(a) x - sqrt(1-a) v, eps = sqrt(a) v + sqrt(1-a) x
            x0, mx0 = sa * x - sb * e, sa * ax + sb * me
            eh, meh = sa * e + sb * x, sa * me + sb * ax
        else:  # Song et al. eq. 12: x0 = (x - sqrt(1-a) eps) / sqrt(a)
            x0, mx0 = (x - sb * e) / sa, (ax + sb * me) / sa
            eh, meh = e, me
        if sched.config.clip_sample:
            r = sched.config.clip_sample_range
            x0 = np.clip(x0, -r, r)
        std = sched.eta * np.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        c_dir = np.sqrt(1 - ap - std * std)
        out = np.sqrt(ap) * x0 + c_dir * eh
        mag = np.sqrt(ap) * mx0 + c_dir * meh
        if sched.eta > 0:
            out, mag = out + std * z, mag + std * az
        return out, mag
    s, s1 = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
    if isinstance(sched, EulerAncestralScheduler):  # k-diffusion's get_ancestral_step
        up = np.sqrt(s1 * s1 * (s * s - s1 * s1) / (s * s))
        down = np.sqrt(s1 * s1 - up * up)
    else:
        up, down = 0.0, s1
    if v_pred:  # x0 = -s / sqrt(s^2 + 1) v + x / (s^2 + 1)
        c = s * s + 1
        x0, mx0 = -s / np.sqrt(c) * e + x / c, s / np.sqrt(c) * me + ax / c
    else:
        x0, mx0 = x - s * e, ax + s * me
    d, md = (x - x0) / s, (ax + mx0) / s
    out = x + d * (down - s) + up * z
    mag = ax + md * abs(down - s) + up * az
    return out, mag


def assert_close(got, want, mag, k: float, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, what
    assert np.isfinite(got).all(), f"{what}: non-finite output"
    err = np.abs(got - want)
    bound = k * U * mag
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), (
        f"{what}: |diff| {err[worst]:.3g} > {bound[worst]:.3g} = {k} u mag at {worst} "
        f"(max error / (u mag) = {float(np.max(err / (U * mag))):.2f})"
    )


# ---------------------------------------------------------------------- (a) the reference


@pytest.mark.parametrize("i", STEP_INDICES)
@pytest.mark.parametrize("case", CASES)
def test_reference_matches_float64(case, i):
    sched = make(case)
    for shape, seed, eps_dtype in (((2, 9, 11, 4), 1, np.float32), ((1, 8, 8, 4), 2, np.float16)):
        eps3, x, z = draw(sched, i, shape, seed, eps_dtype)
        want, mag = oracle(sched, i, eps3, x, z)
        got = run_reference(sched, i, eps3, x, z)
        assert_close(got, want, mag, TOL_ORACLE, f"{case} step {i} {np.dtype(eps_dtype)}")


def test_reference_is_the_pipeline_composition():
    # guide() on the float32 predictions, then the scheduler's own step: to the bit.
    from pbmlx.diffuse.pipeline import guide

    sched = make("euler_a")
    eps3, x, z = draw(sched, 1, (1, 6, 6, 4), 3, np.float16)
    eps = guide(mx.array(eps3).astype(mx.float32), GUIDANCE, IMAGE_GUIDANCE)
    want = sched.step(eps, 1, mx.array(x), noise=mx.array(z))
    np.testing.assert_array_equal(run_reference(sched, 1, eps3, x, z), np.array(want))


def coefficient_form(step, eps3, x, z, g=GUIDANCE, ig=IMAGE_GUIDANCE) -> np.ndarray:
    """StepCoefficients' documented formulas, float32 NumPy, in the kernel's order."""
    f = np.float32
    eps3, x, z = eps3.astype(f), x.astype(f), z.astype(f)
    b = x.shape[0]
    et, ei, eu = eps3[:b], eps3[b : 2 * b], eps3[2 * b :]
    e = (eu + f(g) * (et - ei)) + f(ig) * (ei - eu)
    c = {k: f(v) for k, v in step.values.items()}
    if step.family == "sigma":
        x0 = c["x0_eps"] * e + x / c["x0_div"]
        out = x + (x - x0) / c["sigma"] * c["dt"]
    else:
        x0 = (c["x0_x"] * x - c["x0_eps"] * e) / c["x0_div"]
        eps_hat = c["hat_eps"] * e + c["hat_x"] * x
        if c["clip"] != 0:
            x0 = np.minimum(np.maximum(x0, -c["clip_range"]), c["clip_range"])
        out = c["a_x0"] * x0 + c["a_dir"] * eps_hat
    if step.noise:
        out = out + c["noise_std"] * z
    return out


@pytest.mark.parametrize("case", CASES)
def test_step_coefficients_reproduce_step(case):
    sched = make(case)
    for i in range(STEPS):
        step = sched.step_coefficients(i)
        eps3, x, z = draw(sched, i, (1, 7, 9, 4), 10 + i)
        _, mag = oracle(sched, i, eps3, x, z)
        got = coefficient_form(step, eps3, x, z)
        assert_close(got, run_reference(sched, i, eps3, x, z), mag, TOL_SAME_OPS, f"{case} {i}")
    # Euler-Ancestral's last step (sigma' = 0) adds no noise, as step() draws none there.
    if case.startswith("euler_a"):
        assert [sched.step_coefficients(i).noise for i in range(STEPS)] == [True] * 5 + [False]


def test_coefficient_layout_is_the_kernels():
    # The "coef[a..b] = names" lines of both kernel files name G.FIELDS in order.
    for filename in ("guided_step.metal", "guided_step.cu"):
        text = read(filename).path.read_text()
        comments = " ".join(line.lstrip("/ ") for line in text.split("//@header")[0].splitlines())
        for family, names in G.FIELDS.items():
            kind = G.KINDS[family]
            m = re.search(rf"KIND {kind} .*?coef\[2\.\.(\d+)\] = ([\w, ]+?):", comments)
            assert m, f"{filename}: no coefficient line for KIND {kind}"
            assert int(m.group(1)) == 1 + len(names)
            assert tuple(n.strip() for n in m.group(2).split(",")) == names
    assert G.N_COEFFICIENTS == 12


# ---------------------------------------------------------------------- (b) traced source

VARIANTS = {  # snapshot name: (case, step index, eps3 dtype, x dtype)
    "euler_a_f32": ("euler_a", 0, np.float32, np.float32),
    "euler_f32": ("euler", 0, np.float32, np.float32),
    "ddim_f32": ("ddim", 0, np.float32, np.float32),
    "ddim_eta_f32": ("ddim_clip_eta", 0, np.float32, np.float32),
    "euler_a_f16": ("euler_a", 0, np.float16, np.float32),  # a half-precision UNet's output
}


def launch_for(sched, i, eps3, x, z):
    """(coef, family, mx inputs): what the dispatcher hands the kernel for this step."""
    step = sched.step_coefficients(i)
    coef = G.coefficients(step, GUIDANCE, IMAGE_GUIDANCE)
    noise = mx.array(z) if step.noise else None
    return coef, step.family, (mx.array(eps3), mx.array(x), noise)


def metal_source(coef, family, eps3, x, noise) -> str:
    """The Metal source MLX generates for this launch (traced, nothing runs)."""

    def fn(*a):
        z = a[2] if noise is not None else None
        return KERNEL_STEP("metal", a[0], a[1], coef, family, z, verbose=True)

    arrays = (eps3, x) if noise is None else (eps3, x, noise)
    sources = traced_sources(fn, *arrays)
    assert len(sources) == 1
    return sources[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_metal_source(variant):
    case, i, eps_dtype, x_dtype = VARIANTS[variant]
    sched = make(case)
    coef, family, (eps3, x, noise) = launch_for(
        sched, i, *draw(sched, i, (1, 4, 4, 4), 0, eps_dtype, x_dtype)
    )
    src = metal_source(coef, family, eps3, x, noise)
    kernel = read("guided_step.metal")
    assert kernel.body.strip() in src and kernel.header.strip() in src
    t = {np.float32: "float", np.float16: "float16_t"}
    params = re.search(r"\[\[kernel\]\] void (\w+)\((.*?)\) \{", src, re.S)
    assert params
    signature = [line.strip() for line in params.group(2).split(",\n")]
    assert signature == [
        f"const device {t[eps_dtype]}* eps3 [[buffer(0)]]",
        f"const device {t[x_dtype]}* x [[buffer(1)]]",
        # no noise: a 1-element placeholder, which MLX puts in the constant address space
        f"const {'device' if noise is not None else 'constant'} float* noise [[buffer(2)]]",
        "const device float* coef [[buffer(3)]]",
        "const constant uint32_t* count [[buffer(4)]]",
        "device float* x_next [[buffer(5)]]",
        "uint3 thread_position_in_grid [[thread_position_in_grid]]",
    ]
    kind, noisy = G.KINDS[family], int(noise is not None)
    assert "template <int KIND, bool NOISE>" in src
    assert f"{params.group(1)}<{kind}, {noisy}>;" in src  # the instantiation's template values
    check_snapshot(f"guided_step__{variant}.metal", src)


def test_helpers_take_values_not_pointers():
    # MLX types a size-1 input `constant` and a larger one `device`; a helper taking a fixed
    # `device` pointer would not compile for one of them (the emulator cannot see address
    # spaces), so the helpers take values only.
    for filename in ("guided_step.metal", "guided_step.cu"):
        header = read(filename).header
        for m in re.finditer(r"\w+\s+\w+\(([^)]*)\)\s*\{", header):
            assert "*" not in m.group(1) and "&" not in m.group(1), (filename, m.group(0))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 1, 2), (1, 1, 1, 3)])
def test_small_buffers_are_constant(shape):
    # MLX 0.32 puts an input of fewer than 8 elements in the constant address space (eps3 of
    # 3 or 6, x and noise of 1 or 2, count), a larger one in device: the tiny launches the
    # emulator runs use the other address space for the same body.
    sched = make("euler_a")
    coef, family, arrays = launch_for(sched, 0, *draw(sched, 0, shape, 0))
    src = metal_source(coef, family, *arrays)
    args = G.launch_args(*arrays[:2], coef, family, arrays[2])
    for name, a in zip(read("guided_step.metal").input_names, args["inputs"], strict=True):
        space = "constant" if a.size < 8 else "device"
        assert re.search(rf"const {space} \w+\* {name} \[\[buffer", src), (name, a.size)


# ---------------------------------------------------------------------- (c) emulation

_EMULATORS: dict[str, object] = {}


def _emulator(key: str, build):
    if key not in _EMULATORS:
        _EMULATORS[key] = build()
    return _EMULATORS[key]


def emulate(backend: str, coef, family, eps3, x, noise) -> np.ndarray:
    """Run the kernel for this launch on the CPU emulator: Metal from MLX's traced source, CUDA
    from the source MLX's CUDA backend would build; same grid, threadgroup and buffers."""
    args = G.launch_args(eps3, x, coef, family, noise)
    kernel = read(f"guided_step.{'metal' if backend == 'metal' else 'cu'}")
    arrays = {n: np.array(a) for n, a in zip(kernel.input_names, args["inputs"], strict=True)}
    out_spec = {"x_next": (tuple(x.shape), "float32")}
    if backend == "metal":
        src = metal_source(coef, family, eps3, x, noise)
        em = _emulator(src, lambda: compile_metal(src))
    else:
        ins = [(n, arrays[n].dtype.name) for n in kernel.input_names]
        outs = [("x_next", "float32")]
        fname, src = cuda_source(
            kernel.name, kernel.header, kernel.body, ins, outs, template=args["template"]
        )
        em = _emulator(src, lambda: compile_cuda(fname, src, ins, outs))
    return em(arrays, out_spec, args["grid"], args["threadgroup"])["x_next"]


@needs_clang
@pytest.mark.parametrize("backend", ["metal", "cuda"])
@pytest.mark.parametrize("case", CASES)
def test_emulated_kernel_matches_reference(backend, case):
    sched = make(case)
    for i in STEP_INDICES:
        for shape_name in ("odd", "ragged", "batch2"):
            eps3, x, z = draw(sched, i, SHAPES[shape_name], i)
            coef, family, arrays = launch_for(sched, i, eps3, x, z)
            got = emulate(backend, coef, family, *arrays)
            _, mag = oracle(sched, i, eps3, x, z)
            want = run_reference(sched, i, eps3, x, z)
            assert_close(got, want, mag, TOL_SAME_OPS, f"{backend} {case} step {i} {shape_name}")


@needs_clang
@pytest.mark.parametrize("backend", ["metal", "cuda"])
@pytest.mark.parametrize(
    ("case", "shape_name", "eps_dtype", "x_dtype"),
    [
        ("euler_a", "one", np.float32, np.float32),
        ("ddim_clip_eta", "one", np.float32, np.float32),
        ("euler_a", "sd512", np.float16, np.float32),
        ("euler", "ragged", np.float16, np.float16),
        ("ddim_v_clip", "ragged", np.float16, np.float16),
        ("ddim_clip_eta", "batch2", np.float16, np.float32),
    ],
)
def test_emulated_kernel_edge_shapes_and_half(backend, case, shape_name, eps_dtype, x_dtype):
    sched = make(case)
    i = 1
    eps3, x, z = draw(sched, i, SHAPES[shape_name], 5, eps_dtype, x_dtype)
    coef, family, arrays = launch_for(sched, i, eps3, x, z)
    got = emulate(backend, coef, family, *arrays)
    _, mag = oracle(sched, i, eps3, x, z)
    want = run_reference(sched, i, eps3, x, z)
    assert_close(got, want, mag, TOL_SAME_OPS, f"{backend} {case} {shape_name}")


@pytest.fixture
def emulated_dispatch(monkeypatch):
    """The dispatcher on its Metal kernel path, the kernel run by the emulator."""
    calls: list[dict] = []

    def fake_kernel_step(backend, eps3, x, coef, family, noise=None, *, verbose=False):
        assert backend == "metal"
        calls.append({"eps3": eps3.dtype, "x": x.dtype, "family": family, "noise": noise})
        return mx.array(emulate("metal", coef, family, eps3, x, noise))

    monkeypatch.setattr(G, "choose", lambda available: "metal")
    monkeypatch.setattr(G, "kernel_step", fake_kernel_step)
    return calls


@needs_clang
@pytest.mark.parametrize("case", ["euler_a", "ddim_clip_eta", "euler_v"])
def test_dispatcher_kernel_path_emulated(emulated_dispatch, case):
    # A whole trajectory through guided_step's kernel path, noise drawn from per-step keys,
    # against the reference loop with the same keys, step by step from the same latents.
    sched = make(case)
    keys = mx.random.split(mx.random.key(4), STEPS)
    eps3, x, _ = draw(sched, 0, SHAPES["odd"], 6, np.float16)
    x = mx.array(x)
    for i in range(STEPS):
        e = mx.array(eps3) * (1 + 0.1 * i)
        key = keys[i] if sched.stochastic else None
        got = G.guided_step(e, x, sched, i, GUIDANCE, IMAGE_GUIDANCE, key=key)
        want = G.reference(e, x, sched, i, GUIDANCE, IMAGE_GUIDANCE, key=key)
        z = np.array(mx.random.normal(x.shape, key=keys[i]))
        _, mag = oracle(sched, i, np.array(e), np.array(x), z)
        assert got.dtype == mx.float32
        assert_close(np.array(got), np.array(want).astype(np.float64), mag, TOL_SAME_OPS, f"{i}")
        x = want
    assert len(emulated_dispatch) == STEPS
    assert emulated_dispatch[0]["eps3"] == mx.float16  # read as it is, no converting pass
    noisy = [c["noise"] is not None for c in emulated_dispatch]
    assert noisy == [sched.step_coefficients(i).noise for i in range(STEPS)]


@needs_clang
def test_dispatcher_converts_other_dtypes_and_falls_back(emulated_dispatch):
    sched = make("euler")
    eps3, x, z = draw(sched, 2, SHAPES["odd"], 7)
    e16 = mx.array(eps3).astype(mx.bfloat16)
    got = G.guided_step(e16, mx.array(x), sched, 2, GUIDANCE, IMAGE_GUIDANCE)
    want = G.reference(e16, mx.array(x), sched, 2, GUIDANCE, IMAGE_GUIDANCE)
    _, mag = oracle(sched, 2, np.array(e16.astype(mx.float32)), x, z)
    assert_close(np.array(got), np.array(want).astype(np.float64), mag, TOL_SAME_OPS, "bf16")
    assert emulated_dispatch[-1]["eps3"] == mx.float32  # bfloat16 converted first
    # Inputs the kernel does not take run the reference (which broadcasts or raises).
    count = len(emulated_dispatch)
    x_bcast = mx.array(x[:, :1])  # (1, 1, w, C) broadcasts against eps
    got = G.guided_step(mx.array(eps3), x_bcast, sched, 2, GUIDANCE, IMAGE_GUIDANCE)
    want = G.reference(mx.array(eps3), x_bcast, sched, 2, GUIDANCE, IMAGE_GUIDANCE)
    np.testing.assert_array_equal(np.array(got), np.array(want))

    class NoCoefficients(EulerScheduler):
        def step_coefficients(self, step_index):
            raise NotImplementedError

    other = NoCoefficients(sched.config)
    other.set_timesteps(STEPS)
    got = G.guided_step(mx.array(eps3), mx.array(x), other, 2, GUIDANCE, IMAGE_GUIDANCE)
    want = G.reference(mx.array(eps3), mx.array(x), sched, 2, GUIDANCE, IMAGE_GUIDANCE)
    np.testing.assert_array_equal(np.array(got), np.array(want))
    assert len(emulated_dispatch) == count
    # A stochastic step without key= or noise= is refused, as step() refuses it.
    with pytest.raises(ValueError, match="exactly one of key"):
        G.guided_step(mx.array(eps3), mx.array(x), make("euler_a"), 0, GUIDANCE, IMAGE_GUIDANCE)


# ---------------------------------------------------------------------- (d) real devices


def _gpu_available(backend: str) -> bool:
    if backend == "metal":
        return mx.metal.is_available()
    return hasattr(mx, "cuda") and mx.cuda.is_available()


@pytest.mark.parametrize("backend", ["metal", "cuda"])
def test_kernel_on_device(backend):
    if not _gpu_available(backend):
        pytest.skip(f"needs MLX's {backend} backend (not available on this machine)")
    for case in CASES:
        sched = make(case)
        for i in STEP_INDICES:
            for shape_name, eps_dtype in (
                ("ragged", np.float32),
                ("one", np.float32),
                ("sd512", np.float16),
                ("batch2", np.float16),
            ):
                eps3, x, z = draw(sched, i, SHAPES[shape_name], i, eps_dtype)
                coef, family, arrays = launch_for(sched, i, eps3, x, z)
                with mx.stream(mx.gpu):
                    got = np.array(
                        G.kernel_step(backend, arrays[0], arrays[1], coef, family, arrays[2])
                    )
                _, mag = oracle(sched, i, eps3, x, z)
                with mx.stream(mx.cpu):  # the definition in IEEE float32 (no fast math)
                    want = run_reference(sched, i, eps3, x, z)
                assert_close(got, want, mag, TOL_DEVICE, f"{backend} {case} {i} {shape_name}")


# ---------------------------------------------------------------------- (e) forced reference


@pytest.mark.parametrize("case", CASES)
def test_dispatcher_default_vs_forced_reference(case):
    sched = make(case)
    backend = choose(("metal", "cuda"))  # "reference" on the CPU backend or when forced
    assert backend in ("reference", device_backend())
    for i in STEP_INDICES:
        eps3, x, _ = draw(sched, i, SHAPES["ragged"], 20 + i, np.float16)
        key = mx.random.key(i) if sched.stochastic else None
        args = (mx.array(eps3), mx.array(x), sched, i, GUIDANCE, IMAGE_GUIDANCE)
        got = np.array(G.guided_step(*args, key=key))
        with reference_only():
            want = np.array(G.guided_step(*args, key=key))
        if backend == "reference":
            np.testing.assert_array_equal(got, want)  # the CPU runs the reference itself
        else:
            z = np.array(mx.random.normal(x.shape, key=key)) if key is not None else 0 * x
            _, mag = oracle(sched, i, eps3, x, z)
            assert_close(got, want.astype(np.float64), mag, TOL_DEVICE, f"{case} {i}")
