"""The adjust engine's kernels (``pbmlx.kernels.adjust``) against their definition.

What is proven, and how:
- the references (the MLX ops of ``pbmlx.adjust.ops`` chained) against float64 NumPy oracles of
  the documented formulas (``test_adjust.ORACLES``), on real photos;
- the CPU kernel (C, ``cpu_kernels.c``) against the references: every per-pixel op alone at the
  spec's amounts, long chains (contrast twice, so two statistics passes), 8-bit and float in
  and out, numpy and MLX arrays, and edge shapes (1 x 1, widths that are not a multiple of the
  8-pixel vector or the 64-pixel block);
- the Metal kernels: traced inside ``mx.export_function`` (``verbose=True``) on Linux, the
  generated source checked (body, signature, template values) and kept as snapshots; then that
  exact source compiled as C++ against ``tests/emulation/gpu_shim.h`` and run over the same grid
  and threadgroups as on a GPU, through the real dispatcher (the launcher is swapped for the
  emulator), against the references; the CUDA twins the same way from the source MLX's CUDA
  backend would build;
- on a Mac (Metal) or an NVIDIA machine (CUDA), the real kernels against the references
  (skipped elsewhere).

Tolerances: float32 results within 2e-6 of the reference (``pow`` is computed as
``exp(p log x)`` on the CPU, contrast's mean in float64, and compilers fuse multiply-adds; each
differs from the MLX ops by a few float32 roundings, ~1e-7 per op); 8-bit codes equal to the
reference's float value rounded, except where that value lies within 2e-6 of a rounding
boundary (a tie float32 rounding decides either way), and there off by one at most. float16 kernels:
within 1e-3 (half of float16's spacing at 1 is 4.9e-4, plus the float32 differences).
References vs float64 oracles: 1e-5 (the per-op tolerance of test_adjust.py; chains of up to 15
ops stay inside it on these photos).
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import os
import re
import tracemalloc

import mlx.core as mx
import numpy as np
import pytest
from gpu_emulation import check_snapshot, clangxx, emulated_launch, traced_sources
from pbmlx.kernels import adjust as ka
from pbmlx.kernels import cpu, dispatch, gpu
from pbmlx.kernels.dispatch import reference_only
from pbmlx.kernels.source import read
from skimage import data
from test_adjust import ORACLES, amounts_for

from pbmlx.adjust import ops
from pbmlx.adjust.ops import apply_ops
from pbmlx.adjust.specs import SPECS

FLOAT_TOL = 2e-6
HALF_TOL = 1e-3
ORACLE_TOL = 1e-5

POINTWISE = [name for name in SPECS if name not in ops.SEGMENT_OPS]  # the fused chain's ops
LONG = [
    ("exposure", 0.7), ("temperature", 0.4), ("brightness", 0.2), ("contrast", 0.3),
    ("tint", -0.3), ("gamma", 0.5), ("highlights", -0.5), ("shadows", 0.6), ("fade", 0.3),
    ("hue", 40.0), ("sepia", 0.5), ("vibrance", 0.6), ("invert", 0.2), ("vignette", 0.5),
    ("grain", 0.5), ("contrast", -0.4), ("grayscale", 0.3),
]  # fmt: skip
PLANS = {
    "brightness": [("brightness", 0.3)],
    "three": [("brightness", 0.2), ("contrast", 0.3), ("saturation", 0.4)],
    "separable": [("exposure", -0.5), ("gamma", 0.4), ("fade", 0.2), ("invert", 0.1)],
    "long": LONG,
    "spatial": [("sharpen", 0.6), ("brightness", 0.3), ("blur", 0.4), ("contrast", 0.2)],
}


def as_plan(steps) -> list[dict]:
    return [{"op": n, "amount": a} for n, a in steps]


def photo(name: str = "astronaut", h: int = 160, w: int = 203) -> np.ndarray:
    """A crop of a real photo (odd sizes: not a multiple of any vector or block width)."""
    return np.ascontiguousarray(getattr(data, name)()[:h, :w, :3])


def assert_close(got, want, dtype) -> None:
    """``got`` (float, or 8-bit codes when ``dtype`` is uint8) against the float reference
    ``want``: floats within the tolerance; codes equal to ``round(clip(want) * 255)`` except
    where ``want * 255`` lies within the float tolerance of a rounding boundary (a tie that
    float32 rounding decides either way: a linear map such as fade puts many codes exactly on
    one), and there off by one at most."""
    got = np.asarray(got).astype(np.float64)
    want = np.asarray(want).astype(np.float64)
    assert got.shape == want.shape
    if dtype == mx.uint8:
        scaled = np.clip(want, 0, 1) * 255
        near = np.abs(scaled % 1 - 0.5) <= 255 * FLOAT_TOL
        d = np.abs(got - np.rint(scaled))
        assert d[~near].max(initial=0) == 0, (d[~near] > 0).sum()
        assert d.max() <= 1
    else:
        tol = HALF_TOL if dtype == mx.float16 else FLOAT_TOL
        assert np.abs(got - want).max() <= tol


def reference(img, steps, seed=0) -> np.ndarray:
    """The definition's float32 result (codes are checked against it: see assert_close)."""
    with reference_only():
        return np.array(apply_ops(mx.array(np.asarray(img)), as_plan(steps), seed=seed))


def need_clang() -> None:
    if clangxx() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install clang (.ci/run)")
        pytest.skip("the GPU emulation needs clang++")


def need_cpu_kernels() -> None:
    if not cpu.info().available:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the CPU kernels must build in CI: {cpu.info().reason}")
        pytest.skip(f"CPU kernels unavailable: {cpu.info().reason}")


@pytest.fixture(params=["metal", "cuda"])
def emulated_gpu(request, monkeypatch) -> str:
    """The dispatchers see a GPU backend and launch their kernels in the emulator."""
    need_clang()
    monkeypatch.setattr(gpu, "launch", emulated_launch)
    monkeypatch.setattr(dispatch, "device_backend", lambda: request.param)
    return request.param


# ---------------------------------------------------------------------------- references


@pytest.mark.parametrize("plan", ["three", "separable", "long"])
def test_chain_reference_matches_float64_oracle(plan: str) -> None:
    u8 = photo("coffee")
    x = (u8.astype(np.float32) / 255.0).astype(np.float64)
    steps = [s for s in PLANS[plan] if s[0] != "grain"]  # the oracle has its own noise draw
    for name, amount in steps:
        x = ORACLES[name](x, amount)
    got = np.array(ka.chain_reference(mx.array(u8), steps), dtype=np.float64)
    assert np.abs(got - x).max() <= ORACLE_TOL
    codes = np.array(ka.chain_reference(mx.array(u8), steps, out_dtype=mx.uint8))
    want = np.rint(np.clip(x, 0, 1) * 255)
    # Equal, except where the float64 value is within the tolerance of a rounding boundary.
    near = np.abs((np.clip(x, 0, 1) * 255) % 1 - 0.5) < 255 * ORACLE_TOL
    assert np.array_equal(codes[~near], want[~near])
    assert np.abs(codes.astype(int) - want).max() <= 1


def test_quantize_reference_rounds_half_to_even_and_clips() -> None:
    x32 = np.array([-0.1, 0.0, 0.3 / 255, 0.5, 1.7 / 255, 254.6 / 255, 1.0, 1.7], np.float32)
    # The float32 product, as the kernels form it; 0.5 * 255 = 127.5 exactly -> 128 (even).
    want = np.rint(np.clip(x32, 0, 1) * np.float32(255)).astype(np.uint8)
    got = np.array(ka.quantize_reference(mx.array(x32)))
    assert np.array_equal(got, want) and got[3] == 128


# ---------------------------------------------------------------------------- CPU kernel


@pytest.mark.parametrize("name", POINTWISE)
def test_cpu_kernel_each_op(name: str) -> None:
    need_cpu_kernels()
    u8 = photo("chelsea")
    for a in amounts_for(name):
        for out in (mx.float32, mx.uint8):
            got = ka.adjust_chain(u8, [(name, a)], seed=4, out_dtype=out)
            assert isinstance(got, np.ndarray)
            assert_close(got, ka.chain_reference(mx.array(u8), [(name, a)], 4), out)


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("src", ["u8", "f32"])
@pytest.mark.parametrize("kind", [np.asarray, mx.array])
def test_cpu_kernel_plans(plan: str, src: str, kind) -> None:
    need_cpu_kernels()
    u8 = photo()
    img = u8 if src == "u8" else u8.astype(np.float32) / 255.0
    for out in (mx.float32, mx.uint8):
        got = apply_ops(kind(img), as_plan(PLANS[plan]), seed=7, out_dtype=out)
        assert type(got) is type(kind(img))  # numpy in, numpy out
        assert got.dtype == (np.uint8 if out == mx.uint8 else np.float32) or got.dtype == out
        assert_close(got, reference(img, PLANS[plan], 7), out)


@pytest.mark.parametrize("shape", [(1, 1), (1, 13), (13, 1), (7, 67), (65, 9), (2, 129)])
def test_cpu_kernel_edge_shapes(shape) -> None:
    need_cpu_kernels()
    rng = np.random.default_rng(sum(shape))
    u8 = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    f32 = rng.random((*shape, 3), dtype=np.float32)
    for img in (u8, f32):
        for out in (mx.float32, mx.uint8):
            got = apply_ops(img, as_plan(LONG), seed=1, out_dtype=out)
            assert_close(got, reference(img, LONG, 1), out)


def test_cpu_kernel_is_used_and_reads_codes_in_place() -> None:
    """8-bit codes in and out never exist as float32 here: the only large allocation is the
    output (tracemalloc sees numpy's allocations); the float path would need 4x the bytes."""
    need_cpu_kernels()
    u8 = np.ascontiguousarray(np.tile(photo("coffee", 400, 600), (2, 2, 1)))
    plan = as_plan(PLANS["three"])
    apply_ops(u8, plan, out_dtype=mx.uint8)  # warm-up: builds the kernels
    tracemalloc.start()
    try:
        out = apply_ops(u8, plan, out_dtype=mx.uint8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8 and out.shape == u8.shape
    assert peak < 1.5 * u8.nbytes, (peak, u8.nbytes)


def test_forcing_the_reference(monkeypatch) -> None:
    u8 = photo()
    monkeypatch.setenv(dispatch.ENV_KERNELS, "reference")
    assert dispatch.choose() == "reference"
    got = apply_ops(mx.array(u8), as_plan(LONG), seed=2)
    monkeypatch.delenv(dispatch.ENV_KERNELS)
    want = ka.chain_reference(mx.array(u8), LONG, 2)
    assert mx.array_equal(got, want)
    with reference_only():
        assert dispatch.choose() == "reference"
    assert dispatch.choose() == "cpu"


# ---------------------------------------------------------------------------- Metal source


def _trace_chain(in_dtype, out_dtype, mode) -> str:
    u8 = photo(h=5, w=7)
    img = mx.array(u8) if in_dtype == mx.uint8 else mx.array(u8 / 255.0).astype(in_dtype)
    rows, _, _ = ka.program(PLANS["three"], 5, 7)

    def fn(x, prog, noise):
        return ka.chain_gpu("metal", x, prog, noise, mode, out_dtype, verbose=True)

    (src,) = traced_sources(fn, img, mx.array(rows), mx.zeros((1,)))
    return src


CHAIN_VARIANTS = {
    "u8_codes": (mx.uint8, mx.uint8, ka.OUT_CODES, "uint8_t", "uint8_t", "true", "1"),
    "f32_values": (mx.float32, mx.float32, ka.OUT_VALUES, "float", "float", "false", "0"),
    "u8_luma": (mx.uint8, mx.float32, ka.OUT_LUMA, "uint8_t", "float", "true", "2"),
    "f16_values": (mx.float16, mx.float16, ka.OUT_VALUES, "float16_t", "float16_t", "false", "0"),
}


def _bool(text: str) -> str:
    # MLX writes bool template arguments as 1 / 0 in the instantiation.
    return {"true": "1", "false": "0"}[text]


@pytest.mark.parametrize("variant", list(CHAIN_VARIANTS))
def test_adjust_chain_metal_source(variant: str) -> None:
    tin, tout, mode, cin, cout, in_u8, out = CHAIN_VARIANTS[variant]
    src = _trace_chain(tin, tout, mode)
    kernel = read("adjust_chain.metal")
    assert kernel.body.strip() in src and kernel.header.strip() in src
    assert f"const device {cin}* src [[buffer(0)]]" in src
    assert "const device float* prog [[buffer(1)]]" in src
    # MLX puts inputs of under 8 elements in the constant address space.
    assert "const constant float* noise [[buffer(2)]]" in src  # the 1-element placeholder
    assert "const constant int32_t* dims [[buffer(3)]]" in src
    assert f"device {cout}* dst [[buffer(4)]]" in src
    assert "uint3 thread_position_in_grid [[thread_position_in_grid]]" in src
    assert "template <typename TI, typename TO, bool IN_U8, int OUT>" in src
    inst = re.search(r"decltype\(custom_kernel_adjust_chain\w*<(.*?)>\)", src)
    assert inst and inst.group(1) == f"{cin}, {cout}, {_bool(in_u8)}, {out}"
    check_snapshot(f"adjust_chain__{variant}.metal", src)


@pytest.mark.parametrize(("axis", "mode"), [(0, 0), (1, 1), (1, 2)])
def test_blur_metal_source(axis: int, mode: int) -> None:
    x = mx.zeros((4, 6, 3))
    taps = mx.array(ops.gaussian_kernel(1.0)[0].astype(np.float32))

    def fn(x, taps):
        return ka.blur_gpu("metal", x, x, taps, axis, mode, 0.5, verbose=True)

    (src,) = traced_sources(fn, x, taps)
    kernel = read("blur.metal")
    assert kernel.body.strip() in src and kernel.header.strip() in src
    spaces = ["device", "device", "device", "constant", "constant"]  # under 8 elements: constant
    for i, name in enumerate(["src", "orig", "taps", "dims", "params"]):
        kind = "int32_t" if name == "dims" else "float"
        assert f"const {spaces[i]} {kind}* {name} [[buffer({i})]]" in src, name
    assert "device float* dst [[buffer(5)]]" in src
    assert "template <int AXIS, int MODE>" in src
    assert re.search(rf"decltype\(custom_kernel_blur\w*<{axis}, {mode}>\)", src)
    check_snapshot(f"blur__axis{axis}_mode{mode}.metal", src)


# ---------------------------------------------------------------------------- emulation


@pytest.mark.parametrize("plan", list(PLANS))
def test_emulated_gpu_chain_matches_reference(emulated_gpu: str, plan: str) -> None:
    u8 = photo(h=37, w=45)  # 1665 pixels: not a multiple of the 256-thread groups
    for img in (u8, u8.astype(np.float32) / 255.0):
        for out in (mx.float32, mx.uint8):
            got = apply_ops(mx.array(img), as_plan(PLANS[plan]), seed=3, out_dtype=out)
            assert isinstance(got, mx.array)
            assert_close(got, reference(img, PLANS[plan], 3), out)


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (17, 16)])
def test_emulated_gpu_edge_shapes(emulated_gpu: str, shape) -> None:
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    steps = [*LONG, ("sharpen", 0.5), ("blur", 2.0)]  # blur wider than the short axes
    for out in (mx.float32, mx.uint8):
        got = apply_ops(mx.array(u8), as_plan(steps), seed=9, out_dtype=out)
        assert_close(got, reference(u8, steps, 9), out)


def test_emulated_gpu_float16(emulated_gpu: str) -> None:
    x = mx.array(photo(h=21, w=33) / 255.0).astype(mx.float16)
    got = ka.adjust_chain(x, PLANS["three"], 0, mx.float16)
    assert got.dtype == mx.float16
    want = ka.chain_reference(x, PLANS["three"], 0, mx.float32)
    assert_close(got, want, mx.float16)


def test_emulated_gpu_blur_and_unsharp(emulated_gpu: str) -> None:
    x = mx.array(photo(h=40, w=31) / 255.0).astype(mx.float32)
    for sigma in (0.5, 1.0, 3.7, 12.0):  # r = 2 .. 48, wider than both axes at the end
        got = ka.gaussian_blur(x, sigma)
        assert_close(got, ka.gaussian_blur_reference(x, sigma), mx.float32)
        got = ka.unsharp(x, 0.8, sigma)
        assert_close(got, ka.unsharp_reference(x, 0.8, sigma), mx.float32)


def test_wide_blur_uses_the_reference_on_gpu(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a radius over GPU_MAX_RADIUS must not launch the kernel")

    monkeypatch.setattr(gpu, "launch", refuse)
    monkeypatch.setattr(dispatch, "device_backend", lambda: "metal")
    x = mx.array(photo(h=20, w=20) / 255.0).astype(mx.float32)
    sigma = (ka.GPU_MAX_RADIUS + 1) / ops.GAUSS_TRUNCATE
    assert mx.array_equal(ka.gaussian_blur(x, sigma), ka.gaussian_blur_reference(x, sigma))


# ---------------------------------------------------------------------------- real devices


def _on_device(backend: str) -> None:
    u8 = photo()
    for plan in PLANS.values():
        for out in (mx.float32, mx.uint8):
            got = apply_ops(mx.array(u8), as_plan(plan), seed=5, out_dtype=out)
            assert dispatch.choose() == backend
            assert_close(got, reference(u8, plan, 5), out)


@pytest.mark.mac
@pytest.mark.skipif(not mx.metal.is_available(), reason="needs MLX's Metal backend")
def test_metal_kernels_on_metal() -> None:
    _on_device("metal")  # the default device is the GPU where MLX has Metal


@pytest.mark.skipif(
    not (hasattr(mx, "cuda") and mx.cuda.is_available()), reason="needs MLX's CUDA backend"
)
def test_cuda_kernels_on_cuda() -> None:
    _on_device("cuda")
