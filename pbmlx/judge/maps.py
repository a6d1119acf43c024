"""The judge's calibrated maps from measurements to [0, 1], as the runtime reads them.

``calibration.json`` beside this file (package data; the one runtime copy) holds the maps, the
unit of each adjust statistic and the held-out report. It is written by the offline fitting
tool ``tests/judge_fit.py`` (not part of this package); nothing here fits anything.

A map is logistic in its features ``f`` (:class:`LogisticMap`), ``p(f) = sigmoid(bias + sum_k
w_k f_k)``, and comes in two kinds:

* ``"defect"`` (every ``w_k <= 0``; each feature measures a defect, 0 meaning none): the score is
  relative to a defect-free edit, ``score(f) = p(f) / p(0) = sigmoid(bias + w.f) /
  sigmoid(bias)``. So an edit with no measured defect scores 1, the top of the scale, and each
  defect lowers it by the factor the fit gives it. ``p(0) < 1`` only says how many bad edits of
  the calibration set this criterion cannot see (a wrong direction has no seam): that is no
  reason to mark down an edit it sees nothing wrong with.
* ``"evidence"`` (the CLIP compliance map: more direction, more gain may only raise the score):
  ``score(f) = p(f)``.

``$PBMLX_JUDGE_CALIBRATION`` names a file of maps (what ``pbmlx judge-bench --fit-clip`` writes)
that replace packaged ones (:func:`load_params`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pbmlx.errors import PbmlxError

PARAMS_PATH = Path(__file__).with_name("calibration.json")
FORMAT = 1
USER_CALIBRATION_ENV = "PBMLX_JUDGE_CALIBRATION"  # a file of maps that replace packaged ones
KINDS = ("defect", "evidence")


def sigmoid(z: float) -> float:
    """``1 / (1 + exp(-z))``, without overflow for large ``|z|``."""
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@dataclass(frozen=True)
class LogisticMap:
    """``p(f) = sigmoid(bias + sum_k weights[k] * f[features[k]])``; the score is ``p(f) /
    p(0)`` for a ``"defect"`` map, ``p(f)`` for an ``"evidence"`` map (module docstring)."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    calibrated: bool = True
    kind: str = "defect"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"map kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "defect" and any(w > 0 for w in self.weights):
            raise ValueError("a defect map's weights must all be <= 0")

    def apply(self, f: dict[str, float]) -> tuple[float, dict[str, float]]:
        """(score, per-feature terms ``w_k f_k``); a feature missing from ``f`` counts as 0."""
        terms = {
            k: w * float(f.get(k, 0.0)) for k, w in zip(self.features, self.weights, strict=True)
        }
        p = sigmoid(self.bias + sum(terms.values()))
        if self.kind == "defect":
            # sum(terms) <= 0, so p <= p(0): the ratio lies in (0, 1]. min() guards rounding.
            p = min(1.0, p / sigmoid(self.bias))
        return p, terms

    def to_dict(self) -> dict:
        return {
            "features": list(self.features),
            "weights": [float(w) for w in self.weights],
            "bias": float(self.bias),
            "calibrated": self.calibrated,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: dict, kind: str | None = None) -> LogisticMap:
        """``kind`` overrides the dict's (a user file's map takes its packaged map's kind)."""
        return cls(
            tuple(d["features"]),
            tuple(float(w) for w in d["weights"]),
            float(d["bias"]),
            bool(d.get("calibrated", True)),
            kind or d.get("kind", "defect"),
        )


_OVERRIDE: dict | None = None  # set by `using` (the fitting tool evaluating new maps)


@functools.lru_cache(maxsize=1)
def _read_params_file() -> dict:
    try:
        params = json.loads(PARAMS_PATH.read_text())
    except FileNotFoundError:
        raise PbmlxError(
            f"The judge's calibration file {PARAMS_PATH} is missing (reinstall pbmlx, or run "
            "tests/judge_fit.py in a source checkout)."
        ) from None
    if params.get("format") != FORMAT:
        raise PbmlxError(f"The judge's calibration file {PARAMS_PATH} has an unknown format.")
    return params


@functools.lru_cache(maxsize=4)
def _with_user_maps(path: str) -> dict:
    """The packaged calibration with the maps of the user file ``path`` in place of its own.

    The file is what ``pbmlx judge-bench --fit-clip FILE`` writes: ``{"format": 1, "maps":
    {key: {"features", "weights", "bias", "calibrated"}}, ...}``. A map must name a packaged
    map and use only that map's features (the providers compute nothing else); it keeps the
    packaged map's kind.
    """
    where = f"Judge calibration file {path} (${USER_CALIBRATION_ENV})"
    try:
        user = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PbmlxError(f"{where} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PbmlxError(f"{where} is not readable JSON ({e}).") from None
    if (
        not isinstance(user, dict)
        or user.get("format") != FORMAT
        or not isinstance(user.get("maps"), dict)
    ):
        raise PbmlxError(f'{where} is not a judge calibration (format {FORMAT} with "maps").')
    params = _read_params_file()
    maps = dict(params["maps"])
    for key, d in user["maps"].items():
        if key not in maps:
            raise PbmlxError(f"{where} has an unknown map {key!r}.")
        try:
            lm = LogisticMap.from_dict(d, kind=maps[key].get("kind", "defect"))
        except (KeyError, TypeError, ValueError) as e:
            raise PbmlxError(f"{where}: map {key!r} is malformed ({e}).") from None
        unknown = set(lm.features) - set(maps[key]["features"])
        values = [*lm.weights, lm.bias]
        if unknown or len(lm.weights) != len(lm.features) or not all(map(math.isfinite, values)):
            raise PbmlxError(
                f"{where}: map {key!r} must give a finite weight for each of "
                f"{', '.join(maps[key]['features'])} (or some of them) and a finite bias."
            )
        maps[key] = lm.to_dict()
    return {**params, "maps": maps}


def load_params() -> dict:
    """The calibration in force: the one given to :func:`using` inside its block, else the
    packaged file (read once) with the maps of ``$PBMLX_JUDGE_CALIBRATION`` in place, if set."""
    if _OVERRIDE is not None:
        return _OVERRIDE
    user = os.environ.get(USER_CALIBRATION_ENV, "").strip()
    return _with_user_maps(user) if user else _read_params_file()


@contextlib.contextmanager
def using(params: dict) -> Iterator[None]:
    """Judge with ``params`` (the calibration file's layout) instead of the packaged file inside
    the block: how the fitting tool checks new maps through the full judge before writing them."""
    global _OVERRIDE
    old, _OVERRIDE = _OVERRIDE, params
    try:
        yield
    finally:
        _OVERRIDE = old


def load_map(key: str) -> LogisticMap:
    """The map ``key`` in force (e.g. ``"compliance/adjust"``, ``"quality"``)."""
    maps = load_params()["maps"]
    if key not in maps:
        raise PbmlxError(f"The judge's calibration file {PARAMS_PATH} has no map {key!r}.")
    return LogisticMap.from_dict(maps[key])


def stat_units() -> dict[str, float]:
    """The unit of each adjust statistic (:data:`pbmlx.judge.measure.STATS`): the change a
    moderate adjust op makes on a typical photo, so that statistics of different kinds add up."""
    return dict(load_params()["stat_units"])
