"""``pbmlx convert``: diffusers InstructPix2Pix folder (or hub id) -> MLX folder, and loading it.

The source is the tiny random pipeline of ``tiny_ip2p.py`` (diffusers ``save_pretrained``
layout, float32). The reference outputs are pbmlx's own models loaded straight from that
diffusers folder (proven against diffusers/transformers in ``test_models_parity.py``); other
oracles are numpy (float16 rounding, unpacking MLX's quantized weights), ``hashlib`` and the
``safetensors`` library (reading what was written, independently of MLX).

Tolerances, and why:
- float32, no quantization: bit-exact. The same float32 tensors go through the same kernels.
- float16: ``max|out - ref| <= FLOAT16_TOL * max(1, max|ref|)``. float16 keeps 11 significant
  bits (relative step 9.8e-4); weights and activations are rounded at every one of the UNet's
  ~40 layers. Measured: 1.8e-3 (UNet), 6.5e-3 on hidden states of size ~3 (text encoder);
  bound 2e-2 (a mis-laid tensor moves outputs by O(1)).
- quantized UNet output: ``PSNR = 10 log10(range(ref)^2 / mean((out - ref)^2))`` against the
  float32 output, ``range = max(ref) - min(ref)``. Measured on the tiny model with group size
  32 (so that every Linear layer, 32 to 256 wide, is quantized): 8-bit 54.9 dB, 4-bit 30.3 dB
  (float32 around the quantized layers; 54.7 and 30.2 dB in float16); bounds 45 and 25 dB. At group size 64 (the default; every layer of the
  full-size networks qualifies) only the tiny model's 64-multiple-wide layers are quantized.
- quantized weights, decoded with numpy from the stored uint32 words: within one quantization
  step (``scale``) of the float weight. MLX's affine grid is shifted so that it spans each
  group's range; rounding onto it is measured at up to 0.99994 of a step, bound 1.01 steps (a
  wrong layout or packing is off by many steps).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import pbmlx  # first, so MLX binds OpenBLAS

import mlx.core as mx  # isort: skip
from mlx.utils import tree_flatten
from pbmlx.convert import cli as convert_cli
from pbmlx.convert import to_mlx
from pbmlx.convert.to_mlx import convert

from pbmlx.errors import PbmlxError
from pbmlx.models import load_text_encoder, load_unet, load_vae
from pbmlx.models.checkpoint import (
    MARKER,
    is_converted,
    load_converted,
    load_converted_component,
    read_manifest,
    verify_converted,
)

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402
from tiny_ip2p import build_tiny_ip2p  # noqa: E402

FLOAT16_TOL = 2e-2  # of the output's scale; see the module docstring
PSNR_8BIT_DB = 45.0  # measured 54.9 dB
PSNR_4BIT_DB = 25.0  # measured 30.3 dB
QUANT_STEP_BOUND = 1.01  # |dequantized - float| in units of the group's scale
TEST_GROUP_SIZE = 32  # quantizes every Linear layer of the tiny model
LATENT_HW = (8, 12)
IMAGE_HW = (32, 48)  # the tiny VAE downsamples 4x
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_tiny_ip2p(tmp_path_factory.mktemp("tiny") / "ip2p", seed=0)


@pytest.fixture(scope="module")
def converted32(ckpt, tmp_path_factory) -> Path:
    return convert(ckpt, tmp_path_factory.mktemp("conv") / "ip2p-f32", dtype="float32")


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    from skimage import data

    photo = np.asarray(data.astronaut(), dtype=np.float32)[::10, ::10][: IMAGE_HW[0]]
    return {
        "sample": rng.standard_normal((3, *LATENT_HW, 8)).astype(np.float32),  # NHWC, batch 3
        "context": rng.standard_normal((3, 77, 32)).astype(np.float32),
        "timesteps": np.array([981.0, 500.5, 1.0], dtype=np.float32),
        "ids": (np.arange(2 * 77).reshape(2, 77) * 7 % 700).astype(np.int32),  # vocab: 718
        "image": (photo[None, :, : IMAGE_HW[1]] / 127.5 - 1.0).astype(np.float32),
    }


def run_unet(model, x: dict, dtype=mx.float32) -> np.ndarray:
    out = model(
        mx.array(x["sample"]).astype(dtype),
        mx.array(x["timesteps"]),
        mx.array(x["context"]).astype(dtype),
    )
    return np.array(out.astype(mx.float32)).astype(np.float64)


def run_text(model, x: dict) -> np.ndarray:
    out = model(mx.array(x["ids"])).last_hidden_state
    return np.array(out.astype(mx.float32)).astype(np.float64)


@pytest.fixture(scope="module")
def reference(ckpt, inputs) -> dict[str, np.ndarray]:
    """float32 outputs of the models loaded straight from the diffusers folder."""
    unet, text = load_unet(ckpt / "unet"), load_text_encoder(ckpt / "text_encoder")
    return {"unet": run_unet(unet, inputs), "text": run_text(text, inputs)}


def psnr(out: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((out - ref) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(float(ref.max() - ref.min()) ** 2 / mse)


def copy_of(ckpt: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ckpt, tmp_path / "src"))


def assert_nothing_written(out: Path) -> None:
    """No OUT_DIR and no hidden partial folder beside it."""
    assert not out.exists()
    if out.parent.exists():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not leftovers, leftovers


def refuse(source, out: Path, match: str, **kwargs) -> str:
    with pytest.raises(PbmlxError, match=match) as e:
        convert(source, out, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    assert_nothing_written(out)
    return message


# ---------------------------------------------------------------------------- round trip


def test_float32_round_trip_is_bit_exact(ckpt, converted32, inputs, reference):
    assert is_converted(converted32) and not is_converted(ckpt)
    text, vae, unet = load_converted(converted32)
    assert np.array_equal(run_unet(unet, inputs), reference["unet"])
    assert np.array_equal(run_text(text, inputs), reference["text"])
    ref_vae = load_vae(ckpt / "vae")
    image = mx.array(inputs["image"])
    for ours, ref in (
        (vae.encode(image).mean, ref_vae.encode(image).mean),
        (vae.decode(ref_vae.encode(image).mean), ref_vae.decode(ref_vae.encode(image).mean)),
    ):
        assert np.array_equal(np.array(ours), np.array(ref))


def test_unquantized_components_also_load_with_the_plain_loaders(converted32, inputs, reference):
    # {"format": "mlx"} tells the generic loader to skip sanitize: no second transpose.
    assert np.array_equal(run_unet(load_unet(converted32 / "unet"), inputs), reference["unet"])


def test_written_files_are_mlx_layout_safetensors(ckpt, converted32):
    with safe_open(str(converted32 / "unet" / "model.safetensors"), "numpy") as f:
        meta = f.metadata()
        conv_in = f.get_tensor("conv_in.weight")
        proj_in = f.get_tensor("down_blocks.0.attentions.0.proj_in.weight")
    assert meta["format"] == "mlx" and meta["component"] == "unet" and meta["dtype"] == "float32"
    source = safetensors_numpy.load_file(str(ckpt / UNET_WEIGHTS))
    # OIHW -> OHWI and 1x1 conv -> (O, I), checked with numpy on the source tensors.
    assert np.array_equal(conv_in, source["conv_in.weight"].transpose(0, 2, 3, 1))
    assert np.array_equal(proj_in, source["down_blocks.0.attentions.0.proj_in.weight"][:, :, 0, 0])
    for c in ("unet", "vae", "text_encoder"):
        assert (converted32 / c / "config.json").read_bytes() == (
            ckpt / c / "config.json"
        ).read_bytes()
    for f in (ckpt / "tokenizer").iterdir():
        assert (converted32 / "tokenizer" / f.name).read_bytes() == f.read_bytes()
    sched = "scheduler/scheduler_config.json"
    assert (converted32 / sched).read_bytes() == (ckpt / sched).read_bytes()
    assert not (converted32 / "model_index.json").exists()  # not mistaken for diffusers layout


def test_float16_weights_are_numpy_rounded_and_outputs_within_tolerance(
    ckpt, inputs, reference, tmp_path
):
    out = convert(ckpt, tmp_path / "f16")  # float16 is the default
    stored = safetensors_numpy.load_file(str(out / "unet" / "model.safetensors"))
    source = {k: np.array(v) for k, v in tree_flatten(load_unet(ckpt / "unet").parameters())}
    assert stored.keys() == source.keys()
    for name, w in source.items():
        assert stored[name].dtype == np.float16
        assert np.array_equal(stored[name], w.astype(np.float16)), name

    text, _, unet = load_converted(out)
    got = run_unet(unet, inputs, mx.float16)
    scale = max(1.0, float(np.abs(reference["unet"]).max()))
    assert np.abs(got - reference["unet"]).max() <= FLOAT16_TOL * scale
    got_text = run_text(text, inputs)
    scale = max(1.0, float(np.abs(reference["text"]).max()))
    assert np.abs(got_text - reference["text"]).max() <= FLOAT16_TOL * scale


def test_bfloat16_conversion_loads(ckpt, tmp_path):
    out = convert(ckpt, tmp_path / "bf16", dtype="bfloat16")
    _, vae, unet = load_converted(out)
    assert unet.conv_in.weight.dtype == mx.bfloat16 and vae.decoder is not None
    assert read_manifest(out)["dtype"] == "bfloat16"


# ---------------------------------------------------------------------------- quantization


def dequantize_numpy(q: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int):
    """MLX affine quantization decoded by hand: each uint32 packs 32/bits values, lowest bits
    first; value = scale * q + bias per group of (columns / groups) weights."""
    per_word = 32 // bits
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    values = ((q[..., None] >> shifts) & (2**bits - 1)).reshape(q.shape[0], -1)
    groups = scales.shape[-1]
    grouped = values.reshape(q.shape[0], groups, -1).astype(np.float64)
    return grouped * scales[..., None] + biases[..., None], grouped.shape


@pytest.mark.parametrize(("bits", "min_psnr"), [(8, PSNR_8BIT_DB), (4, PSNR_4BIT_DB)])
def test_quantized_unet_psnr_and_stored_weights(ckpt, inputs, reference, tmp_path, bits, min_psnr):
    # float32 around the quantized layers: MLX's CPU quantized matmul is 3-4x slower in
    # float16, and float16 alone is covered above.
    out = convert(
        ckpt, tmp_path / f"q{bits}", quantize=bits, group_size=TEST_GROUP_SIZE, dtype="float32"
    )
    manifest = read_manifest(out)
    q = manifest["quantization"]
    assert (q["bits"], q["group_size"], q["mode"]) == (bits, TEST_GROUP_SIZE, "affine")
    assert "vae" not in q["layers"]  # convolution-only in effect; see to_mlx's docstring
    assert "embeddings.token_embedding" in q["layers"]["text_encoder"]
    assert "embeddings.position_embedding" not in q["layers"]["text_encoder"]
    assert len(q["layers"]["unet"]) == 216  # every Linear layer of the tiny UNet

    # The stored words decode (numpy) to within one step of the float weights.
    stored = safetensors_numpy.load_file(str(out / "unet" / "model.safetensors"))
    floats = {k: np.array(v) for k, v in tree_flatten(load_unet(ckpt / "unet").parameters())}
    for layer in q["layers"]["unet"]:
        w = floats[f"{layer}.weight"]
        scales = stored[f"{layer}.scales"].astype(np.float64)
        deq, shape = dequantize_numpy(
            stored[f"{layer}.weight"], scales, stored[f"{layer}.biases"].astype(np.float64), bits
        )
        steps = np.abs(deq - w.reshape(shape)) / scales[..., None]
        assert steps.max() <= QUANT_STEP_BOUND, layer
    assert np.array_equal(stored["conv_in.weight"], floats["conv_in.weight"])  # convs: float

    text, _, unet = load_converted(out)
    assert psnr(run_unet(unet, inputs), reference["unet"]) >= min_psnr
    assert psnr(run_text(text, inputs), reference["text"]) >= min_psnr
    verify_converted(out)


def test_default_group_size_skips_layers_it_does_not_divide(ckpt, tmp_path):
    out = convert(ckpt, tmp_path / "q8", quantize=8)
    layers = read_manifest(out)["quantization"]["layers"]
    _, _, unet = load_converted(out)
    widths = {p: m.weight.shape[-1] for p, m in unet.named_modules() if hasattr(m, "scales")}
    assert set(widths) == set(layers["unet"]) and widths
    # QuantizedLinear stores 32/bits values per word: input width = words * 4 at 8 bits.
    assert all(w * 4 % 64 == 0 for w in widths.values())
    assert len(layers["unet"]) < 216


# ---------------------------------------------------------------------------- manifest, card


def test_manifest_and_model_card(ckpt, converted32):
    m = read_manifest(converted32)
    assert m["format"] == "pbmlx-instruct-pix2pix" and m["format_version"] == 1
    assert m["pbmlx_version"] == pbmlx.__version__
    assert m["dtype"] == "float32" and m["quantization"] is None
    assert m["source"]["model"] == str(ckpt) and m["source"]["hub_id"] is None
    assert m["source"]["pipeline_class"] == "StableDiffusionInstructPix2PixPipeline"
    assert m["components"]["unet"] == {
        "config": "unet/config.json",
        "weights": "unet/model.safetensors",
    }
    files = sorted(
        p.relative_to(converted32).as_posix()
        for p in converted32.rglob("*")
        if p.is_file() and p.name != MARKER
    )
    assert sorted(m["files"]) == files
    for rel, entry in m["files"].items():
        data = (converted32 / rel).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    verify_converted(converted32)

    card = (converted32 / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n")
    assert str(ckpt) in card and "licence" in card.lower()
    assert "check the licence" in card  # the tiny source states none
    assert "dtype: float32" in card and "quantization: none" in card
    assert f'pbmlx edit photo.jpg "make it winter" --model {converted32}' in card


def test_verify_detects_a_changed_file(converted32, tmp_path):
    copy = Path(shutil.copytree(converted32, tmp_path / "copy"))
    with open(copy / "vae" / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(PbmlxError, match=r"vae/model\.safetensors does not match the SHA-256"):
        verify_converted(copy)


def test_licence_from_the_source_card_is_carried(ckpt, tmp_path):
    src = copy_of(ckpt, tmp_path)
    (src / "README.md").write_text("---\nlicense: mit\ntags:\n- x\n---\n# a model\n")
    (src / "LICENSE").write_text("MIT License\n")
    out = convert(src, tmp_path / "out", dtype="float32")
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\n") and "**mit**" in card and "`LICENSE`" in card
    assert (out / "LICENSE").read_text() == "MIT License\n"
    assert read_manifest(out)["source"]["license"] == {"license": "mit"}


# ---------------------------------------------------------------------------- bad input


def test_refuses_an_existing_out_dir_and_keeps_it(ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(PbmlxError, match=r"already exists .*never overwrites"):
        convert(ckpt, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(PbmlxError, match=r"already exists \(the path is a file\)"):
        convert(ckpt, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"


def test_an_empty_out_dir_is_used(ckpt, tmp_path):
    (tmp_path / "out").mkdir()
    assert is_converted(convert(ckpt, tmp_path / "out", dtype="float32"))


def test_truncated_safetensors(ckpt, tmp_path):
    src = copy_of(ckpt, tmp_path)
    path = src / UNET_WEIGHTS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    msg = refuse(src, tmp_path / "out", "not a readable safetensors file")
    assert str(path) in msg


def rewrite(path: Path, edit) -> None:
    tensors = safetensors_numpy.load_file(str(path))
    edit(tensors)
    safetensors_numpy.save_file(tensors, str(path))


def test_missing_tensor(ckpt, tmp_path):
    src = copy_of(ckpt, tmp_path)
    rewrite(src / UNET_WEIGHTS, lambda t: t.pop("conv_in.bias"))
    msg = refuse(src, tmp_path / "out", "'conv_in.bias' expected by the model")
    assert str(src / UNET_WEIGHTS) in msg and "missing" in msg


def test_wrong_shape(ckpt, tmp_path):
    src = copy_of(ckpt, tmp_path)
    name = "time_embedding.linear_1.bias"
    rewrite(src / UNET_WEIGHTS, lambda t: t.update({name: np.zeros(7, np.float32)}))
    refuse(src, tmp_path / "out", rf"Tensor '{name}' in .* has shape \(7,\)")


def test_config_that_does_not_match_the_weights(ckpt, tmp_path):
    src = copy_of(ckpt, tmp_path)
    cfg = json.loads((src / "unet/config.json").read_text())
    (src / "unet/config.json").write_text(json.dumps({**cfg, "layers_per_block": 1}))
    refuse(src, tmp_path / "out", r"has shape .* but the model \(config .*unet/config\.json\)")
    # Configs that disagree with each other are caught before any tensor is read.
    (src / "unet/config.json").write_text(json.dumps({**cfg, "cross_attention_dim": 64}))
    refuse(src, tmp_path / "out", "cross_attention_dim 64 .*hidden_size is 32")


def test_not_an_instruct_pix2pix_checkpoint(ckpt, tmp_path):
    # A text-to-image SD UNet: 4 input channels (conv_in cut to match, so weights are valid).
    src = copy_of(ckpt, tmp_path)
    cfg = json.loads((src / "unet/config.json").read_text())
    (src / "unet/config.json").write_text(json.dumps({**cfg, "in_channels": 4}))
    rewrite(src / UNET_WEIGHTS, lambda t: t.update({"conv_in.weight": t["conv_in.weight"][:, :4]}))
    msg = refuse(src, tmp_path / "out", "is not an InstructPix2Pix checkpoint")
    assert "takes 4 input channels" in msg and "takes 8" in msg


def test_source_that_is_not_a_pipeline(ckpt, converted32, tmp_path):
    refuse(tmp_path / "nope", tmp_path / "out", "does not exist")
    refuse(str(tmp_path / "nope"), tmp_path / "out", "does not exist")
    refuse(ckpt / "unet", tmp_path / "out", "not a diffusers pipeline folder")
    refuse(converted32, tmp_path / "out", "already converted by pbmlx")
    refuse(ckpt / "model_index.json", tmp_path / "out", "is a file")


def test_bad_settings(ckpt, tmp_path):
    refuse(ckpt, tmp_path / "out", "dtype 'float64'", dtype="float64")
    refuse(ckpt, tmp_path / "out", "--quantize 3", quantize=3)
    refuse(ckpt, tmp_path / "out", "Group size 48", group_size=48)


def test_failure_midway_leaves_nothing(ckpt, tmp_path, monkeypatch):
    real = to_mlx.convert_component

    def interrupted(source, name, out, **kw):
        if name == "unet":  # the last one: the other two are already written
            raise KeyboardInterrupt
        return real(source, name, out, **kw)

    monkeypatch.setattr(to_mlx, "convert_component", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(ckpt, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


# ---------------------------------------------------------------------------- pickles


@pytest.fixture()
def pickled(ckpt, tmp_path) -> Path:
    """The tiny pipeline with its UNet saved as a PyTorch pickle only (as old repos ship it)."""
    from safetensors.torch import load_file

    src = copy_of(ckpt, tmp_path)
    torch.save(load_file(str(src / UNET_WEIGHTS)), src / "unet/diffusion_pytorch_model.bin")
    (src / UNET_WEIGHTS).unlink()
    return src


def test_pickle_refused_without_allow_pickle(pickled, tmp_path):
    msg = refuse(pickled, tmp_path / "out", "only pickle weights")
    assert "diffusion_pytorch_model.bin" in msg and "--allow-pickle" in msg


def test_pickle_converted_with_allow_pickle(pickled, converted32, tmp_path):
    out = convert(pickled, tmp_path / "out", dtype="float32", allow_pickle=True)
    ours = safetensors_numpy.load_file(str(out / "unet/model.safetensors"))
    ref = safetensors_numpy.load_file(str(converted32 / "unet/model.safetensors"))
    assert ours.keys() == ref.keys()
    assert all(np.array_equal(ours[k], ref[k]) for k in ref)


def test_pickle_needs_torch(pickled, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    msg = refuse(pickled, tmp_path / "out", "needs PyTorch", allow_pickle=True)
    assert "pbmlx[convert]" in msg


def test_pickle_that_is_not_a_state_dict(pickled, tmp_path):
    (pickled / "unet/diffusion_pytorch_model.bin").write_bytes(b"not a zip or a pickle")
    refuse(pickled, tmp_path / "out", "could not be read", allow_pickle=True)


# ---------------------------------------------------------------------------- hub ids


def fake_hub(remote: Path, cache: Path, calls: list):
    """A stand-in for ``huggingface_hub.snapshot_download`` serving ``remote``: copies the
    files that match ``allow_patterns`` (with the library's own matcher) into one snapshot."""
    from huggingface_hub.utils import filter_repo_objects

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append(list(allow_patterns))
        snap = cache / repo_id.replace("/", "--") / "snapshots" / ("ab" * 20)
        files = [p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file()]
        for rel in filter_repo_objects(files, allow_patterns=allow_patterns):
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(remote / rel, snap / rel)
        return str(snap)

    return snapshot_download


@pytest.fixture()
def remote(ckpt, tmp_path) -> Path:
    """A hub repository as real ones look: extra variants, pickles and a safety checker."""
    src = Path(shutil.copytree(ckpt, tmp_path / "remote"))
    for junk in (
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "safety_checker/model.safetensors",
        "text_encoder/pytorch_model.bin",
    ):
        (src / junk).parent.mkdir(exist_ok=True)
        (src / junk).write_bytes(b"junk")
    (src / "README.md").write_text("---\nlicense: mit\n---\n")
    (src / "LICENSE").write_text("MIT\n")
    return src


def test_hub_id_downloads_only_the_needed_files(remote, tmp_path, monkeypatch):
    import huggingface_hub

    calls: list = []
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", fake_hub(remote, tmp_path / "hub", calls)
    )
    out = convert("someone/tiny-ip2p", tmp_path / "out", dtype="float32")
    snap = tmp_path / "hub/someone--tiny-ip2p/snapshots" / ("ab" * 20)
    got = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert not [g for g in got if g.endswith(".bin") or ".fp16." in g or "safety" in g], got
    assert {UNET_WEIGHTS, "tokenizer/vocab.json", "LICENSE", "README.md"} <= set(got)
    m = read_manifest(out)
    assert m["source"]["hub_id"] == "someone/tiny-ip2p" and m["source"]["revision"] == "ab" * 20
    card = (out / "README.md").read_text()
    assert "https://huggingface.co/someone/tiny-ip2p" in card and "base_model:" in card
    assert "**mit**" in card


def test_hub_id_with_pickles_only(remote, tmp_path, monkeypatch):
    import huggingface_hub
    from safetensors.torch import load_file

    torch.save(load_file(str(remote / UNET_WEIGHTS)), remote / "unet/diffusion_pytorch_model.bin")
    (remote / UNET_WEIGHTS).unlink()
    calls: list = []
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", fake_hub(remote, tmp_path / "hub", calls)
    )
    refuse("someone/tiny-ip2p", tmp_path / "out", "safetensors only")
    out = convert("someone/tiny-ip2p", tmp_path / "out", dtype="float32", allow_pickle=True)
    assert is_converted(out)
    pickle_patterns = [p for c in calls for p in c if p.endswith(".bin")]
    assert pickle_patterns and all(p.startswith("unet/") for p in pickle_patterns)


def test_unreachable_hub_id(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    for pickles in (False, True):
        msg = refuse(
            "pbmlx-tests/no-such-model",
            tmp_path / "out",
            "could not be fetched",
            allow_pickle=pickles,
        )
        assert "'pbmlx-tests/no-such-model'" in msg


# ---------------------------------------------------------------------------- loading errors


def test_load_converted_refuses_a_tampered_folder(converted32, tmp_path, ckpt):
    folder = Path(shutil.copytree(converted32, tmp_path / "c"))
    manifest = json.loads((folder / MARKER).read_text())

    def with_manifest(**changes) -> None:
        (folder / MARKER).write_text(json.dumps({**manifest, **changes}))

    with_manifest(format_version=99)
    with pytest.raises(PbmlxError, match="newer than this pbmlx"):
        load_converted(folder)
    with_manifest(quantization={"bits": 8, "group_size": 32, "layers": {"unet": ["nope.proj"]}})
    with pytest.raises(PbmlxError, match=r"'nope\.proj'.* does not exist"):
        load_converted_component(folder, "unet")
    with_manifest(quantization={"bits": 8, "group_size": 32, "layers": {"unet": ["conv_in"]}})
    with pytest.raises(PbmlxError, match=r"'conv_in'.* Conv2d, which cannot be quantized"):
        load_converted_component(folder, "unet")
    with_manifest()
    shutil.copyfile(ckpt / UNET_WEIGHTS, folder / "unet/model.safetensors")  # torch layout
    with pytest.raises(PbmlxError, match="not in MLX layout"):
        load_converted_component(folder, "unet")
    (folder / "unet/model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(PbmlxError, match="not a readable safetensors"):
        load_converted_component(folder, "unet")
    (folder / MARKER).write_text("{")
    with pytest.raises(PbmlxError, match="not readable JSON"):
        load_converted(folder)


# ---------------------------------------------------------------------------- the editor


def test_editor_loads_a_converted_folder(ckpt, converted32):
    """Editor.from_pretrained on the converted folder edits exactly as on the diffusers one."""
    from skimage import data

    from pbmlx.editor import Editor

    converted = Editor.from_pretrained(converted32)
    photo = np.asarray(data.chelsea())[::6, ::6]
    kwargs = {"steps": 2, "size": 64, "seed": 1}
    ours = converted.edit(photo, "make it winter", **kwargs)
    ref = Editor.from_pretrained(ckpt).edit(photo, "make it winter", **kwargs)
    assert np.array_equal(ours.rgb, ref.rgb)


# ---------------------------------------------------------------------------- the command


def cli_has_convert() -> bool:
    from pbmlx.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return "convert" in sub.choices


def test_cli_choices_mirror_the_converter():
    assert tuple(to_mlx.DTYPES) == convert_cli.DTYPE_CHOICES
    assert convert_cli.DEFAULT_DTYPE == to_mlx.DEFAULT_DTYPE
    assert convert_cli.QUANTIZE_CHOICES == to_mlx.QUANTIZE_BITS
    assert convert_cli.DEFAULT_GROUP_SIZE == to_mlx.DEFAULT_GROUP_SIZE


def test_command(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["convert", str(ckpt), str(out), "--quantize", "8", "--dtype", "float32"]
    if cli_has_convert():
        from pbmlx.cli import main

        assert main(argv) == 0
        assert capsys.readouterr().out.strip() == str(out)
        assert main(argv) == 2  # OUT_DIR now exists: one error line, exit 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("pbmlx: error: Output ") and "already exists" in err[-1]
    else:  # the top-level CLI does not dispatch `convert` yet: the command's own main
        parser = argparse.ArgumentParser()
        convert_cli.add_parser(parser.add_subparsers(), parents=[])
        args = parser.parse_args(argv)
        assert args.func(args) == 0
        assert capsys.readouterr().out.strip() == str(out)
        with pytest.raises(PbmlxError, match="already exists"):
            args.func(args)
    q = read_manifest(out)["quantization"]
    assert q["bits"] == 8 and q["group_size"] == 64
