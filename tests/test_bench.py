"""``pbmlx bench``: FLOP counts against PyTorch's FLOP counter, the peak table against Apple's
published figures, the formulas, and whole runs on the tiny test model (JSON schema, report
and charts, the diffusers comparison, refusals).

The FLOP oracle is ``torch.utils.flop_counter.FlopCounterMode`` on the diffusers /
transformers modules built from the same configs, run on the ``meta`` device (shapes only, no
arithmetic, so the full-size networks cost nothing). On the meta device
``scaled_dot_product_attention`` decomposes into the two batched matmuls the counter knows;
on real CPU tensors torch 2.13 dispatches it to a flash kernel that has no FLOP formula
registered, and the counter would silently leave attention out.

Whole runs use the tiny checkpoint of ``tiny_ip2p`` (diffusers layout) through ``--model``,
with ``--sizes 64`` so that each run takes seconds; the timings themselves are not checked
(they depend on the machine), their consistency is.
"""

# isort: off
import pbmlx  # (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import contextlib
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from PIL import Image
from tiny_ip2p import (
    IP2P_TEXT_CONFIG,
    IP2P_UNET_CONFIG,
    IP2P_VAE_CONFIG,
    SCHEDULER_CONFIG,
    TINY_TEXT_CONFIG,
    TINY_UNET_CONFIG,
    TINY_VAE_CONFIG,
    build_tiny_ip2p,
)

from pbmlx import cli
from pbmlx.bench import configs, flops, memory, models, peak
from pbmlx.bench.runner import EditRun, StageRow

# ---------------------------------------------------------------------------- FLOPs


def _torch_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _meta(factory):
    import torch

    with torch.device("meta"):
        return factory()


@pytest.mark.parametrize(
    ("config", "h", "w", "context"),
    [
        (TINY_UNET_CONFIG, 12, 14, 32),  # non-square
        (TINY_UNET_CONFIG, 13, 13, 32),  # odd: the stride-2 convolutions round, upsamplers resize
        (IP2P_UNET_CONFIG, 32, 21, 768),  # full size at 256 x 168 px
    ],
)
def test_unet_flops_match_torch_counter(config, h, w, context):
    import torch
    from diffusers import UNet2DConditionModel

    model = _meta(lambda: UNet2DConditionModel(**config))
    x = _meta(lambda: torch.zeros(3, config["in_channels"], h, w))
    text = _meta(lambda: torch.zeros(3, 77, context))
    expected = _torch_flops(lambda: model(x, 10, text))
    assert flops.unet_flops(config, h, w, batch=3) == expected


@pytest.mark.parametrize(
    ("config", "h", "w"), [(TINY_VAE_CONFIG, 40, 56), (IP2P_VAE_CONFIG, 168, 256)]
)
def test_vae_flops_match_torch_counter(config, h, w):
    import torch
    from diffusers import AutoencoderKL

    model = _meta(lambda: AutoencoderKL(**config))
    f = 2 ** (len(config["block_out_channels"]) - 1)
    image = _meta(lambda: torch.zeros(1, 3, h, w))
    latents = _meta(lambda: torch.zeros(1, 4, h // f, w // f))
    assert flops.vae_encoder_flops(config, h, w) == _torch_flops(lambda: model.encode(image))
    assert flops.vae_decoder_flops(config, h // f, w // f) == _torch_flops(
        lambda: model.decode(latents)
    )


@pytest.mark.parametrize("config", [{**TINY_TEXT_CONFIG, "vocab_size": 1000}, IP2P_TEXT_CONFIG])
def test_text_encoder_flops_match_torch_counter(config):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    model = _meta(lambda: CLIPTextModel(CLIPTextConfig(**config)))
    ids = _meta(lambda: torch.zeros(2, 77, dtype=torch.long))
    assert flops.text_encoder_flops(config, batch=2) == _torch_flops(lambda: model(ids))


def test_edit_flops_are_the_pipelines_calls():
    """An edit at W x H: the text encoder on 2 sequences, the VAE encoder on the image, the
    UNet on the guidance batch of 3 at H/8 x W/8 per step, the decoder on the latents; and a
    hand count of the simplest layers."""
    ef = flops.edit_flops(configs.IP2P_UNET, configs.IP2P_VAE, configs.IP2P_TEXT, 256, 168)
    assert ef.text_encode == flops.text_encoder_flops(configs.IP2P_TEXT, batch=2, tokens=77)
    assert ef.image_encode == flops.vae_encoder_flops(configs.IP2P_VAE, 168, 256)
    assert ef.denoise_step == flops.unet_flops(configs.IP2P_UNET, 21, 32, batch=3)
    assert ef.decode == flops.vae_decoder_flops(configs.IP2P_VAE, 21, 32)
    assert ef.denoise(20) == 20 * ef.denoise_step
    assert ef.total(10) == ef.text_encode + ef.image_encode + 10 * ef.denoise_step + ef.decode
    # Hand counts: a 3x3 conv 320 -> 320 on 3 x 32 x 32, a linear 768 -> 3072 on 154 rows,
    # attention of 1024 queries over 77 keys, 320 channels, batch 3.
    assert flops.conv(3, 32, 32, 320, 320, 3) == 2 * 3 * 32 * 32 * 320 * 320 * 9
    assert flops.linear(154, 768, 3072) == 2 * 154 * 768 * 3072
    assert flops.attention(3, 1024, 77, 320) == 2 * 2 * 3 * 1024 * 77 * 320
    # The SD 1.5 UNet's forward pass at 64 x 64 latents, batch 1, is the often-quoted ~0.8 TFLOP
    # (2 x ~0.4 T multiply-adds).
    assert 0.75e12 < flops.unet_flops(configs.IP2P_UNET, 64) < 0.85e12


def test_bench_configs_are_the_checkpoint_configs():
    """pbmlx.bench's full-size configs are the ones the slow parity tests build (the real
    timbrooks/instruct-pix2pix config.json fields; the UNet's is one shared dict)."""
    assert IP2P_UNET_CONFIG is configs.IP2P_UNET and IP2P_UNET_CONFIG["in_channels"] == 8
    assert configs.IP2P_VAE == {**IP2P_VAE_CONFIG, "sample_size": 512}  # informative only
    for key, value in IP2P_TEXT_CONFIG.items():
        if key != "vocab_size":
            assert configs.IP2P_TEXT[key] == value, key
    assert configs.IP2P_SCHEDULER == SCHEDULER_CONFIG


# ---------------------------------------------------------------------------- peak


# Apple's own published float32 TFLOPS for the largest GPU of each chip.
APPLE_PUBLISHED = {
    "Apple M1": 2.6,
    "Apple M1 Pro": 5.2,
    "Apple M1 Max": 10.4,
    "Apple M1 Ultra": 21.0,
    "Apple M2": 3.6,
    "Apple M2 Pro": 6.8,
    "Apple M2 Max": 13.6,
    "Apple M2 Ultra": 27.2,
}


@pytest.mark.parametrize(("chip", "tflops"), APPLE_PUBLISHED.items())
def test_apple_table_reproduces_published_figures(chip, tflops):
    gpu = peak.match_apple_gpu(chip)
    assert gpu is not None and gpu.source == peak.APPLE
    assert gpu.tflops(gpu.cores[-1]) == pytest.approx(tflops, rel=0.015)


def test_apple_chip_matching_and_core_counts():
    assert peak.match_apple_gpu("Apple M2") is not peak.match_apple_gpu("Apple M2 Pro")
    assert peak.match_apple_gpu("  apple   m3 max ").chip == "Apple M3 Max"
    assert peak.match_apple_gpu("Intel(R) Core(TM) i7") is None
    flops_per_s, detail = peak.published_peak("Apple M2 Max", 30)
    assert flops_per_s == pytest.approx(30 * 128 * 2 * 1.398e9)
    assert "30-core" in detail and "published" in detail
    fallback, detail = peak.published_peak("Apple M2 Max", None)
    assert fallback == pytest.approx(38 * 128 * 2 * 1.398e9) and "assumed" in detail
    assert "third-party" in peak.published_peak("Apple M4", 10)[1]
    assert peak.published_peak("AMD EPYC", 8) is None


def test_device_peak_is_measured_off_apple_gpus():
    from pbmlx.backend import backend

    p = peak.device_peak(backend(), gemm_sizes=(256,))
    if backend() != "metal":
        assert p.source == "measured GEMM" and p.published_flops_per_s is None
        assert p.flops_per_s == p.measured_gemm_flops_per_s > 1e8


# ---------------------------------------------------------------------------- formulas


def test_stage_row_derived_figures():
    r = StageRow("edit", "pbmlx", "decode", 2.0, flops=4e12).finish(8e12)
    assert r.flops_per_s == 2e12 and r.fraction_of_peak == 0.25 and r.seconds_at_peak == 0.5
    none = StageRow("edit", "pbmlx", "restore", 1.0).finish(8e12)
    assert none.flops_per_s is None and none.fraction_of_peak is None


def test_edit_totals_extrapolate_by_the_stated_formula():
    run = EditRun(
        engine="pbmlx",
        variant="float32",
        size=256,
        working=(256, 168),
        photo=(1224, 816),
        measured_steps=3,
        step_seconds=[5.0, 2.0, 4.0],
        seconds={
            "text_encode": 0.5,
            "image_encode": 1.0,
            "denoise": 11.0,
            "decode": 2.0,
            "resize": 0.25,
            "restore": 0.25,
        },
    )
    fixed = 0.5 + 1.0 + 2.0 + 0.25 + 0.25
    assert run.steady_step == 3.0  # median of steps 2..3
    assert run.total_seconds(2) == fixed + 5.0 + 2.0  # measured steps only
    assert run.total_seconds(3) == fixed + 11.0
    assert run.total_seconds(20) == fixed + 11.0 + 17 * 3.0


def test_random_weights_and_tokenizer():
    layer = nn.Linear(256, 64)
    bias = np.array(layer.bias)
    models.randomize(layer, 0)
    w = np.array(layer.weight)
    assert layer.weight.dtype == mx.float32 and abs(w.mean()) < 0.01
    assert abs(w.std() * math.sqrt(256) - 1) < 0.05  # normal / sqrt(fan_in)
    assert np.array_equal(np.array(layer.bias), bias)  # vectors keep the module's init
    again = nn.Linear(256, 64)
    models.randomize(again, 0)
    assert np.array_equal(np.array(again.weight), w)  # seeded
    ids = models.byte_level_tokenizer().encode(["add a red scarf to the dog", ""])
    assert ids.shape == (2, 77) and ids.max() < 514 and ids.min() >= 0


def test_memory_probes_see_an_allocation():
    n = 40_000_000  # bytes
    with memory.numpy_peak() as p:
        a = np.ones(n // 4, np.float32)
        del a
    assert n <= p.peak < 1.1 * n
    growth = memory.cold_peak_rss(lambda: np.ones(n // 4, np.float32).sum())
    if memory.HAVE_RSS:
        assert 0.95 * n <= growth < 1.5 * n  # other pages may be released meanwhile
    else:
        assert growth is None


# ---------------------------------------------------------------------------- whole runs


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``pbmlx bench ARGV`` through the real command line: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["bench", *argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_ip2p(tmp_path_factory.mktemp("bench") / "tiny")


@pytest.fixture(scope="module")
def quick_run(tiny_model, tmp_path_factory):
    """A --quick run on the tiny model with the diffusers comparison; (doc, stdout, folder)."""
    tmp = tmp_path_factory.mktemp("quick")
    argv = [
        "--quick",
        "--model",
        str(tiny_model),
        "--sizes",
        "64",
        "--steps",
        "1",
        "3",
        "--compare",
        "diffusers",
        "--json",
        str(tmp / "out.json"),
        "--report",
        str(tmp / "rep"),
        "--no-progress",
    ]
    rc, out, err = run_cli(argv)
    assert rc == 0, err
    return json.loads((tmp / "out.json").read_text()), out, tmp


STAGE_KEYS = {
    "group",
    "engine",
    "name",
    "variant",
    "size",
    "seconds",
    "flops",
    "flops_per_s",
    "fraction_of_peak",
    "seconds_at_peak",
    "peak_memory_bytes",
    "memory_method",
    "note",
}


def test_json_schema(quick_run):
    doc, out, _ = quick_run
    assert doc["schema"] == "pbmlx-bench/1" and doc["quick"] is True
    for when in ("before", "after"):
        la = doc["load_average"][when]
        assert len(la) == 3 and all(v >= 0 for v in la)
    v = doc["versions"]
    assert v["pbmlx"] == pbmlx.__version__ and v["mlx"] and v["numpy"] and v["python"]
    assert v["torch"] and v["diffusers"]  # the comparison's libraries, by their versions
    assert doc["machine"]["backend"] in ("cpu", "metal", "cuda") and doc["machine"]["cpus"] >= 1
    p = doc["peak"]["flops_per_s"]
    assert p > 0 and doc["peak"]["source"] in ("measured GEMM", "published")
    for r in doc["stages"]:
        assert set(r) == STAGE_KEYS, r["name"]
        assert r["seconds"] is not None and r["seconds"] > 0, r
        if r["flops"] is not None:
            assert r["flops_per_s"] == pytest.approx(r["flops"] / r["seconds"])
            assert r["fraction_of_peak"] == pytest.approx(r["flops"] / r["seconds"] / p)
            assert r["seconds_at_peak"] == pytest.approx(r["flops"] / p)
    pbmlx_f32 = {
        r["name"]: r for r in doc["stages"] if r["engine"] == "pbmlx" and r["variant"] == "float32"
    }
    assert set(pbmlx_f32) == {
        "load",
        "text_encode",
        "image_encode",
        "denoise_first_step",
        "denoise_step",
        "decode",
        "restore",
    }
    ef = flops.edit_flops(TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_CONFIG, 64, 40)  # 1 MP 3:2
    assert pbmlx_f32["denoise_step"]["size"] == "64x40"
    assert pbmlx_f32["denoise_step"]["flops"] == ef.denoise_step
    assert pbmlx_f32["decode"]["flops"] == ef.decode and pbmlx_f32["restore"]["flops"] is None
    for name in ("text_encode", "image_encode", "denoise_step", "decode"):
        assert (
            pbmlx_f32[name]["peak_memory_bytes"] > 0 and pbmlx_f32[name]["memory_method"] == "mlx"
        )
    assert pbmlx_f32["restore"]["peak_memory_bytes"] > 0  # numpy's, for a 1 MP restore
    quantized = [r for r in doc["stages"] if r["engine"] == "pbmlx" and r["variant"] == "8-bit"]
    # Every backend runs the quantized variant's whole edit (on the CPU its layers expand their
    # weights per call: MLX's CPU quantized matmul was ~50x slower than float32).
    assert {"text_encode", "image_encode", "denoise_step", "decode"} <= {
        r["name"] for r in quantized
    }
    groups = {(r["group"], r["engine"], r["name"], r["size"]) for r in doc["stages"]}
    for case in ("brightness", "brightness+contrast+saturation"):
        assert ("adjust", "pbmlx", case, "1 MP") in groups and (
            "adjust",
            "PIL",
            case,
            "1 MP",
        ) in groups
    assert ("judge", "pbmlx", "judge, no CLIP", "1 MP") in groups
    if memory.HAVE_RSS:  # the 8-bit output of a 1 MP photo is 3 MB
        assert all(r["peak_memory_bytes"] >= 1e6 for r in doc["stages"] if r["group"] == "adjust")
    # Whole edits: 1 step measured, 3 extrapolated by the formula in the notes.
    edits = {(e["engine"], e["steps"]): e for e in doc["edits"]}
    one, three = edits[("pbmlx", 1)], edits[("pbmlx", 3)]
    assert not one["extrapolated"] and three["extrapolated"] and one["measured_steps"] == 2
    s = one["stage_seconds"]
    fixed = sum(v for k, v in s.items() if k != "denoise")
    assert one["seconds"] == pytest.approx(fixed + one["step_seconds"][0])
    assert three["seconds"] == pytest.approx(
        fixed + sum(one["step_seconds"]) + one["step_seconds"][1]
    )
    assert three["flops"] == pytest.approx(ef.total(3))
    assert any("extrapolated" in n for n in doc["notes"])
    # The terminal table.
    assert "of peak" in out and "whole edits" in out and "load average before" in out


def test_report_and_charts(quick_run):
    _, _, tmp = quick_run
    report = tmp / "rep" / "report.md"
    text = report.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(images) == {"latency.png", "compare.png", "fraction_of_peak.png"}
    for name in images:
        with Image.open(report.parent / name) as im:
            assert im.format == "PNG" and im.width >= 600 and im.height >= 60
            im.verify()
    assert "load average before" in text and "## Comparison" in text
    assert not any(p.name.startswith(".") for p in tmp.iterdir())  # no work folder left


def test_compare_diffusers_rows(quick_run):
    doc, out, _ = quick_run
    rows = doc["comparisons"]
    assert [r["stage"] for r in rows] == [
        "text_encode",
        "image_encode",
        "denoise_step",
        "decode",
        "edit, 1 steps (networks only)",
        "edit, 3 steps (networks only)",
    ]
    for r in rows:
        assert r["other"].startswith("diffusers (") and r["size"] == "64x40"
        assert r["ratio"] == pytest.approx(r["pbmlx_seconds"] / r["other_seconds"])
    diffusers = {r["name"] for r in doc["stages"] if r["engine"].startswith("diffusers")}
    assert {"load", "text_encode", "image_encode", "denoise_step", "decode"} <= diffusers
    assert "pbmlx against the alternative" in out


def test_full_mode_measures_every_step(tiny_model, tmp_path):
    rc, _, err = run_cli(
        [
            "--model",
            str(tiny_model),
            "--only",
            "edit",
            "--variants",
            "float32",
            "--sizes",
            "64",
            "--steps",
            "2",
            "3",
            "--json",
            str(tmp_path / "full.json"),
            "--no-progress",
        ]
    )
    assert rc == 0, err
    doc = json.loads((tmp_path / "full.json").read_text())
    assert {r["group"] for r in doc["stages"]} == {"edit"}
    edits = doc["edits"]
    assert [e["steps"] for e in edits] == [2, 3]
    assert all(not e["extrapolated"] and len(e["step_seconds"]) == 3 for e in edits)
    assert edits[0]["photo"] == [4240, 2832]  # a 12 MP photo, restored at full resolution


def test_runtime_does_not_import_torch():
    code = (
        "import sys, pbmlx\n"
        "from pbmlx.bench import command, compare, flops, memory, models, peak, report, runner\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'diffusers', 'transformers'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


# ---------------------------------------------------------------------------- refusals


def _one_error(rc: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("pbmlx: error: "), err
    return lines[0]


def test_missing_model_folder_is_refused(tmp_path):
    missing = tmp_path / "no-such-model"
    rc, _, err = run_cli(["--model", str(missing), "--json", str(tmp_path / "o.json")])
    assert str(missing) in _one_error(rc, err)
    assert not (tmp_path / "o.json").exists()


def test_unwritable_report_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, _, err = run_cli(["--quick", "--only", "adjust", "--report", str(blocker / "rep")])
    assert "--report" in _one_error(rc, err)


def test_existing_outputs_need_overwrite(tmp_path):
    (tmp_path / "o.json").write_text("{}")
    rc, _, err = run_cli(["--quick", "--only", "adjust", "--json", str(tmp_path / "o.json")])
    assert "--overwrite" in _one_error(rc, err)
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "old.md").write_text("x")
    rc, _, err = run_cli(["--quick", "--only", "adjust", "--report", str(tmp_path / "rep")])
    assert "--overwrite" in _one_error(rc, err)
    assert (tmp_path / "rep" / "old.md").read_text() == "x"


@pytest.mark.skipif(
    sys.platform == "darwin", reason="Core ML runs on macOS; this is its refusal elsewhere"
)
def test_coreml_needs_macos(tmp_path):
    rc, _, err = run_cli(["--coreml", str(tmp_path), "--only", "adjust"])
    assert "macOS" in _one_error(rc, err)
