"""The InstructPix2Pix pipeline and the Editor against diffusers, on a tiny random checkpoint.

The checkpoint is written by ``save_pretrained`` in the real on-disk layout (``tiny_ip2p.py``)
and loaded with ``Editor.from_pretrained(folder)``, the code a hub id takes after its download.
The reference is diffusers' ``StableDiffusionInstructPix2PixPipeline`` on the same folder, the
same photo (skimage's chelsea, 96 x 64: non-square, 24 x 16 latents with the tiny 4x VAE) and the
same noise: diffusers draws it from a seeded torch generator; the test replays that generator to
get the same draws (initial latents, then one per step) and injects them into pbmlx.

Tolerances (float32 on both sides):

- latents: ``max|ours - ref| <= 1e-4 * max(1, max|ref|)``. Both sides run the same arithmetic
  in a different summation order; the UNets agree to ~3e-6 of their output's scale
  (tests/test_models_parity.py), and the guidance multiplies that difference by up to
  ``|1 - s_img| + |s_img - s_txt| + s_txt`` = 14 before each step moves the latents by
  ``(sigma_next - sigma) * eps``. This random model's latents reach ~90 after the first step
  (guidance 7.5 on eps of a random UNet), where float32's own spacing is 7.6e-6; measured:
  3.4e-4 absolute (Euler-Ancestral) and 2.9e-4 (Euler) on latents of 96 and 89, i.e. 3.6e-6 and
  3.3e-6 of scale, ~28x under the bound. A real mistake (wrong batch order, guidance sign,
  scaled image latents, a skipped scale_model_input) moves the latents by whole units.
- decoded image in [0, 1]: ``max abs <= 1e-4`` (measured 6.6e-6).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
from pbmlx.diffuse import fullres
from pbmlx.diffuse.pipeline import (
    InjectedNoise,
    decode_in_tiles,
    guide,
    tile_starts,
)
from pbmlx.diffuse.settings import SamplerSettings
from pbmlx.editor import Editor
from pbmlx.errors import PbmlxError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from tiny_ip2p import build_tiny_ip2p  # noqa: E402

PARITY_TOL = 1e-4  # latents: of max(1, max|ref|); decoded image: absolute (see module doc)
WORK_W, WORK_H = 96, 64  # non-square working size; the tiny VAE's latents are 24 x 16
STEPS = 4
PROMPT = "make it winter"
TORCH_SEED = 7
REFERENCE_SCHEDULERS = {
    "euler_a": "EulerAncestralDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
}


def photo(name: str = "chelsea", size: tuple[int, int] = (WORK_W, WORK_H)) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).resize(size, Image.Resampling.LANCZOS)


def as_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


def nhwc(t) -> mx.array:
    return mx.array(t.numpy().transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_tiny_ip2p(tmp_path_factory.mktemp("tiny") / "ip2p", seed=0)


@pytest.fixture(scope="module")
def editor(ckpt) -> Editor:
    return Editor.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def reference(ckpt):
    pipe = diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained(
        str(ckpt), safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_reference(pipe, scheduler: str, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' final latents (NHWC) and decoded image (NHWC, [0, 1]) for one seeded run."""
    cls = getattr(diffusers, REFERENCE_SCHEDULERS[scheduler])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    with torch.no_grad():
        latents = pipe(
            PROMPT,
            image=image,
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(TORCH_SEED),
            output_type="latent",
        ).images
        # What output_type="np" does with the same latents: decode, then (x / 2 + 1/2) clamped.
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        decoded = (decoded / 2 + 0.5).clamp(0, 1)
    return latents.numpy().transpose(0, 2, 3, 1), decoded.numpy().transpose(0, 2, 3, 1)


def reference_noise(shape_nchw: tuple[int, ...]) -> InjectedNoise:
    """The draws diffusers makes from its generator: the initial latents (prepare_latents),
    then one per scheduler step (EulerAncestral's noise; Euler draws one too, unused at
    s_churn = 0). Image encoding takes the encoder's mode and draws nothing."""
    gen = torch.Generator().manual_seed(TORCH_SEED)
    initial = torch.randn(shape_nchw, generator=gen)
    steps = [torch.randn(shape_nchw, generator=gen) for _ in range(STEPS)]
    return InjectedNoise(nhwc(initial), [nhwc(s) for s in steps])


# -- the whole edit against diffusers ------------------------------------------------------------


@pytest.mark.parametrize("scheduler", list(REFERENCE_SCHEDULERS))
def test_whole_edit_matches_diffusers(editor, reference, scheduler):
    image = photo()
    ref_latents, ref_image = run_reference(reference, scheduler, image)
    noise = reference_noise((1, 4, WORK_H // 4, WORK_W // 4))

    ours = editor.pipeline.generate(
        as_float(image), PROMPT, steps=STEPS, scheduler=scheduler, noise=noise
    )

    latents = np.array(ours.latents)
    assert latents.shape == ref_latents.shape == (1, WORK_H // 4, WORK_W // 4, 4)
    scale = max(1.0, float(np.abs(ref_latents).max()))
    err = float(np.abs(latents - ref_latents).max())
    assert err <= PARITY_TOL * scale, f"latents: {err:.3g} > {PARITY_TOL} x {scale:.3g}"
    assert ours.image.shape == (WORK_H, WORK_W, 3)
    img_err = float(np.abs(ours.image - ref_image[0]).max())
    assert img_err <= PARITY_TOL, f"decoded image: {img_err:.3g}"
    assert set(ours.seconds) == {"text_encode", "image_encode", "denoise", "decode"}
    assert ours.peak_memory_bytes > 0


def test_guidance_is_the_dual_classifier_free_formula():
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((3, 5, 7, 4))  # [text + image, empty + image, empty + nothing]
    e_text, e_img, e_uncond = eps[0:1], eps[1:2], eps[2:3]
    for s_txt, s_img in ((7.5, 1.5), (1.0, 1.0), (0.0, 0.0), (3.0, 0.5)):
        # The formula, in float64.
        want = e_uncond + s_img * (e_img - e_uncond) + s_txt * (e_text - e_img)
        got = np.array(guide(mx.array(eps.astype(np.float32)), s_txt, s_img), dtype=np.float64)
        # float32 inputs and arithmetic: |eps| < 5, coefficients <= 7.5 -> error ~ 1e-5.
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)
    # The batch order: rows are (text, image, nothing), not another permutation.
    rows = mx.array(np.array([1.0, 10.0, 100.0], np.float32).reshape(3, 1, 1, 1))
    assert float(guide(rows, 0.0, 0.0)[0, 0, 0, 0]) == 100.0  # eps(0, 0)
    assert float(guide(rows, 0.0, 1.0)[0, 0, 0, 0]) == 10.0  # eps(img, 0)
    assert float(guide(rows, 1.0, 1.0)[0, 0, 0, 0]) == 1.0  # eps(img, txt)


# -- seeds ----------------------------------------------------------------------------------------


def test_same_seed_same_output_other_seed_other_output(editor):
    image = as_float(photo())
    a, b, c = (editor.pipeline.generate(image, PROMPT, steps=2, seed=s).image for s in (3, 3, 4))
    assert np.array_equal(a, b)
    # Another seed: other noise, so the result differs well beyond rounding.
    assert np.abs(a - c).max() > 0.05


@pytest.mark.parametrize("scheduler", ["euler", "euler_a"])
def test_the_key_is_split_into_a_start_key_and_step_keys(editor, scheduler):
    # key -> (start, steps); initial latents ~ N(0, 1) from start; step i's noise from
    # split(steps, n)[i]. Reproduced by hand and injected, the result is the same to the bit.
    p = editor.pipeline
    text = p.encode_prompt(PROMPT)
    z = p.encode_image(mx.array(as_float(photo()))[None] * 2 - 1)
    shape = (1, WORK_H // 4, WORK_W // 4, 4)
    key = mx.random.key(11)
    start, steps_key = mx.random.split(key)
    step_noise = [mx.random.normal(shape, key=k) for k in mx.random.split(steps_key, 2)]
    noise = InjectedNoise(mx.random.normal(shape, key=start), step_noise)

    settings = SamplerSettings(steps=2, scheduler=scheduler)
    *_, by_key = p.denoise(text, z, settings, key=key)
    *_, by_hand = p.denoise(text, z, settings, noise=noise)
    assert np.array_equal(np.array(by_key), np.array(by_hand))


# -- the editor: sizes, full resolution, loading --------------------------------------------------


@pytest.mark.parametrize("size", [(451, 300), (300, 451)])  # landscape and portrait
def test_editor_runs_at_working_size_and_returns_the_input_size(editor, size):
    image = photo("coffee", size)
    progress = []
    result = editor.edit(
        image, PROMPT, steps=2, size=64, seed=1, progress=lambda i, n: progress.append((i, n))
    )
    assert result.image.size == size and result.rgb.shape == (size[1], size[0], 3)
    assert result.working_size == fullres.working_size(*size, longest=64, multiple=8)
    assert max(result.working_size) == 64 and all(s % 8 == 0 for s in result.working_size)
    assert progress == [(1, 2), (2, 2)]
    d = result.to_dict()
    assert d["seed"] == 1 and d["steps"] == 2 and d["scheduler"] == "euler_a"
    assert d["model"] == editor.model and d["size"] == list(size)
    for stage in ("text_encode", "image_encode", "denoise", "decode"):
        assert d["stages"][stage] >= 0
    assert d["peak_memory_bytes"] > 0
    # The same call again: the same pixels (same seed, same machine).
    again = editor.edit(image, PROMPT, steps=2, size=64, seed=1)
    assert np.array_equal(again.rgb, result.rgb)


def test_editor_keeps_alpha_and_takes_arrays(editor):
    rgba = photo("coffee", (120, 80)).convert("RGBA")
    alpha = np.linspace(0, 255, 120 * 80).reshape(80, 120).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    result = editor.edit(rgba, PROMPT, steps=1, size=32)
    assert result.image.mode == "RGBA"
    assert np.array_equal(np.asarray(result.image)[..., 3], alpha)
    from_array = editor.edit(np.asarray(rgba.convert("RGB")), PROMPT, steps=1, size=32)
    assert np.array_equal(from_array.rgb, result.rgb)


def test_loading_is_lazy(ckpt):
    weight_bytes = sum(f.stat().st_size for f in ckpt.rglob("*.safetensors"))
    mx.eval(mx.zeros(1))
    before = mx.get_active_memory()
    e = Editor.from_pretrained(ckpt)
    # Nothing is read until evaluated: the ~14 MB of weights are not in memory yet.
    assert mx.get_active_memory() - before < 0.01 * weight_bytes
    mx.eval(e.pipeline.unet.parameters())
    unet_bytes = (ckpt / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert mx.get_active_memory() - before > 0.5 * unet_bytes


def test_low_memory_drops_the_text_encoder_and_gives_the_same_edit(ckpt, editor):
    image = as_float(photo())
    lean = Editor.from_pretrained(ckpt, low_memory=True)
    assert lean.pipeline.text_encoder is not None
    first = lean.pipeline.generate(image, PROMPT, steps=2, seed=5)
    assert lean.pipeline.text_encoder is None  # freed after encoding
    second = lean.pipeline.generate(image, PROMPT, steps=2, seed=5)  # reloads it
    normal = editor.pipeline.generate(image, PROMPT, steps=2, seed=5)
    # 16 x 24 latents fit in one decode tile: the same computation, bit for bit.
    assert np.array_equal(first.image, normal.image)
    assert np.array_equal(second.image, normal.image)


def test_from_pretrained_refuses_bad_folders(tmp_path, ckpt):
    with pytest.raises(PbmlxError, match="does not exist"):
        Editor.from_pretrained(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PbmlxError, match=r"model_index\.json"):
        Editor.from_pretrained(empty)
    # Pickle-only weights are refused by name, never loaded.
    pickled = shutil.copytree(ckpt, tmp_path / "pickled")
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").rename(
        pickled / "unet" / "diffusion_pytorch_model.bin"
    )
    with pytest.raises(PbmlxError, match=r"unet has only pickle weights.*safetensors only"):
        Editor.from_pretrained(pickled)


def test_settings_are_checked_before_work(editor):
    image = photo()
    for kwargs, message in (
        ({"steps": 0}, "Number of steps"),
        ({"guidance": float("nan")}, "Guidance"),
        ({"image_guidance": -1.0}, "Image guidance"),
        ({"scheduler": "heun"}, "Unknown scheduler"),
        ({"seed": -1}, "Seed"),
        ({"size": 4}, "Working size"),
    ):
        with pytest.raises(PbmlxError, match=message):
            editor.edit(image, PROMPT, **kwargs)


# -- tiled decoding --------------------------------------------------------------------------------


def test_tile_starts_cover_with_overlap():
    assert tile_starts(10, 32, 16) == [0]
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    assert tile_starts(70, 32, 8) == [0, 24, 38]
    for n in range(33, 200):
        starts = tile_starts(n, 32, 16)
        assert starts[0] == 0 and starts[-1] == n - 32
        assert all(b - a <= 16 for a, b in itertools.pairwise(starts))  # overlap >= 16


# Tiled vs whole decode on the tiny random VAE, 192 x 128 photos (32 x 48 latents), tiles of
# 32 latents overlapping by 16 (two tiles side by side). Measured PSNR: astronaut 25.9 dB, chelsea
# 31.0, coffee 30.6 (max abs 0.50 / 0.23 / 0.25, mean 0.035 / 0.020 / 0.020). Almost all of it is
# the GroupNorm statistics of a tile differing from the whole image's: with the whole image's
# statistics swapped in, the same tiling measures 47-48 dB. A random decoder is far more
# sensitive to its norms' statistics than a trained one, so this is a pessimistic figure.
TILED_MIN_PSNR_DB = 22.0


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_tiled_decode_approximates_the_whole_decode(editor, name):
    vae = editor.pipeline.vae
    image = as_float(photo(name, (192, 128)))
    z = editor.pipeline.encode_image(mx.array(image)[None] * 2 - 1)  # (1, 32, 48, 4)
    whole = np.clip(np.array(vae.decode(z)) / 2 + 0.5, 0, 1)
    tiled = np.clip(np.array(decode_in_tiles(vae, z, tile=32, overlap=16)) / 2 + 0.5, 0, 1)
    psnr = 10 * np.log10(1.0 / np.mean((tiled - whole) ** 2))
    assert psnr >= TILED_MIN_PSNR_DB, f"tiled decode PSNR {psnr:.1f} dB"
    # One tile covering the latents is the whole decode itself.
    single = np.clip(np.array(decode_in_tiles(vae, z, tile=48, overlap=16)) / 2 + 0.5, 0, 1)
    assert np.array_equal(single, whole)


def test_float16_weights_stay_close_to_float32(ckpt, editor):
    # Weights cast to float16 at load; latents and guidance stay float32. Measured on this
    # photo: 56 dB between the decoded images; 40 dB leaves room for other backends' fp16
    # kernels while a dtype mix-up (say float16 latents overflowing) fails by far.
    image = as_float(photo())
    full = editor.pipeline.generate(image, PROMPT, steps=STEPS, seed=1)
    half = Editor.from_pretrained(ckpt, dtype="float16").pipeline.generate(
        image, PROMPT, steps=STEPS, seed=1
    )
    assert half.latents.dtype == mx.float32
    psnr = 10 * np.log10(1.0 / np.mean((half.image - full.image) ** 2))
    assert psnr >= 40.0, f"float16 vs float32: {psnr:.1f} dB"


def test_python_edit_runs_diffusion_turns_with_a_loaded_editor(editor):
    from pbmlx.flow import edit

    src = photo("coffee", (150, 100))
    result = edit(src, "make it winter", "brighten this picture", model=editor, steps=1, size=32)
    assert result.image.size == src.size
    assert [t.engine for t in result.turns] == ["diffusion", "adjust"]
    assert result.turns[0].editor is not None and result.turns[0].editor.working_size == (32, 24)
    d = result.to_dict()
    assert d["turns"][0]["stages"]["denoise"] >= 0 and d["peak_memory_bytes"] > 0
