"""The criterion providers: each turns a prepared pair into one :class:`CriterionScore`.

A provider is anything with a ``criterion`` (one of compliance, seamlessness, preservation,
quality), a ``name``, ``applies(ctx) -> bool`` and ``score(ctx) -> CriterionScore``
(:class:`Provider`). :func:`pbmlx.judge.judge` asks, for each criterion, the first provider
in its list that applies. A larger vision-language judge (mlx-vlm) would be one more provider
placed first for the criteria it can answer; nothing else changes.

Every provider first computes *defect features* (each >= 0, 0 meaning "no defect"; see each
``features`` method), then maps them to [0, 1] with the fitted map of :mod:`pbmlx.judge.maps`:
``score = sigmoid(bias + sum_k w_k f_k) / sigmoid(bias)`` with every ``w_k <= 0``, so an edit
with no measured defect scores 1. The raw measurements and each feature's term ``w_k f_k`` go
into ``raw``; the explanation names the largest penalty with its value and what the value is.

The instruction is read by the planner (:func:`pbmlx.plan.plan`). For the ``adjust`` route the
*expected* edit is known exactly: the adjust engine's ops applied to the source. The judge uses
it as the yardstick of "a plausible amount" and of what else such an edit changes (blur lowers
contrast a little, sepia changes tone); the calibration edits are made with other tools (PIL,
numpy, scikit-image), so the judge is not checking the engine against itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pbmlx.judge import maps
from pbmlx.judge import measure as m
from pbmlx.judge.verdict import CriterionScore
from pbmlx.plan import EditPlan

# ---- what an instruction implies --------------------------------------------------------------

# Which kinds of statistic (measure.STATS groups) each adjust op is entitled to change. A
# change in any other group is a side effect ("nothing else moved a lot").
OWNS: dict[str, tuple[str, ...]] = {
    "exposure": ("tone",),
    "brightness": ("tone",),
    "contrast": ("tone",),
    "gamma": ("tone",),
    "highlights": ("tone",),
    "shadows": ("tone",),
    "fade": ("tone",),
    "saturation": ("colour",),
    "vibrance": ("colour",),
    "temperature": ("colour",),
    "tint": ("colour",),
    "hue": ("colour",),
    "grayscale": ("colour",),
    "sepia": ("colour", "tone"),
    "invert": ("structure", "tone", "colour", "vignette"),
    "vignette": ("vignette", "tone"),
    "grain": ("detail",),
    "sharpen": ("detail",),
    "blur": ("detail",),
}
GROUPS = ("tone", "colour", "structure", "vignette", "detail")
# The statistics each op is *for* (the request's yardstick: did these move as asked?).
TARGETS: dict[str, tuple[str, ...]] = {
    "exposure": ("mean",),
    "brightness": ("mean",),
    "contrast": ("std",),
    "gamma": ("mid",),
    "highlights": ("bright",),
    "shadows": ("dark",),
    "fade": ("p02", "p98"),
    "saturation": ("saturation",),
    "vibrance": ("saturation",),
    "temperature": ("temperature",),
    "tint": ("tint",),
    "hue": ("hue",),
    "grayscale": ("saturation",),
    # Sepia is a warm brown toning: all hues agree, and they agree on warm (a blue toning
    # concentrates hues just as much).
    "sepia": ("hue_concentration", "temperature"),
    "invert": ("inversion",),
    "vignette": ("vignette",),
    # Grain adds new detail and should leave the old alone (a median filter also "changes
    # detail", but by removing it).
    "grain": ("new_detail", "detail_gain"),
    "sharpen": ("detail_gain",),
    "blur": ("detail_gain",),
}
TILE_GRID = 3  # uniformity of a global edit is checked on a 3x3 grid of cells


def _cell(a: np.ndarray, i: int, j: int) -> np.ndarray:
    h, w = a.shape[:2]
    return a[
        i * h // TILE_GRID : (i + 1) * h // TILE_GRID, j * w // TILE_GRID : (j + 1) * w // TILE_GRID
    ]


# The smallest expected change (in units, see maps.stat_units) the judge will score: below
# it the requested edit is invisible on this image (saturating a grey photo), so compliance is
# reported as not available rather than guessed. A moderate op makes ~1 unit on a typical photo.
MIN_EXPECTED_UNITS = 0.2

# Extent: how much of the picture an instruction may change (preservation's yardstick).
# "adjust": a global photometric edit whose exact expected result is known; "global": a
# generative edit that may restyle everything (style, season, weather, lighting, rendering a
# person as a figure) but should keep the layout; "layout": zoom / outpaint, the framing
# changes; "local": everything else (add, remove, replace, recolour an object, text, pose...).
_LAYOUT = re.compile(
    r"\b(zoom|outpaint\w*|extend\w*|expand\w*|widen\w*|uncrop|crop\w*|reframe\w*)\b"
)
_GLOBAL = re.compile(
    r"\b(style|styled|stylize\w*|painting|painted|paint|watercolou?r|oil|sketch\w*|drawing|drawn|"
    r"cartoon\w*|comic\w*|anime|manga|pixar|3d|lego|minifigure|funko|simpson\w*|cel|caricature|"
    r"sticker\w*|line[- ]art|van gogh|monet|picasso|impressionis\w*|cubis\w*|pop art|"
    r"season\w*|winter|summer|autumn|spring|snow\w*|rain\w*|fog\w*|foggy|storm\w*|"
    r"weather|night\w*|sunset|sunrise|dusk|dawn|golden hour|lighting|"
    r"historical|vintage|retro|futuristic|modern|victorian|medieval|era|century|"
    r"whole (?:image|photo|picture|scene)|entire (?:image|photo|picture|scene))\b"
)


def measurable(plan: EditPlan) -> bool:
    """An adjust plan whose every op has statistics to check (:data:`TARGETS`): its exact
    expected result is the judge's yardstick. Ops without (geometry, image-adaptive
    corrections) are judged like generative edits of the matching extent."""
    return plan.route == "adjust" and bool(plan.ops) and all(o["op"] in TARGETS for o in plan.ops)


_FRAMING_OPS = re.compile(r"rotate|flip|crop|straighten|resize|upscale|scale")


def instruction_extent(instruction: str, plan: EditPlan, edit_type: str | None = None) -> str:
    """``"adjust"``, ``"global"``, ``"layout"`` or ``"local"`` (see the comment above).

    The planner's route decides ``adjust`` (when the ops are :func:`measurable`; an adjust op
    without statistics is ``layout`` if it changes the framing, else ``global``); otherwise the
    Pico-Banana edit type when given, else words of the instruction.
    """
    if plan.route == "adjust":
        if measurable(plan):
            return "adjust"
        framing = any(_FRAMING_OPS.search(o["op"]) for o in plan.ops)
        return "layout" if framing else "global"
    text = (edit_type or "").lower() + " " + instruction.lower()
    if _LAYOUT.search(text):
        return "layout"
    if _GLOBAL.search(text):
        return "global"
    return "local"


# ---- the context every provider reads -----------------------------------------------------------


@dataclass
class JudgeContext:
    """The prepared pair, the instruction's plan, and measurements cached across providers."""

    pair: m.Pair
    instruction: str
    plan: EditPlan
    extent: str
    edit_type: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # for providers' own memoisation

    @cached_property
    def change(self) -> tuple[np.ndarray, np.ndarray]:
        """(mask, smoothed residual) of the working pair (:func:`measure.change_mask`)."""
        return m.change_mask(self.pair.source_w, self.pair.edited_w)

    @cached_property
    def ssim(self) -> m.SSIMMaps:
        return m.ssim_maps(m.luma(self.pair.source_w), m.luma(self.pair.edited_w))

    @cached_property
    def source_profile(self) -> m.Profile:
        return m.profile(self.pair.source_w)

    @cached_property
    def stats(self) -> dict[str, float]:
        """Measured changes: tone/colour/structure/vignette (working) + detail (detail pair)."""
        p = self.pair
        return {
            **m.tone_colour_stats(self.source_profile, p.edited_w),
            **m.detail_stats(p.source_d, p.edited_d, self.gain),
        }

    @cached_property
    def gain(self) -> float:
        """The detail pair's tone gain (:func:`measure.tone_gain`), shared by its parts."""
        return m.tone_gain(self.pair.source_d, self.pair.edited_d)

    @cached_property
    def expected_gain(self) -> float | None:
        """The same for the expected edit (None off the adjust route)."""
        if self.expected_d is None:
            return None
        return m.tone_gain(self.pair.source_d, self.expected_d)

    @cached_property
    def expected_w(self) -> np.ndarray | None:
        """The adjust engine's result on the working source (None unless :func:`measurable`)."""
        if not measurable(self.plan):
            return None
        p = self.pair
        full_long = max(p.source.shape[:2])
        rect_w = p.alignment.rect[2] - p.alignment.rect[0]
        scale = p.source_w.shape[1] / rect_w  # working px per source px
        return apply_plan(p.source_w, self.plan.ops, blur_px_per_amount=full_long * scale / 100.0)

    @cached_property
    def expected_d(self) -> np.ndarray | None:
        """The adjust engine's result on the detail window (vignette left out: see below)."""
        if not measurable(self.plan):
            return None
        p = self.pair
        full = p.source_d.shape[:2] == p.source.shape[:2]
        # Off a full frame the window is the middle of the picture, where a vignette does
        # nothing (its falloff starts at 0.35 of the half-diagonal), and the engine's vignette
        # would be drawn on the window's own corners: leave it out there.
        ops = [o for o in self.plan.ops if full or o["op"] != "vignette"]
        return apply_plan(p.source_d, ops, blur_px_per_amount=max(p.source.shape[:2]) / 100.0)

    @cached_property
    def expected_stats(self) -> dict[str, float] | None:
        if self.expected_w is None or self.expected_d is None:
            return None
        p = self.pair
        return {
            **m.tone_colour_stats(self.source_profile, self.expected_w),
            **m.detail_stats(p.source_d, self.expected_d, self.expected_gain),
        }


def apply_plan(img: np.ndarray, ops: list[dict], *, blur_px_per_amount: float) -> np.ndarray:
    """The adjust engine's ops on a float32 (H, W, 3) array, as numpy.

    Blur's sigma is a fraction of the *full* picture's long side (its spec); on a window or a
    resized copy it is given here in that array's pixels (``amount * blur_px_per_amount``).
    Grain uses seed 0: its statistics, not its exact noise, are what is compared.
    """
    import mlx.core as mx

    from pbmlx.adjust import ops as engine
    from pbmlx.adjust.specs import SPECS

    x = mx.array(np.ascontiguousarray(img, dtype=np.float32))
    for o in ops:
        name, amount = o["op"], SPECS[o["op"]].clamp(o["amount"])
        if amount == 0.0:
            continue
        if name == "blur":
            x = mx.clip(engine.gaussian_blur(x, amount * blur_px_per_amount), 0.0, 1.0)
        elif name == "grain":
            x = engine.grain(x, amount, seed=0)
        else:
            x = engine.OPS[name](x, amount)
    mx.eval(x)
    return np.asarray(x)


# ---- the provider protocol ----------------------------------------------------------------------


@runtime_checkable
class Provider(Protocol):
    """What the judge needs from a criterion provider (see the module docstring)."""

    criterion: str
    name: str

    def applies(self, ctx: JudgeContext) -> bool: ...

    def score(self, ctx: JudgeContext) -> CriterionScore: ...


Describe = dict[str, Callable[[float], str]]  # feature -> its value in words, with units

# A penalty that lowers the score by less than this is reported as minor.
MINOR_PENALTY = 0.02


def _mapped(
    key: str,
    features: dict[str, float],
    raw: dict[str, Any],
    provider: str,
    describe: Describe,
) -> CriterionScore:
    """Map features through the calibrated map ``key``; explain the largest penalty.

    The explanation names the feature with the most negative term ``w_k f_k``, says its value
    with what the value is (``describe``), and how much lower the score is for it: ``score
    without that feature - score``. When that is under :data:`MINOR_PENALTY`, no defect is
    named ("no notable defect"); under 0.0005 (or no defect at all), "no defect measured".
    """
    lm = maps.load_map(key)
    value, terms = lm.apply(features)
    raw = {**raw, "features": features, "terms": terms, "map": key}
    worst = min(terms, key=lambda k: terms[k]) if terms else None
    without, _ = lm.apply({**features, worst: 0.0}) if worst else (value, {})
    drop = without - value
    if worst is None or drop < 0.0005:  # nothing at the precision the score is shown with
        return CriterionScore(value, raw, "no defect measured", provider, lm.calibrated)
    if drop < MINOR_PENALTY:
        # Naming a defect that costs nothing visible would call a clean edit noisy or blurred.
        why = f"no notable defect (none lowers the score by {MINOR_PENALTY} or more)"
    else:
        what = describe[worst](features[worst]) if worst in describe else worst
        why = f"main penalty: {what}; it lowers the score by {drop:.2f}"
    return CriterionScore(value, raw, why, provider, lm.calibrated)


def _units_beyond(what: str) -> Callable[[float], str]:
    return lambda v: (
        f"{what} though not asked ({v:.2f} units beyond what the requested edit changes; "
        "1 unit = the change a moderate edit makes)"
    )


def _shortfall(v: float) -> str:
    reached = 1.0 - v
    if reached < 0:
        return f"the picture moved the wrong way ({reached:.0%} of the expected change)"
    return f"the requested change falls short (it reached {reached:.0%} of the expected amount)"


# ---- compliance: adjust route ---------------------------------------------------------------


class AdjustCompliance:
    """Compliance of an adjust-route instruction, measured on the pixels.

    With ``e`` the engine's expected change of the statistics the plan's ops target
    (:data:`TARGETS`) and ``m`` the measured change, each divided by its unit
    (:func:`pbmlx.judge.maps.stat_units`: the typical change a moderate op makes):

    * ``r = <m, e> / <e, e>``: how far the picture moved along the requested direction
      (1: as the engine would, 0: nothing happened, < 0: the wrong way);
    * ``shortfall = clip(1 - r, 0, 2)``, ``excess = max(0, log2 r)``;
    * ``off_axis = |m - r e| / |e|`` (capped at 3): moved, but not the requested way (only
      when the ops target several statistics);
    * ``uneven = clip((r - min_cells r_cell) / r, 0, 2)`` with ``r_cell`` the same ratio in
      each cell of a 3x3 grid: a global edit done only in part of the frame;
    * ``side_<group> = max_k max(0, |m_k| - |e_k|)`` over the statistics of each group no op
      of the plan owns (:data:`OWNS`; capped at 10): something else moved, more than the
      requested edit itself moves it;
      ``geometry = 1 - coverage``: the framing changed.

    Not available when ``|e| < MIN_EXPECTED_UNITS`` (the edit would be invisible here).
    """

    criterion = "compliance"
    name = "adjust-statistics"

    def __init__(self, units: dict[str, float] | None = None) -> None:
        self.units = units  # None: the calibration file's (the fitting script passes its own)

    def applies(self, ctx: JudgeContext) -> bool:
        return measurable(ctx.plan)

    def features(self, ctx: JudgeContext) -> tuple[dict[str, float] | None, dict[str, Any]]:
        units = self.units if self.units is not None else maps.stat_units()
        meas, exp = ctx.stats, ctx.expected_stats
        assert exp is not None
        owned = sorted({g for o in ctx.plan.ops for g in OWNS[o["op"]]})
        keys = sorted({k for o in ctx.plan.ops for k in TARGETS[o["op"]]})
        mv = np.array([meas[k] / units[k] for k in keys])
        ev = np.array([exp[k] / units[k] for k in keys])
        norm = float(np.linalg.norm(ev))
        raw: dict[str, Any] = {
            "measured": {k: meas[k] for k in m.STATS},
            "expected": {k: exp[k] for k in m.STATS},
            "owned_groups": owned,
            "targets": keys,
            "expected_units": norm,
        }
        if norm < MIN_EXPECTED_UNITS:
            return None, raw
        r = float(mv @ ev) / (norm * norm)
        off = float(np.linalg.norm(mv - r * ev)) / norm
        tiles = self._tile_ratios(ctx, keys, units)
        f = {
            "shortfall": float(np.clip(1.0 - r, 0.0, 2.0)),
            "excess": max(0.0, math.log2(r)) if r > 0 else 0.0,
            "off_axis": min(off, 3.0),
            "uneven": float(np.clip((r - min(tiles)) / r, 0.0, 2.0)) if tiles and r > 0.1 else 0.0,
        }
        for g in GROUPS:
            # Moved more than the requested edit itself moves it (its incidental changes,
            # like the saturation a midtone lift takes away, are allowed).
            dev = [
                max(0.0, abs(meas[k]) - abs(exp[k])) / units[k]
                for k, (gg, _) in m.STATS.items()
                if gg == g
            ]
            f[f"side_{g}"] = 0.0 if g in owned else min(max(dev), 10.0)
        f["geometry"] = 1.0 - ctx.pair.alignment.coverage
        raw["ratio"] = r
        raw["tile_ratios"] = tiles
        return f, raw

    @staticmethod
    def _tile_ratios(ctx: JudgeContext, keys: list[str], units: dict[str, float]) -> list[float]:
        """The ratio ``r`` of each cell of a 3x3 grid (a global edit moves every part of the
        picture); cells where the expected change is too small to measure are left out, and
        so is the vignette statistic (it is about the whole frame, not a cell)."""
        keys = [k for k in keys if k != "vignette"]
        if not keys:
            return []
        p = ctx.pair
        detail = {"detail_gain", "new_detail"} & set(keys)
        tone = [k for k in keys if k not in detail]
        out = []
        for i in range(TILE_GRID):
            for j in range(TILE_GRID):
                mvals: dict[str, float] = {}
                evals: dict[str, float] = {}
                if tone:
                    s, e, x = (_cell(a, i, j) for a in (p.source_w, p.edited_w, ctx.expected_w))
                    ps = m.profile(s)
                    mvals.update(m.tone_colour_stats(ps, e))
                    evals.update(m.tone_colour_stats(ps, x))
                if detail:
                    s, e, x = (_cell(a, i, j) for a in (p.source_d, p.edited_d, ctx.expected_d))
                    mvals.update(m.detail_stats(s, e, ctx.gain))
                    evals.update(m.detail_stats(s, x, ctx.expected_gain))
                ev = np.array([evals[k] / units[k] for k in keys])
                mv = np.array([mvals[k] / units[k] for k in keys])
                n2 = float(ev @ ev)
                if n2 >= (MIN_EXPECTED_UNITS / 2) ** 2:
                    out.append(float(np.clip(mv @ ev / n2, -1.0, 3.0)))
        return out

    def score(self, ctx: JudgeContext) -> CriterionScore:
        f, raw = self.features(ctx)
        ops = ", ".join(f"{o['op']} {o['amount']:+g}" for o in ctx.plan.ops)
        if f is None:
            return CriterionScore(
                None,
                raw,
                f"not available: the requested edit ({ops}) would change this image by only "
                f"{raw['expected_units']:.2f} units (1 unit = the change a moderate edit makes), "
                "too little to measure",
                self.name,
            )
        s = _mapped("compliance/adjust", f, raw, self.name, COMPLIANCE_WORDS)
        how = f"moved {raw['ratio']:.2f}x the expected amount along [{ops}]"
        return CriterionScore(s.score, s.raw, f"{how}; {s.explanation}", s.provider, s.calibrated)


COMPLIANCE_WORDS: Describe = {
    "shortfall": _shortfall,
    "excess": lambda v: f"overdone ({2.0**v:.2f}x the expected amount)",
    "off_axis": lambda v: (
        f"changed, but not in the requested way (off-axis change {v:.2f}x the expected change)"
    ),
    "uneven": lambda v: (
        "some parts of the picture moved much less than others (the weakest cell of a 3x3 "
        f"grid moved {v:.0%} less than the whole picture)"
    ),
    "side_tone": _units_beyond("brightness/contrast moved"),
    "side_colour": _units_beyond("colour moved"),
    "side_structure": _units_beyond("the picture's structure changed (inverted or replaced)"),
    "side_vignette": _units_beyond("corners changed against the centre"),
    "side_detail": _units_beyond("detail/noise changed"),
    "geometry": lambda v: f"the framing changed ({v:.0%} of the source not covered)",
}


# ---- compliance: CLIP (diffusion route) ----------------------------------------------------------

NEUTRAL_TEXT = "a photo"  # the text the instruction's direction is measured from


class ClipCompliance:
    """Compliance of any instruction by CLIP (vision + text towers), when a model is loaded.

    With ``I(x)`` and ``T(t)`` CLIP's L2-normalised image and text embeddings:

    * directional similarity, instruction-only variant (Pico-Banana has no captions, so the
      text direction is the instruction's embedding against a neutral text)::

          direction = cos(I(edited) - I(source), T(instruction) - T(NEUTRAL_TEXT))

    * edited-image/text similarity ``sim_edited = cos(I(edited), T(instruction))`` and its gain
      over the source, ``gain = sim_edited - cos(I(source), T(instruction))``;
    * ``image_similarity = cos(I(source), I(edited))`` (reported, not scored: preservation's job).

    The score is ``sigmoid(bias + w_dir * direction + w_gain * gain)`` with the
    ``compliance/clip`` map of the calibration file. Those constants are *not fitted* here (no
    CLIP weights can be downloaded in this project's build environment): they come from the
    published ranges cited there, and the score says ``calibrated: false``. Refit them with
    judge-bench on real preference pairs before trusting the absolute values.
    """

    criterion = "compliance"
    name = "clip"

    def __init__(self, model: Any | None, reason: str = "") -> None:
        self.model = model
        self.reason = reason

    def applies(self, ctx: JudgeContext) -> bool:
        return True

    def features(self, ctx: JudgeContext) -> dict[str, float]:
        p = ctx.pair
        # The edited image as it is (CLIP sees what a person sees), the source as it is.
        src = m.resize(p.source, m.fit_size(p.source.shape[1], p.source.shape[0], m.WORK_SIDE))
        edt = m.resize(p.edited, m.fit_size(p.edited.shape[1], p.edited.shape[0], m.WORK_SIDE))
        if src.shape == edt.shape:  # one batch of two (the usual case): half the calls
            both = np.asarray(self.model.encode_image(np.stack([src, edt])), np.float64)
            i_s, i_e = _unit(both[0]), _unit(both[1])
        else:
            i_s = _unit(np.asarray(self.model.encode_image(src[None]), np.float64)[0])
            i_e = _unit(np.asarray(self.model.encode_image(edt[None]), np.float64)[0])
        t = np.asarray(self.model.encode_text([ctx.instruction, NEUTRAL_TEXT]), np.float64)
        t_i, t_n = _unit(t[0]), _unit(t[1])
        direction = _cos(i_e - i_s, t_i - t_n)
        sim_e, sim_s = float(i_e @ t_i), float(i_s @ t_i)
        return {
            "direction": direction,
            "sim_edited": sim_e,
            "sim_source": sim_s,
            "gain": sim_e - sim_s,
            "image_similarity": float(i_s @ i_e),
        }

    def score(self, ctx: JudgeContext) -> CriterionScore:
        if self.model is None:
            return CriterionScore(
                None,
                {},
                f"not available: {self.reason or 'no CLIP model loaded'}",
                self.name,
                calibrated=False,
            )
        raw = self.features(ctx)
        lm = maps.load_map("compliance/clip")
        # This map's weights are positive (more direction, more gain: better); apply() does
        # the same sum as for defect maps.
        value, terms = lm.apply({k: raw[k] for k in lm.features})
        why = (
            f"CLIP direction {raw['direction']:+.3f} (cosine of the image change with the "
            f"instruction's text direction), image-instruction similarity {raw['sim_edited']:.3f} "
            f"({raw['gain']:+.3f} vs the source)"
        )
        return CriterionScore(
            value, {**raw, "terms": terms, "map": "compliance/clip"}, why, self.name, lm.calibrated
        )


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 1e-12 and nb > 1e-12 else 0.0


# ---- seamlessness -------------------------------------------------------------------------------


class Seamlessness:
    """Artifacts a careful viewer would see, each relative to the source.

    * ``border``: new edges along the border of the change mask
      (:func:`measure.border_discontinuity`; 0 when the change has no border, as a global edit);
    * ``tiling``: ``max(0, tiling(edited) - tiling(source))`` (:func:`measure.tiling`);
    * ``banding``: ``max(0, banding(edited) - banding(source))`` on the images' own 8-bit
      pixels (:func:`measure.banding`; 0 when neither has enough smooth area).

    For a ``global`` restyle, border and banding are set to 0 (reported raw, not scored):
    redrawing regions and flattening tones is what a sketch or a painting does.
    """

    criterion = "seamlessness"
    name = "artifacts"

    def applies(self, ctx: JudgeContext) -> bool:
        return True

    def features(self, ctx: JudgeContext) -> tuple[dict[str, float], dict[str, Any]]:
        p = ctx.pair
        mask, _ = ctx.change
        border = m.border_discontinuity(p.source_w, p.edited_w, mask)
        t_s, t_e = m.tiling(p.source_w), m.tiling(p.edited_w)
        b_s = m.banding(p.source_own, m.smooth_region(p.source_own))
        b_e = m.banding(p.edited_own, m.smooth_region(p.edited_own))
        f = {
            "border": border or 0.0,
            "tiling": max(0.0, t_e - t_s),
            "banding": max(0.0, (b_e or 0.0) - (b_s or 0.0)) if b_e is not None else 0.0,
        }
        if ctx.extent == "global":
            # A restyle (sketch, painting, season) redraws regions and tones by design: flat
            # areas and region borders are its style, not artifacts. Tiling still is one.
            f["border"] = f["banding"] = 0.0
        raw = {
            "change_area": float(mask.mean()),
            "border_discontinuity": border,
            "tiling_source": t_s,
            "tiling_edited": t_e,
            "banding_source": b_s,
            "banding_edited": b_e,
        }
        return f, raw

    def score(self, ctx: JudgeContext) -> CriterionScore:
        f, raw = self.features(ctx)
        return _mapped("seamlessness", f, raw, self.name, SEAM_WORDS)


SEAM_WORDS: Describe = {
    "border": lambda v: (
        "hard edges along the edited region's border (new edge strength there "
        f"{v:.2f}x the source's average edge strength)"
    ),
    "tiling": lambda v: (
        f"a repeated pattern (tiling) the source does not have (tiling score up {v:.3f}, of 1)"
    ),
    "banding": lambda v: (
        f"colour banding / posterised gradients ({v:.0%} more of the smooth areas' 8-bit "
        "levels left empty in runs)"
    ),
}


# ---- preservation -------------------------------------------------------------------------------


L1_SCALE = 10.0  # preservation's l1 feature is in tenths of the value range


class Preservation:
    """Did the edit keep what it should, given how much the instruction may change?

    Features by extent (:func:`instruction_extent`), all relative to what the edit implies:

    * ``adjust`` (a global photometric edit): ``structure_loss = max(0, S(expected) - S(edited))``
      with ``S`` the mean SSIM structure term (local luma correlation) against the source: a
      tone or colour change keeps it, lost detail, noise or new content do not;
      ``coverage_loss = 1 - coverage`` (part of the picture cropped or shifted away).
    * ``local`` (add / remove / replace ...): outside the change mask (dilated by 3 px),
      ``ssim_loss = 1 - mean SSIM`` and ``l1 = 10 mean |edited - source|`` (RGB, in tenths
      of the range, so that it is of the order of the other features); ``area`` = the
      mask's share of the frame (a local edit should change a part); ``coverage_loss``.
    * ``global`` (a style, season, weather ...): the layout should stay:
      ``layout_loss = 1 - S_coarse``, the structure term at 1/4 of the working size; ``coverage_loss``.
    * ``layout`` (zoom, outpaint): the framing may change, so only the overlap is compared:
      ``ssim_loss`` and ``l1`` over the whole overlap (no coverage term).
    """

    criterion = "preservation"
    name = "structure"

    def applies(self, ctx: JudgeContext) -> bool:
        return True

    def features(self, ctx: JudgeContext) -> tuple[str, dict[str, float], dict[str, Any]]:
        p = ctx.pair
        r = ctx.ssim.radius
        inner = (slice(r, -r), slice(r, -r))
        coverage_loss = 1.0 - p.alignment.coverage
        raw: dict[str, Any] = {"extent": ctx.extent, "coverage": p.alignment.coverage}
        if ctx.extent == "adjust":
            s_meas = float(ctx.ssim.structure[inner].mean())
            exp = ctx.expected_w
            assert exp is not None
            s_exp = float(m.ssim_maps(m.luma(p.source_w), m.luma(exp)).structure[inner].mean())
            raw.update({"structure_edited": s_meas, "structure_expected": s_exp})
            return (
                "preservation/adjust",
                {"structure_loss": max(0.0, s_exp - s_meas), "coverage_loss": coverage_loss},
                raw,
            )
        if ctx.extent == "global":
            h, w = p.source_w.shape[:2]
            size = (max(16, w // 4), max(16, h // 4))
            ls, le = m.resize(m.luma(p.source_w), size), m.resize(m.luma(p.edited_w), size)
            coarse = m.ssim_maps(ls, le)
            rc = coarse.radius
            s = float(coarse.structure[rc:-rc, rc:-rc].mean())
            raw["structure_coarse"] = s
            return (
                "preservation/global",
                {"layout_loss": max(0.0, 1.0 - s), "coverage_loss": coverage_loss},
                raw,
            )
        mask, _ = ctx.change
        # A zoom or outpaint changes the framing, not a region: compare the whole overlap.
        outside = np.ones_like(mask) if ctx.extent == "layout" else ~m.box_max(mask, 3)
        sel = outside[inner]
        ssim_out = float(ctx.ssim.ssim[inner][sel].mean()) if sel.any() else 1.0
        diff = np.abs(p.edited_w.astype(np.float64) - p.source_w).mean(axis=-1)
        l1 = float(diff[outside].mean()) if outside.any() else 0.0
        raw.update({"ssim_outside": ssim_out, "l1_outside": l1, "change_area": float(mask.mean())})
        f = {"ssim_loss": max(0.0, 1.0 - ssim_out), "l1": L1_SCALE * l1}
        if ctx.extent == "local":
            f["area"] = float(mask.mean())
            f["coverage_loss"] = coverage_loss
        key = "preservation/local" if ctx.extent == "local" else "preservation/layout"
        return key, f, raw

    def score(self, ctx: JudgeContext) -> CriterionScore:
        key, f, raw = self.features(ctx)
        return _mapped(key, f, raw, self.name, PRESERVATION_WORDS)


PRESERVATION_WORDS: Describe = {
    "structure_loss": lambda v: (
        f"detail/structure lost beyond what the edit implies (SSIM structure term {v:.3f} "
        "below the expected edit's, of 1)"
    ),
    "coverage_loss": lambda v: (
        f"part of the picture is cropped or shifted away ({v:.0%} of the source not covered)"
    ),
    "layout_loss": lambda v: (
        f"the layout of the scene is not kept (coarse structure similarity {1.0 - v:.2f}, "
        "1 = the same layout)"
    ),
    "ssim_loss": lambda v: (
        f"regions outside the edit changed (SSIM there {1.0 - v:.3f}, 1 = unchanged)"
    ),
    "l1": lambda v: (
        f"colours outside the edit changed (mean absolute difference {v / L1_SCALE:.3f} of "
        "the value range)"
    ),
    "area": lambda v: (
        f"the edit changed much more of the picture than a local edit should ({v:.0%} of the frame)"
    ),
}


# ---- technical quality --------------------------------------------------------------------------


class Quality:
    """Technical defects of the edited image, each beyond what the source and the edit imply.

    On the detail pair, with :func:`measure.detail_change` (log2 ratios net of the pair's tone
    gain, so that a pure scaling of the values, a brightness change, is neither blur nor
    noise): ``blur = max(0, min(0, x_exp) - x)`` with ``x`` the change of pixel-level
    sharpness and ``x_exp`` that of the expected edit (0 off the adjust route), so a requested
    blur is not a defect; ``noise = max(0, n - max(0, n_exp))`` with ``n`` the change of the
    noise level; on the working pair ``clipping = max(0, c(edited) - max(c(source),
    c(expected)))`` (:func:`measure.clipped_fraction`); on the edited image's own pixels
    ``blockiness = max(0, B(edited) - B(source))`` (:func:`measure.blockiness`);
    ``resolution_loss = max(0, -log2(edited px per source px) / 2)`` (linear resolution, in
    octaves).

    For a ``global`` restyle, clipping is set to 0 (reported raw, not scored).
    A frame with non-finite values, or flat (luma std < 0.5 level where the source has
    detail), scores 0 outright: no calibration is needed to call it broken.
    """

    criterion = "quality"
    name = "technical"

    def applies(self, ctx: JudgeContext) -> bool:
        return True

    def features(self, ctx: JudgeContext) -> tuple[dict[str, float], dict[str, Any]]:
        p = ctx.pair
        d = m.detail_change(p.source_d, p.edited_d, ctx.gain)
        x, n = d["sharpness"], d["noise"]
        x_exp = n_exp = 0.0
        c_s, c_e = m.clipped_fraction(p.source_w), m.clipped_fraction(p.edited_w)
        c_exp = c_s
        if ctx.expected_d is not None and ctx.expected_w is not None:
            dx = m.detail_change(p.source_d, ctx.expected_d, ctx.expected_gain)
            x_exp, n_exp = dx["sharpness"], dx["noise"]
            c_exp = m.clipped_fraction(ctx.expected_w)
        b_s, b_e = m.blockiness(p.source_own), m.blockiness(p.edited_own)
        al = p.alignment
        f = {
            "blur": max(0.0, min(0.0, x_exp) - x),
            "noise": max(0.0, n - max(0.0, n_exp)),
            "clipping": max(0.0, c_e - max(c_s, c_exp)),
            "blockiness": max(0.0, b_e - b_s),
            "resolution_loss": max(0.0, -0.5 * math.log2(al.ax * al.ay)),
        }
        if ctx.extent == "global":
            # Paper white and bold flat colour are a restyle's look, not lost highlights.
            f["clipping"] = 0.0
        raw = {
            "tone_gain": d["gain"],
            "sharpness_change": x,
            "sharpness_change_expected": x_exp,
            "noise_source": d["noise_source"],
            "noise_edited": d["noise_edited"],
            "noise_change": n,
            "noise_change_expected": n_exp,
            "clipped_source": c_s,
            "clipped_edited": c_e,
            "clipped_expected": c_exp,
            "blockiness_source": b_s,
            "blockiness_edited": b_e,
            "nonfinite": p.nonfinite,
        }
        return f, raw

    def broken(self, ctx: JudgeContext) -> str | None:
        p = ctx.pair
        if p.nonfinite > 0.0:
            return f"{p.nonfinite:.1%} of the edited image's values are NaN or infinite"
        sd_e, sd_s = float(m.luma(p.edited_w).std()), float(m.luma(p.source_w).std())
        if sd_e < 0.5 / 255.0 and sd_s > 2.0 / 255.0:
            mean = float(m.luma(p.edited_w).mean())
            what = "black" if mean < 0.02 else "white" if mean > 0.98 else "a single flat colour"
            return f"the edited image is {what} (luma std {sd_e * 255:.2f} levels)"
        return None

    def score(self, ctx: JudgeContext) -> CriterionScore:
        bad = self.broken(ctx)
        if bad is not None:
            return CriterionScore(0.0, {"broken": bad}, f"broken frame: {bad}", self.name)
        f, raw = self.features(ctx)
        return _mapped("quality", f, raw, self.name, QUALITY_WORDS)


QUALITY_WORDS: Describe = {
    "blur": lambda v: (
        f"sharpness lost (pixel-level detail down {v:.2f} octaves, to {2.0**-v:.0%}, "
        "beyond what the edit implies)"
    ),
    "noise": lambda v: (
        f"noise added (noise level {2.0**v:.2f}x the source's, beyond what the edit implies)"
    ),
    "clipping": lambda v: f"new clipped highlights/shadows ({v:.1%} of the pixels)",
    "blockiness": lambda v: (
        f"JPEG 8x8 blocking (steps at 8-pixel block edges {v:.0%} larger than elsewhere, "
        "beyond the source's)"
    ),
    "resolution_loss": lambda v: (
        f"lower resolution than the source ({v:.2f} octaves of linear resolution lost, "
        f"{2.0**-v:.0%} kept)"
    ),
}


def default_providers(clip: ClipCompliance) -> list[Provider]:
    """The built-in providers, in the order the judge asks them."""
    return [AdjustCompliance(), clip, Seamlessness(), Preservation(), Quality()]
