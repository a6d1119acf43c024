"""Half-precision models on the CPU backend compute in float32 (weights upcast once, at load).

MLX's CPU float16/bfloat16 matmul and convolution are slow fallbacks (a whole tiny edit measured
16x slower than float32) and pbmlx's fused CPU kernels take float32, so on the CPU backend
``Editor.from_pretrained`` loads half-precision weights (and quantized layers' scales) as
float32 unless a dtype is asked for explicitly; on Metal and CUDA they stay as stored. The
oracle for "the same image": the float32 conversion of the same checkpoint, which differs
only by the float16 rounding of the weights.
"""

from __future__ import annotations

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from pbmlx.convert.to_mlx import convert
from tiny_ip2p import build_tiny_ip2p

from pbmlx.backend import backend, default_load_dtype
from pbmlx.editor import Editor

cpu_only = pytest.mark.skipif(backend() != "cpu", reason="the CPU backend's policy")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("half")
    ckpt = build_tiny_ip2p(root / "ip2p", seed=0)
    return {
        "float32": convert(ckpt, root / "f32", dtype="float32"),
        "float16": convert(ckpt, root / "f16"),  # the default
        "q8": convert(ckpt, root / "q8", quantize=8, group_size=32),
    }


def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((64, 64, 3), dtype=np.float32)


@cpu_only
def test_half_weights_are_upcast_at_load_on_cpu(converted):
    assert default_load_dtype() == mx.float32
    pipe = Editor.from_pretrained(converted["float16"]).pipeline
    assert pipe.dtype == mx.float32
    assert pipe.vae.decoder.conv_in.weight.dtype == mx.float32
    # An explicit dtype is kept: float16 compute is still available on request.
    assert Editor.from_pretrained(converted["float16"], dtype="float16").pipeline.dtype == (
        mx.float16
    )


@cpu_only
def test_quantized_scales_are_upcast_too(converted):
    unet = Editor.from_pretrained(converted["q8"]).pipeline.unet
    layer = unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q
    assert layer.scales.dtype == mx.float32 and layer.weight.dtype == mx.uint32


def test_float16_model_edits_like_its_float32_conversion(converted):
    # The float16 model runs in float32 on float16-rounded weights: the images differ by that
    # rounding only (measured ~60 dB on this tiny model); a float16-computed or wrongly mixed
    # run would land far lower or fail.
    full = Editor.from_pretrained(converted["float32"]).pipeline.generate(image(), "x", steps=3)
    half = Editor.from_pretrained(converted["float16"]).pipeline.generate(image(), "x", steps=3)
    psnr = 10 * np.log10(1.0 / np.mean((half.image - full.image) ** 2))
    assert psnr >= 45.0, f"{psnr:.1f} dB"


def test_edit_reports_the_compute_dtype(converted):
    result = Editor.from_pretrained(converted["float16"]).edit(
        image(), "make it winter", steps=1, size=32
    )
    want = "float32" if backend() == "cpu" else "float16"
    assert result.to_dict()["compute_dtype"] == want
    assert result.to_dict()["backend"] == "mlx"


@cpu_only
def test_quantized_layers_expand_per_call_on_cpu(converted):
    """On the CPU backend a quantized layer computes with a dense matmul on its weight expanded
    for the call (MLX's CPU quantized matmul is ~50x slower than its float32 GEMM): the stored
    weights stay quantized, and the output equals MLX's quantized matmul to float32 rounding
    (relative 1e-5: the same dequantized values, summed in another order)."""
    import mlx.nn as nn

    from pbmlx.models.checkpoint import ExpandingQuantizedLinear

    unet = Editor.from_pretrained(converted["q8"]).pipeline.unet
    layer = unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q
    assert type(layer) is ExpandingQuantizedLinear and layer.weight.dtype == mx.uint32
    x = mx.random.normal((5, 7, layer.scales.shape[-1] * 32), key=mx.random.key(0))
    got, want = layer(x), nn.QuantizedLinear.__call__(layer, x)
    scale = float(mx.abs(want).max())
    assert float(mx.abs(got - want).max()) <= 1e-5 * scale
    # The whole quantized model edits like its float32 conversion up to the 8-bit rounding.
    q8 = Editor.from_pretrained(converted["q8"]).pipeline.generate(image(), "x", steps=3)
    full = Editor.from_pretrained(converted["float32"]).pipeline.generate(image(), "x", steps=3)
    psnr = 10 * np.log10(1.0 / np.mean((q8.image - full.image) ** 2))
    assert psnr >= 30.0, f"{psnr:.1f} dB"
