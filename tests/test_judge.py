"""The local judge: its measurements against independent oracles, its verdicts on real photos.

Oracles and tolerances:

- SSIM against ``skimage.metrics.structural_similarity`` (Gaussian window sigma 1.5, population
  covariance, data range 1): 1e-10 in float64 (the same formula; summation order differs),
  2e-5 on the float32 path (float32 rounding of 5 filtered products).
- The Gaussian filter against ``scipy.ndimage.gaussian_filter`` (mode reflect): 1e-12.
- Noise estimate (Immerkaer 1996) on a flat image with known Gaussian noise: within 5 % (the
  estimator is unbiased for Gaussian noise; 5 % covers the sampling error on 65k pixels).
- Alignment on shifted / cropped / resized copies of a photo, made with numpy and PIL: offset
  within 1.5 source pixels, scale within 2 %.
- Verdicts: edits of real photos (``skimage.data``) made with PIL / numpy, never pbmlx's adjust
  engine (except where the engine's own result is the defect-free edit by definition: the
  ceiling test); the calibrated numbers themselves are tested in ``test_judge_calibration.py``
  and ``test_judge_heldout.py``.
- Explanations: every number in one is labelled (no parenthesised bare number); a pure
  scaling of the values (numpy multiply, PIL Brightness) is neither "noise added" nor
  "sharpness lost".

The CLIP provider is tested twice: its arithmetic with a test double (``FakeClip``, a few fixed
vectors: never used outside this file), and end to end with pbmlx's MLX CLIP loaded from a tiny
random ``transformers`` checkpoint.
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import argparse
import io
import json
import math
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage
from skimage import data
from skimage.metrics import structural_similarity
from tiny_clip import write_tiny_clip

from pbmlx.errors import PbmlxError
from pbmlx.judge import bench, command, criteria, measure, retry
from pbmlx.judge.core import Judge, judge
from pbmlx.judge.verdict import CRITERIA, JSON_KEYS, WEIGHTS, CriterionScore, Verdict, combine

SIDE = 256  # test photos' long side: the judge's behaviour does not depend on size, its speed does


def photo(name: str, side: int = SIDE) -> Image.Image:
    a = getattr(data, name)()
    im = Image.fromarray(a).convert("RGB")
    s = side / max(im.size)
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, np.float32) / 255.0


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return photo("chelsea")


# ---- measurements ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "camera", "coffee"])
def test_ssim_matches_skimage(name):
    x = (
        np.asarray(Image.fromarray(getattr(data, name)()).convert("L"), np.float64)[:200, :240]
        / 255
    )
    y = np.clip(x * 0.8 + 0.1 + np.random.default_rng(0).normal(0, 0.05, x.shape), 0, 1)
    y = ndimage.gaussian_filter(y, 0.8)
    ref = structural_similarity(
        x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert abs(measure.ssim(x, y) - ref) < 1e-10
    assert abs(measure.ssim(x.astype(np.float32), y.astype(np.float32)) - ref) < 2e-5
    assert measure.ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_gaussian_filter_matches_scipy():
    rng = np.random.default_rng(1)
    for shape in [(5, 7), (40, 3), (64, 80)]:
        x = rng.random(shape)
        for sigma in (0.7, 1.5, 3.0):
            ref = ndimage.gaussian_filter(x, sigma, mode="reflect")
            assert np.abs(measure.gaussian_filter(x, sigma) - ref).max() < 1e-12


def test_noise_estimate_on_known_noise():
    rng = np.random.default_rng(2)
    flat = np.full((256, 256, 3), 0.5, np.float32)
    noisy = np.clip(flat + rng.normal(0, 0.05, (256, 256, 1)), 0, 1).astype(np.float32)
    assert measure.noise_sigma(noisy) == pytest.approx(0.05, rel=0.05)
    assert measure.noise_sigma(flat) == 0.0


def test_artifact_detectors_on_real_photos(chelsea):
    x = arr(chelsea)
    buf = io.BytesIO()
    chelsea.save(buf, "JPEG", quality=5)
    jpeg = arr(Image.open(buf).convert("RGB"))
    assert measure.blockiness(jpeg) > 0.3 > 0.05 > measure.blockiness(x)
    post = arr(chelsea.quantize(8).convert("RGB"))
    assert (
        measure.banding(post, measure.smooth_region(post))
        > (measure.banding(x, measure.smooth_region(x)) or 0.0) + 0.2
    )
    tiled = np.tile(x[:, : x.shape[1] // 3], (1, 3, 1))
    assert measure.tiling(tiled) > 0.8 and measure.tiling(x) < 0.4
    assert measure.clipped_fraction(np.clip(x * 2, 0, 1)) > measure.clipped_fraction(x) + 0.2


def test_alignment_recovers_shifts_crops_and_resizes():
    a = arr(photo("astronaut", 384))
    h, w = a.shape[:2]
    al = measure.align(a, a)
    assert al.kind == "identity" and al.coverage == 1.0
    assert measure.align(a, 1 - a).kind == "identity"  # photometric edits keep the placement
    # Content moved right by 20 px and down by 12 px (edges repeated).
    moved = np.pad(a, ((12, 0), (20, 0), (0, 0)), mode="edge")[:h, :w]
    al = measure.align(a, moved)
    assert al.kind == "shift"
    assert abs(-al.bx / al.ax - (-20)) < 1.5 and abs(-al.by / al.ay - (-12)) < 1.5
    # A crop at the same pixel scale.
    al = measure.align(a, a[30:, 50:])
    assert (
        abs(al.ax - 1) < 0.02 and abs(-al.bx / al.ax - 50) < 1.5 and abs(-al.by / al.ay - 30) < 1.5
    )
    # The centre 80 % enlarged to the full size (a zoom-in).
    im = Image.fromarray((a * 255).round().astype(np.uint8))
    zoom = arr(
        im.resize((w, h), Image.Resampling.LANCZOS, box=(0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h))
    )
    al = measure.align(a, zoom)
    assert al.kind == "zoom" and abs(al.ax - 1.25) < 0.025 and abs(al.coverage - 0.64) < 0.03
    # Another size, same picture: a plain stretch.
    big = arr(im.resize((w * 3 // 2, h * 3 // 2), Image.Resampling.LANCZOS))
    al = measure.align(a, big)
    assert al.kind == "stretch" and al.coverage == 1.0


# ---- the verdict -------------------------------------------------------------------------------


def test_verdict_weights_json_and_partial():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)
    s = {
        c: CriterionScore(v, {"x": 1.0}, "ok", "test")
        for c, v in zip(WEIGHTS, (0.9, 0.8, 0.7, 0.6), strict=True)
    }
    v = combine(s, threshold=0.7)
    assert tuple(v.to_dict()) == JSON_KEYS
    assert v.overall == pytest.approx(0.4 * 0.9 + 0.25 * 0.8 + 0.2 * 0.7 + 0.15 * 0.6)
    assert v.accepted is True and combine(s, threshold=0.9).accepted is False
    assert json.loads(v.to_json())["details"]["compliance"]["raw"] == {"x": 1.0}
    s["compliance"] = CriterionScore(None, {}, "not available: no model", "clip")
    p = combine(s)
    assert p.compliance is None and p.overall is None and p.accepted is None
    assert p.details["partial"] is True and p.details["missing"] == ["compliance"]
    assert p.details["partial_overall"] == pytest.approx(
        (0.25 * 0.8 + 0.2 * 0.7 + 0.15 * 0.6) / 0.6, abs=1e-4
    )
    with pytest.raises(ValueError):
        CriterionScore(1.5)


def pil_edit(im: Image.Image, kind: str, factor: float) -> Image.Image:
    return getattr(ImageEnhance, kind)(im).enhance(factor)


def test_adjust_edits_judged_on_a_real_photo(chelsea):
    """The correct brightening (PIL, not pbmlx) passes; nothing, the opposite, noise fail."""
    j = Judge(model=None)
    good = j(chelsea, pil_edit(chelsea, "Brightness", 1.2), "brighten this picture")
    assert good.accepted is True and good.compliance > 0.7, good.summary()
    assert good.details["route"] == "adjust" and good.details["partial"] is False
    for c in ("compliance", "seamlessness", "preservation", "quality"):
        d = good.details[c]
        assert d["explanation"] and d["raw"] and d["calibrated"] is True
    none = j(chelsea, chelsea, "brighten this picture")
    assert none.accepted is False and none.compliance < 0.3, none.summary()
    assert none.preservation > 0.8  # nothing happened: a compliance failure, not a preservation one
    wrong = j(chelsea, pil_edit(chelsea, "Brightness", 0.8), "brighten this picture")
    assert wrong.accepted is False and wrong.compliance < 0.2
    rng = np.random.default_rng(0)
    noisy = np.clip(
        arr(pil_edit(chelsea, "Brightness", 1.2)) + rng.normal(0, 0.12, (*chelsea.size[::-1], 3)),
        0,
        1,
    )
    bad = j(chelsea, noisy, "brighten this picture")
    assert bad.accepted is False and bad.quality < 0.5 and bad.overall < good.overall
    blurred = j(
        chelsea,
        pil_edit(chelsea, "Brightness", 1.2).filter(ImageFilter.GaussianBlur(3)),
        "brighten this picture",
    )
    assert blurred.quality < 0.5 and "sharpness" in blurred.details["quality"]["explanation"]


# ---- the scale's top, explanations, global scalings ----------------------------------------------


def test_every_defect_map_reaches_the_top_of_its_scale():
    """With no defect measured, every packaged defect map gives 1 (the CLIP map is evidence)."""
    from pbmlx.judge import maps

    params = maps.load_params()
    for key in params["maps"]:
        lm = maps.load_map(key)
        if lm.kind == "defect":
            assert lm.apply({})[0] == 1.0, key
            assert lm.apply({k: 1.0 for k in lm.features})[0] < 1.0, key
        else:
            assert key == "compliance/clip"


@pytest.mark.parametrize(
    "name, instruction",
    [
        ("chelsea", "brighten this picture"),
        ("coffee", "increase the contrast"),
        ("astronaut", "make it warmer"),
        ("rocket", "add a vignette"),
    ],
)
def test_a_defect_free_edit_reaches_the_top_of_each_criterion(name, instruction):
    """The exact edit the instruction asks for (the adjust engine's result: the judge's own
    definition of "as expected") scores the top of every criterion: 1 (seamlessness used to
    stop at 0.76, whatever the edit)."""
    from pbmlx.plan import plan

    x = arr(photo(name))
    exact = criteria.apply_plan(x, plan(instruction).ops, blur_px_per_amount=max(x.shape[:2]) / 100)
    v = judge(x, exact, instruction)
    for c in CRITERIA:  # 1 up to float noise in the statistics (a tiling score up 1e-4)
        assert getattr(v, c) >= 0.99, (c, v.summary())
    assert v.overall >= 0.99 and v.accepted is True


_BARE = re.compile(r"\(([^()]*)\)")


def _unlabelled_numbers(text: str) -> list[str]:
    """Parenthesised groups with a number and no word: "(2)", "(0.157)", "(+0.3, 1.2)"."""
    return [g for g in _BARE.findall(text) if re.search(r"\d", g) and not re.search(r"[a-z]", g)]


def test_every_number_in_an_explanation_says_what_it_is(chelsea):
    """Edits that trigger each criterion's penalties: no explanation holds a bare number, and
    each penalty names its value with its unit and how much it costs."""
    x = arr(chelsea)
    rng = np.random.default_rng(3)
    bright = arr(pil_edit(chelsea, "Brightness", 1.2))
    buf = io.BytesIO()
    pil_edit(chelsea, "Brightness", 1.2).save(buf, "JPEG", quality=5)
    h, w = x.shape[:2]
    seam = x.copy()
    seam[: h // 2, : w // 2] = bright[: h // 2, : w // 2]
    ball = x.copy()
    yy, xx = np.mgrid[0:h, 0:w]
    ball[(yy - 0.6 * h) ** 2 + (xx - 0.6 * w) ** 2 < (0.12 * h) ** 2] = (0.9, 0.1, 0.1)
    cases = {
        "brighten this picture": [
            bright,
            x,
            arr(pil_edit(chelsea, "Brightness", 0.8)),
            arr(pil_edit(chelsea, "Brightness", 2.4)),
            np.clip(bright + rng.normal(0, 0.12, x.shape), 0, 1),
            arr(pil_edit(chelsea, "Brightness", 1.2).filter(ImageFilter.GaussianBlur(3))),
            arr(Image.open(buf).convert("RGB")),
            seam,
            np.tile(bright[:, : w // 3], (1, 3, 1))[:, :w],
            arr(pil_edit(chelsea, "Brightness", 1.2).quantize(8).convert("RGB")),
            bright[h // 8 :, w // 8 :],
        ],
        "add a red ball to the picture": [ball, np.clip(ball * 1.3, 0, 1)],
        "make the colors more vivid": [arr(photo("camera"))],
    }
    j = Judge(providers=criteria.default_providers(criteria.ClipCompliance(None, "no CLIP")))
    penalties = 0
    for instruction, edits in cases.items():
        for e in edits:
            v = j(x, e, instruction)
            for c in CRITERIA:
                text = v.details[c]["explanation"]
                assert not _unlabelled_numbers(text), (c, text)
                assert "scores 0.76" not in text and "defect-free edit scores" not in text
                if text.startswith("main penalty") or "; main penalty" in text:
                    penalties += 1
                    assert "lowers the score by" in text, text
            assert not _unlabelled_numbers(v.summary()), v.summary()
    assert penalties >= 10  # the cases above do trigger penalties of several kinds


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
@pytest.mark.parametrize("factor", [1.2, 0.8])
def test_a_pure_global_scaling_is_not_noise_or_blur(name, factor):
    """Multiplying every value by a factor (numpy, and PIL's Brightness, which does the same)
    scales detail and noise with the picture: not "noise added", not "sharpness lost", and not
    "detail/noise changed though not asked" (clipped highlights may still be reported)."""
    im = photo(name)
    x = arr(im)
    instruction = "brighten this picture" if factor > 1 else "darken the photo"
    scaled = np.clip(np.rint(x * factor * 255), 0, 255) / 255
    for e in (scaled, pil_edit(im, "Brightness", factor)):
        v = judge(im, e, instruction)
        q = v.details["quality"]
        assert "noise" not in q["explanation"] and "sharpness" not in q["explanation"], q
        assert q["raw"]["features"]["noise"] < 0.05 and q["raw"]["features"]["blur"] < 0.05, q
        assert abs(q["raw"]["tone_gain"] - factor) < 0.1, q["raw"]["tone_gain"]
        assert "detail/noise" not in v.details["compliance"]["explanation"], v.summary()
        assert v.accepted is True, v.summary()
    # The same factor with real noise added or a real blur still is what it is.
    rng = np.random.default_rng(0)
    noisy = np.clip(scaled + rng.normal(0, 0.05, x.shape), 0, 1)
    qn = judge(im, noisy, instruction).details["quality"]
    # At least an octave of added noise (sigma 0.05 on these photos: 1.2-2.9 octaves), and
    # named when it is the largest penalty (clipping can be larger: coffee at 1.2 clips 23%).
    assert qn["raw"]["features"]["noise"] > 1.0, qn
    if min(qn["raw"]["terms"], key=qn["raw"]["terms"].get) == "noise":
        assert "noise added" in qn["explanation"], qn
    blurred = Image.fromarray(np.rint(scaled * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(2)
    )
    assert "sharpness lost" in judge(im, blurred, instruction).details["quality"]["explanation"]


def test_verdicts_are_deterministic_and_accept_paths_pil_arrays(chelsea, tmp_path):
    edited = pil_edit(chelsea, "Contrast", 1.4)
    src_path, edt_path = tmp_path / "s.png", tmp_path / "e.png"
    chelsea.save(src_path)
    edited.save(edt_path)
    a = judge(chelsea, edited, "increase the contrast")
    b = judge(str(src_path), edt_path, "increase the contrast")
    c = judge(arr(chelsea), np.asarray(edited), "increase the contrast")
    assert a.to_json() == b.to_json() == c.to_json()


def test_different_sizes_are_aligned(chelsea):
    edited = pil_edit(chelsea, "Color", 1.5)
    big = edited.resize((edited.width * 3 // 2, edited.height * 3 // 2), Image.Resampling.LANCZOS)
    v = judge(chelsea, big, "make the colors more vivid")
    assert v.details["alignment"]["kind"] == "stretch"
    assert v.details["sizes"]["edited"] == list(big.size)
    assert v.accepted is True, v.summary()


def test_not_measurable_is_not_available():
    """Saturating a grey photo changes nothing measurable: compliance is not available."""
    cam = photo("camera")
    v = judge(cam, pil_edit(cam, "Color", 1.5), "make the colors more vivid")
    assert v.compliance is None and v.overall is None and v.accepted is None
    assert "not available" in v.details["compliance"]["explanation"]
    assert v.details["partial"] is True


def test_generative_edit_without_clip_is_partial(chelsea, monkeypatch):
    monkeypatch.setattr("pbmlx.judge.core._cached_hub_folder", lambda repo: None)
    x = arr(chelsea).copy()
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - 0.6 * h) ** 2 + (xx - 0.6 * w) ** 2 < (0.12 * h) ** 2
    x[disc] = (0.9, 0.1, 0.1)
    v = judge(chelsea, x, "add a red ball to the picture")
    assert v.details["route"] == "diffusion" and v.details["extent"] == "local"
    assert v.compliance is None and v.overall is None and v.accepted is None
    assert "--model" in v.details["compliance"]["explanation"]
    assert v.details["missing"] == ["compliance"] and v.details["partial_overall"] is not None
    for c in ("seamlessness", "preservation", "quality"):
        assert getattr(v, c) is not None


def test_broken_frames_score_zero_quality(chelsea):
    x = arr(chelsea).copy()
    x[:10] = np.nan
    v = judge(chelsea, x, "brighten this picture")
    assert v.quality == 0.0 and "NaN" in v.details["quality"]["explanation"]
    black = judge(chelsea, np.zeros_like(x), "darken the photo")
    assert black.quality == 0.0 and black.accepted is False


def test_bad_inputs_raise_one_clear_error(chelsea, tmp_path):
    with pytest.raises(PbmlxError, match="does not exist"):
        judge(tmp_path / "missing.png", chelsea, "brighten this picture")
    with pytest.raises(PbmlxError, match="instruction"):
        judge(chelsea, chelsea, "  ")
    with pytest.raises(PbmlxError, match="shape"):
        judge(chelsea, np.zeros((4, 4, 3), np.float32), "brighten this picture")
    with pytest.raises(PbmlxError, match="threshold"):
        Judge(threshold=1.5)


# ---- providers ---------------------------------------------------------------------------------


class FakeClip:
    """TEST DOUBLE for pbmlx.models.clip.CLIPModel's judge API (encode_image/encode_text):
    an image embeds as its mean colour padded to 4-D, a text as a fixed vector."""

    TEXTS: ClassVar[dict[str, list[float]]] = {
        "a photo": [0.0, 0.0, 0.0, 1.0],
        "make it red": [1.0, 0.0, 0.0, 1.0],
    }

    def encode_image(self, images: np.ndarray) -> np.ndarray:
        v = np.concatenate([images.mean(axis=(1, 2)), np.ones((len(images), 1))], axis=1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        v = np.array([self.TEXTS[t] for t in texts], np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_clip_provider_arithmetic_with_a_test_double(chelsea):
    x = arr(chelsea)
    red = np.clip(x + np.array([0.3, -0.1, -0.1], np.float32), 0, 1)
    fake = FakeClip()
    v = judge(chelsea, red, "make it red", model=fake)
    raw = v.details["compliance"]["raw"]
    assert (
        v.details["compliance"]["provider"] == "clip"
        and v.details["compliance"]["calibrated"] is False
    )

    def unit(a):
        a = np.asarray(a, np.float64)
        return a / np.linalg.norm(a)

    # Independent recomputation of the documented formulas (the provider resizes first, which
    # moves a mean colour by < 1e-3).
    i_s = unit([*x.mean(axis=(0, 1)), 1.0])
    i_e = unit([*red.mean(axis=(0, 1)), 1.0])
    t_i, t_n = unit(FakeClip.TEXTS["make it red"]), unit(FakeClip.TEXTS["a photo"])
    d = i_e - i_s
    direction = d @ (t_i - t_n) / (np.linalg.norm(d) * np.linalg.norm(t_i - t_n))
    assert raw["direction"] == pytest.approx(direction, abs=2e-3)
    assert raw["gain"] == pytest.approx(i_e @ t_i - i_s @ t_i, abs=1e-3)
    assert raw["direction"] > 0.5  # the picture moved towards red
    assert v.overall is not None and v.accepted is not None  # all four criteria: complete
    # A bluer edit moves the other way: lower compliance.
    blue = np.clip(x + np.array([-0.1, -0.1, 0.3], np.float32), 0, 1)
    assert judge(chelsea, blue, "make it red", model=fake).compliance < v.compliance


def test_a_custom_provider_goes_first(chelsea):
    class Constant:
        criterion = "seamlessness"
        name = "constant"

        def applies(self, ctx):
            return True

        def score(self, ctx):
            return CriterionScore(0.5, {"why": "test"}, "always one half", self.name)

    v = Judge(model=None, extra_providers=[Constant()])(chelsea, chelsea, "brighten this picture")
    assert v.seamlessness == 0.5 and v.details["seamlessness"]["provider"] == "constant"
    with pytest.raises(PbmlxError, match="provider"):
        Judge(extra_providers=[object()])


def test_real_clip_integration(tmp_path, chelsea):
    """pbmlx's MLX CLIP (random weights) loaded from a folder: a complete verdict."""
    from pbmlx.models import clip  # a plain import: a broken CLIP must fail here, not skip

    folder = write_tiny_clip(tmp_path / "tiny-clip")
    x = arr(chelsea).copy()
    x[100:160, 120:180] = (0.9, 0.1, 0.1)
    a = judge(chelsea, x, "add a red square", model=folder)
    b = judge(chelsea, x, "add a red square", model=clip.CLIPModel.from_pretrained(folder))
    assert a.details["compliance"]["provider"] == "clip"
    assert a.details["compliance"]["calibrated"] is False
    assert a.compliance is not None and a.overall is not None and a.accepted is not None
    assert a.to_json() == b.to_json()  # deterministic, and the same through both doors
    raw = a.details["compliance"]["raw"]
    assert -1 <= raw["direction"] <= 1 and -1 <= raw["sim_edited"] <= 1
    with pytest.raises(PbmlxError, match="does not exist"):
        judge(chelsea, x, "add a red square", model=tmp_path / "no-such-clip")


# ---- retries ------------------------------------------------------------------------------------


def fake_verdict(overall, partial=None):
    details = {
        "partial": overall is None,
        "partial_overall": partial,
        "missing": [] if overall is not None else ["compliance"],
    }
    return Verdict(
        None, None, None, None, overall, None if overall is None else overall >= 0.7, details
    )


def test_choose_best_prefers_complete_verdicts_then_earliest():
    c = retry.choose_best(
        [("a", fake_verdict(0.6)), ("b", fake_verdict(0.8)), ("c", fake_verdict(0.8))]
    )
    assert c.index == 1 and c.image == "b" and not c.partial
    c = retry.choose_best([("a", fake_verdict(None, 0.9)), ("b", fake_verdict(0.5))])
    assert c.index == 1  # a complete verdict beats a partial one
    c = retry.choose_best([("a", fake_verdict(None, 0.4)), ("b", fake_verdict(None, 0.6))], 0.7)
    assert c.index == 1 and c.partial and c.reached_min_score is None and c.notes
    assert json.loads(json.dumps(c.to_dict()))["chosen"] == 1


def test_run_attempts_stops_at_min_score(chelsea):
    factors = {0: 0.9, 1: 1.2, 2: 1.25}  # seed 0 darkens (fails), seed 1 brightens (passes)
    calls = []

    def generate(seed):
        calls.append(seed)
        return pil_edit(chelsea, "Brightness", factors[seed])

    j = Judge(model=None)
    c = retry.run_attempts(
        generate, lambda im: j(chelsea, im, "brighten this picture"), attempts=3, min_score=0.7
    )
    assert calls == [0, 1] and c.attempt.seed == 1 and c.reached_min_score is True
    c = retry.run_attempts(generate, lambda im: j(chelsea, im, "brighten this picture"), attempts=3)
    assert calls[2:] == [0, 1, 2] and c.attempt.seed in (1, 2) and len(c.to_dict()["attempts"]) == 3
    # Only the kept attempt's image is held (memory); it is the one its seed makes.
    assert [a.image is not None for a in c.attempts] == [i == c.index for i in range(3)]
    assert np.array_equal(np.asarray(c.image), np.asarray(generate(c.attempt.seed)))


# ---- commands -----------------------------------------------------------------------------------


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    command.add_parser(sub, parents=[])
    args = parser.parse_args(argv)
    return args.func(args)


def test_judge_command_json(chelsea, tmp_path, capsys):
    s, e = tmp_path / "s.png", tmp_path / "e.jpg"
    chelsea.save(s)
    pil_edit(chelsea, "Brightness", 1.2).save(e, quality=95)
    assert (
        run_command(
            ["judge", str(s), str(e), "brighten this picture", "--json", "--threshold", "0.6"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert tuple(out) == JSON_KEYS and out["details"]["threshold"] == 0.6
    assert run_command(["judge", str(s), str(e), "brighten this picture"]) == 0
    text = capsys.readouterr().out
    assert "compliance" in text and "overall" in text


def _write_preference_set(root: Path) -> Path:
    """A small preference.jsonl in Pico-Banana's schema, with images made here.

    ``root`` plays the dataset folder: edits under ``images/...`` as the records name them,
    sources (OpenImages / Flickr URLs in the records) as local files named like the URL.
    """
    for d in ("positive-edit", "negative-edit"):
        (root / "images" / d).mkdir(parents=True)
    records = []
    for i, name in enumerate(("chelsea", "coffee")):
        src = photo(name)
        src.save(root / f"{name}_o.jpg", quality=95)
        warm = np.asarray(src, np.float32) * [1.1, 1.0, 0.86]  # the passed edit: warmer
        good = Image.fromarray(np.clip(warm, 0, 255).round().astype(np.uint8))
        good.save(root / "images" / "positive-edit" / f"{i}.png")
        buf = io.BytesIO()
        good.save(buf, "JPEG", quality=5)
        Image.open(buf).save(root / "images" / "negative-edit" / f"{i}_jpeg.png")
        noise = np.random.default_rng(i).normal(0, 30, (src.height, src.width, 3))
        noisy = np.clip(np.asarray(good, np.float32) + noise, 0, 255).round().astype(np.uint8)
        Image.fromarray(noisy).save(root / "images" / "negative-edit" / f"{i}_noise.png")
        rejected: list[str] | str = [
            f"images/negative-edit/{i}_jpeg.png",
            f"images/negative-edit/{i}_noise.png",
        ]
        records.append(
            {
                "open_image_input_url": f"https://farm1.staticflickr.com/1/{name}_o.jpg",
                "text": "Apply a warm colour grade to the whole photograph, like late sun.",
                "summarized_text": "make it warmer",
                # The release's spellings vary: grouped case- and punctuation-insensitively.
                "edit_type": [
                    "Change overall color tone (warm/cool)",
                    "change overall color tone warm cool",
                ][i],
                "output_image": f"images/positive-edit/{i}.png",
                "rejected_images": rejected if i == 0 else rejected[1],  # a list or a string
            }
        )
    records.append({**records[0], "output_image": "images/positive-edit/missing.png"})
    path = root / "preference.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_judge_bench_on_a_synthetic_preference_file(tmp_path, capsys):
    path = _write_preference_set(tmp_path)
    report = bench.judge_bench(path, tmp_path)
    assert report["records"] == 3 and report["used"] == 2 and report["pairs"] == 3
    assert report["skipped"] == {"passed edit (output_image) not found": 1}
    assert list(report["by_edit_type"]) == ["change overall color tone warm cool"]
    assert report["accuracy"] == 1.0, report
    assert report["partial_pairs"] == 0  # "make it warmer" is an adjust instruction: complete
    assert report["by_criterion"]["quality"]["pairs"] == 3
    assert run_command(["judge-bench", str(path), "--images", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(PbmlxError, match="line 2"):
        bench.judge_bench(bad, tmp_path)


def _write_red_set(root: Path) -> Path:
    """A preference file for "make it red" (a generative instruction: CLIP scores it): the
    passed edit shifts colour towards red, the rejected ones towards blue, or not at all."""
    (root / "img").mkdir(parents=True)
    records = []
    names = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "retina")
    for i, name in enumerate(names):
        x = arr(photo(name, 128))
        edits = {
            "passed": x + np.array([0.2 + 0.05 * i, -0.05, -0.05], np.float32),
            "blue": x + np.array([-0.05, -0.05, 0.25], np.float32),
            "none": x,
        }
        for kind, e in edits.items():
            im = Image.fromarray(np.clip(np.rint(e * 255), 0, 255).astype(np.uint8))
            im.save(root / "img" / f"{name}_{kind}.png")
        records.append(
            {
                "local_input_image": f"img/{name}_none.png",
                "summarized_text": "make it red",
                "edit_type": "Change overall color tone",
                "output_image": f"img/{name}_passed.png",
                "rejected_images": [f"img/{name}_blue.png", f"img/{name}_none.png"],
            }
        )
    path = root / "preference.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_judge_bench_fits_the_clip_map_and_the_fit_is_put_in_force(tmp_path, monkeypatch):
    from pbmlx.judge import maps

    root = tmp_path / "pico"
    path = _write_red_set(root)
    out = tmp_path / "clip.json"
    report = bench.judge_bench(path, root, model=FakeClip(), fit_clip=out)
    fit = report["clip_fit"]
    assert fit["cases"] == 18 and fit["pairs"] == 12  # 6 passed + 12 rejected verdicts
    weights = dict(zip(fit["map"]["features"], fit["map"]["weights"], strict=True))
    assert set(weights) <= {"direction", "gain"} and min(weights.values()) >= 0
    assert max(weights.values()) > 0 and fit["map"]["calibrated"] is True
    assert fit["heldout"]["pairs"] == 12 and fit["heldout"]["accuracy"] == 1.0
    saved = json.loads(out.read_text())
    assert saved["maps"] == {"compliance/clip": fit["map"]}
    assert saved["fitted_on"]["pairs"] == 12
    # Put in force by the environment variable: the judge's compliance is the fitted map's.
    passed = root / "img" / "chelsea_passed.png"
    source = root / "img" / "chelsea_none.png"
    before = judge(source, passed, "make it red", model=FakeClip())
    monkeypatch.setenv(maps.USER_CALIBRATION_ENV, str(out))
    after = judge(source, passed, "make it red", model=FakeClip())
    assert before.details["compliance"]["calibrated"] is False
    assert after.details["compliance"]["calibrated"] is True
    raw = after.details["compliance"]["raw"]
    want, _ = maps.LogisticMap.from_dict(fit["map"]).apply(raw)
    assert after.compliance == pytest.approx(want, abs=1e-4)  # verdict scores have 4 decimals
    # The other maps are untouched: the same seamlessness, preservation and quality.
    assert [getattr(after, c) for c in CRITERIA[1:]] == [getattr(before, c) for c in CRITERIA[1:]]
    monkeypatch.delenv(maps.USER_CALIBRATION_ENV)
    # Refusals: an existing output, no CLIP, too few labels; bad calibration files.
    with pytest.raises(PbmlxError, match="exists"):
        bench.judge_bench(path, root, model=FakeClip(), fit_clip=out)
    monkeypatch.setattr("pbmlx.judge.core._cached_hub_folder", lambda repo: None)
    with pytest.raises(PbmlxError, match="needs a CLIP model"):
        bench.judge_bench(path, root, fit_clip=tmp_path / "new.json")
    with pytest.raises(PbmlxError, match="passed and rejected"):
        bench.fit_clip_map([bench.ClipCase(1, 1, {"direction": 0.1, "gain": 0.0})], [])
    bad_files = {
        "missing.json": (None, "does not exist"),
        "text.json": ("not json", "not readable JSON"),
        "format.json": ({"format": 9, "maps": {}}, "not a judge calibration"),
        "unknown.json": ({"format": 1, "maps": {"nope": fit["map"]}}, "unknown map"),
        "feature.json": (
            {"format": 1, "maps": {"compliance/clip": {**fit["map"], "features": ["x", "y"]}}},
            "must give a finite weight",
        ),
        "nan.json": (
            {"format": 1, "maps": {"compliance/clip": {**fit["map"], "bias": float("nan")}}},
            "must give a finite weight",
        ),
    }
    for name, (content, message) in bad_files.items():
        f = tmp_path / name
        if content is not None:
            f.write_text(content if isinstance(content, str) else json.dumps(content))
        monkeypatch.setenv(maps.USER_CALIBRATION_ENV, str(f))
        with pytest.raises(PbmlxError, match=message):
            judge(source, passed, "make it red", model=FakeClip())


def test_judge_bench_fit_clip_command(tmp_path, capsys, monkeypatch):
    root = tmp_path / "pico"
    path = _write_red_set(root)
    monkeypatch.setattr("pbmlx.judge.core._cached_hub_folder", lambda repo: None)
    argv = ["judge-bench", str(path), "--images", str(root), "--fit-clip", str(tmp_path / "c.json")]
    from pbmlx.cli import main

    assert main(argv) == 2  # no CLIP model: one clear error line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pbmlx: error: ") and "needs a CLIP model" in err[0]
    assert not (tmp_path / "c.json").exists()


def test_extent_classification():
    from pbmlx.plan import plan

    cases = {
        "brighten this picture": "adjust",
        "add a hat to the man": "local",
        "remove the person on the left": "local",
        "make it look like a Van Gogh painting": "global",
        "make it snow": "global",
        "zoom in on the dog": "layout",
        "extend the image to the left": "layout",
    }
    for text, extent in cases.items():
        assert criteria.instruction_extent(text, plan(text)) == extent, text
    assert criteria.instruction_extent("x", plan("add a lamp"), "Outpainting") == "layout"
    # Adjust ops without statistics to check (geometry, image-adaptive corrections) are not
    # judged against an expected result they do not have.
    from pbmlx.plan import EditPlan

    rotate = EditPlan("rotate 90 degrees", "adjust", [{"op": "rotate", "amount": 90.0}])
    auto = EditPlan(
        "fix the white balance", "adjust", [{"op": "auto_white_balance", "amount": 1.0}]
    )
    assert criteria.instruction_extent(rotate.instruction, rotate) == "layout"
    assert criteria.instruction_extent(auto.instruction, auto) == "global"
    assert not criteria.measurable(rotate) and criteria.measurable(plan("brighten this picture"))
    assert math.isclose(sum(WEIGHTS.values()), 1.0)
