"""pbmlx's MLX text encoder, VAE and UNet against transformers/diffusers on the same weights.

The checkpoint is a tiny random InstructPix2Pix pipeline written by ``save_pretrained`` in the
real on-disk layout (``tiny_ip2p.py``) and loaded through pbmlx's strict loader, the code path a
real checkpoint takes. Inputs are real photos (skimage) for the VAE, real tokenizations for the
text encoder, and seeded normal latents / hidden states for the UNet. float32 throughout.

Tolerance: ``max|ours - ref| <= PARITY_TOL * max(1, max|ref|)``, i.e. 1e-4 of the output's
scale. Both sides compute in float32; they differ only in summation order (BLAS blocking,
convolution algorithm, softmax/normalization reductions), which gives ~1e-6 of scale on these
networks (measured: 1.8e-6 text, 3-6e-6 VAE, 3e-6 UNet), so the bound has ~20-50x headroom
for other BLAS libraries and backends, while any real mistake (a swapped or mis-laid tensor, a
wrong eps, activation or embedding order) moves outputs by 1e-2 or more: the control test
below shows one such mistake failing the bound by orders of magnitude.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
from pbmlx.errors import PbmlxError
from pbmlx.models import (
    UNet2DConditionModel,
    UNetConfig,
    load_text_encoder,
    load_unet,
    load_vae,
)
from pbmlx.models.weights import MLX_FORMAT

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
from tiny_ip2p import (  # noqa: E402
    IP2P_UNET_CONFIG,
    build_tiny_ip2p,
    build_tiny_unet,
    randomize_,
)

PARITY_TOL = 1e-4  # of the output's scale, max(1, max|ref|); see the module docstring
LATENT_HW = (8, 12)  # non-square; 12 is not a multiple of 8: the resize-to-skip path runs
IMAGE_HW = (32, 48)  # tiny VAE downsamples 4x -> 8 x 12 latents
PROMPTS = ["make it winter", "add a red scarf to the dog, please!", ""]  # "" as IP2P's negative


def assert_close(ours: np.ndarray, ref: np.ndarray, what: str, tol: float = PARITY_TOL) -> float:
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= tol * scale, f"{what}: max abs err {err:.3g} > {tol:g} x scale {scale:.3g}"
    return err


def nhwc(x: np.ndarray) -> mx.array:
    return mx.array(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))


def nchw(x: mx.array) -> np.ndarray:
    return np.array(x).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_tiny_ip2p(tmp_path_factory.mktemp("tiny") / "ip2p", seed=0)


@pytest.fixture(scope="module")
def unet_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    sample = rng.standard_normal((3, 8, *LATENT_HW)).astype(np.float32)  # IP2P's batch of 3
    context = rng.standard_normal((3, 77, 32)).astype(np.float32)
    timesteps = np.array([981.0, 500.5, 1.0], dtype=np.float32)
    return sample, context, timesteps


def _photos(hw: tuple[int, int]) -> np.ndarray:
    """skimage's astronaut and chelsea, resized to ``hw``, NCHW float32 in [-1, 1]."""
    from PIL import Image
    from skimage import data

    H, W = hw
    imgs = [
        np.asarray(Image.fromarray(img).resize((W, H), Image.Resampling.BICUBIC))
        for img in (data.astronaut(), data.chelsea())
    ]
    return (np.stack(imgs).astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- text encoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("eos_rule", ["legacy-eos-2", "eos-id"])
def test_text_encoder_matches_transformers(ckpt, tmp_path, eos_rule):
    folder = ckpt / "text_encoder"
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(ckpt / "tokenizer"))
    if eos_rule == "eos-id":  # newer configs: pool at the first real EOS id
        folder = _copy(folder, tmp_path / "text_encoder")
        config = json.loads((folder / "config.json").read_text())
        config["eos_token_id"] = tokenizer.eos_token_id
        (folder / "config.json").write_text(json.dumps(config))
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
    ids = np.array(ids, dtype=np.int64)
    ref_model = transformers.CLIPTextModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids))

    ours = load_text_encoder(folder)(mx.array(ids))

    assert_close(np.array(ours.last_hidden_state), ref.last_hidden_state.numpy(), "hidden")
    assert_close(np.array(ours.pooler_output), ref.pooler_output.numpy(), "pooled")


# -- VAE ------------------------------------------------------------------------------------


def test_vae_encode_matches_diffusers(ckpt):
    x = _photos(IMAGE_HW)
    ref_model = diffusers.AutoencoderKL.from_pretrained(str(ckpt / "vae")).eval()
    with torch.no_grad():
        ref = ref_model.encode(torch.from_numpy(x)).latent_dist

    ours = load_vae(ckpt / "vae").encode(nhwc(x))

    assert ours.mean.shape == (2, IMAGE_HW[0] // 4, IMAGE_HW[1] // 4, 4)
    assert_close(nchw(ours.mode()), ref.mode().numpy(), "mode")
    assert_close(nchw(ours.logvar), ref.logvar.numpy(), "logvar")


def test_vae_decode_matches_diffusers(ckpt):
    z = np.random.default_rng(1).standard_normal((2, 4, *LATENT_HW)).astype(np.float32)
    ref_model = diffusers.AutoencoderKL.from_pretrained(str(ckpt / "vae")).eval()
    with torch.no_grad():
        ref = ref_model.decode(torch.from_numpy(z)).sample.numpy()

    ours = nchw(load_vae(ckpt / "vae").decode(mx.array(z.transpose(0, 2, 3, 1))))

    assert ours.shape == (2, 3, *IMAGE_HW)
    assert_close(ours, ref, "decoded")


# -- UNet -----------------------------------------------------------------------------------


def _unet_ref(folder: Path, sample, timestep, context) -> np.ndarray:
    model = diffusers.UNet2DConditionModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        t = torch.as_tensor(timestep)
        return model(torch.from_numpy(sample), t, torch.from_numpy(context)).sample.numpy()


@pytest.mark.parametrize("per_sample_t", [False, True], ids=["scalar-t", "per-sample-t"])
def test_unet_step_matches_diffusers(ckpt, unet_inputs, per_sample_t):
    sample, context, timesteps = unet_inputs
    t = timesteps if per_sample_t else 981
    ref = _unet_ref(ckpt / "unet", sample, t, context)

    unet = load_unet(ckpt / "unet")
    ours = nchw(unet(nhwc(sample), mx.array(t), mx.array(context)))

    assert ours.shape == (3, 4, *LATENT_HW)
    assert_close(ours, ref, "eps")


def test_unet_sd2_style_options_match_diffusers(tmp_path):
    """The options SD 2.x-style checkpoints set: linear projections, per-block head counts,
    2 transformer layers per block, float32 attention upcast; square 16x16 latents."""
    folder = tmp_path / "unet"
    build_tiny_unet(
        seed=5,
        use_linear_projection=True,
        attention_head_dim=[2, 4, 4, 2],
        transformer_layers_per_block=2,
        upcast_attention=True,
    ).save_pretrained(str(folder), safe_serialization=True)
    rng = np.random.default_rng(7)
    sample = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    context = rng.standard_normal((1, 20, 32)).astype(np.float32)
    ref = _unet_ref(folder, sample, 250, context)

    ours = nchw(load_unet(folder)(nhwc(sample), 250, mx.array(context)))

    assert_close(ours, ref, "eps")


def test_parity_bound_catches_a_real_mistake(ckpt, unet_inputs):
    """Control: the same UNet with the timestep embedding's sin/cos order swapped (one config
    flag) misses the reference by far more than the bound, so the bound can fail."""
    sample, context, timesteps = unet_inputs
    ref = _unet_ref(ckpt / "unet", sample, timesteps, context)
    good = load_unet(ckpt / "unet")
    raw = json.loads((ckpt / "unet" / "config.json").read_text())
    wrong = UNet2DConditionModel(UNetConfig.from_dict({**raw, "flip_sin_to_cos": False}))
    wrong.update(good.parameters())

    ours = nchw(wrong(nhwc(sample), mx.array(timesteps), mx.array(context)))

    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(ours - ref).max() > 100 * PARITY_TOL * scale


def test_weights_in_mlx_layout_load_without_sanitize(ckpt, unet_inputs, tmp_path):
    """A checkpoint pbmlx wrote (metadata format=mlx, NHWC kernels) loads as is and gives
    the same outputs: the loader does not transpose it a second time."""
    from mlx.utils import tree_flatten

    unet = load_unet(ckpt / "unet")
    folder = tmp_path / "unet-mlx"
    folder.mkdir()
    shutil.copy(ckpt / "unet" / "config.json", folder / "config.json")
    mx.save_safetensors(
        str(folder / "diffusion_pytorch_model.safetensors"),
        dict(tree_flatten(unet.parameters())),
        metadata={"format": MLX_FORMAT},
    )
    sample, context, timesteps = unet_inputs
    args = (nhwc(sample), mx.array(timesteps), mx.array(context))

    reloaded = load_unet(folder)

    np.testing.assert_array_equal(np.array(reloaded(*args)), np.array(unet(*args)))


def test_vae_legacy_attention_layout_loads(ckpt, tmp_path):
    """Checkpoints saved by diffusers < 0.14 (timbrooks/instruct-pix2pix's era) name the VAE
    attention query/key/value/proj_attn, and conversions from the original SD checkpoints
    keep them as 1x1 conv kernels; both load to the same network."""
    folder = _copy(ckpt / "vae", tmp_path / "vae")
    state = _state(folder / UNET_FILE)
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for name, w in state.items():
        for new, old in legacy.items():
            if f".attentions.0.{new}." in name:
                name = name.replace(f".{new}.", f".{old}.")
                w = w[:, :, None, None].contiguous() if w.ndim == 2 else w  # as a 1x1 conv
        renamed[name] = w
    assert "encoder.mid_block.attentions.0.query.weight" in renamed
    _save(renamed, folder / UNET_FILE)
    z = mx.array(np.random.default_rng(3).standard_normal((1, *LATENT_HW, 4)).astype(np.float32))

    legacy_out = load_vae(folder).decode(z)

    np.testing.assert_array_equal(np.array(legacy_out), np.array(load_vae(ckpt / "vae").decode(z)))


def test_text_encoder_transformers4_layout_loads(ckpt, tmp_path):
    """SD 1.5's text_encoder/model.safetensors (transformers 4) prefixes every name with
    ``text_model.`` and carries a ``position_ids`` buffer: same network once loaded."""
    folder = _copy(ckpt / "text_encoder", tmp_path / "text_encoder")
    state = {f"text_model.{k}": v for k, v in _state(folder / "model.safetensors").items()}
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    _save(state, folder / "model.safetensors")
    ids = mx.array(np.arange(40, 117)[None] % 700)

    out = load_text_encoder(folder)(ids).last_hidden_state

    ref = load_text_encoder(ckpt / "text_encoder")(ids).last_hidden_state
    np.testing.assert_array_equal(np.array(out), np.array(ref))


# -- strict loading ---------------------------------------------------------------------------


def _state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _save(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})


UNET_FILE = "diffusion_pytorch_model.safetensors"


def test_missing_tensor_is_named(ckpt, tmp_path):
    folder = _copy(ckpt / "unet", tmp_path / "unet")
    state = _state(folder / UNET_FILE)
    name = "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight"
    del state[name]
    _save(state, folder / UNET_FILE)

    with pytest.raises(PbmlxError, match=rf"'{name}'.*missing from .*unet/{UNET_FILE}"):
        load_unet(folder)


def test_misshapen_tensor_is_named(ckpt, tmp_path):
    folder = _copy(ckpt / "vae", tmp_path / "vae")
    state = _state(folder / UNET_FILE)
    name = "decoder.up_blocks.0.resnets.1.conv2.weight"
    state[name] = state[name][:, :, :2, :].contiguous()  # a 2x3 kernel where 3x3 is expected
    _save(state, folder / UNET_FILE)

    with pytest.raises(PbmlxError, match=rf"'{name}' in .*vae/{UNET_FILE} has shape"):
        load_vae(folder)


def test_unexpected_tensor_is_named(ckpt, tmp_path):
    folder = _copy(ckpt / "text_encoder", tmp_path / "text_encoder")
    state = _state(folder / "model.safetensors")
    state["text_projection.weight"] = torch.zeros(32, 32)  # a CLIPTextModelWithProjection's
    _save(state, folder / "model.safetensors")

    with pytest.raises(PbmlxError, match=r"'text_projection.weight' in .*model\.safetensors"):
        load_text_encoder(folder)


@pytest.mark.parametrize(
    ("component", "change", "tensor"),
    [
        # more text in the config than in the weights: layer 2 is missing
        ("text_encoder", {"num_hidden_layers": 3}, r"'encoder\.layers\.2\."),
        # a wider text encoder claimed: cross-attention key projections do not fit
        ("unet", {"cross_attention_dim": 48}, r"'down_blocks\.0\.attentions\.0\..*attn2\.to_k"),
        # fewer layers claimed: the checkpoint's third up-block resnet is left over
        ("unet", {"layers_per_block": 1}, r"'(down|up)_blocks\.\d\.(resnets|attentions)\.\d"),
        # 8 latent channels claimed: the encoder's output conv does not fit
        ("vae", {"latent_channels": 8}, r"'decoder\.conv_in\.weight'|'encoder\.conv_out"),
    ],
)
def test_config_that_does_not_match_weights_is_named(ckpt, tmp_path, component, change, tensor):
    folder = _copy(ckpt / component, tmp_path / component)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    load = {"text_encoder": load_text_encoder, "unet": load_unet, "vae": load_vae}[component]

    weights = "model.safetensors" if component == "text_encoder" else UNET_FILE

    with pytest.raises(PbmlxError, match=tensor) as info:
        load(folder)
    assert f"{component}/{weights}" in str(info.value)  # the weights file ...
    assert f"{component}/config.json" in str(info.value)  # ... and the config it contradicts


def test_truncated_safetensors_is_named(ckpt, tmp_path):
    folder = _copy(ckpt / "unet", tmp_path / "unet")
    data = (folder / UNET_FILE).read_bytes()
    (folder / UNET_FILE).write_bytes(data[: len(data) // 2])

    with pytest.raises(PbmlxError, match=rf"unet/{UNET_FILE} is not a readable safetensors"):
        load_unet(folder)


def test_unsupported_config_option_is_refused(ckpt, tmp_path):
    folder = _copy(ckpt / "unet", tmp_path / "unet")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "class_embed_type": "timestep"}))

    with pytest.raises(PbmlxError, match=r"unet/config\.json.*class_embed_type"):
        load_unet(folder)


def test_pickle_only_folder_is_refused(ckpt, tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(ckpt / "unet" / "config.json", folder)
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")

    with pytest.raises(PbmlxError, match=r"only pickle weights \(diffusion_pytorch_model\.bin\)"):
        load_unet(folder)


# -- full size --------------------------------------------------------------------------------

FULL_LATENT_HW = (48, 64)  # a 384x512 photo: non-square, at the reference's working scale


@pytest.mark.slow
def test_full_size_ip2p_unet_step_matches_diffusers(tmp_path):
    """One UNet step at InstructPix2Pix's full size (859.5M parameters, random weights,
    float32, batch 3, 48x64 latents) through save_pretrained and the strict loader."""
    import gc
    import time

    ref_model = randomize_(diffusers.UNet2DConditionModel(**IP2P_UNET_CONFIG), seed=0)
    n_params = sum(p.numel() for p in ref_model.parameters())
    assert n_params == 859_532_484  # SD 1.5 (859,520,964) + 4 x 320 x 3 x 3 input weights
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((3, 8, *FULL_LATENT_HW)).astype(np.float32)
    context = rng.standard_normal((3, 77, 768)).astype(np.float32)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(sample), 981, torch.from_numpy(context)).sample.numpy()
    t_ref = time.perf_counter() - t0
    ref_model.save_pretrained(str(tmp_path / "unet"), safe_serialization=True)
    del ref_model
    gc.collect()

    unet = load_unet(tmp_path / "unet")
    args = (nhwc(sample), mx.array(981), mx.array(context))
    t0 = time.perf_counter()
    ours = nchw(unet(*args))  # np.array evaluates
    t_ours = time.perf_counter() - t0

    err = assert_close(ours, ref, "eps (full size)")
    print(
        f"\nfull-size IP2P UNet step, batch 3, {FULL_LATENT_HW} latents: max abs err {err:.3g} "
        f"(ref max {np.abs(ref).max():.3g}, std {ref.std():.3g}); "
        f"diffusers {t_ref:.1f} s, pbmlx {t_ours:.1f} s (first call)"
    )
