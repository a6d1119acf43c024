"""The judge's verdict: four criterion scores, the rubric's weighted overall, accepted or not.

The rubric is Pico-Banana-400K's (``/work/shared/reference/pico-banana-400k.md``): instruction
compliance 0.40, seamlessness 0.25, preservation balance 0.20, technical quality 0.15; an
edit passes at an overall of about 0.7.

Honesty rules, enforced here in one place (:func:`combine`):

* a criterion that could not be scored (its model is missing, or the change it would measure
  is too small to see on this image) is ``None``, never a guess;
* then ``overall`` is ``None`` and ``accepted`` is ``None``: the rubric's score needs all four.
  ``details["partial"]`` is true, ``details["missing"]`` names the criteria, and
  ``details["partial_overall"]`` holds the weighted mean over the criteria that were scored
  (their weights renormalised to sum to 1), clearly labelled, for ranking attempts of the
  same edit against each other (:func:`pbmlx.judge.retry.choose_best`) -- not for accepting.

A verdict is deterministic: the same inputs give the same numbers (no timings inside).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

WEIGHTS: dict[str, float] = {
    "compliance": 0.40,
    "seamlessness": 0.25,
    "preservation": 0.20,
    "quality": 0.15,
}
CRITERIA: tuple[str, ...] = tuple(WEIGHTS)
DEFAULT_THRESHOLD = 0.7  # the rubric's pass mark
JSON_KEYS = (
    "compliance",
    "seamlessness",
    "preservation",
    "quality",
    "overall",
    "accepted",
    "details",
)
DIGITS = 4  # scores are reported to 1e-4: well below any difference that means something


def _clean(value: Any) -> Any:
    """Round floats for reporting; make numpy scalars and tuples JSON-ready."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) or hasattr(value, "dtype"):
        v = float(value)
        return round(v, 5) if math.isfinite(v) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class CriterionScore:
    """One criterion's score in [0, 1] (or None: not available), with its evidence.

    ``raw`` holds the raw measurements the score was computed from (and the calibrated
    mapping's per-feature terms); ``explanation`` is one line a person can read;
    ``provider`` names what produced it (e.g. ``"adjust-statistics"``, ``"clip"``);
    ``calibrated`` is False when the mapping to [0, 1] was not fitted on labelled data.
    """

    score: float | None
    raw: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""
    provider: str = ""
    calibrated: bool = True

    def __post_init__(self) -> None:
        if self.score is not None and not (0.0 <= self.score <= 1.0 and math.isfinite(self.score)):
            raise ValueError(f"criterion score {self.score!r} is outside [0, 1]")

    def to_dict(self) -> dict:
        return {
            "score": None if self.score is None else round(self.score, DIGITS),
            "provider": self.provider,
            "calibrated": self.calibrated,
            "explanation": self.explanation,
            "raw": _clean(self.raw),
        }


@dataclass(frozen=True)
class Verdict:
    """The judge's answer. ``to_dict()`` has exactly the keys in :data:`JSON_KEYS`."""

    compliance: float | None
    seamlessness: float | None
    preservation: float | None
    quality: float | None
    overall: float | None
    accepted: bool | None
    details: dict[str, Any]

    @property
    def partial(self) -> bool:
        return bool(self.details.get("partial", False))

    @property
    def rank_score(self) -> float:
        """What attempts are ranked by: ``overall``, else the labelled partial overall, else 0."""
        if self.overall is not None:
            return self.overall
        p = self.details.get("partial_overall")
        return float(p) if p is not None else 0.0

    def scores(self) -> dict[str, float | None]:
        return {c: getattr(self, c) for c in CRITERIA}

    def to_dict(self) -> dict:
        return {
            "compliance": self.compliance,
            "seamlessness": self.seamlessness,
            "preservation": self.preservation,
            "quality": self.quality,
            "overall": self.overall,
            "accepted": self.accepted,
            "details": self.details,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """A few lines for people: each criterion with its explanation, then the outcome."""
        lines = []
        for c in CRITERIA:
            d = self.details.get(c, {})
            v = getattr(self, c)
            shown = "n/a " if v is None else f"{v:.2f}"
            lines.append(f"{c:<13} {shown}  {d.get('explanation', '')}")
        if self.overall is None:
            p = self.details.get("partial_overall")
            part = (
                f" (partial, over {', '.join(self.details.get('scored', []))}: {p:.2f})"
                if p is not None
                else ""
            )
            lines.append(
                f"{'overall':<13} n/a {part}; not accepted or rejected: {', '.join(self.details.get('missing', []))} not available"
            )
        else:
            verdict = "ACCEPTED" if self.accepted else "REJECTED"
            lines.append(
                f"{'overall':<13} {self.overall:.2f}  {verdict} (threshold {self.details.get('threshold')})"
            )
        return "\n".join(lines)


def combine(
    scores: dict[str, CriterionScore],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    extra: dict[str, Any] | None = None,
) -> Verdict:
    """Weigh the four criteria into a :class:`Verdict` (see the module docstring for partials).

    ``overall = sum_c WEIGHTS[c] * score_c`` over the four criteria; ``accepted = overall >=
    threshold``. ``extra`` is merged into ``details`` (instruction, route, alignment, ...).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold!r} is outside [0, 1]")
    missing = [c for c in CRITERIA if c not in scores or scores[c].score is None]
    scored = [c for c in CRITERIA if c not in missing]
    details: dict[str, Any] = {}
    for c in CRITERIA:
        s = scores.get(c) or CriterionScore(None, explanation="no provider scored this criterion")
        details[c] = s.to_dict()
    values = {c: round(scores[c].score, DIGITS) for c in scored}  # type: ignore[arg-type]
    overall: float | None = None
    accepted: bool | None = None
    partial_overall: float | None = None
    if not missing:
        overall = round(sum(WEIGHTS[c] * values[c] for c in CRITERIA), DIGITS)
        accepted = overall >= threshold
    elif scored:
        w = sum(WEIGHTS[c] for c in scored)
        partial_overall = round(sum(WEIGHTS[c] * values[c] for c in scored) / w, DIGITS)
    details.update(
        {
            "partial": bool(missing),
            "missing": missing,
            "scored": scored,
            "partial_overall": partial_overall,
            "weights": dict(WEIGHTS),
            "threshold": threshold,
        }
    )
    if extra:
        details.update(_clean(extra))
    return Verdict(
        values.get("compliance"),
        values.get("seamlessness"),
        values.get("preservation"),
        values.get("quality"),
        overall,
        accepted,
        details,
    )
