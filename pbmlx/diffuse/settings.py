"""The sampler's settings: one frozen object that every layer of a generative edit passes on.

:class:`SamplerSettings` is what ``pbmlx edit``'s ``--steps``, ``--guidance``,
``--image-guidance``, ``--size``, ``--scheduler`` and ``--seed`` build; it travels unchanged
from the flow (:mod:`pbmlx.flow`) through :meth:`pbmlx.editor.Editor.edit` to
:meth:`pbmlx.diffuse.pipeline.InstructPix2PixPipeline.generate` and its step loop. Its checks are
the ones that need no model; :meth:`pbmlx.editor.Editor.check_settings` adds those that do (the
step count's upper bound is the model's ``num_train_timesteps``).

The entry points people call by hand (``pbmlx.edit``, ``Editor.edit``, ``pipeline.generate``)
take both ``settings=`` and the fields as keywords; :func:`resolve` says how they combine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from pbmlx.diffuse.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from pbmlx.errors import PbmlxError

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.5  # s_txt: how strongly the edit follows the instruction
DEFAULT_IMAGE_GUIDANCE = 1.5  # s_img: how strongly the result stays with the input image
DEFAULT_SIZE = 512  # working size: longest side in pixels (what SD 1.5 was trained at)
DEFAULT_SEED = 0
WORKING_MULTIPLE = 8  # working sides are multiples of this (and of the VAE's factor)
MAX_SEED = 2**63 - 1  # mx.random.key takes a 64-bit seed; pbmlx keeps it non-negative


def check_guidance(name: str, value: float) -> float:
    """``value`` as a float, or :class:`PbmlxError` unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PbmlxError(f"{name} {value!r} must be a finite number.")
    if value < 0:
        raise PbmlxError(f"{name} {value!r} must be >= 0.")
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplerSettings:
    """How a generative edit samples; every field has the ``pbmlx edit`` flag's default.

    - ``steps``: denoising steps, an int >= 1 (default 20). A model also caps it at its
      scheduler's ``num_train_timesteps`` (1000 for SD), checked by ``Editor.check_settings``.
    - ``guidance``: text guidance ``s_txt`` >= 0, finite (default 7.5): how strongly the edit
      follows the instruction. 0 ignores it; 1 is the plain conditional prediction.
    - ``image_guidance``: image guidance ``s_img`` >= 0, finite (default 1.5): how strongly the
      result stays with the input. The step's noise estimate is
      ``e_uncond + s_txt (e_text - e_img) + s_img (e_img - e_uncond)``
      (:func:`pbmlx.diffuse.pipeline.guide`).
    - ``size``: the working size, the longest side in pixels the model runs at, an int >= 8
      (default 512); sides are rounded to multiples of 8 and the result is brought back to the
      photo's own size. The pipeline itself runs at the size of the image it is given.
    - ``scheduler``: one of :data:`pbmlx.diffuse.schedulers.SCHEDULERS` (``euler_a``
      Euler-Ancestral, the default; ``euler``; ``ddim``).
    - ``seed``: an int in [0, 2**63 - 1] (default 0), the key of the initial noise and the
      per-step draws: the same settings and input give the same pixels on the same machine.

    Frozen: derive a variant with :func:`dataclasses.replace` (which checks it again). Bad values
    raise :class:`PbmlxError` naming the setting; ``guidance`` and ``image_guidance`` are stored
    as floats.
    """

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    image_guidance: float = DEFAULT_IMAGE_GUIDANCE
    size: int = DEFAULT_SIZE
    scheduler: str = DEFAULT_SCHEDULER
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        # In the order the flags are documented, so the first bad one is the one reported.
        if not isinstance(self.scheduler, str) or self.scheduler not in SCHEDULERS:
            raise PbmlxError(
                f"Unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}."
            )
        if not _is_int(self.steps) or self.steps < 1:
            raise PbmlxError(f"Number of steps {self.steps!r} must be an int >= 1.")
        # frozen: the checked floats are stored through object.__setattr__.
        object.__setattr__(self, "guidance", check_guidance("Guidance", self.guidance))
        object.__setattr__(
            self, "image_guidance", check_guidance("Image guidance", self.image_guidance)
        )
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise PbmlxError(f"Seed {self.seed!r} must be an integer from 0 to 2**63 - 1.")
        if not _is_int(self.size) or self.size < WORKING_MULTIPLE:
            raise PbmlxError(
                f"Working size {self.size!r} must be an integer >= {WORKING_MULTIPLE}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, field name -> value."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS = frozenset(f.name for f in fields(SamplerSettings))


def resolve(settings: SamplerSettings | None = None, **overrides: Any) -> SamplerSettings:
    """``settings`` (default ``SamplerSettings()``) with every keyword that is not ``None`` in
    place of its field: ``resolve(s, steps=4)`` is ``replace(s, steps=4)``; ``resolve(s,
    steps=None)`` is ``s``. The keyword entry points use it, so a keyword given next to
    ``settings=`` wins for its field. Unknown names raise ``TypeError`` (a programming error);
    bad values raise :class:`PbmlxError`."""
    unknown = set(overrides) - FIELDS
    if unknown:
        raise TypeError(f"not a sampler setting: {', '.join(sorted(unknown))}")
    if settings is not None and not isinstance(settings, SamplerSettings):
        raise PbmlxError(f"settings must be a SamplerSettings, not {type(settings).__name__}.")
    given = {k: v for k, v in overrides.items() if v is not None}
    if settings is None:
        return SamplerSettings(**given)
    return replace(settings, **given) if given else settings
