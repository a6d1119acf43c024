"""Pico-Banana-400K's 35 edit types in its 8 groups, and tolerant matching of their names.

The canonical names are the release's ``edit_type`` strings (``sft.jsonl`` writes e.g.
``"Remove an existing object"`` and ``"Change overall color tone (warm ↔ cool)"``); the groups
are those of the paper ("Pico-Banana-400K: A Large-Scale Dataset for Text-Guided Image Editing",
arXiv 2510.19808).

Matching a name (:func:`canonical_edit_type`), on :func:`edit_type_key` forms (lower case, ASCII
letters and digits, single spaces), first rule that gives exactly one type:

1. the key equals a type's key: case, punctuation and the arrow / slash spellings do not matter
   (``"change overall color tone warm/cool"`` is ``"Change overall color tone (warm ↔ cool)"``);
2. the key equals a type's key with its parenthesised part removed
   (``"Relocate an object"``, ``"Outpainting"``);
3. the key equals one of the paper's shorter names for the type (:data:`ALIASES`);
4. the key is a whole-word prefix, of at least two words, of exactly one type's key
   (``"change font style or color of visible text"``).

Anything else matches nothing: the caller keeps the name's key and the group ``"unknown"``,
never a guessed type.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pbmlx.errors import PbmlxError

UNKNOWN = "unknown"

# group -> its types, in the paper's order. The names are the release's strings.
EDIT_GROUPS: dict[str, list[str]] = {
    "Pixel & photometric": [
        "Change overall color tone (warm ↔ cool)",
        "Add film grain or vintage filter",
    ],
    "Object-level": [
        "Add a new object to the scene",
        "Remove an existing object",
        "Replace one object category with another",
        "Change an object's attribute (e.g., color/material)",
        "Relocate an object (change its position/spatial relation)",
        "Change the size/shape/orientation of an object",
    ],
    "Scene composition": [
        "Add new scene context/background",
        "Apply seasonal transformation (summer ↔ winter)",
        "Change weather conditions (sunny/rainy/snowy)",
        "Adjust global lighting (golden hour/fluorescent)",
    ],
    "Stylistic": [
        "Strong artistic style transfer (e.g., Van Gogh/anime/etc.)",
        "Photo to cartoon/sketch/comic",
        "Modern ↔ historical style/look",
    ],
    "Text & symbol": [
        "Replace text in signs/posters/billboards",
        "Add new (handwritten/printed/etc) text",
        "Change font style or color of visible text if there is text",
        "Translate written text into other languages",
    ],
    "Human-centric": [
        "Add/remove/replace accessories (glasses, hats, jewelry, masks)",
        "Clothing edit (change color/outfit)",
        "Pose tweak (minor plausible change)",
        "Modify expressions (smile, frown, neutral)",
        "Change age / gender",
        "Convert person to 2D anime/manga style (identity-preserving)",
        "Convert person to Pixar/Disney-like 3D cartoon look",
        "Convert person to Western comic cel-shaded style",
        "Line-art ink sketch of the person",
        "Sticker-ify the person with bold outline and white border",
        "Caricature with mild feature exaggeration (keep identity)",
        "Funko-Pop–style toy figure of the person",
        "LEGO-minifigure rendition of the person",
        "Simpsonize the person (yellow-skin cartoon style)",
    ],
    "Scale": ["Zoom in"],
    "Spatial/layout": ["Outpainting (extend canvas beyond boundaries)"],
}

# type -> group, in the same order.
EDIT_TYPES: dict[str, str] = {t: g for g, types in EDIT_GROUPS.items() for t in types}
assert len(EDIT_TYPES) == 35

# The paper's (and its README's) shorter names, where rules 1, 2 and 4 do not already reach them.
ALIASES: dict[str, str] = {
    "seasonal transformation": "Apply seasonal transformation (summer ↔ winter)",
    "change weather": "Change weather conditions (sunny/rainy/snowy)",
    "modern historical look": "Modern ↔ historical style/look",
    "add new text": "Add new (handwritten/printed/etc) text",
    "translate text": "Translate written text into other languages",
    "accessories": "Add/remove/replace accessories (glasses, hats, jewelry, masks)",
    "clothing": "Clothing edit (change color/outfit)",
    "pose tweak": "Pose tweak (minor plausible change)",
    "expression": "Modify expressions (smile, frown, neutral)",
    "age gender": "Change age / gender",
    "person to 2d anime": "Convert person to 2D anime/manga style (identity-preserving)",
    "person to pixar like 3d": "Convert person to Pixar/Disney-like 3D cartoon look",
    "western comic cel shading": "Convert person to Western comic cel-shaded style",
    "line art sketch": "Line-art ink sketch of the person",
    "sticker ify": "Sticker-ify the person with bold outline and white border",
    "caricature": "Caricature with mild feature exaggeration (keep identity)",
    "funko pop figure": "Funko-Pop–style toy figure of the person",
    "lego minifigure": "LEGO-minifigure rendition of the person",
    "simpsonize": "Simpsonize the person (yellow-skin cartoon style)",
    "outpainting": "Outpainting (extend canvas beyond boundaries)",
}

# Other spellings of the group names: the README's longer ones.
GROUP_ALIASES: dict[str, str] = {
    "object level semantic": "Object-level",
    "scene composition multi subject": "Scene composition",
    "scale perspective": "Scale",
    "spatial": "Spatial/layout",
    "layout": "Spatial/layout",
}


def edit_type_key(value: Any) -> str:
    """A grouping key for an edit type (or any name): Unicode compatibility-decomposed with the
    accents dropped, lower case, every run of characters other than ``a-z0-9`` one space,
    stripped; ``"unknown"`` for an empty value. ``"Add a new object"`` -> ``"add a new object"``,
    ``"add_new-object"`` -> ``"add new object"``, ``"warm ↔ cool"`` -> ``"warm cool"``."""
    text = unicodedata.normalize("NFKD", str(value if value is not None else "")).lower()
    return re.sub(r"[^a-z0-9]+", " ", text).strip() or UNKNOWN


def _without_parentheses(name: str) -> str:
    return edit_type_key(re.sub(r"\([^)]*\)", " ", name))


_BY_KEY: dict[str, str] = {edit_type_key(t): t for t in EDIT_TYPES}
_BY_SHORT_KEY: dict[str, str] = {_without_parentheses(t): t for t in EDIT_TYPES}
_BY_ALIAS: dict[str, str] = {edit_type_key(a): t for a, t in ALIASES.items()}
assert len(_BY_KEY) == len(_BY_SHORT_KEY) == 35 and set(_BY_ALIAS.values()) <= set(EDIT_TYPES)
_GROUP_BY_KEY: dict[str, str] = {edit_type_key(g): g for g in EDIT_GROUPS} | {
    edit_type_key(a): g for a, g in GROUP_ALIASES.items()
}


def canonical_edit_type(value: Any) -> str | None:
    """The canonical name (a key of :data:`EDIT_TYPES`) that ``value`` names, or None (see the
    module doc for the matching rules)."""
    key = edit_type_key(value)
    for table in (_BY_KEY, _BY_SHORT_KEY, _BY_ALIAS):
        if key in table:
            return table[key]
    if key.count(" ") >= 1:
        hits = {t for k, t in _BY_KEY.items() if k.startswith(key + " ")}
        if len(hits) == 1:
            return hits.pop()
    return None


def normalize_edit_type(value: Any) -> str:
    """The canonical name when ``value`` matches one of the 35 types, else its
    :func:`edit_type_key` (what :attr:`pbmlx.data.EditRecord.edit_type` holds)."""
    return canonical_edit_type(value) or edit_type_key(value)


def group_of(edit_type: Any) -> str:
    """The group (a key of :data:`EDIT_GROUPS`) of an edit type named tolerantly, or
    ``"unknown"``."""
    name = canonical_edit_type(edit_type)
    return EDIT_TYPES[name] if name is not None else UNKNOWN


def canonical_group(value: Any) -> str | None:
    """The group name (a key of :data:`EDIT_GROUPS`) that ``value`` names, matched on
    :func:`edit_type_key` forms (the README's longer names too), or None."""
    return _GROUP_BY_KEY.get(edit_type_key(value))


def resolve_edit_types(names: Any) -> frozenset[str] | None:
    """The canonical names of a filter's edit types (one name or an iterable of names), or None
    for no filter; a name that matches none of the 35 types raises PbmlxError."""
    if names is None:
        return None
    out = set()
    for n in [names] if isinstance(names, str) else list(names):
        t = canonical_edit_type(n)
        if t is None:
            raise PbmlxError(
                f"Edit type {n!r} is not one of Pico-Banana's 35 edit types "
                "(see pbmlx.data.EDIT_TYPES)."
            )
        out.add(t)
    return frozenset(out)


def resolve_groups(names: Any) -> frozenset[str] | None:
    """The canonical names of a filter's groups (one or an iterable), or None for no filter; a
    name that matches none of the 8 groups raises PbmlxError."""
    if names is None:
        return None
    out = set()
    for n in [names] if isinstance(names, str) else list(names):
        g = canonical_group(n)
        if g is None:
            raise PbmlxError(
                f"Edit group {n!r} is not one of Pico-Banana's 8 groups: {', '.join(EDIT_GROUPS)}."
            )
        out.add(g)
    return frozenset(out)
