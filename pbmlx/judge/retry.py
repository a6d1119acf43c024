"""Retries gated by the judge: try several seeds, keep the best verdict, stop once one passes.

This is what ``pbmlx edit ... --best-of N [--min-score S]`` runs on the diffusion route (the
edit flow owns the editor; it hands :func:`run_attempts` a function that makes one attempt
for a seed):

* ``--best-of N`` alone: N attempts with seeds ``seed, seed + 1, ...``; the best is kept.
* ``--min-score S``: attempts stop at the first whose ``overall >= S`` (up to N, 3 by default
  as in Pico-Banana-400K); if none reaches it, the best of all is kept and reported as not
  accepted.

"Best" is :func:`choose_best`: the highest ``overall`` among complete verdicts; if no verdict
is complete (a criterion's model is missing), the highest labelled partial overall, and the
choice says so (``partial: true``). Ties go to the earlier attempt (fewer seeds to reproduce).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pbmlx.errors import PbmlxError
from pbmlx.judge.verdict import Verdict

DEFAULT_ATTEMPTS = 3  # Pico-Banana-400K's generator had up to 3 attempts per edit


@dataclass(frozen=True)
class Attempt:
    """One attempt: its seed, the image it made, and the judge's verdict on it."""

    seed: int | None
    image: Any
    verdict: Verdict

    def to_dict(self) -> dict:
        v = self.verdict
        return {
            "seed": self.seed,
            "overall": v.overall,
            "partial_overall": v.details.get("partial_overall"),
            "accepted": v.accepted,
            **{c: getattr(v, c) for c in ("compliance", "seamlessness", "preservation", "quality")},
        }


@dataclass(frozen=True)
class Choice:
    """The attempt kept, among all attempts made (in order)."""

    index: int
    attempts: list[Attempt]
    min_score: float | None = None
    partial: bool = False  # chosen by partial overalls: no verdict had all four criteria
    notes: list[str] = field(default_factory=list)

    @property
    def attempt(self) -> Attempt:
        return self.attempts[self.index]

    @property
    def verdict(self) -> Verdict:
        return self.attempt.verdict

    @property
    def image(self) -> Any:
        return self.attempt.image

    @property
    def reached_min_score(self) -> bool | None:
        """Whether the kept attempt reaches ``min_score`` (None: no min score, or no overall)."""
        o = self.verdict.overall
        if self.min_score is None or o is None:
            return None
        return o >= self.min_score

    def to_dict(self) -> dict:
        """For ``--json``: the chosen attempt's full verdict and every attempt's scores."""
        return {
            "chosen": self.index,
            "seed": self.attempt.seed,
            "verdict": self.verdict.to_dict(),
            "min_score": self.min_score,
            "reached_min_score": self.reached_min_score,
            "partial": self.partial,
            "attempts": [a.to_dict() for a in self.attempts],
        }


def choose_best(
    attempts: Sequence[Attempt] | Sequence[tuple[Any, Verdict]], min_score: float | None = None
) -> Choice:
    """The best of ``attempts`` (``Attempt`` objects or ``(image, verdict)`` pairs).

    Complete verdicts (all four criteria) are ranked by ``overall``; only if there is none are
    the labelled partial overalls used. Ties go to the earliest attempt.
    """
    if not attempts:
        raise PbmlxError("choose_best needs at least one attempt.")
    items = [a if isinstance(a, Attempt) else Attempt(None, a[0], a[1]) for a in attempts]
    complete = [i for i, a in enumerate(items) if a.verdict.overall is not None]
    pool = complete or list(range(len(items)))
    best = max(pool, key=lambda i: (items[i].verdict.rank_score, -i))
    notes = []
    if not complete:
        missing = sorted({c for a in items for c in a.verdict.details.get("missing", [])})
        notes.append(
            f"no attempt could be fully judged ({', '.join(missing)} not available): chosen by partial overall"
        )
    return Choice(best, items, min_score, partial=not complete, notes=notes)


def run_attempts(
    generate: Callable[[int], Any],
    judge_one: Callable[[Any], Verdict],
    *,
    seed: int = 0,
    attempts: int = DEFAULT_ATTEMPTS,
    min_score: float | None = None,
) -> Choice:
    """Make up to ``attempts`` edits with seeds ``seed, seed + 1, ...`` and keep the best.

    Only the chosen attempt keeps its image (``Choice.image``); the others keep their seed and
    verdict, with ``image`` None.

    ``generate(seed)`` makes one edited image; ``judge_one(image)`` judges it (e.g.
    ``lambda im: judge(source, im, instruction)``). With ``min_score``, stops at the first
    attempt whose ``overall >= min_score``.
    """
    if attempts < 1:
        raise PbmlxError(f"The number of attempts must be at least 1, got {attempts}.")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise PbmlxError(f"The minimum score {min_score!r} is outside [0, 1].")
    done: list[Attempt] = []
    for k in range(attempts):
        s = seed + k
        image = generate(s)
        verdict = judge_one(image)
        done.append(Attempt(s, image, verdict))
        # Only the best image so far is kept (a 12 MP float result is ~150 MB); the others'
        # seeds and verdicts stay, so every attempt is still reported and reproducible.
        best = choose_best(done).index
        done = [a if i == best else replace(a, image=None) for i, a in enumerate(done)]
        if min_score is not None and verdict.overall is not None and verdict.overall >= min_score:
            break
    return choose_best(done, min_score)
