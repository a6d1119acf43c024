"""pbmlx's MLX CLIP against transformers' ``CLIPModel`` and ``CLIPImageProcessorPil``.

The checkpoint is a tiny random ``CLIPModel`` written by ``save_pretrained`` beside a tiny CLIP
BPE tokenizer (``tiny_ip2p.build_tiny_tokenizer``) and a ``preprocessor_config.json`` written
by transformers' processor: the layout of ``openai/clip-vit-base-patch32`` (whose legacy text
``eos_token_id = 2`` it also copies), loaded through ``CLIPModel.from_pretrained`` like a real
one. Inputs are real photos (skimage) and real tokenizations. float32 throughout.

Tolerances, and why:

- model on identical inputs (transformers' pixel_values / token ids): ``max|ours - ref| <=
  1e-4 * max(1, max|ref|)``, as ``test_models_parity.py``: both sides are float32 and differ
  in summation order only (measured ~1e-6 of scale here);
- the resize against PIL itself in float mode ("F", same two passes with the same clipping):
  1e-5 in normalized pixel units (float32 rounding of weights and sums; measured ~1e-7);
- preprocessing against transformers' PIL processor on 8-bit photos: PIL rounds to 8 bits
  after its horizontal pass (error <= 0.5/255, then weighted by the vertical kernel, whose
  absolute weights sum to <= 1.25 for bicubic) and again at the end (<= 0.5/255); pbmlx rounds
  nothing. So per pixel ``|ours - PIL| <= (0.5 * 1.25 + 0.5) / 255 = 1.125/255`` in [0, 1]
  units, and on average about the 0.25/255 of uniform rounding (bound: 0.35/255). Measured:
  max 1.07/255, mean 0.30/255;
- end to end (our preprocessing + model vs transformers' processor + model): the inputs differ
  by that rounding, so the embeddings agree to the model's sensitivity, not to float32: cosine
  similarity of the normalized embeddings >= 0.9995 and logits (scale 100) within 0.1
  (measured: 1 - cos <= 4e-6, logits <= 0.034).

A control test shows one real mistake (causal attention in the vision tower) failing the
parity bound by four orders of magnitude.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
from mlx.utils import tree_flatten
from PIL import Image
from skimage import data

from pbmlx.errors import PbmlxError
from pbmlx.models.clip import (
    CLIPModel,
    CLIPPreprocessor,
    l2_normalize,
    resample_matrix,
)
from pbmlx.models.weights import MLX_FORMAT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tiny_ip2p import build_tiny_tokenizer, randomize_  # noqa: E402

PARITY_TOL = 1e-4  # of the output's scale; see the module docstring
RESIZE_TOL = 1e-5  # normalized pixel units, vs PIL's float resize
PIL8_MAX = (0.5 * 1.25 + 0.5) / 255  # per pixel in [0, 1] units, vs PIL's 8-bit resize
PIL8_MEAN = 0.35 / 255
END_TO_END_COS = 0.9995
END_TO_END_LOGITS = 0.1
IMAGE_SIZE = 32
LOGIT_SCALE = math.log(100.0)  # what trained CLIPs converge to (the clamp at 100)
TEXTS = [
    "make it winter",
    "add a red scarf to the dog, please!",
    "",
    "a photo of a cat, " * 30,  # > 77 tokens: truncated, eos last
]
PHOTOS = ("chelsea", "astronaut", "coffee")  # 300x451, 512x512, 400x600


def tiny_clip_config(vocab_size: int):
    return transformers.CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            # openai/clip-vit-*'s text_config values (eos 2: the legacy pooling rule).
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=8,  # 4 x 4 patches + the class token
            hidden_act="quick_gelu",
        ),
        projection_dim=48,  # neither tower's width: a swapped projection cannot load
    )


def processor(size: int = IMAGE_SIZE):
    return transformers.CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )


def photo(name: str) -> np.ndarray:
    img = getattr(data, name)()
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img


def features(out) -> np.ndarray:
    """transformers 5 returns an output object with the projection as pooler_output."""
    out = out.pooler_output if hasattr(out, "pooler_output") else out
    return out.detach().numpy()


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def assert_close(ours, ref: np.ndarray, what: str, tol: float = PARITY_TOL) -> float:
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= tol * scale, f"{what}: max abs err {err:.3g} > {tol:g} x scale {scale:.3g}"
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """(folder, transformers model) of the tiny checkpoint."""
    folder = build_tiny_tokenizer(tmp_path_factory.mktemp("clip") / "tiny-clip")
    vocab_size = len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
    ref = randomize_(transformers.CLIPModel(tiny_clip_config(vocab_size)), seed=0)
    with torch.no_grad():
        ref.logit_scale.fill_(LOGIT_SCALE)
    ref.save_pretrained(str(folder), safe_serialization=True)
    processor().save_pretrained(str(folder))
    return folder, ref


@pytest.fixture(scope="module")
def model(ckpt) -> CLIPModel:
    return CLIPModel.from_pretrained(ckpt[0])


@pytest.fixture(scope="module")
def pixel_values() -> np.ndarray:
    """transformers' preprocessing of three photos of different sizes, NCHW."""
    photos = [photo(n) for n in PHOTOS]
    return processor()(images=photos, return_tensors="np")["pixel_values"]


def reference_ids(folder: Path, texts: list[str]) -> torch.Tensor:
    tok = transformers.CLIPTokenizer.from_pretrained(str(folder))
    enc = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    return enc["input_ids"]


# -- the model on identical inputs -------------------------------------------------------------


def test_image_features_match_transformers(ckpt, model, pixel_values):
    _, ref = ckpt
    with torch.no_grad():
        want = features(ref.get_image_features(pixel_values=torch.from_numpy(pixel_values)))
    got = model.get_image_features(mx.array(pixel_values.transpose(0, 2, 3, 1)))
    assert_close(got, want, "image features")


@pytest.fixture(params=["legacy eos 2", "eos id"])
def text_ckpt(request, ckpt, tmp_path):
    """The checkpoint with either pooling rule: openai's legacy ``eos_token_id = 2`` (pool
    the largest id) or the tokenizer's real eos id (pool its first occurrence)."""
    folder, ref = ckpt
    if request.param == "legacy eos 2":
        return folder, ref
    copy = shutil.copytree(folder, tmp_path / "eos-id")
    eos = json.loads((copy / "vocab.json").read_text(encoding="utf-8"))["<|endoftext|>"]
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["eos_token_id"] = eos
    (copy / "config.json").write_text(json.dumps(config))
    return copy, transformers.CLIPModel.from_pretrained(str(copy)).eval()


def test_text_features_match_transformers(text_ckpt):
    folder, ref = text_ckpt
    model = CLIPModel.from_pretrained(folder)
    ids = reference_ids(folder, TEXTS)
    np.testing.assert_array_equal(model.tokenizer.encode(TEXTS), ids.numpy())
    with torch.no_grad():
        want = features(ref.get_text_features(input_ids=ids))
    assert_close(model.get_text_features(mx.array(ids.numpy())), want, "text features")
    # encode_text cuts the padding after the pooled token: same embeddings.
    assert_close(model.encode_text(TEXTS), normalized(want), "encode_text")


def test_logits_match_transformers(ckpt, model, pixel_values):
    folder, ref = ckpt
    ids = reference_ids(folder, TEXTS)
    with torch.no_grad():
        out = ref(input_ids=ids, pixel_values=torch.from_numpy(pixel_values))
    image = l2_normalize(model.get_image_features(mx.array(pixel_values.transpose(0, 2, 3, 1))))
    logits = model.logits(image, model.encode_text(TEXTS))
    assert_close(logits, out.logits_per_image.numpy(), "logits_per_image")
    assert math.isclose(float(model.logit_scale), LOGIT_SCALE, rel_tol=1e-6)


def test_parity_bound_catches_a_real_mistake(ckpt, pixel_values):
    folder, ref = ckpt
    wrong = CLIPModel.from_pretrained(folder)
    for layer in wrong.vision_model.encoder.layers:
        layer.self_attn.causal = True  # the text tower's mask where none belongs
    with torch.no_grad():
        want = features(ref.get_image_features(pixel_values=torch.from_numpy(pixel_values)))
    with pytest.raises(AssertionError, match="image features"):
        assert_close(
            wrong.get_image_features(mx.array(pixel_values.transpose(0, 2, 3, 1))),
            want,
            "image features",
        )


def test_float16_weights_keep_the_embedding(ckpt):
    folder, _ = ckpt
    full, half = CLIPModel.from_pretrained(folder), CLIPModel.from_pretrained(folder, mx.float16)
    assert half.visual_projection.weight.dtype == mx.float16
    img = photo("coffee") / 255.0
    for a, b in (
        (full.encode_image(img), half.encode_image(img)),
        (full.encode_text(TEXTS), half.encode_text(TEXTS)),
    ):
        assert b.dtype == mx.float32  # embeddings come back in float32 whatever the weights
        cos = np.sum(np.array(a) * np.array(b), axis=-1)
        assert cos.min() > 0.999, cos  # float16 keeps ~3 significant digits


# -- preprocessing -----------------------------------------------------------------------------


def pil_float_resize(img: np.ndarray, h: int, w: int, resample: int) -> np.ndarray:
    """PIL's float ("F") resize, per channel, in its two passes with PIL 8-bit's clipping."""
    out = []
    for c in range(img.shape[-1]):
        x = Image.fromarray(img[..., c].astype(np.float32), "F")
        x = Image.fromarray(np.clip(np.asarray(x.resize((w, img.shape[0]), resample)), 0, 1))
        out.append(np.clip(np.asarray(x.resize((w, h), resample)), 0, 1))
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("resample", [2, 3], ids=["bilinear", "bicubic"])
@pytest.mark.parametrize(
    "shape", [(300, 451), (451, 300), (512, 512), (15, 23)], ids=["wide", "tall", "square", "up"]
)
def test_preprocess_matches_pil_float_resize(shape, resample):
    rng = np.random.default_rng(0)
    img = rng.random((*shape, 3), dtype=np.float32)
    pre = CLIPPreprocessor.from_dict({"resample": resample}, 224)
    h, w = pre.resized_size(*shape)
    top, left = (h - 224) // 2, (w - 224) // 2
    want = pil_float_resize(img, h, w, resample)[top : top + 224, left : left + 224]
    want = (want - np.array(pre.image_mean)) / np.array(pre.image_std)
    assert_close(pre(img)[0], want, f"preprocess {shape}", tol=RESIZE_TOL)


def test_resample_matrix_rows_are_partitions_of_unity():
    for n_in, n_out in ((451, 224), (224, 224), (15, 224), (1000, 7)):
        m = resample_matrix(n_in, n_out)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(resample_matrix(10, 10), np.eye(10))  # same size: identity


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee", "rocket", "camera"])
def test_preprocess_matches_transformers_processor(name):
    proc, std = processor(224), np.array(processor(224).image_std)
    pre = CLIPPreprocessor.from_dict(proc.to_dict(), 224)
    img = photo(name)
    for im in (img, np.ascontiguousarray(img.transpose(1, 0, 2)[:, ::-1])):  # both orientations
        want = proc(images=[im], return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
        diff = np.abs(np.array(pre(im / 255.0)) - want) * std  # back to [0, 1] units
        assert diff.max() <= PIL8_MAX + 1e-6, f"{name} {im.shape}: {diff.max() * 255:.3f}/255"
        assert diff.mean() <= PIL8_MEAN, f"{name} {im.shape}: mean {diff.mean() * 255:.3f}/255"


def test_encode_image_end_to_end_matches_transformers(ckpt, model, pixel_values):
    folder, ref = ckpt
    photos = [photo(n) for n in PHOTOS]
    ids = reference_ids(folder, TEXTS)
    with torch.no_grad():
        out = ref(input_ids=ids, pixel_values=torch.from_numpy(pixel_values))
    text = model.encode_text(TEXTS)
    for i, p in enumerate(photos):
        got = model.encode_image(p / 255.0)  # (1, 48): our preprocessing from float pixels
        assert got.shape == (1, 48)
        cos = float(np.sum(np.array(got)[0] * out.image_embeds[i].numpy()))
        assert cos >= END_TO_END_COS, f"{PHOTOS[i]}: cosine {cos:.6f}"
        logits = np.array(model.logits(got, text))[0]
        np.testing.assert_allclose(logits, out.logits_per_image[i].numpy(), atol=END_TO_END_LOGITS)
    norms = np.linalg.norm(np.array(model.encode_image(photos[0] / 255.0)), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_encode_image_input_forms(model):
    img = photo("chelsea")
    batch = np.stack([img, img[::-1]]) / 255.0  # (2, H, W, 3)
    both = np.array(model.encode_image(batch.astype(np.float32)))
    np.testing.assert_allclose(np.array(model.encode_image(img)), both[:1], atol=1e-6)  # uint8
    np.testing.assert_allclose(
        np.array(model.encode_image(mx.array(batch[1]))), both[1:], atol=1e-6
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((8, 8, 3), 1.5, np.float32), r"in \[0, 1\]"),
        (np.full((8, 8, 3), np.nan, np.float32), r"in \[0, 1\]"),
        (np.zeros((8, 8, 4), np.float32), r"\(B, H, W, 3\)"),
        (np.zeros((8, 8), np.float32), r"\(B, H, W, 3\)"),
        (np.zeros((8, 8, 3), np.int16), "int16"),
    ],
    ids=["range", "nan", "rgba", "gray", "int16"],
)
def test_bad_images_are_refused(model, bad, message):
    with pytest.raises(PbmlxError, match=message):
        model.encode_image(bad)


def test_missing_preprocessor_config_uses_clip_defaults(ckpt, model, tmp_path):
    copy = shutil.copytree(ckpt[0], tmp_path / "no-preprocessor")
    (copy / "preprocessor_config.json").unlink()
    assert CLIPModel.from_pretrained(copy).preprocessor == model.preprocessor


@pytest.mark.parametrize(
    "change, message",
    [
        ({"crop_size": {"height": 24, "width": 24}}, "does not match the model's image_size"),
        ({"resample": 0}, "resample 0"),
        ({"do_center_crop": False}, "do_center_crop"),
        ({"image_mean": 0.5}, "malformed"),
    ],
    ids=["crop", "resample", "no-crop", "mean"],
)
def test_bad_preprocessor_config_is_named(ckpt, tmp_path, change, message):
    copy = shutil.copytree(ckpt[0], tmp_path / "bad-preprocessor")
    path = copy / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(PbmlxError, match=message) as e:
        CLIPModel.from_pretrained(copy)
    assert "preprocessor_config.json" in str(e.value)


# -- strict loading ----------------------------------------------------------------------------


def rewrite_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    weights = mx.load(str(path))
    edit(weights)
    mx.save_safetensors(str(path), weights)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda w: w.pop("visual_projection.weight"), "'visual_projection.weight'.*missing"),
        (
            lambda w: w.update({"vision_model.embeddings.class_embedding": mx.zeros((63,))}),
            r"'vision_model.embeddings.class_embedding'.*shape \(63,\)",
        ),
        (lambda w: w.update({"extra.weight": mx.zeros((2,))}), "'extra.weight'.*not used"),
        (lambda w: w.pop("logit_scale"), "'logit_scale'.*missing"),
    ],
    ids=["missing", "misshapen", "unexpected", "no-logit-scale"],
)
def test_bad_tensors_are_named(ckpt, tmp_path, edit, message):
    copy = shutil.copytree(ckpt[0], tmp_path / "bad-weights")
    rewrite_weights(copy, edit)
    with pytest.raises(PbmlxError, match=message) as e:
        CLIPModel.from_pretrained(copy)
    assert "model.safetensors" in str(e.value)


@pytest.mark.parametrize(
    "change, tensor",
    [
        ({"vision_config": {"patch_size": 16}}, "patch_embedding"),
        ({"projection_dim": 64}, "projection"),
        ({"text_config": {"num_hidden_layers": 3}}, "text_model.encoder.layers.2"),
    ],
    ids=["patch", "projection", "layers"],
)
def test_config_that_does_not_match_weights_is_named(ckpt, tmp_path, change, tensor):
    copy = shutil.copytree(ckpt[0], tmp_path / "bad-config")
    config = json.loads((copy / "config.json").read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(PbmlxError, match=tensor):
        CLIPModel.from_pretrained(copy)


def test_not_a_clip_config_is_refused(ckpt, tmp_path):
    copy = shutil.copytree(ckpt[0], tmp_path / "text-only")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config["text_config"]))
    with pytest.raises(PbmlxError, match=r"config.json.*no text_config"):
        CLIPModel.from_pretrained(copy)


def test_weights_in_mlx_layout_load_without_sanitize(ckpt, model, tmp_path):
    copy = shutil.copytree(ckpt[0], tmp_path / "mlx-layout")
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(copy / "model.safetensors"), weights, metadata={"format": MLX_FORMAT})
    again = CLIPModel.from_pretrained(copy)
    img = photo("chelsea") / 255.0
    np.testing.assert_array_equal(
        np.array(again.encode_image(img)), np.array(model.encode_image(img))
    )


def test_missing_tokenizer_is_named(ckpt, tmp_path):
    copy = shutil.copytree(ckpt[0], tmp_path / "no-tokenizer")
    (copy / "vocab.json").unlink()
    with pytest.raises(PbmlxError, match="no-tokenizer"):
        CLIPModel.from_pretrained(copy)


# -- where the checkpoint comes from -----------------------------------------------------------


def test_unreachable_hub_id_is_named(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(PbmlxError, match=r"'pbmlx-tests/no-such-clip'.*Hugging Face Hub"):
        CLIPModel.from_pretrained("pbmlx-tests/no-such-clip")


def test_missing_folder_and_file_are_named(ckpt, tmp_path):
    with pytest.raises(PbmlxError, match="does not exist"):
        CLIPModel.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(PbmlxError, match="does not exist"):
        CLIPModel.from_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(PbmlxError, match="is a file"):
        CLIPModel.from_pretrained(ckpt[0] / "config.json")


def test_quick_gelu_matches_float64():
    """CLIP's activation, run as silu(1.702 x) / 1.702 on the fused kernel (and as MLX ops
    inside mx.compile, where the kernel steps aside), against ``x * sigmoid(1.702 x)`` in
    float64. Bound: 2e-6 * max(1, |x|), a few float32 ulps (measured ~6e-7 absolute)."""
    from pbmlx.models.clip_text import quick_gelu

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(200_000) * 4, np.linspace(-60, 60, 4001)])
    x = x.astype(np.float32).reshape(-1, 1)  # a column: rows of one value, any layout
    x64 = x.astype(np.float64)
    want = x64 / (1.0 + np.exp(-1.702 * x64))
    for fn in (quick_gelu, mx.compile(quick_gelu)):
        got = np.asarray(fn(mx.array(x)), np.float64)
        err = np.abs(got - want) / np.maximum(1.0, np.abs(x64))
        assert err.max() < 2e-6, err.max()
