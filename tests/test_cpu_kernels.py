"""pbmlx.kernels.cpu: the fused C kernels against float64 NumPy oracles, and their dispatchers.

Oracles are computed independently in float64 (``math.erf`` for GELU, a plain NumPy softmax
attention, a NumPy GroupNorm). Tolerances, from what float32 arithmetic can give:

- exp: <= 2.5 ulp-equivalent (relative 1.5e-7; measured 1.3 ulp) on [-87, 88];
- SiLU, GELU, GEGLU: absolute error <= 3e-7 * max(1, |x|) (measured 1.2e-7; MLX's own GELU
  is at 1.8e-7 against the same oracle);
- GroupNorm (+SiLU) and attention: <= 2e-6 of the output's scale ``max(1, max|ref|)`` (float32
  rounding of sums over thousands of terms; measured ~3e-7 to 1e-6).

Inputs are seeded normals with offsets and heavy tails, plus features made from a real photo
(skimage's astronaut) for GroupNorm. The dispatchers must fall back to the MLX references
where the kernels may not run (switched off, float16, inside ``mx.compile``) and must never
write into their inputs.
"""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
import mlx.nn as nn  # isort: skip
from pbmlx.kernels import cpu

if cpu._compiler() is None:
    # A C compiler is part of the set-up (README); in CI its absence is a failure, not a skip.
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must have a C compiler for the CPU kernels")
    pytest.skip("no C compiler: the CPU kernels cannot be built here", allow_module_level=True)

OUTPUT_TOL = 2e-6  # of max(1, max|ref|): GroupNorm and attention
ELEMENTWISE_TOL = 3e-7  # of max(1, |x|): SiLU, GELU, GEGLU


def lib():
    library = cpu._lib()
    assert library is not None, cpu.info().reason
    return library


def rel_err(ours: mx.array | np.ndarray, ref: np.ndarray) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape
    return float(np.abs(ours - ref).max() / max(1.0, float(np.abs(ref).max())))


def test_kernels_are_built_here():
    info = cpu.info()
    assert info.available, info.reason
    assert info.threads >= 1


# -- elementwise ------------------------------------------------------------------------------


def grid() -> np.ndarray:
    """Dense values over the whole float range that matters, plus seeded normals."""
    x = np.concatenate(
        [
            np.linspace(-90.0, 90.0, 400_003),
            np.linspace(-6.0, 6.0, 200_001),
            np.random.default_rng(0).standard_normal(100_000) * 3,
            [0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4],
        ]
    )
    return x.astype(np.float32)


def test_exp_is_within_a_few_ulp():
    x = grid()
    x = x[(x > -87.0) & (x < 88.0)]
    y = np.empty_like(x)
    lib().pb_exp(x.ctypes.data, y.ctypes.data, x.size)
    ref = np.exp(x.astype(np.float64))
    assert np.abs(y / ref - 1).max() <= 1.5e-7


def test_exp_limits_and_nan():
    x = np.array([-np.inf, -1000, -88, 89, 1000, np.inf, np.nan, 0, 1, 2, 3], np.float32)
    y = np.empty_like(x)
    lib().pb_exp(x.ctypes.data, y.ctypes.data, x.size)  # 11: a full vector and a tail of 3
    np.testing.assert_array_equal(y[:6], [0, 0, 0, np.inf, np.inf, np.inf])
    assert np.isnan(y[6])
    np.testing.assert_allclose(y[7:], np.exp(x[7:].astype(np.float64)), rtol=1.5e-7)


def test_silu_matches_float64():
    x = grid()
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        ref = x64 / (1.0 + np.exp(-x64))
    ours = np.array(cpu.silu(mx.array(x)), dtype=np.float64)
    assert (np.abs(ours - ref) <= ELEMENTWISE_TOL * np.maximum(1, np.abs(x64))).all()


def gelu64(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def test_gelu_matches_float64_erf():
    x = grid()
    x64 = x.astype(np.float64)
    ref = gelu64(x64)
    ours = np.array(cpu.gelu(mx.array(x)), dtype=np.float64)
    assert (np.abs(ours - ref) <= ELEMENTWISE_TOL * np.maximum(1, np.abs(x64))).all()


def test_gelu_and_silu_propagate_nan():
    x = mx.array(np.r_[np.full(5000, 0.5), np.nan].astype(np.float32))
    assert np.isnan(np.array(cpu.gelu(x))[-1]) and np.isnan(np.array(cpu.silu(x))[-1])


@pytest.mark.parametrize("inner", [1280, 37])  # SD's first level; a width with a tail
def test_geglu_matches_float64(inner):
    rng = np.random.default_rng(1)
    h = (rng.standard_normal((3, 64, 2 * inner)) * 3).astype(np.float32)
    h64 = h.astype(np.float64)
    a, gate = h64[..., :inner], h64[..., inner:]
    ref = a * gelu64(gate)
    ours = np.array(cpu.geglu(mx.array(h)), dtype=np.float64)
    assert ours.shape == ref.shape
    bound = ELEMENTWISE_TOL * np.maximum(1, np.abs(a) * np.maximum(1, np.abs(gate)))
    assert (np.abs(ours - ref) <= bound).all()


# -- group norm -------------------------------------------------------------------------------


def group_norm64(x, w, b, groups, eps, silu=False):
    x = x.astype(np.float64)
    B, C = x.shape[0], x.shape[-1]
    xg = x.reshape(B, -1, groups, C // groups)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = xg.var(axis=(1, 3), keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape) * w + b
    return y / (1 + np.exp(-y)) if silu else y


def photo_features(channels: int, hw: int) -> np.ndarray:
    """skimage's astronaut at hw x hw, its RGB mixed into ``channels`` features (1, hw, hw, C)."""
    from PIL import Image
    from skimage import data

    img = np.asarray(Image.fromarray(data.astronaut()).resize((hw, hw), Image.Resampling.BICUBIC))
    mix = np.random.default_rng(3).standard_normal((3, channels))
    return ((img.astype(np.float64) / 127.5 - 1) @ mix + 2.0)[None].astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "groups", "eps"),
    [
        ((3, 16, 16, 320), 32, 1e-5),  # SD: 10 channels per group
        ((3, 8, 8, 960), 32, 1e-5),  # up-block concatenation: 30 per group
        ((2, 5, 7, 24), 8, 1e-6),  # 3 per group, odd sizes (vector tails)
    ],
)
@pytest.mark.parametrize("silu", [False, True], ids=["norm", "norm+silu"])
def test_group_norm_matches_float64(shape, groups, eps, silu):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)  # offset: a real mean to remove
    C = shape[-1]
    w = (1 + 0.1 * rng.standard_normal(C)).astype(np.float32)
    b = (0.1 * rng.standard_normal(C)).astype(np.float32)
    ref = group_norm64(x, w, b, groups, eps, silu)
    act = cpu.silu if silu else None
    ours = cpu.group_norm(mx.array(x), mx.array(w), mx.array(b), groups, eps, act)
    assert rel_err(ours, ref) <= OUTPUT_TOL


def test_group_norm_on_photo_features():
    x = photo_features(128, 64)  # the VAE's first level: 1 sample, 4 channels per group
    rng = np.random.default_rng(5)
    w = (1 + 0.1 * rng.standard_normal(128)).astype(np.float32)
    b = (0.1 * rng.standard_normal(128)).astype(np.float32)
    ref = group_norm64(x, w, b, 32, 1e-6, silu=True)
    ours = cpu.group_norm(mx.array(x), mx.array(w), mx.array(b), 32, 1e-6, cpu.silu)
    assert rel_err(ours, ref) <= OUTPUT_TOL


def test_group_norm_applies_other_activations_after():
    x = mx.array(np.random.default_rng(6).standard_normal((1, 32, 32, 64)).astype(np.float32))
    w, b = mx.ones((64,)), mx.zeros((64,))
    ours = cpu.group_norm(x, w, b, 16, 1e-5, nn.relu)
    ref = np.maximum(group_norm64(np.array(x), 1.0, 0.0, 16, 1e-5), 0)
    assert rel_err(ours, ref) <= OUTPUT_TOL


# -- attention --------------------------------------------------------------------------------


def attention64(q, k, v, heads):
    B, L, D = q.shape
    d = D // heads
    q, k, v = (
        a.astype(np.float64).reshape(B, -1, heads, d).transpose(0, 2, 1, 3) for a in (q, k, v)
    )
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(B, L, D)


@pytest.mark.parametrize(
    ("B", "L", "S", "heads", "d"),
    [
        (3, 256, 256, 8, 40),  # SD 1.5 self-attention (first level at 128 px)
        (3, 256, 77, 8, 40),  # cross-attention on CLIP's 77 tokens
        (3, 64, 64, 8, 160),  # deepest level
        (1, 300, 300, 1, 64),  # VAE-like single head: query rows split over threads
        (2, 37, 29, 3, 13),  # nothing a multiple of anything (tails everywhere)
    ],
)
def test_attention_matches_float64(B, L, S, heads, d):
    rng = np.random.default_rng(7)
    q = (rng.standard_normal((B, L, heads * d)) * 1.5).astype(np.float32)
    k = (rng.standard_normal((B, S, heads * d)) * 1.5).astype(np.float32)
    v = rng.standard_normal((B, S, heads * d)).astype(np.float32)
    ref = attention64(q, k, v, heads)
    ours = cpu.attention(mx.array(q), mx.array(k), mx.array(v), heads)
    assert rel_err(ours, ref) <= OUTPUT_TOL


def test_attention_with_peaked_scores():
    """Large logits (softmax close to one-hot) and a block of keys far off: finite, and as
    close to float64 as MLX's own float32 attention (logits ~1e4 carry float32 rounding of
    ~1e-3, which no float32 implementation avoids)."""
    rng = np.random.default_rng(8)
    q = (rng.standard_normal((1, 64, 2 * 32)) * 8).astype(np.float32)
    k = (rng.standard_normal((1, 96, 2 * 32)) * 8).astype(np.float32)
    k[:, 50:60] = -30 * np.abs(q[:, :10].mean(1, keepdims=True))
    v = rng.standard_normal((1, 96, 2 * 32)).astype(np.float32)
    ref = attention64(q, k, v, 2)
    args = (mx.array(q), mx.array(k), mx.array(v), 2)
    ours = np.array(cpu.attention(*args))
    mlx_err = rel_err(cpu.attention_reference(*args), ref)
    assert np.isfinite(ours).all()
    assert rel_err(ours, ref) <= max(OUTPUT_TOL, 2 * mlx_err)


# -- dispatch ---------------------------------------------------------------------------------


def test_inputs_are_not_written():
    rng = np.random.default_rng(9)
    x = mx.array(rng.standard_normal((2, 16, 16, 64)).astype(np.float32))
    q = mx.array(rng.standard_normal((2, 256, 64)).astype(np.float32))
    h = mx.array(rng.standard_normal((2, 256, 128)).astype(np.float32))
    before = [np.array(a) for a in (x, q, h)]
    w, b = mx.ones((64,)), mx.zeros((64,))
    mx.eval(cpu.group_norm(x, w, b, 8, 1e-5, cpu.silu), cpu.silu(x), cpu.gelu(x))
    mx.eval(cpu.attention(q, q, q, 4), cpu.geglu(h))
    for a, ref in zip((x, q, h), before, strict=True):
        np.testing.assert_array_equal(np.array(a), ref)


def test_switched_off_runs_the_references():
    rng = np.random.default_rng(10)
    x = mx.array(rng.standard_normal((3, 16, 16, 64)).astype(np.float32))
    q = mx.array(rng.standard_normal((3, 256, 64)).astype(np.float32))
    w, b = mx.ones((64,)), mx.zeros((64,))
    with cpu.use_kernels(False):
        np.testing.assert_array_equal(np.array(cpu.silu(x)), np.array(nn.silu(x)))
        np.testing.assert_array_equal(
            np.array(cpu.attention(q, q, q, 4)), np.array(cpu.attention_reference(q, q, q, 4))
        )
        np.testing.assert_array_equal(
            np.array(cpu.group_norm(x, w, b, 8, 1e-5)),
            np.array(cpu.group_norm_reference(x, w, b, 8, 1e-5)),
        )
    # and on again: the kernel's result differs from the reference only by rounding
    assert rel_err(cpu.silu(x), np.array(nn.silu(x), dtype=np.float64)) <= 1e-6


def test_float16_and_compile_fall_back():
    x = mx.array(np.random.default_rng(11).standard_normal((4, 64, 64)).astype(np.float32))
    half = x.astype(mx.float16)
    assert cpu.silu(half).dtype == mx.float16  # the reference ran: no float32 kernel
    compiled = mx.compile(lambda a: cpu.gelu(cpu.silu(a)))  # no eval possible while tracing
    np.testing.assert_allclose(
        np.array(compiled(x)), np.array(cpu.gelu_reference(nn.silu(x))), rtol=0, atol=1e-6
    )


def test_build_degrades_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("PBMLX_CACHE", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(cpu.shutil, "which", lambda name: None)
    lib_, info = cpu._load()
    assert lib_ is None and not info.available and "no C compiler" in info.reason


def test_build_degrades_when_the_compiler_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("PBMLX_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false") or "/bin/false")
    lib_, info = cpu._load()
    assert lib_ is None and "build failed" in info.reason
    assert not list(tmp_path.rglob("*.so"))  # nothing half-written left in the cache


def test_switch_variable_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("PBMLX_CPU_KERNELS", "0")
    lib_, info = cpu._load()
    assert lib_ is None and info.reason == "PBMLX_CPU_KERNELS=0"


def test_reference_switch_forces_the_references(monkeypatch):
    # PBMLX_KERNELS=reference: every dispatcher runs its MLX-op reference (issue 9's switch).
    monkeypatch.setenv("PBMLX_KERNELS", "reference")
    lib_, info = cpu._load()
    assert lib_ is None and info.reason == "PBMLX_KERNELS=reference"


# ---------------------------------------------------------------------------- ARM


AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"  # Debian's libc6-dev-arm64-cross
EM_AARCH64 = 183  # ELF e_machine of AArch64


def test_kernels_compile_for_apple_silicon_cpus(tmp_path):
    """The same C source compiles for 64-bit Arm tuned for Apple's M1 (clang, cross), so the
    Apple Silicon CPU path is not a surprise; the vector extensions lower to NEON there.
    CI installs clang and the aarch64 libc headers (.ci/run); elsewhere a missing toolchain
    skips, in CI it fails."""
    import os
    import struct
    import subprocess
    from pathlib import Path

    clang = shutil.which("clang")
    if clang is None or not Path(AARCH64_SYSROOT, "include", "math.h").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install clang and libc6-dev-arm64-cross (.ci/run)")
        pytest.skip("needs clang and libc6-dev-arm64-cross")
    source = Path(cpu.__file__).with_name(cpu.SOURCE_FILE)
    obj = tmp_path / "kernels.o"
    target = ["--target=aarch64-linux-gnu", f"--sysroot={AARCH64_SYSROOT}", "-mcpu=apple-m1"]
    flags = ["-O3", "-std=gnu11", "-fPIC", "-Werror", "-Wall"]
    r = subprocess.run(
        [clang, *target, *flags, "-c", str(source), "-o", str(obj)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    header = obj.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2  # 64-bit ELF
    assert struct.unpack("<H", header[18:20])[0] == EM_AARCH64


def test_gradients_through_the_kernels_are_the_references() -> None:
    """The kernels write arrays outside MLX's graph; under ``mx.grad`` they must still carry
    the reference's gradient (as custom functions), not silently none. float32: the
    vector-Jacobian products are the references' own, so the only difference is the forward
    values they are evaluated at (~1e-7 relative)."""
    if not cpu.info().available:
        pytest.skip(cpu.info().reason)
    import mlx.nn as nn

    r = np.random.default_rng(0)

    def a(*shape):
        return mx.array(r.standard_normal(shape).astype(np.float32))

    cases = [
        (cpu.silu, nn.silu, (a(4096, 8),)),
        (cpu.gelu, cpu.gelu_reference, (a(4096, 8),)),
        (cpu.geglu, cpu.geglu_reference, (a(512, 64),)),
        (
            lambda x, w, b: cpu.group_norm(x, w, b, 4, 1e-5, act=cpu.silu),
            lambda x, w, b: nn.silu(cpu.group_norm_reference(x, w, b, 4, 1e-5)),
            (a(2, 32, 32, 16), a(16), a(16)),
        ),
        (
            lambda q, k, v: cpu.attention(q, k, v, 2),
            lambda q, k, v: cpu.attention_reference(q, k, v, 2),
            (a(2, 128, 16), a(2, 128, 16), a(2, 128, 16)),
        ),
        (cpu.linear, cpu.linear_reference, (a(4096, 32), a(48, 32), a(48))),
        (
            lambda x, w, b: cpu.conv2d(x, w, b, 1, 1),
            lambda x, w, b: cpu.conv2d_reference(x, w, b, 1, 1),
            (a(2, 32, 32, 8), a(16, 3, 3, 8), a(16)),
        ),
    ]
    for kernel, reference, args in cases:
        nums = list(range(len(args)))
        got = mx.grad(lambda *x, f=kernel: (f(*x) ** 2).sum(), argnums=nums)(*args)
        want = mx.grad(lambda *x, f=reference: (f(*x) ** 2).sum(), argnums=nums)(*args)
        for g, w in zip(got, want, strict=True):
            scale = float(mx.abs(w).max())
            assert scale > 0
            assert float(mx.abs(g - w).max()) <= 1e-5 * scale
