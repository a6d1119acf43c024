"""The local judge: score an edit on the Pico-Banana-400K rubric, explain it, gate retries.

``pbmlx.judge(source, edited, instruction)`` returns a :class:`Verdict`: compliance,
seamlessness, preservation and quality in [0, 1] (or None when not available), the weighted
overall (0.40 / 0.25 / 0.20 / 0.15), ``accepted`` (overall >= 0.7 by default) and ``details``
(each criterion's raw measurements and one-line explanation).

Where things are:

- :mod:`pbmlx.judge.core` -- :func:`judge` and :class:`Judge` (the steps, CLIP loading);
- :mod:`pbmlx.judge.measure` -- raw measurements: alignment, SSIM, statistics, artifacts;
- :mod:`pbmlx.judge.criteria` -- the providers (one per criterion, pluggable);
- :mod:`pbmlx.judge.maps` -- the calibrated maps to [0, 1] (``calibration.json``, written
  offline by ``tests/judge_fit.py``, which is not part of the package);
- :mod:`pbmlx.judge.fitting` -- the logistic fit (``judge-bench --fit-clip`` and the tool only);
- :mod:`pbmlx.judge.verdict` -- weights, the verdict, its JSON;
- :mod:`pbmlx.judge.retry` -- best-of-N / min-score over seeds;
- :mod:`pbmlx.judge.bench` -- agreement with Pico-Banana preference pairs;
- :mod:`pbmlx.judge.command` -- the ``judge`` and ``judge-bench`` commands.

This package is also callable: ``pbmlx.judge(...)`` is :func:`judge` (the package and the
function share the public name, and importing the package would otherwise shadow the function
on ``pbmlx``).
"""

from __future__ import annotations

import sys
import types

from pbmlx.judge.core import DEFAULT_CLIP, Judge, judge, load_clip
from pbmlx.judge.criteria import JudgeContext, Provider
from pbmlx.judge.retry import Attempt, Choice, choose_best, run_attempts
from pbmlx.judge.verdict import (
    CRITERIA,
    DEFAULT_THRESHOLD,
    WEIGHTS,
    CriterionScore,
    Verdict,
)

__all__ = [
    "CRITERIA",
    "DEFAULT_CLIP",
    "DEFAULT_THRESHOLD",
    "WEIGHTS",
    "Attempt",
    "Choice",
    "CriterionScore",
    "Judge",
    "JudgeContext",
    "Provider",
    "Verdict",
    "choose_best",
    "judge",
    "load_clip",
    "run_attempts",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Verdict:
        return judge(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
