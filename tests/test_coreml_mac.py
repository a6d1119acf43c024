"""Core ML bundles run by Core ML itself: macOS only (marked ``mac``; skipped elsewhere).

On a Mac with the ``coreml`` extra installed:

- every package of a tiny bundle (both attention variants) is run with ``predict`` on
  CPU_AND_GPU and on CPU_AND_NE and compared with pbmlx's MLX networks on the same inputs:
  PSNR >= 35 dB (Apple's bar; Core ML computes in float16, MLX here in float32);
- one UNet step is timed per compute unit and written as JSON to ``$PBMLX_BENCH_OUT`` (default
  ``coreml_unet_step.json`` in the pytest temporary folder) and printed; with
  ``PBMLX_COREML_BUNDLE`` set to a full-size bundle (``pbmlx export-coreml
  timbrooks/instruct-pix2pix ...``) its UNet is timed too;
- ``pbmlx edit --engine coreml --model BUNDLE`` runs a whole edit through the bundle with
  pbmlx's own scheduler and writes the photo at its own size.

PSNR = 20 log10(max |ref|) - 10 log10(mean((out - ref)^2)).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.mac,
    pytest.mark.skipif(sys.platform != "darwin", reason="Core ML runs only on macOS"),
]

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "coffee.jpg"
SIZE = (64, 64)
BAR_DB = 35.0
UNITS = ("CPU_AND_GPU", "CPU_AND_NE")


def psnr(out, ref) -> float:
    from pbmlx.convert.coreml.readback import psnr as _psnr

    return _psnr(out, ref)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("coremltools")
    from tiny_ip2p import build_tiny_ip2p

    return build_tiny_ip2p(tmp_path_factory.mktemp("mac") / "ip2p", seed=0)


@pytest.fixture(scope="module", params=["split-einsum", "original"])
def bundle(request, tiny, tmp_path_factory) -> Path:
    from pbmlx.convert.coreml.export import ExportOptions, export_coreml

    out = tmp_path_factory.mktemp("bundle") / request.param
    return export_coreml(tiny, out, ExportOptions(attention=request.param, size=SIZE))


def mlx_references(tiny: Path, rng: np.random.Generator) -> dict:
    """Inputs in the packages' layouts and pbmlx's MLX outputs for them (float32)."""
    import mlx.core as mx

    from pbmlx.editor import Editor

    pipe = Editor.from_pretrained(tiny, dtype="float32").pipeline
    w, h = SIZE
    f = pipe.vae_factor
    ids = pipe.tokenizer.encode(["make it winter"])
    image = rng.random((1, 3, h, w), dtype=np.float32)
    sample = rng.standard_normal((3, 8, h // f, w // f), dtype=np.float32)
    states = rng.standard_normal((3, 77, 32), dtype=np.float32)
    latents = rng.standard_normal((1, 4, h // f, w // f), dtype=np.float32)
    nhwc = lambda a: mx.array(a.transpose(0, 2, 3, 1))  # noqa: E731
    nchw = lambda a: np.array(a).transpose(0, 3, 1, 2)  # noqa: E731
    t = np.full((3,), 500.0, np.float32)
    return {
        "TextEncoder": (
            {"input_ids": ids.astype(np.int32)},
            np.array(pipe.text_encoder(mx.array(ids)).last_hidden_state),
        ),
        "VAEEncoder": ({"image": image}, nchw(pipe.encode_image(nhwc(image) * 2 - 1))),
        "Unet": (
            {"sample": sample, "timestep": t, "encoder_hidden_states": states},
            nchw(pipe.unet(nhwc(sample), mx.array(500.0), mx.array(states))),
        ),
        "VAEDecoder": ({"latents": latents}, nchw(pipe.decode(nhwc(latents)))),
    }


@pytest.mark.parametrize("units", UNITS)
def test_each_package_predicts_like_the_mlx_networks(bundle, tiny, units):
    import coremltools as ct

    refs = mlx_references(tiny, np.random.default_rng(0))
    manifest = json.loads((bundle / "pbmlx-coreml.json").read_text())
    for name, (inputs, want) in refs.items():
        model = ct.models.MLModel(
            str(bundle / manifest["models"][name]["file"]),
            compute_units=getattr(ct.ComputeUnit, units),
        )
        out_name = manifest["models"][name]["outputs"][0]["name"]
        got = model.predict(inputs)[out_name]
        assert got.shape == want.shape, name
        assert psnr(got, want) >= BAR_DB, (name, units, psnr(got, want))


def _time_unet(package: Path, units: str, repeats: int = 3) -> dict:
    import coremltools as ct

    model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, units))
    spec = model.get_spec().description
    rng = np.random.default_rng(0)
    data = {
        f.name: rng.standard_normal(tuple(f.type.multiArrayType.shape)).astype(np.float32)
        for f in spec.input
    }
    model.predict(data)  # warm-up (compiles for the device)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(data)
        seconds.append(time.perf_counter() - t0)
    return {"best_s": min(seconds), "median_s": float(np.median(seconds)), "runs": seconds}


def test_unet_step_time_per_compute_unit(bundle, tmp_path_factory):
    results = {"tiny": {u: _time_unet(bundle / "Unet.mlpackage", u) for u in UNITS}}
    full = os.environ.get("PBMLX_COREML_BUNDLE")
    if full:
        manifest = json.loads((Path(full) / "pbmlx-coreml.json").read_text())
        unet = Path(full) / manifest["models"][manifest["unet"][0]]["file"]
        results["full"] = {u: _time_unet(unet, u) for u in UNITS}
    out = Path(
        os.environ.get("PBMLX_BENCH_OUT")
        or tmp_path_factory.mktemp("bench") / "coreml_unet_step.json"
    )
    out.write_text(json.dumps({"bundle": str(bundle), **results}, indent=2))
    print(json.dumps(results, indent=2))
    for size in results.values():
        for timing in size.values():
            assert timing["best_s"] > 0


def test_edit_runs_through_the_bundle(bundle, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(SAMPLE.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PBMLX_", "HF_"))}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbmlx",
            "edit",
            str(photo),
            "make it winter",
            "--engine",
            "coreml",
            "--model",
            str(bundle),
            "--steps",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**env, "PBMLX_CONFIG": str(tmp_path / "none.json")},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    from PIL import Image

    out = tmp_path / "photo.edited.jpg"
    assert Image.open(out).size == Image.open(photo).size
    report = json.loads(r.stdout)
    assert report["turns"][0]["engine"] == "diffusion"
