"""Named looks, each a short list of adjust ops.

A preset is data, nothing more: ``PRESETS[name]`` is a list of ``{"op": NAME, "amount": float}``
in the order the looks are usually built (tone first, then colour, then texture). Names and
ranges are those of :data:`pbmlx.adjust.specs.SPECS`; amounts are for a full-strength look, and
the planner scales them ("a subtle vintage look" halves every amount, clamped to each op's
range). Each entry says in one line why it is made of those ops.
"""

from __future__ import annotations


def _look(**amounts: float) -> list[dict]:
    return [{"op": name, "amount": float(amount)} for name, amount in amounts.items()]


PRESETS: dict[str, list[dict]] = {
    # Low sun: warm white balance with a hint of magenta, richer colour, softer shadows.
    "golden hour": _look(temperature=0.45, tint=0.08, vibrance=0.2, shadows=0.15, highlights=-0.1),
    # An aged colour print: a partial sepia wash, milky blacks, muted colour, dark rim, grain.
    "vintage": _look(sepia=0.35, fade=0.25, saturation=-0.2, vignette=0.3, grain=0.2),
    # Film noir: black and white, hard contrast, deep shadows, a heavy vignette, a little grain.
    "noir": _look(grayscale=1.0, contrast=0.5, shadows=-0.3, vignette=0.5, grain=0.15),
    # Colour negative film: visible grain, slightly lifted blacks, a touch of warmth, soft rim.
    "film": _look(grain=0.25, fade=0.12, temperature=0.08, vignette=0.15),
    # Matte finish: blacks lifted and whites lowered, flatter and a little less colourful.
    "matte": _look(fade=0.45, contrast=-0.15, saturation=-0.1),
    # Warm: only the white balance moves; anything more would be a different look.
    "warm": _look(temperature=0.3),
    # Cool: the mirror of warm, towards blue.
    "cool": _look(temperature=-0.3),
    # Dramatic: strong contrast, deep shadows, held-back highlights, dark corners, crisp detail.
    "dramatic": _look(contrast=0.4, shadows=-0.25, highlights=-0.2, vignette=0.35, sharpen=0.3),
    # Faded: a sun-bleached print, lifted blacks and drained colour.
    "faded": _look(fade=0.4, saturation=-0.3, contrast=-0.15),
    # Retro (1970s-80s prints): faded, warm and slightly magenta, less saturated, light grain.
    "retro": _look(fade=0.25, temperature=0.15, tint=0.05, saturation=-0.15, grain=0.15),
    # Black and white: luminance only, nothing else changed.
    "black and white": _look(grayscale=1.0),
    # An old photograph (before the 1950s): strong sepia, faded and soft, dark rim, heavy grain.
    "old photo": _look(sepia=0.75, fade=0.25, contrast=-0.1, vignette=0.4, grain=0.35),
    # Moody: darker, more contrast, muted colour, deep shadows, dark corners.
    "moody": _look(brightness=-0.15, contrast=0.2, saturation=-0.25, shadows=-0.2, vignette=0.25),
    # Cinematic: contrasty but gently faded blacks, restrained colour, a soft vignette.
    "cinematic": _look(contrast=0.25, shadows=-0.15, fade=0.1, saturation=-0.1, vignette=0.2),
    # Enhance: the usual one-tap fix, a little contrast, colour and sharpness.
    "enhance": _look(contrast=0.15, vibrance=0.2, sharpen=0.3),
    # HDR: tones compressed (shadows up, highlights down), colour and detail pushed.
    "hdr": _look(shadows=0.4, highlights=-0.4, vibrance=0.25, sharpen=0.4),
    # High key: bright and airy, shadows open, low contrast.
    "high key": _look(brightness=0.35, shadows=0.3, highlights=0.1, contrast=-0.2),
    # Low key: dark overall with hard contrast and deep shadows.
    "low key": _look(brightness=-0.3, contrast=0.3, shadows=-0.3, vignette=0.2),
    # Pastel: light, soft and washed colour.
    "pastel": _look(brightness=0.15, fade=0.2, contrast=-0.1, saturation=-0.25),
    # Dreamy: a slight glow from blur, brighter highlights and a soft matte.
    "dreamy": _look(brightness=0.1, highlights=0.15, fade=0.15, blur=0.15),
    # Fluorescent light: the cool, green cast of office tubes.
    "fluorescent": _look(temperature=-0.25, tint=-0.15),
    # Bleach bypass: the silver left in, so colour drains and contrast hardens.
    "bleach bypass": _look(saturation=-0.5, contrast=0.4),
    # Instant film: faded, warm, slightly muted, with a soft dark rim.
    "polaroid": _look(fade=0.2, temperature=0.12, saturation=-0.1, vignette=0.2),
}
