"""`pbmlx export-coreml`: the Core ML app bundle, proven on Linux where Core ML cannot run.

The proofs (issue 8), on the tiny random InstructPix2Pix checkpoint of ``tiny_ip2p.py``:

a. each export module (both attention variants) against the reference library's own call on
   the same inputs (``modules.reference``): PSNR >= 35 dB (Apple's bar), and far tighter
   in float32 (max abs difference <= 1e-4 x the reference's peak: the two differ only by
   float32 rounding, ~1e-6 relative);
b. weights read back from the saved, reloaded ``.mlpackage`` (decompressed) and loaded into
   the export module: PSNR >= 35 dB against the uncompressed module at 8 and 6 bits
   (4 bits is reported, and must be worse than 6); float16 packages >= 60 dB;
c. spec checks on the saved packages: names, shapes, dtypes, descriptions, metadata; the
   palettized weights are lookup tables; chunk outputs chain; package sizes shrink.

Plus the bundle's contract driven end to end: :mod:`pbmlx.diffuse.coreml` runs pbmlx's own
pipeline with the packages' export modules standing in for Core ML (same names, layouts,
scaling and batch order as the packages), and must reproduce the MLX editor's edit.
PSNR = 20 log10(max |ref|) - 10 log10(mean((out - ref)^2)).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
import coremltools as ct
from pbmlx.convert.coreml import cli as coreml_cli
from pbmlx.convert.coreml import compress
from pbmlx.convert.coreml import export as E
from pbmlx.convert.coreml.bundle import folder_bytes
from pbmlx.convert.coreml.modules import (
    reference,
    run_spec,
    unet_in_parts,
)
from pbmlx.convert.coreml.readback import psnr, run_with_package_weights, state_from_package
from pbmlx.convert.coreml.source import load_source
from tiny_ip2p import TINY_UNET_CONFIG, build_tiny_ip2p

from pbmlx.errors import PbmlxError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("TextEncoder", "Unet", "VAEEncoder", "VAEDecoder")
SIZE = (64, 64)  # tiny VAE factor 4 x UNet factor 8 = 32: the smallest size is 32
BAR_DB = 35.0  # Apple's PSNR bar for its Core ML conversions
FLOAT32_RTOL = 1e-4  # of the reference's peak (measured ~1e-6: float32 rounding only)

E.quiet_toolchain()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_ip2p(tmp_path_factory.mktemp("coreml") / "ip2p", seed=0)


def first(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def pbmlx(*args, timeout: int = 600):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PBMLX_", "HF_"))}
    return subprocess.run(
        [sys.executable, "-m", "pbmlx", *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**env, "HF_HUB_OFFLINE": "1"},
        timeout=timeout,
    )


def assert_clean_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbmlx: error: "), r.stderr
    return lines[0]


def op_types(package: Path) -> Counter:
    """Op types of the package's main function, from its saved spec."""
    spec = ct.utils.load_spec(str(package))
    counts: Counter = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            counts.update(op.type for op in block.operations)
    return counts


# ---------------------------------------------------------------------------- the CLI bundle


@pytest.fixture(scope="module")
def cli_bundle(tiny, tmp_path_factory) -> Path:
    """The issue's done-when: `pbmlx export-coreml TINY OUT --size 256` (split-einsum)."""
    out = tmp_path_factory.mktemp("bundle") / "ip2p-coreml"
    r = pbmlx("export-coreml", tiny, out, "--size", "256")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    return out


def test_cli_writes_the_app_bundle(cli_bundle):
    names = sorted(p.name for p in cli_bundle.iterdir())
    assert names == sorted(
        [*(f"{n}.mlpackage" for n in PACKAGES), "vocab.json", "merges.txt", "pbmlx-coreml.json"]
    )
    manifest = json.loads((cli_bundle / "pbmlx-coreml.json").read_text())
    unet = manifest["models"]["Unet"]
    inputs = {i["name"]: i for i in unet["inputs"]}
    assert inputs["sample"]["shape"] == [3, 8, 64, 64]  # batch 3 x 8 channels; 256 / 4
    assert inputs["timestep"]["shape"] == [3]
    assert inputs["encoder_hidden_states"]["shape"] == [3, 77, 32]
    assert [o["name"] for o in unet["outputs"]] == ["noise_pred"]
    assert manifest["export"]["attention"] == "split-einsum"
    assert manifest["guidance"]["formula"].startswith("eps = eps_uncond + guidance_scale")
    assert [r["name"] for r in manifest["guidance"]["batch_order"]] == [
        "eps_text",
        "eps_image",
        "eps_uncond",
    ]
    assert manifest["latents"]["image_latents_scaled"] is False
    assert manifest["latents"]["scaling_factor"] == pytest.approx(0.18215)
    assert manifest["scheduler"]["config"]["beta_schedule"] == "scaled_linear"
    assert manifest["working_size"]["width"] == 256 and manifest["working_size"]["vae_factor"] == 4
    for name in PACKAGES:
        assert manifest["models"][name]["bytes"] > 0


def test_saved_specs_name_shape_type_and_describe_everything(cli_bundle):
    expected = {
        "TextEncoder": ({"input_ids": ([1, 77], "int32")}, {"last_hidden_state": [1, 77, 32]}),
        "Unet": (
            {
                "sample": ([3, 8, 64, 64], "float32"),
                "timestep": ([3], "float32"),
                "encoder_hidden_states": ([3, 77, 32], "float32"),
            },
            {"noise_pred": [3, 4, 64, 64]},
        ),
        "VAEEncoder": ({"image": ([1, 3, 256, 256], "float32")}, {"image_latents": [1, 4, 64, 64]}),
        "VAEDecoder": ({"latents": ([1, 4, 64, 64], "float32")}, {"image": [1, 3, 256, 256]}),
    }
    for name, (inputs, outputs) in expected.items():
        spec = ct.utils.load_spec(str(cli_bundle / f"{name}.mlpackage"))
        assert spec.WhichOneof("Type") == "mlProgram"
        desc = spec.description
        got_in = {
            f.name: (list(f.type.multiArrayType.shape), f.type.multiArrayType.dataType)
            for f in desc.input
        }
        dtype = {"float32": ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32}
        dtype["int32"] = ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
        assert got_in == {k: (s, dtype[t]) for k, (s, t) in inputs.items()}, name
        got_out = {f.name: list(f.type.multiArrayType.shape) for f in desc.output}
        assert got_out == outputs, name
        assert all(f.shortDescription for f in [*desc.input, *desc.output]), name
        meta = desc.metadata
        assert meta.shortDescription and meta.author and meta.license and meta.versionString
        assert meta.userDefined["pbmlx.attention"] == "split-einsum"
        # float16 compute: the weights are stored as float16
        assert "cast" in op_types(cli_bundle / f"{name}.mlpackage")


def test_tokenizer_files_are_the_source_s(cli_bundle, tiny):
    for name in ("vocab.json", "merges.txt"):
        assert (cli_bundle / name).read_bytes() == (tiny / "tokenizer" / name).read_bytes()


# ---------------------------------------------------------------------------- proof a


@pytest.mark.parametrize("attention", ["split-einsum", "original"])
def test_export_modules_match_the_reference(tiny, attention):
    source = load_source(tiny)
    refs = {}
    for spec in E.build_specs(source, E.ExportOptions(attention="original", size=SIZE)):
        refs[spec.name] = first(reference(spec.name, source, spec.inputs)).numpy()
    # The split-einsum build rewrites source.unet in place: references were taken first.
    for spec in E.build_specs(source, E.ExportOptions(attention=attention, size=SIZE)):
        out = first(run_spec(spec)).numpy()
        ref = refs[spec.name]
        assert psnr(out, ref) >= BAR_DB, spec.name
        assert np.abs(out - ref).max() <= FLOAT32_RTOL * np.abs(ref).max(), spec.name


def test_parity_check_bites(tiny):
    """Control: a UNet export module that takes its 8 input channels in the other order
    (image latents first: a plausible wiring bug) falls below the bar."""
    source = load_source(tiny)
    spec = next(
        s
        for s in E.build_specs(source, E.ExportOptions(attention="original", size=SIZE))
        if s.name == "Unet"
    )
    ref = first(reference("Unet", source, spec.inputs)).numpy()
    broken = copy.deepcopy(spec.module)
    w = broken.unet.conv_in.weight  # (O, 8, 3, 3)
    with torch.no_grad():
        w.copy_(torch.cat([w[:, 4:], w[:, :4]], dim=1))
    spec.module = broken
    assert psnr(first(run_spec(spec)).numpy(), ref) < BAR_DB


def test_chunks_chain_to_the_whole_unet(tiny):
    source = load_source(tiny)
    unet = source.unet
    for hw in [(16, 16), (12, 20)]:  # 12 x 20: not multiples of 8, diffusers' resize path
        x = torch.randn(3, 8, *hw, generator=torch.Generator().manual_seed(1))
        t = torch.full((3,), 500.0)
        e = torch.randn(3, 77, 32, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            whole = unet(x, t, e, return_dict=False)[0]
            for k in range(len(unet.up_blocks) + 1):
                assert torch.equal(unet_in_parts(unet, k, x, t, e), whole), (hw, k)


# ---------------------------------------------------------------------------- proof b


@pytest.fixture(scope="module")
def palettized(tiny, tmp_path_factory) -> dict:
    """Each split-einsum package converted once, saved in float16 and palettized to 8, 6 and
    4 bits (per tensor, the macOS14 target); every package read back from disk."""
    folder = tmp_path_factory.mktemp("palettized")
    source = load_source(tiny)
    results: dict = {}
    for spec in E.build_specs(source, E.ExportOptions(size=SIZE)):
        out = first(run_spec(spec)).numpy()
        mlmodel = E.to_mlprogram(spec, "macOS14")
        variants = {"float16": mlmodel}
        variants.update({b: compress.palettize(mlmodel, b, "macOS14") for b in (8, 6, 4)})
        for key, model in variants.items():
            path = folder / f"{spec.name}-{key}.mlpackage"
            model.save(str(path))
            got, _by_value, missing = run_with_package_weights(path, spec)
            results[spec.name, key] = {
                "psnr": psnr(got, out),
                "missing": missing,
                "bytes": folder_bytes(path),
                "ops": op_types(path),
                "path": path,
            }
    print("\nread-back PSNR (dB) / package bytes, tiny model, split-einsum, per-tensor:")
    for (name, key), r in results.items():
        print(f"  {name:12s} {key!s:8s} {r['psnr']:7.1f} dB {r['bytes']:>10,d} B")
    return results


def test_every_parameter_reads_back(palettized):
    for (name, key), r in palettized.items():
        assert r["missing"] == [], (name, key)


def test_readback_psnr_at_8_and_6_bits(palettized):
    for name in PACKAGES:
        assert palettized[name, "float16"]["psnr"] >= 60.0, name
        assert palettized[name, 8]["psnr"] >= BAR_DB, name
        assert palettized[name, 6]["psnr"] >= BAR_DB, name
    # 4 bits is reported, not held to the bar; it must cost precision relative to 6 bits
    # wherever something was palettized (the tiny text encoder's matrices are all under the
    # size threshold, so nothing of it is).
    for name in ("Unet", "VAEEncoder", "VAEDecoder"):
        assert (
            palettized[name, 4]["psnr"] < palettized[name, 6]["psnr"] < palettized[name, 8]["psnr"]
        ), name


def test_palettized_weights_are_lookup_tables(palettized):
    for name in ("Unet", "VAEEncoder", "VAEDecoder"):
        assert palettized[name, "float16"]["ops"]["constexpr_lut_to_dense"] == 0
        n_lut = palettized[name, 6]["ops"]["constexpr_lut_to_dense"]
        assert n_lut > 0, name
        # and the package shrank accordingly: 6-bit indices instead of 16-bit weights
        ratio = palettized[name, 6]["bytes"] / palettized[name, "float16"]["bytes"]
        assert ratio < 0.6, (name, ratio)
        assert palettized[name, 4]["bytes"] < palettized[name, 6]["bytes"]
    # Gathers (the token embedding) are never palettized.
    text = ct.utils.load_spec(str(palettized["TextEncoder", 4]["path"]))
    assert "gather" in op_types(palettized["TextEncoder", 4]["path"])
    assert text.description.output[0].name == "last_hidden_state"


def test_grouped_channel_palettization_on_ios18(tiny, tmp_path):
    source = load_source(tiny)
    spec = next(s for s in E.build_specs(source, E.ExportOptions(size=SIZE)) if s.name == "Unet")
    out = first(run_spec(spec)).numpy()
    model = compress.palettize(E.to_mlprogram(spec, "iOS18"), 6, "iOS18")
    path = tmp_path / "Unet.mlpackage"
    model.save(str(path))
    assert op_types(path)["constexpr_lut_to_dense"] > 0
    got, _, missing = run_with_package_weights(path, spec)
    assert missing == []
    grouped = psnr(got, out)
    print(f"\nUnet 6-bit per-grouped-channel (iOS18) read-back PSNR: {grouped:.1f} dB")
    assert grouped >= BAR_DB


# ---------------------------------------------------------------------------- chunks, batch 1


@pytest.fixture(scope="module")
def chunked(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chunked") / "bundle"
    options = E.ExportOptions(attention="original", palettize=8, size=SIZE, chunk_unet=True)
    return E.export_coreml(tiny, out, options)


def test_chunked_bundle_chains_by_name(chunked):
    manifest = json.loads((chunked / "pbmlx-coreml.json").read_text())
    assert manifest["unet"] == ["UnetChunk1", "UnetChunk2"]
    assert not (chunked / "Unet.mlpackage").exists()
    one, two = manifest["models"]["UnetChunk1"], manifest["models"]["UnetChunk2"]
    produced = {o["name"]: o["shape"] for o in one["outputs"]}
    needed = {i["name"]: i["shape"] for i in two["inputs"]}
    given = {i["name"]: i["shape"] for i in one["inputs"]}
    # Every input of chunk 2 is an output of chunk 1 of the same shape, or the text states.
    for name, shape in needed.items():
        assert produced.get(name, given.get(name)) == shape, name
    assert set(needed) - set(produced) == {"encoder_hidden_states"}
    assert [o["name"] for o in two["outputs"]] == ["noise_pred"]


def test_chunked_packages_read_back_to_the_whole_unet(chunked, tiny):
    source = load_source(tiny)
    ref_spec = next(
        s
        for s in E.build_specs(source, E.ExportOptions(attention="original", size=SIZE))
        if s.name == "Unet"
    )
    whole = first(run_spec(ref_spec)).numpy()
    specs = E.build_specs(source, E.ExportOptions(attention="original", size=SIZE, chunk_unet=True))
    one, two = (s for s in specs if s.name.startswith("UnetChunk"))
    # Each chunk's package holds its half of the UNet; together every parameter.
    s1, _, missing1 = state_from_package(chunked / "UnetChunk1.mlpackage", one.module)
    s2, _, missing2 = state_from_package(chunked / "UnetChunk2.mlpackage", two.module)
    assert not set(missing1) & set(missing2)
    module = copy.deepcopy(one.module)
    module.load_state_dict({**s1, **s2}, strict=True)
    with torch.no_grad():
        emb, hidden, *skips = module(*one.inputs.values())
        chained = type(two.module)(module.unet, two.module.k, two.module.latent_shape)
        got = chained(hidden, emb, one.inputs["encoder_hidden_states"], *skips).numpy()
    assert psnr(got, whole) >= BAR_DB  # 8-bit palettized, chained


def test_unet_batch_1(tiny, tmp_path):
    source = load_source(tiny)
    specs = E.build_specs(source, E.ExportOptions(size=SIZE, unet_batch=1))
    unet = next(s for s in specs if s.name == "Unet")
    assert tuple(unet.inputs["sample"].shape) == (1, 8, 16, 16)
    assert tuple(unet.inputs["encoder_hidden_states"].shape) == (1, 77, 32)


# ---------------------------------------------------------------------------- the contract


class TorchPredictor:
    """An export module behind Core ML's ``predict(dict) -> dict``, by the package's names."""

    def __init__(self, spec):
        self.spec = spec

    def predict(self, data: dict) -> dict:
        args = [torch.from_numpy(np.asarray(data[n])) for n in self.spec.inputs]
        with torch.no_grad():
            out = self.spec.module(*args)
        outs = (out,) if isinstance(out, torch.Tensor) else out
        return {n: o.numpy() for n, o in zip(self.spec.outputs, outs, strict=True)}


@pytest.mark.parametrize(
    "options",
    [
        E.ExportOptions(size=SIZE),
        E.ExportOptions(attention="original", size=SIZE, unet_batch=1),
        E.ExportOptions(attention="original", size=(64, 32), chunk_unet=True),
    ],
    ids=["split-einsum", "batch-1", "chunked-64x32"],
)
def test_bundle_contract_reproduces_the_mlx_edit(tiny, tmp_path, options):
    """pbmlx's pipeline driving the packages' modules by the bundle's names equals the MLX
    editor on the same checkpoint, seed and working image: the manifest's layouts, scaling,
    batch order and chunk chaining are what pbmlx's own numerics need."""
    from pbmlx.diffuse.coreml import load_coreml_pipeline
    from pbmlx.editor import Editor

    bundle = tmp_path / "bundle"
    (bundle).mkdir()
    source = load_source(tiny)
    specs = E.build_specs(source, options)
    for f in source.tokenizer_files:
        if f.name in ("vocab.json", "merges.txt"):
            (bundle / f.name).write_bytes(f.read_bytes())
    # The manifest as export writes it, with each model's I/O taken from its export module
    # (converting them is proven above; this test is about driving them).
    from pbmlx.convert.coreml.bundle import manifest

    from pbmlx.diffuse.coreml import MANIFEST

    models = {spec.name: spec_io(spec) for spec in specs}
    data = manifest(source, options, models, E.source_metadata(source, options))
    (bundle / MANIFEST).write_text(json.dumps(data))
    for spec in specs:
        (bundle / f"{spec.name}.mlpackage").mkdir()
    predictors = {s.name: TorchPredictor(s) for s in specs}
    pipeline, size = load_coreml_pipeline(bundle, predictors=predictors)
    assert size == options.size
    w, h = options.size
    rng = np.random.default_rng(0)
    image = rng.random((h, w, 3), dtype=np.float32)
    got = pipeline.generate(image, "make it winter", steps=3, seed=7).image
    mlx = Editor.from_pretrained(tiny, dtype="float32").pipeline
    want = mlx.generate(image, "make it winter", steps=3, seed=7).image
    assert psnr(got, want) >= 60.0, psnr(got, want)


def spec_io(spec) -> dict:
    """A package's entry of ``pbmlx-coreml.json`` as its export module defines it."""
    outs = run_spec(spec)
    outs = (outs,) if isinstance(outs, torch.Tensor) else outs
    return {
        "file": f"{spec.name}.mlpackage",
        "inputs": [{"name": n, "shape": list(t.shape)} for n, t in spec.inputs.items()],
        "outputs": [
            {"name": n, "shape": list(o.shape)} for n, o in zip(spec.outputs, outs, strict=True)
        ],
    }


# ---------------------------------------------------------------------------- the MLX folder


def test_pbmlx_converted_folder_maps_back_to_diffusers_weights(tiny, tmp_path):
    from pbmlx.convert.to_mlx import convert

    converted = convert(tiny, tmp_path / "mlx", dtype="float32")
    a, b = load_source(tiny), load_source(converted)
    assert b.kind == "pbmlx"
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (name, key)


def test_quantized_converted_folder_exports_its_dequantized_weights(tiny, tmp_path):
    from pbmlx.convert.to_mlx import convert

    converted = convert(tiny, tmp_path / "mlx8", dtype="float32", quantize=8, group_size=32)
    src = load_source(converted)
    ref = load_source(tiny)
    assert src.quantized and src.quantized["bits"] == 8
    x = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 500.0)
    e = torch.randn(3, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = src.unet(x, t, e, return_dict=False)[0].numpy()
        want = ref.unet(x, t, e, return_dict=False)[0].numpy()
    assert 35.0 <= psnr(got, want) < 120.0  # close, and not the float weights


# ---------------------------------------------------------------------------- refusals


def test_cli_choices_mirror_the_exporter():
    assert coreml_cli.ATTENTION_CHOICES == E.ATTENTIONS
    assert coreml_cli.DEFAULT_ATTENTION == E.DEFAULT_ATTENTION
    assert coreml_cli.TARGET_CHOICES == E.TARGETS
    assert coreml_cli.DEFAULT_TARGET == E.DEFAULT_TARGET
    assert coreml_cli.UNET_BATCH_CHOICES == E.UNET_BATCHES
    assert coreml_cli.PALETTIZE_CHOICES == compress.PALETTE_BITS


def test_sizes_parse_and_check():
    assert E.parse_size("512") == (512, 512)
    assert E.parse_size("512x384") == (512, 384)
    for bad in ("abc", "512x", "1x2x3", ""):
        with pytest.raises(PbmlxError):
            E.parse_size(bad)
    E.check_size((512, 384), 64)
    for bad in [(500, 512), (0, 64), (4096, 512)]:
        with pytest.raises(PbmlxError):
            E.check_size(bad, 64)


def nothing_left(parent: Path, name: str) -> bool:
    return not any(
        p.name == name or p.name.startswith(f".{name}.partial") for p in parent.iterdir()
    )


def test_refuses_a_text_to_image_unet(tiny, tmp_path):
    bad = tmp_path / "t2i"
    bad.mkdir()
    for p in tiny.iterdir():
        (bad / p.name).symlink_to(p)
    (bad / "unet").unlink()
    (bad / "unet").mkdir()
    config = json.loads((tiny / "unet" / "config.json").read_text())
    (bad / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 4}))
    line = assert_clean_error(pbmlx("export-coreml", bad, tmp_path / "out"))
    assert "4 input channels" in line and "InstructPix2Pix" in line
    assert nothing_left(tmp_path, "out")


def test_refuses_missing_and_damaged_components(tiny, tmp_path):
    missing = tmp_path / "missing"
    missing.mkdir()
    for p in tiny.iterdir():
        if p.name != "vae":
            (missing / p.name).symlink_to(p)
    line = assert_clean_error(pbmlx("export-coreml", missing, tmp_path / "out1"))
    assert "vae" in line
    assert nothing_left(tmp_path, "out1")

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for p in tiny.iterdir():
        if p.name != "unet":
            (damaged / p.name).symlink_to(p)
    (damaged / "unet").mkdir()
    (damaged / "unet" / "config.json").write_bytes((tiny / "unet" / "config.json").read_bytes())
    weights = (tiny / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    (damaged / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(weights[:1000])
    line = assert_clean_error(pbmlx("export-coreml", damaged, tmp_path / "out2"))
    assert "unet" in line
    assert nothing_left(tmp_path, "out2")


def test_refuses_existing_unwritable_out_and_bad_sizes(tiny, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    line = assert_clean_error(pbmlx("export-coreml", tiny, existing))
    assert "already exists" in line
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_clean_error(pbmlx("export-coreml", tiny, blocker / "out"))
    assert blocker.read_text() == "not a folder"

    for size in ("100", "256x100", "abc", "4096"):
        line = assert_clean_error(pbmlx("export-coreml", tiny, tmp_path / "o", "--size", size))
        assert "--size" in line
    assert nothing_left(tmp_path, "o")


def test_refuses_a_missing_model(tmp_path):
    line = assert_clean_error(pbmlx("export-coreml", tmp_path / "nope", tmp_path / "out"))
    assert "does not exist" in line


def test_unsplittable_unet_is_refused():
    from diffusers import UNet2DConditionModel
    from pbmlx.convert.coreml.modules import check_splittable

    unet = UNet2DConditionModel(**{**TINY_UNET_CONFIG, "class_embed_type": "timestep"})
    with pytest.raises(PbmlxError, match="class_embed_type"):
        check_splittable(unet)


def test_coreml_engine_refuses_off_macos(cli_bundle, tmp_path):
    if sys.platform == "darwin":
        pytest.skip("this is the refusal off macOS")
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (64, 48), (120, 80, 40)).save(photo)
    r = pbmlx("edit", photo, "make it winter", "--engine", "coreml", "--model", cli_bundle)
    line = assert_clean_error(r)
    assert "Core ML runs only on macOS" in line
    assert not (tmp_path / "p.edited.png").exists()


def test_split_einsum_refusal_is_one_clear_error(tiny):
    source = load_source(tiny)
    # An option the Neural Engine variant does not implement, as the transformer's config says.
    source.unet.mid_block.attentions[0].register_to_config(only_cross_attention=True)
    with pytest.raises(PbmlxError, match="--attention original"):
        E.build_specs(source, E.ExportOptions(size=SIZE))
