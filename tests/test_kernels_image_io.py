"""Image pre/post-processing kernels (pbmlx.kernels.image_io): the proofs issue 9 asks for.

(a) The MLX-op references against float64 NumPy, and bit for bit against the float32 NumPy
    expressions the editor and the pipeline used before (so wiring them in changes no pixel).
(b) The Metal kernel traced on Linux (``mx.export_function`` + ``verbose=True``): body,
    signature and template values checked, the generated source kept as a snapshot per variant.
(c) That Metal source, and the CUDA twin as MLX 0.32 would build it, compiled as C++ and run
    over the real grid on the CPU, compared with the references on all 256 uint8 values,
    clamped and tied inputs, and edge shapes (1 pixel, sizes not a multiple of the threadgroup,
    a batch), float16 model outputs included.
(d) The real kernels on Metal and on CUDA, where present.
(e) The dispatchers: references on this CPU, the forced reference equal to the default path,
    and the pipeline's conversions unchanged.

Tolerances: the conversions are a few float32 operations whose results the kernels reproduce
exactly (x / 255 correctly rounded without a division, products by 2 and 1/2 exact, rint), so
kernels and references must agree bit for bit (uint8 exactly), emulated and on real GPUs.
Against float64: at most half a float32 ulp at the result (6e-8 near 1) after the float32
roundings; uint8 codes are equal except where the exact value lies within float32 rounding of
a .5 tie, and never differ by more than one.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

import pbmlx  # noqa: F401  (pbmlx before mlx.core, as everywhere in the tests)

import mlx.core as mx  # isort: skip

from gpu_emulation import (
    check_snapshot,
    clangxx,
    compile_cuda,
    compile_metal,
    cuda_source,
    traced_sources,
)
from pbmlx.kernels import dispatch, image_io, source
from pbmlx.kernels.dispatch import reference_only

METAL = mx.metal.is_available()
CUDA = hasattr(mx, "cuda") and mx.cuda.is_available()
MODES = {
    "u8_to_model": image_io.U8_TO_MODEL,
    "to_model": image_io.UNIT_TO_MODEL,
    "to_unit": image_io.MODEL_TO_UNIT,
    "to_uint8": image_io.MODEL_TO_U8,
}
REFERENCES = {
    image_io.U8_TO_MODEL: image_io.to_model_input_reference,
    image_io.UNIT_TO_MODEL: image_io.to_model_input_reference,
    image_io.MODEL_TO_UNIT: image_io.from_model_output_reference,
    image_io.MODEL_TO_U8: image_io.to_uint8_reference,
}
SHAPES = {
    "pixel": (1, 1, 3),  # one pixel
    "ragged": (7, 5, 3),  # 105 elements: not a multiple of the 256-thread threadgroup
    "batch": (2, 9, 13, 3),
    "photo": (64, 48, 3),  # 9216 elements: 36 threadgroups
}


@pytest.fixture(scope="module")
def clang():
    """clang++ for the emulation; its absence skips, except in CI (CI installs it)."""
    if clangxx() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("clang++ is missing in CI (.ci/run installs it)")
        pytest.skip("clang++ is not installed (the GPU emulation compiles kernels with it)")


def all_u8() -> np.ndarray:
    return np.arange(256, dtype=np.uint8).reshape(16, 16, 1)


def model_outputs(shape, dtype=np.float32, seed=0) -> np.ndarray:
    """Values over [-1.3, 1.3] (some clamped), with -1, 1, 0, -0 and the extremes present."""
    x = np.random.default_rng(seed).uniform(-1.3, 1.3, shape).astype(dtype)
    flat = x.reshape(-1)
    specials = np.array([-1.0, 1.0, 0.0, -0.0, -3.0, 3.0], dtype=dtype)[: flat.size]
    flat[: specials.size] = specials
    return x


def tie_outputs() -> np.ndarray:
    """float32 model outputs y whose float32 ``clip(y / 2 + 1/2) * 255`` is exactly k + 1/2 for
    some k: the cases where rounding half to even (not half up) decides the code."""
    found = []
    for k in range(255):
        v = np.float32((k + 0.5) / 255)
        for step in range(-4, 5):
            c = v
            for _ in range(abs(step)):
                c = np.nextafter(c, np.float32(np.sign(step)), dtype=np.float32)
            y = np.float32((c - np.float32(0.5)) * np.float32(2))
            back = np.float32(y / np.float32(2) + np.float32(0.5))
            if back == c and np.float32(c * np.float32(255)) == np.float32(k + 0.5):
                found.append(y)
    assert len(found) >= 20, "too few ties to test"
    return np.array(found, dtype=np.float32)


def _input(name: str, shape_name: str) -> np.ndarray:
    if name == "u8_to_model":
        if shape_name == "photo":
            return np.random.default_rng(5).integers(0, 256, SHAPES["photo"], dtype=np.uint8)
        return np.resize(all_u8(), SHAPES[shape_name])
    if name == "to_model":
        return np.random.default_rng(6).random(SHAPES[shape_name], dtype=np.float32)
    return model_outputs(SHAPES[shape_name], seed=7)


# ---------------------------------------------------------------------------- (a) references


def test_u8_to_model_matches_float64_and_the_editor_bit_for_bit():
    u = all_u8()
    y = np.array(image_io.to_model_input_reference(mx.array(u)))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, u / 255.0 * 2 - 1, rtol=0, atol=6e-8)
    # The editor's decoding (float32 / 255) and the pipeline's * 2 - 1, in float32 NumPy.
    np.testing.assert_array_equal(y, (u.astype(np.float32) / 255.0) * 2 - 1)


def test_unit_to_model_matches_float64_and_the_pipeline_bit_for_bit():
    x = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    y = np.array(image_io.to_model_input_reference(mx.array(x)))
    np.testing.assert_allclose(y, x.astype(np.float64) * 2 - 1, rtol=0, atol=6e-8)
    np.testing.assert_array_equal(y, np.array(mx.array(x).astype(mx.float32) * 2 - 1))


def test_from_model_output_matches_float64_and_the_pipeline_bit_for_bit():
    y = model_outputs((9, 11, 3))
    v = np.array(image_io.from_model_output_reference(mx.array(y)))
    np.testing.assert_allclose(v, np.clip(y.astype(np.float64) / 2 + 0.5, 0, 1), rtol=0, atol=6e-8)
    pipeline = mx.clip(mx.array(y).astype(mx.float32) / 2 + 0.5, 0.0, 1.0)  # decode()'s formula
    np.testing.assert_array_equal(v, np.array(pipeline))
    assert v.min() == 0.0 and v.max() == 1.0


def test_to_uint8_matches_float64_and_the_editor_bit_for_bit():
    y = np.concatenate([model_outputs((4001,)), tie_outputs()])
    u = np.array(image_io.to_uint8_reference(mx.array(y)))
    assert u.dtype == np.uint8
    exact = np.clip(y.astype(np.float64) / 2 + 0.5, 0, 1) * 255
    diff = np.abs(u.astype(int) - np.rint(exact).astype(int))
    assert diff.max() <= 1
    near_tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-4
    assert not diff[~near_tie].any()
    # The editor: v = the float32 decode, then clip(rint(v * 255), 0, 255) as uint8.
    v = np.clip(y / np.float32(2) + np.float32(0.5), 0, 1).astype(np.float32)
    np.testing.assert_array_equal(u, np.clip(np.rint(v * np.float32(255)), 0, 255).astype(np.uint8))


def test_ties_round_half_to_even_and_the_control_bites():
    y = tie_outputs()
    u = np.array(image_io.to_uint8_reference(mx.array(y))).astype(int)
    half = np.float32(np.clip(y / np.float32(2) + np.float32(0.5), 0, 1) * np.float32(255))
    assert (u % 2 == 0).all()  # every tie went to the even code
    np.testing.assert_array_equal(u, np.rint(half).astype(int))
    # Control: rounding half up differs on about half of them, so the check can fail.
    assert (np.floor(half + 0.5).astype(int) != u).sum() >= len(u) // 4


def test_to_model_input_refuses_other_integer_types():
    with pytest.raises(ValueError, match="uint8 or float"):
        image_io.to_model_input(np.zeros((2, 2, 3), dtype=np.uint16))


# ---------------------------------------------------------------------------- (b) snapshots

METAL_TYPES = {np.uint8: "uint8_t", np.float32: "float", np.float16: "float16_t"}
SNAPSHOT_VARIANTS = [  # (snapshot name, mode, input dtype)
    ("image_io__uint8_to_model.metal", image_io.U8_TO_MODEL, np.uint8),
    ("image_io__float32_to_model.metal", image_io.UNIT_TO_MODEL, np.float32),
    ("image_io__float32_to_unit.metal", image_io.MODEL_TO_UNIT, np.float32),
    ("image_io__float16_to_unit.metal", image_io.MODEL_TO_UNIT, np.float16),
    ("image_io__float32_to_uint8.metal", image_io.MODEL_TO_U8, np.float32),
    ("image_io__float16_to_uint8.metal", image_io.MODEL_TO_U8, np.float16),
]


def _trace(x: mx.array, mode: int) -> str:
    sources = traced_sources(lambda a: image_io.image_io_kernel("metal", a, mode, verbose=True), x)
    assert len(sources) == 1
    return sources[0]


@pytest.mark.parametrize(("snapshot", "mode", "dtype"), SNAPSHOT_VARIANTS)
def test_metal_source_snapshot(snapshot, mode, dtype):
    src = _trace(mx.zeros((32, 24, 3), dtype=mx.array(np.zeros(1, dtype)).dtype), mode)
    kernel = source.read("image_io.metal")
    assert kernel.body.strip() in src and kernel.header.strip() in src
    out = "uint8_t" if mode == image_io.MODEL_TO_U8 else "float"
    for param in (
        f"const device {METAL_TYPES[dtype]}* x [[buffer(0)]]",
        "const constant int32_t* size [[buffer(1)]]",
        f"device {out}* y [[buffer(2)]]",
        "uint3 thread_position_in_grid [[thread_position_in_grid]]",
    ):
        assert param in src, param
    assert "template <typename U, int MODE>" in src
    assert f"<{out}, {mode}>;" in src  # the instantiation
    check_snapshot(snapshot, src)


# ---------------------------------------------------------------------------- (c) emulation


def _out_spec(x: np.ndarray, mode: int):
    return {"y": (x.shape, "uint8" if mode == image_io.MODEL_TO_U8 else "float32")}


def _np_inputs(x: np.ndarray) -> dict[str, np.ndarray]:
    names = source.read("image_io.metal").input_names
    arrays = image_io.kernel_inputs(mx.array(x))
    return dict(zip(names, (np.array(a) for a in arrays), strict=True))


def emulate_metal(x: np.ndarray, mode: int) -> np.ndarray:
    em = compile_metal(_trace(mx.array(x), mode))
    grid, threadgroup = image_io.launch_shape(x.size)
    return em(_np_inputs(x), _out_spec(x, mode), grid, threadgroup)["y"]


def emulate_cuda(x: np.ndarray, mode: int) -> np.ndarray:
    kernel = source.read("image_io.cu")
    ins = _np_inputs(x)
    inputs = [(n, a.dtype.name) for n, a in ins.items()]
    outputs = [("y", _out_spec(x, mode)["y"][1])]
    template = image_io.kernel_template(mode)
    fname, src = cuda_source("image_io", kernel.header, kernel.body, inputs, outputs, template)
    em = compile_cuda(fname, src, inputs, outputs)
    grid, threadgroup = image_io.launch_shape(x.size)
    return em(ins, _out_spec(x, mode), grid, threadgroup)["y"]


EMULATORS = {"metal": emulate_metal, "cuda": emulate_cuda}


def _reference(x: np.ndarray, mode: int) -> np.ndarray:
    """On the CPU stream, whose float32 division is IEEE (a GPU's may not be)."""
    with mx.stream(mx.cpu):
        return np.array(REFERENCES[mode](mx.array(x)))


@pytest.mark.parametrize("backend", ["metal", "cuda"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("name", list(MODES))
def test_emulated_kernel_equals_reference(clang, backend, name, shape_name):
    x, mode = _input(name, shape_name), MODES[name]
    y = EMULATORS[backend](x, mode)
    np.testing.assert_array_equal(y, _reference(x, mode))  # bit for bit; NaN sentinels fail


@pytest.mark.parametrize("backend", ["metal", "cuda"])
def test_emulated_u8_division_is_correctly_rounded_for_all_256_values(clang, backend):
    u = all_u8()
    y = EMULATORS[backend](u, image_io.U8_TO_MODEL)
    np.testing.assert_array_equal(y, (u.astype(np.float32) / np.float32(255)) * 2 - 1)


@pytest.mark.parametrize("backend", ["metal", "cuda"])
@pytest.mark.parametrize("mode", [image_io.MODEL_TO_UNIT, image_io.MODEL_TO_U8])
def test_emulated_float16_model_output(clang, backend, mode):
    """The VAE of a half-precision model decodes to float16."""
    x = model_outputs((9, 13, 3), np.float16, seed=3)
    np.testing.assert_array_equal(EMULATORS[backend](x, mode), _reference(x, mode))


@pytest.mark.parametrize("backend", ["metal", "cuda"])
def test_emulated_ties_round_half_to_even(clang, backend):
    y = tie_outputs()
    u = EMULATORS[backend](y, image_io.MODEL_TO_U8)
    np.testing.assert_array_equal(u, _reference(y, image_io.MODEL_TO_U8))
    assert (u % 2 == 0).all()


def test_emulation_control_detects_a_wrong_mode(clang):
    """The same comparison rejects the [0, 1] conversion where uint8 codes were asked."""
    x = model_outputs((7, 5, 3))
    y = emulate_metal(x, image_io.MODEL_TO_UNIT)
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(y, _reference(x, image_io.MODEL_TO_U8).astype(np.float32))


# ---------------------------------------------------------------------------- (d) real GPUs


def _run_on_gpu(backend: str) -> None:
    cases = [(_input(name, "photo"), MODES[name]) for name in MODES]
    cases.append((tie_outputs(), image_io.MODEL_TO_U8))
    cases.append((model_outputs((33, 17, 3), np.float16), image_io.MODEL_TO_U8))
    cases.append((np.resize(all_u8(), (1, 1, 3)), image_io.U8_TO_MODEL))
    with mx.stream(mx.gpu):
        for x, mode in cases:
            y = np.array(image_io.image_io_kernel(backend, mx.array(x), mode))
            np.testing.assert_array_equal(y, _reference(x, mode))  # exact: see the docstring
        routed = image_io.to_uint8(mx.array(cases[2][0]))
    np.testing.assert_array_equal(np.array(routed), _reference(cases[2][0], image_io.MODEL_TO_U8))


@pytest.mark.skipif(not METAL, reason="needs MLX's Metal backend (Apple Silicon)")
def test_metal_kernel_on_metal():
    assert dispatch.choose(("metal", "cuda")) == "metal"
    _run_on_gpu("metal")


@pytest.mark.skipif(not CUDA, reason="needs MLX's CUDA backend (mlx[cuda] and an NVIDIA GPU)")
def test_cuda_kernel_on_cuda():
    assert dispatch.choose(("metal", "cuda")) == "cuda"
    _run_on_gpu("cuda")


# ---------------------------------------------------------------------------- (e) dispatchers


@pytest.mark.parametrize(
    ("fn", "x"),
    [
        (image_io.to_model_input, all_u8()),
        (image_io.to_model_input, np.random.default_rng(1).random((6, 5, 3), dtype=np.float32)),
        (image_io.from_model_output, model_outputs((6, 5, 3))),
        (image_io.to_uint8, model_outputs((6, 5, 3))),
        (image_io.to_uint8, model_outputs((6, 5, 3), np.float16)),
    ],
)
def test_dispatcher_forced_reference_equals_default_path(fn, x):
    y = np.array(fn(x))  # numpy in: converted
    with reference_only():
        ref = np.array(fn(mx.array(x)))
    np.testing.assert_array_equal(y, ref)


def test_dispatchers_run_the_references_on_the_cpu(monkeypatch):
    if dispatch.device_backend() != "cpu":
        pytest.skip("the default device is not the CPU")

    def refuse(*args, **kwargs):
        raise AssertionError("a GPU kernel was launched on the CPU backend")

    monkeypatch.setattr(image_io, "image_io_kernel", refuse)
    y = model_outputs((4, 4, 3))
    np.testing.assert_array_equal(np.array(image_io.to_uint8(y)), _reference(y, 3))


class _Stop(Exception):
    pass


def test_pipeline_conversions_use_the_dispatchers(monkeypatch):
    """generate() converts its input and decode() its output through image_io."""
    from pbmlx.diffuse import pipeline

    seen = {}

    def spy(name, stop=False):
        real = getattr(image_io, name)

        def fn(x):
            seen[name] = np.array(x)
            if stop:  # the rest of generate() needs a whole model
                raise _Stop
            return real(x)

        monkeypatch.setattr(pipeline, name, fn)

    spy("to_model_input", stop=True)
    spy("from_model_output")
    image = np.random.default_rng(2).random((8, 8, 3), dtype=np.float32)
    fake = SimpleNamespace(
        vae_factor=8, encode_prompt=lambda text: mx.zeros((1, 2, 4)), encode_image=lambda x: x
    )
    with pytest.raises(_Stop):
        pipeline.InstructPix2PixPipeline.generate(fake, image, "brighter", seed=0)
    np.testing.assert_array_equal(seen["to_model_input"], image)

    decoded = model_outputs((1, 8, 8, 3))
    vae = SimpleNamespace(
        config=SimpleNamespace(scaling_factor=0.5),
        decoder=SimpleNamespace(conv_in=SimpleNamespace(weight=mx.zeros((1,)))),
        decode=lambda z: mx.array(decoded),
    )
    fake = SimpleNamespace(vae=vae, low_memory=False)
    out = pipeline.InstructPix2PixPipeline.decode(fake, mx.zeros((1, 1, 1, 4)))
    np.testing.assert_array_equal(seen["from_model_output"], decoded)
    np.testing.assert_array_equal(np.array(out), _reference(decoded, image_io.MODEL_TO_UNIT))
