"""GroupNorm (+SiLU) kernels (pbmlx.kernels.norm): the proofs issue 9 asks for.

(a) The MLX-op reference against an independent float64 NumPy GroupNorm (explicit loops over
    samples and groups), with a control showing the tolerance rejects a wrong definition.
(b) The Metal kernel traced on Linux (``mx.export_function`` + ``verbose=True``): body,
    signature and template values checked, the whole generated source kept as a snapshot.
(c) That exact Metal source, and the CUDA twin as MLX 0.32 would build it, compiled as C++ and
    run over the real grid and threadgroup shape on the CPU (tests/gpu_emulation.py), compared
    with the reference on random inputs and edge shapes.
(d) The real kernels on Metal and on CUDA, where present.
(e) The dispatcher: which implementation runs, and the forced reference against the default path.

Tolerances (outputs are O(1..5): normalised values times weights of O(1) plus biases):
- float32 against float64: 1e-5 absolute and relative. The inputs have mean 3 and std 2, so the
  float32 statistics lose about |mean| / std * 2^-24 * log2(n) relative: a few 1e-7.
- float32 kernels against the reference: 1e-5 (different summation orders: per thread then a
  tree, against MLX's reductions); real Metal 5e-5 (fast-math exp, rsqrt and division).
- float16: 4e-3 absolute and relative. The reference rounds the normalised value to float16,
  then the product and the sum (3 roundings of 2^-11 relative); the kernels round once.
- bfloat16 (real GPUs only): 3e-2, the same three roundings at 2^-8.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import pbmlx  # noqa: F401  (pbmlx before mlx.core, as everywhere in the tests)

import mlx.core as mx  # isort: skip
import mlx.nn as nn  # isort: skip

from gpu_emulation import (
    check_snapshot,
    clangxx,
    compile_cuda,
    compile_metal,
    cuda_source,
    traced_sources,
)
from pbmlx.kernels import cpu, dispatch, norm, source
from pbmlx.kernels.dispatch import reference_only

METAL = mx.metal.is_available()
CUDA = hasattr(mx, "cuda") and mx.cuda.is_available()
NP_DTYPES = {mx.float32: np.float32, mx.float16: np.float16}

# (shape (B, H, W, C), groups, dtype, SiLU): the edge shapes the emulation runs.
EDGE_CASES = [
    pytest.param((2, 5, 7, 12), 4, mx.float32, True, id="odd-channels-per-group-silu"),
    pytest.param((1, 1, 1, 6), 3, mx.float32, False, id="1x1-spatial"),
    pytest.param((3, 9, 11, 10), 2, mx.float32, False, id="B3-n-not-multiple-of-TG"),
    pytest.param((1, 33, 17, 5), 5, mx.float32, True, id="one-channel-per-group"),
    pytest.param((2, 16, 16, 8), 4, mx.float16, True, id="float16-silu"),
    pytest.param((1, 6, 5, 6), 2, mx.float16, False, id="float16-small"),
]


def _inputs(shape, groups, dtype=mx.float32, seed=0):
    """x with mean 3 and std 2 (so the mean matters), weights and biases of O(1)."""
    rng = np.random.default_rng(seed)
    C = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(NP_DTYPES[dtype])
    w = (rng.standard_normal(C) * 0.5 + 1).astype(NP_DTYPES[dtype])
    b = (rng.standard_normal(C) * 0.5).astype(NP_DTYPES[dtype])
    return x, w, b


def group_norm_f64(x, w, b, groups, eps, silu=False, unbiased=False):
    """torch.nn.GroupNorm on NHWC in float64, group by group (independent of the reference's
    reshape); ``unbiased`` is the wrong definition the control uses."""
    x64, y = x.astype(np.float64), np.empty(x.shape)
    cpg = x.shape[-1] // groups
    for s in range(x.shape[0]):
        for g in range(groups):
            sel = (s, Ellipsis, slice(g * cpg, (g + 1) * cpg))
            part = x64[sel]
            var = part.var(ddof=1 if unbiased else 0)
            y[sel] = (part - part.mean()) / np.sqrt(var + eps)
    y = y * w.astype(np.float64) + b.astype(np.float64)
    return y / (1 + np.exp(-y)) if silu else y


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == mx.float32 else {"rtol": 4e-3, "atol": 4e-3}


@pytest.fixture(scope="module")
def clang():
    """clang++ for the emulation; its absence skips, except in CI (CI installs it)."""
    if clangxx() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("clang++ is missing in CI (.ci/run installs it)")
        pytest.skip("clang++ is not installed (the GPU emulation compiles kernels with it)")


# ---------------------------------------------------------------------------- (a) reference


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize(("shape", "groups"), [((2, 8, 8, 32), 8), ((1, 3, 5, 6), 3)])
def test_reference_matches_float64(shape, groups, silu):
    x, w, b = _inputs(shape, groups)
    act = cpu.silu if silu else None
    y = norm.group_norm_reference(mx.array(x), mx.array(w), mx.array(b), groups, 1e-5, act)
    expected = group_norm_f64(x, w, b, groups, 1e-5, silu)
    np.testing.assert_allclose(np.array(y), expected, **_tol(mx.float32))


def test_reference_float16_matches_float64_and_keeps_dtype():
    x, w, b = _inputs((2, 6, 6, 16), 4, mx.float16)
    y = norm.group_norm_reference(mx.array(x), mx.array(w), mx.array(b), 4, 1e-6, cpu.silu)
    assert y.dtype == mx.float16
    expected = group_norm_f64(x, w, b, 4, 1e-6, silu=True)
    np.testing.assert_allclose(np.array(y).astype(np.float64), expected, **_tol(mx.float16))


def test_control_wrong_definition_fails_the_tolerance():
    """Unbiased variance (n = 4 per group here) or a forgotten SiLU must not pass."""
    x, w, b = _inputs((2, 1, 2, 8), 4)
    y = np.array(norm.group_norm_reference(mx.array(x), mx.array(w), mx.array(b), 4, 1e-5))
    for wrong in (
        group_norm_f64(x, w, b, 4, 1e-5, unbiased=True),
        group_norm_f64(x, w, b, 4, 1e-5, silu=True),
    ):
        with pytest.raises(AssertionError):
            np.testing.assert_allclose(y, wrong, **_tol(mx.float32))


# ---------------------------------------------------------------------------- (b) snapshots

SNAPSHOT_VARIANTS = [
    (mx.float32, False),
    (mx.float32, True),
    (mx.float16, False),
    (mx.float16, True),
    (mx.bfloat16, False),
    (mx.bfloat16, True),
]
METAL_TYPES = {mx.float32: "float", mx.float16: "float16_t", mx.bfloat16: "bfloat16_t"}


def _trace(x, w, b, groups, eps, silu):
    def fn(x, w, b):
        return norm.group_norm_kernel("metal", x, w, b, groups, eps, silu=silu, verbose=True)

    sources = traced_sources(fn, x, w, b)
    assert len(sources) == 1
    return sources[0]


@pytest.mark.parametrize(("dtype", "silu"), SNAPSHOT_VARIANTS)
def test_metal_source_snapshot(dtype, silu):
    x = mx.zeros((2, 8, 8, 32), dtype=dtype)
    w, b = mx.ones((32,), dtype=dtype), mx.zeros((32,), dtype=dtype)
    src = _trace(x, w, b, 8, 1e-5, silu)
    kernel = source.read("group_norm.metal")
    assert kernel.body.strip() in src  # the body, verbatim
    t = METAL_TYPES[dtype]
    for param in (
        f"const device {t}* x [[buffer(0)]]",
        f"const device {t}* weight [[buffer(1)]]",
        f"const device {t}* bias [[buffer(2)]]",
        "const constant int32_t* dims [[buffer(3)]]",
        "const constant float* eps [[buffer(4)]]",
        f"device {t}* y [[buffer(5)]]",
        "uint3 thread_position_in_threadgroup [[thread_position_in_threadgroup]]",
        "uint3 threadgroup_position_in_grid [[threadgroup_position_in_grid]]",
    ):
        assert param in src, param
    assert "template <typename T, int TG, bool SILU>" in src
    assert f"<{t}, {norm.THREADS}, {int(silu)}>;" in src  # the instantiation (bools as 0/1)
    name = {mx.float32: "float32", mx.float16: "float16", mx.bfloat16: "bfloat16"}[dtype]
    check_snapshot(f"group_norm__{name}{'_silu' if silu else ''}.metal", src)


def test_mixed_dtypes_write_the_promoted_dtype():
    """float16 activations with float32 weights: float32 out, as the reference promotes."""
    x = mx.zeros((1, 4, 4, 16), dtype=mx.float16)
    w, b = mx.ones((16,)), mx.zeros((16,))
    assert norm.output_dtype(x, w, b) == mx.float32
    src = _trace(x, w, b, 4, 1e-5, False)
    assert "const device float16_t* x [[buffer(0)]]" in src
    assert "device float* y [[buffer(5)]]" in src
    assert f"<float, {norm.THREADS}, 0>;" in src


# ---------------------------------------------------------------------------- (c) emulation


def _np_inputs(x, w, b, groups, eps):
    names = source.read("group_norm.metal").input_names
    arrays = norm.kernel_inputs(mx.array(x), mx.array(w), mx.array(b), groups, eps)
    return dict(zip(names, (np.array(a) for a in arrays), strict=True))


def _emulate_metal(x, w, b, groups, eps, silu):
    src = _trace(mx.array(x), mx.array(w), mx.array(b), groups, eps, silu)
    grid, threadgroup = norm.launch_shape(x.shape[0], groups)
    out = {"y": (x.shape, x.dtype.name)}
    return compile_metal(src)(_np_inputs(x, w, b, groups, eps), out, grid, threadgroup)["y"]


def _emulate_cuda(x, w, b, groups, eps, silu):
    kernel = source.read("group_norm.cu")
    ins = _np_inputs(x, w, b, groups, eps)
    inputs = [(n, a.dtype.name) for n, a in ins.items()]
    outputs = [("y", x.dtype.name)]
    dtype = mx.float32 if x.dtype == np.float32 else mx.float16
    fname, src = cuda_source(
        "group_norm", kernel.header, kernel.body, inputs, outputs, norm.kernel_template(dtype, silu)
    )
    grid, threadgroup = norm.launch_shape(x.shape[0], groups)
    em = compile_cuda(fname, src, inputs, outputs)
    return em(ins, {"y": (x.shape, x.dtype.name)}, grid, threadgroup)["y"]


def _check_against_reference(y, x, w, b, groups, eps, silu, dtype):
    act = cpu.silu if silu else None
    with reference_only():
        ref = norm.group_norm(mx.array(x), mx.array(w), mx.array(b), groups, eps, act)
    assert y.dtype == NP_DTYPES[dtype]
    assert np.isfinite(y).all()  # every element written (outputs start as NaN)
    tol = _tol(dtype)
    np.testing.assert_allclose(y.astype(np.float32), np.array(ref).astype(np.float32), **tol)
    expected = group_norm_f64(x, w, b, groups, eps, silu)
    np.testing.assert_allclose(y.astype(np.float64), expected, **tol)


@pytest.mark.parametrize(("shape", "groups", "dtype", "silu"), EDGE_CASES)
def test_metal_emulated_matches_reference(clang, shape, groups, dtype, silu):
    x, w, b = _inputs(shape, groups, dtype, seed=1)
    y = _emulate_metal(x, w, b, groups, 1e-5, silu)
    _check_against_reference(y, x, w, b, groups, 1e-5, silu, dtype)


@pytest.mark.parametrize(("shape", "groups", "dtype", "silu"), EDGE_CASES)
def test_cuda_emulated_matches_reference(clang, shape, groups, dtype, silu):
    x, w, b = _inputs(shape, groups, dtype, seed=2)
    y = _emulate_cuda(x, w, b, groups, 1e-6, silu)
    _check_against_reference(y, x, w, b, groups, 1e-6, silu, dtype)


def test_emulation_control_detects_a_wrong_kernel(clang):
    """The same comparison rejects the kernel run without the SiLU the reference applies."""
    x, w, b = _inputs((2, 5, 7, 12), 4)
    y = _emulate_metal(x, w, b, 4, 1e-5, silu=False)
    with pytest.raises(AssertionError):
        _check_against_reference(y, x, w, b, 4, 1e-5, True, mx.float32)


def test_emulated_large_group_matches_float64(clang):
    """A group of 64 x 64 positions x 40 channels (the UNet's 1280 / 32): 640 elements per
    thread, summed in float32 per thread before the tree."""
    x, w, b = _inputs((1, 64, 64, 80), 2, seed=3)
    y = _emulate_metal(x, w, b, 2, 1e-5, silu=True)
    np.testing.assert_allclose(y, group_norm_f64(x, w, b, 2, 1e-5, silu=True), **_tol(mx.float32))


# ---------------------------------------------------------------------------- (d) real GPUs

GPU_CASES = [
    ((2, 16, 16, 64), 32, mx.float32, True, 5e-5),
    ((1, 7, 9, 30), 3, mx.float32, False, 5e-5),
    ((3, 32, 32, 64), 32, mx.float16, True, 4e-3),
    ((1, 8, 8, 64), 32, mx.bfloat16, True, 3e-2),
]


def _run_on_gpu(backend, shape, groups, dtype, silu, tol):
    x, w, b = (mx.array(a).astype(dtype) for a in _inputs(shape, groups))
    with mx.stream(mx.gpu):
        y = norm.group_norm_kernel(backend, x, w, b, groups, 1e-5, silu=silu)
        act = cpu.silu if silu else None
        ref = norm.group_norm_reference(x, w, b, groups, 1e-5, act)
        routed = norm.group_norm(x, w, b, groups, 1e-5, act)
    assert y.dtype == dtype
    y32, ref32 = np.array(y.astype(mx.float32)), np.array(ref.astype(mx.float32))
    np.testing.assert_allclose(y32, ref32, rtol=tol, atol=tol)
    np.testing.assert_array_equal(np.array(routed.astype(mx.float32)), y32)


@pytest.mark.skipif(not METAL, reason="needs MLX's Metal backend (Apple Silicon)")
@pytest.mark.parametrize(("shape", "groups", "dtype", "silu", "tol"), GPU_CASES)
def test_metal_kernel_on_metal(shape, groups, dtype, silu, tol):
    assert dispatch.choose() == "metal"
    _run_on_gpu("metal", shape, groups, dtype, silu, tol)


@pytest.mark.skipif(not CUDA, reason="needs MLX's CUDA backend (mlx[cuda] and an NVIDIA GPU)")
@pytest.mark.parametrize(("shape", "groups", "dtype", "silu", "tol"), GPU_CASES)
def test_cuda_kernel_on_cuda(shape, groups, dtype, silu, tol):
    assert dispatch.choose() == "cuda"
    _run_on_gpu("cuda", shape, groups, dtype, silu, tol)


# ---------------------------------------------------------------------------- (e) dispatcher


@pytest.mark.parametrize("act", [None, cpu.silu, nn.gelu])
def test_dispatcher_reference_within_tolerance_of_default_path(act):
    x, w, b = (mx.array(a) for a in _inputs((2, 16, 16, 64), 32))
    y = norm.group_norm(x, w, b, 32, 1e-5, act)
    with reference_only():
        ref = norm.group_norm(x, w, b, 32, 1e-5, act)
    np.testing.assert_allclose(np.array(y), np.array(ref), **_tol(mx.float32))


def test_dispatcher_on_this_cpu_is_the_c_kernel_unchanged():
    """On the CPU backend the dispatcher is cpu.group_norm itself (same bits, nothing added)."""
    if dispatch.choose() != "cpu":
        pytest.skip("the default device is not the CPU")
    x, w, b = (mx.array(a) for a in _inputs((2, 16, 16, 64), 32))
    np.testing.assert_array_equal(
        np.array(norm.group_norm(x, w, b, 32, 1e-5, cpu.silu)),
        np.array(cpu.group_norm(x, w, b, 32, 1e-5, cpu.silu)),
    )


def test_forced_reference_runs_no_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran on the forced reference path")

    monkeypatch.setattr(cpu, "group_norm", refuse)
    monkeypatch.setattr(norm, "group_norm_kernel", refuse)
    x, w, b = _inputs((1, 8, 8, 16), 4)
    with reference_only():
        y = norm.group_norm(mx.array(x), mx.array(w), mx.array(b), 4, 1e-5, cpu.silu)
    expected = group_norm_f64(x, w, b, 4, 1e-5, silu=True)
    np.testing.assert_allclose(np.array(y), expected, **_tol(mx.float32))


def test_models_call_the_dispatcher(monkeypatch):
    """The UNet's (and so the VAE's) GroupNorm layer goes through norm.group_norm."""
    from pbmlx.models.unet import GroupNorm

    calls = []
    real = norm.group_norm

    def spy(*args):
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(norm, "group_norm", spy)
    layer = GroupNorm(4, 16, 1e-5)
    x = mx.array(_inputs((1, 4, 4, 16), 4)[0])
    y = layer(x, cpu.silu)
    assert calls == [cpu.silu]
    expected = group_norm_f64(np.array(x), np.ones(16), np.zeros(16), 4, 1e-5, silu=True)
    np.testing.assert_allclose(np.array(y), expected, **_tol(mx.float32))
