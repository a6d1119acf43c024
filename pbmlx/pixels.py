"""Pixel value conversions, numpy: the one place for the formulas between 8- and 16-bit samples,
float values in [0, 1] (what the adjust engine, the editor and the flow work in) and the
diffusion models' range [-1, 1].

- samples -> [0, 1]: :func:`codes_to_unit` ``fl(code / maxval)``; :func:`as_unit` by dtype;
- [0, 1] -> samples: :func:`unit_to_codes` ``rint(fl(clip(x, 0, 1) * maxval))``;
- PIL / arrays: :func:`to_unit_rgb` (RGB and alpha split), :func:`to_pil` (8-bit RGB or RGBA);
- [0, 1] <-> [-1, 1]: :func:`unit_to_model` ``fl(x * 2) - 1``, :func:`model_to_unit`
  ``clip(fl(y / 2) + 1/2, 0, 1)``.

``fl`` is rounding to float32. Conversions to float divide (correctly rounded), never multiply
by ``1 / maxval``: that gives the same float32 numbers as the kernels' ``code / 255`` (the
reciprocal is 1 ulp off for half of the codes). Conversions to integers clip to the range and
round half to even (``np.rint``), the product taken in float32 (float64 for float64 input); NaN
gives an unspecified code.

MLX arrays are converted by the kernels' dispatchers, with these formulas bit for bit:
:mod:`pbmlx.kernels.image_io` at the models' boundary (``to_model_input``,
``from_model_output``), and the adjust kernels, which read 8-bit codes as ``code / 255``
themselves (:mod:`pbmlx.kernels.adjust`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pbmlx.errors import PbmlxError

ALPHA_MODES = ("RGBA", "LA", "PA")  # PIL modes with an alpha band (plus "P" with transparency)


def _product_dtype(x: np.ndarray) -> type[np.floating]:
    """float64 for float64 input (no precision is thrown away before rounding to codes),
    float32 for everything else."""
    return np.float64 if x.dtype == np.float64 else np.float32


def codes_to_unit(
    codes: np.ndarray, maxval: int = 255, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Integer samples as float32 in [0, 1]: ``fl(code / maxval)``, correctly rounded.

    ``maxval`` is 255 for 8-bit samples, 65535 for 16-bit ones. ``out`` (float32, broadcast to
    from ``codes``, e.g. one grey channel into three) receives the result and is returned.
    """
    return np.divide(codes, np.float32(maxval), out=out, dtype=np.float32, casting="unsafe")


def as_unit(values: np.ndarray, *, clip: bool = False) -> np.ndarray:
    """Samples as float32 values in [0, 1]: uint8 ``u`` -> ``fl(u / 255)``, uint16 ``u`` ->
    ``fl(u / 65535)``; floats -> ``fl(x)``, clipped to [0, 1] with ``clip`` (values outside
    are left as they are without it). Other dtypes raise :class:`PbmlxError`."""
    x = np.asarray(values)
    if x.dtype == np.uint8:
        return codes_to_unit(x, 255)
    if x.dtype == np.uint16:
        return codes_to_unit(x, 65535)
    if not np.issubdtype(x.dtype, np.floating):
        raise PbmlxError(f"Image arrays must be uint8, uint16 or float, not {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    return np.clip(x, 0.0, 1.0) if clip else x


def unit_to_codes(values: np.ndarray, maxval: int = 255) -> np.ndarray:
    """Float values in [0, 1] as integer samples: ``rint(fl(clip(x, 0, 1) * maxval))``, halves
    to even, uint8 for ``maxval`` 255 and uint16 for 65535.

    The product is taken in float32 (float64 for float64 input), so a value whose float32
    product is exactly ``k + 1/2`` rounds to the even neighbour. Clipping first or after
    rounding gives the same codes. 8-bit codes (uint8) are returned as they are for ``maxval``
    255, else read as ``code / 255`` first; uint16 input is read as ``code / 65535``. Works on
    anything ``np.asarray`` takes (e.g. an ``mx.array``); one float copy at most.
    """
    x = np.asarray(values)
    if x.dtype == np.uint8 and maxval == 255:
        return x
    if x.dtype in (np.uint8, np.uint16):
        x = as_unit(x)
    elif not np.issubdtype(x.dtype, np.floating):
        raise PbmlxError(f"Image arrays must be uint8, uint16 or float, not {x.dtype}.")
    dtype = np.uint16 if maxval > 255 else np.uint8
    y = np.clip(x.astype(_product_dtype(x), copy=False), 0.0, 1.0)  # a new array: the in-place
    y *= maxval  # steps below keep memory at one copy
    np.rint(y, out=y)
    return y.astype(dtype)


def is_codes(x: object) -> bool:
    """Whether ``x`` is a numpy array of 8-bit codes (uint8), not float values."""
    return isinstance(x, np.ndarray) and x.dtype == np.uint8


def has_alpha(image: Image.Image) -> bool:
    """Whether a PIL image carries transparency: an alpha band, or a palette/colour key."""
    return image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def split_alpha(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W, 3)`` -> ``(values, None)``; ``(H, W, 4)`` -> ``(RGB, alpha)``, both contiguous
    copies (``(H, W, 3)`` is returned contiguous, copied only if it was not)."""
    if values.shape[-1] == 4:
        return np.ascontiguousarray(values[..., :3]), values[..., 3].copy()
    return np.ascontiguousarray(values), None


def to_unit_rgb(image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image or an array as float RGB ``(H, W, 3)`` in [0, 1] and an optional alpha plane
    ``(H, W)``, both float32.

    PIL: converted to RGB, or RGBA when it has transparency (:func:`has_alpha`), then read as
    codes (:func:`codes_to_unit`). Arrays: uint8, uint16 or float (clipped to [0, 1]) via
    :func:`as_unit`; ``(H, W)`` grey is repeated into three channels, ``(H, W, 4)`` splits off
    its alpha. Other shapes or dtypes raise :class:`PbmlxError`.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGBA" if has_alpha(image) else "RGB"))
    if not isinstance(image, np.ndarray):
        raise PbmlxError(f"Expected a PIL image or a numpy array, not {type(image).__name__}.")
    a = as_unit(image, clip=True)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or min(a.shape[:2]) < 1:
        raise PbmlxError(
            f"Image array has shape {image.shape}; expected (H, W), (H, W, 3) or (H, W, 4)."
        )
    return split_alpha(a)


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """An 8-bit RGB PIL image of ``rgb`` (float in [0, 1] or 8-bit codes, ``(H, W, 3)``), or
    RGBA with ``alpha`` (float ``(H, W)``): each sample is :func:`unit_to_codes` of its value."""
    codes = unit_to_codes(rgb)
    if alpha is None:
        return Image.fromarray(codes, "RGB")
    return Image.fromarray(np.dstack([codes, unit_to_codes(alpha)]), "RGBA")


def unit_to_model(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as the models' input range: ``fl(fl(x * 2) - 1)`` (``x * 2`` is exact);
    uint8 codes ``u`` first become ``fl(u / 255)``. float32 out.

    For codes this equals ``fl(u / 127.5) - 1`` bit for bit (halving commutes with rounding),
    and it is what :func:`pbmlx.kernels.image_io.to_model_input` computes in MLX.
    """
    x = as_unit(x)
    return x * 2 - 1


def model_to_unit(y: np.ndarray, *, clip: bool = True) -> np.ndarray:
    """The models' output range as values in [0, 1]: ``clip(fl(y / 2) + 1/2, 0, 1)``
    (:func:`pbmlx.kernels.image_io.from_model_output` in MLX). ``clip=False`` leaves values
    outside, the exact inverse of :func:`unit_to_model` up to one rounding. float32 out."""
    x = np.asarray(y, dtype=np.float32) / 2 + 0.5
    return np.clip(x, 0.0, 1.0) if clip else x
