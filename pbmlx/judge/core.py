"""``judge(source, edited, instruction)``: prepare the pair, ask the providers, weigh the rubric.

The steps:

1. read both images (paths, PIL images or arrays; sizes may differ) and register the edited
   image on the source (:func:`pbmlx.judge.measure.prepare_pair`);
2. plan the instruction (:func:`pbmlx.plan.plan`): the route and, for ``adjust``, the exact
   ops; the extent of change it allows (:func:`pbmlx.judge.criteria.instruction_extent`);
3. for each criterion, the first provider that applies scores it
   (:mod:`pbmlx.judge.criteria`); a provider whose model is missing says "not available";
4. :func:`pbmlx.judge.verdict.combine` weighs them (0.40 / 0.25 / 0.20 / 0.15) and decides
   ``accepted`` at the threshold, or leaves both null when a criterion is missing.

The CLIP model (compliance of generative edits) is loaded by :func:`load_clip`: a folder or
hub id given explicitly, else :data:`DEFAULT_CLIP` only if it is already in the local Hugging
Face cache (the judge never downloads anything on its own).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pbmlx import hub
from pbmlx.errors import PbmlxError
from pbmlx.judge import criteria
from pbmlx.judge import measure as m
from pbmlx.judge.verdict import CRITERIA, DEFAULT_THRESHOLD, CriterionScore, Verdict, combine
from pbmlx.plan import plan

DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # the small CLIP: 151M parameters, ~600 MB


# Looked up here by name, so tests can stand in an empty cache.
_cached_hub_folder = hub.cached_snapshot


@functools.lru_cache(maxsize=4)
def _load_clip_cached(where: str) -> Any:
    try:
        from pbmlx.models.clip import CLIPModel
    except ImportError as e:
        raise PbmlxError(
            f"The CLIP model {where!r} cannot be loaded: this pbmlx has no MLX CLIP ({e})."
        ) from None
    return CLIPModel.from_pretrained(where)


def load_clip(model: str | Path | None) -> tuple[Any | None, str]:
    """(CLIP model or None, why not). ``model``: a folder or hub id, or None for the default
    if it is cached locally. An explicit model that fails to load raises PbmlxError."""
    if model is not None:
        return _load_clip_cached(str(model)), ""
    folder = _cached_hub_folder(DEFAULT_CLIP)
    if folder is None:
        return None, (
            f"no CLIP model: pass --model CLIP_DIR_OR_ID (e.g. {DEFAULT_CLIP}, downloaded once) "
            "to score generative edits"
        )
    try:
        return _load_clip_cached(str(folder)), ""
    except PbmlxError as e:
        return None, str(e)


class Judge:
    """A configured judge (providers and CLIP loaded once), reusable across many pairs.

    ``model``: a CLIP folder / hub id, an already loaded object with ``encode_image`` and
    ``encode_text`` (see :class:`pbmlx.judge.criteria.ClipCompliance`), or None (the default
    CLIP if cached). ``providers``: replaces the built-in list (first applicable wins per
    criterion); ``extra_providers`` are asked before the built-in ones.
    """

    def __init__(
        self,
        *,
        model: Any = None,
        threshold: float = DEFAULT_THRESHOLD,
        providers: Sequence[criteria.Provider] | None = None,
        extra_providers: Sequence[criteria.Provider] = (),
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise PbmlxError(f"The judge threshold {threshold!r} is outside [0, 1].")
        self.threshold = threshold
        if providers is None:
            if model is None or isinstance(model, (str, Path)):
                clip, why = load_clip(model)
            else:
                clip, why = model, ""
            providers = criteria.default_providers(criteria.ClipCompliance(clip, why))
        self.providers = [*extra_providers, *providers]
        for p in self.providers:
            if not isinstance(p, criteria.Provider) or p.criterion not in CRITERIA:
                raise PbmlxError(f"Judge provider {p!r} is not a criterion provider.")

    def context(
        self, source: Any, edited: Any, instruction: str, edit_type: str | None = None
    ) -> criteria.JudgeContext:
        if not isinstance(instruction, str) or not instruction.strip():
            raise PbmlxError("The judge needs a non-empty instruction.")
        pair = m.prepare_pair(source, edited)
        p = plan(instruction)
        extent = criteria.instruction_extent(instruction, p, edit_type)
        return criteria.JudgeContext(pair, instruction, p, extent, edit_type)

    def __call__(
        self, source: Any, edited: Any, instruction: str, *, edit_type: str | None = None
    ) -> Verdict:
        ctx = self.context(source, edited, instruction, edit_type)
        scores: dict[str, CriterionScore] = {}
        for c in CRITERIA:
            for prov in self.providers:
                if prov.criterion == c and prov.applies(ctx):
                    scores[c] = prov.score(ctx)
                    break
        p = ctx.pair
        extra = {
            "instruction": instruction,
            "route": ctx.plan.route,
            "ops": [{"op": o["op"], "amount": o["amount"]} for o in ctx.plan.ops],
            "extent": ctx.extent,
            "edit_type": edit_type,
            "alignment": p.alignment.to_dict(),
            "sizes": {
                "source": [p.source.shape[1], p.source.shape[0]],
                "edited": [p.edited.shape[1], p.edited.shape[0]],
                "working": [p.source_w.shape[1], p.source_w.shape[0]],
            },
        }
        return combine(scores, threshold=self.threshold, extra=extra)


def judge(
    source: Any,
    edited: Any,
    instruction: str,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    model: Any = None,
    edit_type: str | None = None,
    providers: Sequence[criteria.Provider] | None = None,
) -> Verdict:
    """Score ``edited`` as an edit of ``source`` by ``instruction`` on the Pico-Banana rubric.

    ``source``/``edited``: paths, PIL images or numpy arrays (sizes may differ: the edited
    image is registered on the source). ``model``: CLIP folder/hub id or loaded model for the
    compliance of generative edits (default: the cached default CLIP, else not available).
    ``edit_type``: a Pico-Banana edit type, used to tell local from global edits.
    Returns a :class:`~pbmlx.judge.verdict.Verdict`; deterministic.
    """
    return Judge(model=model, threshold=threshold, providers=providers)(
        source, edited, instruction, edit_type=edit_type
    )
