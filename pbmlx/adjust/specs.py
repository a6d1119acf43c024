"""The adjust engine's ops as data: name, amount range, unit, and a "moderate" amount.

This table is the one place the op vocabulary is declared. ``pbmlx.adjust.ops`` binds each
name to its function; the planner reads it to turn words into amounts ("slightly" is a
fraction of ``moderate``, "a lot" a multiple); the CLI and JSON plans use these names.

Every amount is signed where the op has two directions, and 0 is the identity (also for the
ops whose range does not hold 0: a step with amount 0 is skipped). Geometric ops change the
image size (:mod:`pbmlx.adjust.geometry`); image-adaptive ones measure the image first
(:mod:`pbmlx.adjust.auto`). Units: "switch" ops act at amounts >= 0.5; ``rotate`` takes any
angle (the engine wraps it into (-180, 180] before clamping).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpSpec:
    name: str
    min: float
    max: float
    moderate: float  # the amount for an unqualified request ("brighten it")
    unit: str  # "ev", "fraction", "degrees", "strength", "switch", "ratio", "factor", "pixels"
    summary: str

    def clamp(self, amount: float) -> float:
        return min(self.max, max(self.min, float(amount)))


SPECS: dict[str, OpSpec] = {
    s.name: s
    for s in [
        OpSpec("exposure", -5.0, 5.0, 0.5, "ev", "exposure in stops, applied in linear light"),
        OpSpec(
            "brightness",
            -1.0,
            1.0,
            0.3,
            "fraction",
            "lift (+) or lower (-) midtones, black and white kept",
        ),
        OpSpec(
            "contrast",
            -1.0,
            1.0,
            0.25,
            "fraction",
            "stretch (+) or flatten (-) tones around the mean",
        ),
        OpSpec("saturation", -1.0, 1.0, 0.3, "fraction", "colourfulness; -1 is grayscale"),
        OpSpec("vibrance", -1.0, 1.0, 0.3, "fraction", "saturation weighted towards muted colours"),
        OpSpec(
            "temperature",
            -1.0,
            1.0,
            0.3,
            "fraction",
            "warm (+, towards amber) or cool (-, towards blue)",
        ),
        OpSpec("tint", -1.0, 1.0, 0.2, "fraction", "magenta (+) or green (-)"),
        OpSpec("hue", -180.0, 180.0, 30.0, "degrees", "rotate every hue"),
        OpSpec(
            "gamma", -2.0, 2.0, 0.3, "fraction", "midtone power curve, out = in ** 2**(-amount)"
        ),
        OpSpec(
            "highlights", -1.0, 1.0, 0.3, "fraction", "brighten (+) or recover (-) the bright tones"
        ),
        OpSpec("shadows", -1.0, 1.0, 0.3, "fraction", "lift (+) or deepen (-) the dark tones"),
        OpSpec("fade", 0.0, 1.0, 0.3, "strength", "lift blacks and lower whites (matte look)"),
        OpSpec("grayscale", 0.0, 1.0, 1.0, "strength", "mix towards luminance"),
        OpSpec("sepia", 0.0, 1.0, 0.8, "strength", "mix towards a sepia tone"),
        OpSpec("invert", 0.0, 1.0, 1.0, "strength", "mix towards the negative"),
        OpSpec("vignette", -1.0, 1.0, 0.4, "strength", "darken (+) or lighten (-) the corners"),
        OpSpec("grain", 0.0, 1.0, 0.3, "strength", "seeded film grain"),
        OpSpec("sharpen", 0.0, 2.0, 0.5, "strength", "unsharp mask"),
        OpSpec(
            "blur", 0.0, 5.0, 0.3, "fraction", "Gaussian blur, sigma = amount % of the long side"
        ),
        # ---- geometry (the image size may change) ----
        OpSpec(
            "rotate", -180.0, 180.0, 90.0, "degrees", "counter-clockwise; 90s exact, else bilinear"
        ),
        OpSpec("flip_horizontal", 0.0, 1.0, 1.0, "switch", "mirror left-right"),
        OpSpec("flip_vertical", 0.0, 1.0, 1.0, "switch", "mirror top-bottom"),
        OpSpec("crop_aspect", 0.1, 10.0, 1.0, "ratio", "largest centred width / height = amount"),
        OpSpec("straighten", 0.0, 1.0, 1.0, "switch", "level the horizon (up to 15 degrees)"),
        OpSpec("scale", 0.05, 8.0, 2.0, "factor", "resample both sides by amount (Lanczos)"),
        OpSpec("resize", 16.0, 16384.0, 2048.0, "pixels", "resample so the long side is amount"),
        # ---- image-adaptive corrections ----
        OpSpec(
            "auto_exposure", 0.0, 1.0, 1.0, "strength", "levels and gamma from luma percentiles"
        ),
        OpSpec("auto_white_balance", 0.0, 1.0, 1.0, "strength", "neutralise a colour cast"),
        OpSpec("denoise", 0.0, 1.0, 0.5, "strength", "edge-preserving noise reduction"),
        OpSpec("dehaze", 0.0, 1.0, 0.5, "strength", "remove haze (dark-channel prior)"),
    ]
}
