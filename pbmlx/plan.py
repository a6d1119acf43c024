"""Plan an edit: turn a plain-language instruction into an :class:`EditPlan`.

An instruction takes one of two routes. ``"adjust"`` runs exact global ops
(:mod:`pbmlx.adjust.specs`): "brighten this picture", "add film grain and a vignette",
"make it look vintage". ``"diffusion"`` hands it to the generative editor: anything local or
semantic ("blur the background", "add a hat", "make it snow", "Van Gogh style"), and anything
the planner does not fully understand. The planner is deterministic, offline and pure Python.

How an instruction is read
--------------------------
0. **Before the words.** An instruction with more words of another language than English ones
   (or letters outside a-z) is refused with a reason saying only English is understood. A word
   the lexicon (:mod:`pbmlx.lexicon`) does not know is read as the known word one typo away
   (two from 8 letters) when exactly one meaning fits, and the reason says 'did you mean'; after
   "the", "my", ... only a noun can be the fix ("the shark" never becomes "sharp"). What
   describes the photo itself is dropped: the words between a definite determiner and a photo
   noun ("my vacation photo", "this sunset picture") and what follows "of", "from", "I took"
   after one ("this photo of my cat"), so a global edit is global whatever the photo shows;
   "brighten the cat (in this photo)" is still local.
1. **Words.** The text is lower-cased and normalised ("colour" -> "color", "b&w" -> "black and
   white", "it's" -> "it is"), then split into tokens. Quantities with a unit are read first
   ("by one stop", "+1 EV", "20%", "30 degrees", "half a stop"), then the longest phrase in
   :data:`LEXICON` at each position ("black and white" before "black"). Each phrase has a
   *role*: an op word ("brighter", "grain"), a tonal *target* ("the shadows"), a *look* (a
   preset: "vintage"), a *modifier* of direction ("more", "reduce", "soften"), a *magnitude*
   ("slightly", "a lot"), a negation ("don't", "without", "keep"), a boundary, or filler.
   Some words read their neighbours: "left"/"right" in a clause with "rotate" are its
   direction, "vertically"/"upside down" make a flip vertical.
2. **Closed world (locality).** Only the global ops can be planned here, so every word must be
   understood. A word naming a part of the picture, a person, a style, the weather, text or
   layout (:data:`SEMANTIC`), or any word not in the lexicon, sends the whole instruction to
   diffusion: a global op is never applied to a local request ("brighten the face", "make the
   sky bluer"), and an instruction is never guessed at.
3. **Clauses, items, chains.** Sentence punctuation and "then / but / just / without" end a
   clause; "and", "or", "with" and commas separate *items* inside it ("brighter and more
   contrast"). An item that starts with its own verb ("and add grain") starts a new *chain*;
   an item that does not ("reduce brightness and contrast", "slightly brighter and warmer")
   shares its chain's direction, magnitude, number ("increase brightness and contrast by 20%")
   and negation ("no grain or vignette"). Comparatives ("warmer") keep their own direction.
4. **Direction.** An op word carries a direction ("darker" is brightness -). Modifiers
   multiply it ("less warm", "reduce the darkness" -> brighten); "too" and a description of
   the photo with no request in it ("it is too dark", "the colors look dull") ask for the
   opposite, except words that already name the fix ("overexposed"); "not bright enough"
   asks for more. A setting named without a direction ("change the contrast") is ambiguous and
   goes to diffusion, unless it has an automatic correction and the chain says "fix",
   "correct", ... or names nothing else ("fix the exposure" -> auto_exposure, "white balance"
   -> auto_white_balance, "reduce noise" -> denoise, "remove the haze" -> dehaze). When the direction is negative an op word uses its ``less`` meaning
   ("less sharp" -> blur); where no op can do it ("remove the grain"), the instruction goes
   to diffusion.
5. **Targets.** "shadows", "highlights", "midtones", "corners" name a tonal range; a
   brightness word next to one moves that range instead of the whole image ("brighten the
   shadows" -> shadows +, "darken the corners" -> vignette +, "recover the highlights" ->
   highlights -).
6. **Amounts.** Without a number an op gets ``spec.moderate`` times the magnitude factor
   (:data:`MAGNITUDES`: "slightly" 0.5, "a lot" 2, ...). Numbers: "20%" is 0.2 for fraction
   and strength ops, ``log2(1 +/- p)`` stops for exposure and ``p * 360`` degrees for hue;
   stops and EV set exposure (and turn "brighten" into exposure); degrees set hue; a bare
   number is literal when within the op's range, else read as a slider percent ("contrast
   +20" -> 0.2). Looks scale every preset amount by the factor. A magnitude after the last op
   of a list covers the list ("brightness, contrast and saturation a little"); one with no op
   of its own joins the op before it ("brighten it, but just a little"). Angles wrap (hue +400
   degrees is +40); everything else is clamped to the op's range, and the reason says so.
   Geometry is exact, never scaled by a magnitude: "rotate" takes degrees counter-clockwise
   ("clockwise"/"right" is -90, "upside down" 180), a crop a ratio ("16:9", "square"), a scale a
   factor ("2x", "twice as big", "enlarge by 50%"), and a size ("2000 px", "4k", "1080p") makes
   it a resize of the long side; a quantity with no op word names the op of its unit.
7. **Negation.** A negation covers the op words after it up to the end of its chain ("don't
   change the colors, just brighten it"; "brighten it without making it warmer"). The plan
   leaves those ops out, including ops a look would have added ("a film look, no grain"): in
   the negated direction only for a word with one ("don't brighten it, darken it"), in both
   for a noun or a look ("don't touch the saturation").
8. **Merging.** When an op is asked for more than once, a mention with a stated amount beats
   a plain one, which beats a look's amount; among equals the last wins. Ops keep the order
   of their first mention. An instruction that only says what to leave alone ("don't make it
   brighter", "leave it as it is") is a no-op plan: route "adjust", no ops, and a reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pbmlx.adjust.presets import PRESETS
from pbmlx.adjust.specs import SPECS
from pbmlx.errors import PbmlxError
from pbmlx.lexicon import (
    CONTRACTIONS,
    DECADE_LOOK,
    FILLER,
    FLIP_VERTICAL,
    FOREIGN,
    K_PIXELS,
    LEFT_TURN,
    LEXICON,
    MAGNITUDES,
    MAX_PHRASE,
    NUMBER_WORDS,
    RIGHT_TURN,
    SEMANTIC,
    UNITS,
    Word,
    look,
    op,
)

__all__ = ["LEXICON", "MAGNITUDES", "SEMANTIC", "EditPlan", "Word", "plan"]

Route = Literal["adjust", "diffusion"]


# The start of the reason of a plan refused for not being English (the edit flow refuses such
# instructions whatever the engine: the editor reads English only too).
ENGLISH_ONLY = "Instructions are understood in English only"


@dataclass(frozen=True)
class EditPlan:
    """What to do with one instruction.

    ``route`` is ``"adjust"`` (apply ``ops`` in order, each ``{"op": NAME, "amount": float}``
    with NAME in :data:`SPECS` and the amount inside its range) or ``"diffusion"`` (``ops`` is
    empty). ``reason`` is one sentence saying which words led to which ops, or why the
    instruction goes to the editor.
    """

    instruction: str
    route: Route
    ops: list[dict] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-ready ``{"instruction", "route", "ops", "reason"}``."""
        return {
            "instruction": self.instruction,
            "route": self.route,
            "ops": [{"op": o["op"], "amount": o["amount"]} for o in self.ops],
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict) -> EditPlan:
        """The inverse of :meth:`to_dict`; op names and amounts are checked against SPECS."""
        if not isinstance(data, dict) or set(data) != {"instruction", "route", "ops", "reason"}:
            raise PbmlxError(
                "An edit plan must be an object with exactly the keys instruction, route, ops, reason."
            )
        if data["route"] not in ("adjust", "diffusion"):
            raise PbmlxError(f"Edit plan route {data['route']!r} is not 'adjust' or 'diffusion'.")
        ops = []
        for o in data["ops"]:
            name, amount = o.get("op"), o.get("amount")
            if name not in SPECS:
                raise PbmlxError(f"Edit plan op {name!r} is not one of the adjust ops.")
            spec = SPECS[name]
            if not isinstance(amount, (int, float)) or not spec.min <= amount <= spec.max:
                raise PbmlxError(
                    f"Edit plan amount {amount!r} for {name} is outside [{spec.min}, {spec.max}]."
                )
            ops.append({"op": name, "amount": float(amount)})
        return cls(str(data["instruction"]), data["route"], ops, str(data["reason"]))


# ---------------------------------------------------------------------------------------------
# Words -> lexemes
# ---------------------------------------------------------------------------------------------


_TOKEN = re.compile(
    r"(?P<ratio>\d+(?:\.\d+)?\s*[:x]\s*\d+(?:\.\d+)?(?![\d.]))"
    r"|(?P<decade>'?\d{2,4}s\b)"
    r"|(?P<num>[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?)"
    r"|(?P<word>[a-z]+(?:'[a-z]+)?)"
    r"|(?P<sym>[%°,.;:!?])"
)


@dataclass(frozen=True)
class Lexeme:
    """One understood phrase of the instruction (``word`` None: not understood)."""

    text: str
    word: Word | None
    value: float | None = None  # quantities
    unit: str | None = None  # a unit of UNITS ("percent", "ev", "degrees", "px", ...), "ratio"
    #                         ("16:9", value 16/9) or None (a bare number)
    at: int = field(default=-1, compare=False)  # index of its first token; -1: made up

    @property
    def role(self) -> str:
        if self.value is not None:
            return "quantity"
        return self.word.role if self.word is not None else "unknown"


def _normalize(text: str) -> str:
    t = text.lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    t = re.sub(r"[\u201c\u201d\"()\[\]]", " ", t)
    t = re.sub(r"[\u2014\u2013]|\s-\s", ", ", t)
    t = t.replace("\u2026", ".").replace("\u00d7", "x")
    t = re.sub(r"\bb\s*[&/]\s*w\b", " black and white ", t)
    t = t.replace("&", " and ")
    t = re.sub(r"(?<=[a-z])[-_/](?=[a-z])", " ", t)  # black-and-white, mid-tones
    t = re.sub(r"colour", "color", t)
    t = re.sub(r"\bgrey", "gray", t)
    for pattern, repl in CONTRACTIONS:
        t = re.sub(pattern, repl, t)
    return t


def _tokens(text: str) -> list[str]:
    return [m.group(0) for m in _TOKEN.finditer(_normalize(text))]


def _number(tok: str) -> float | None:
    """A token as a finite number ("0.5", "+20", "1/3"), else None."""
    try:
        if "/" in tok:
            a, b = tok.split("/")
            value = float(a) / float(b)
        else:
            value = float(tok)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


_FRACTION_GLUE = ("half", "quarter", "third", "of")


def _read_quantity(toks: list[str], i: int) -> tuple[float, str, int] | None:
    """A number followed by a unit at ``toks[i]``: (value, unit, tokens used) or None.

    Digits or number words ("one", "two and a half", "half a", "a"), an optional
    "minus"/"plus", then one of :data:`UNITS`.
    """
    j, sign = i, 1.0
    if j < len(toks) and toks[j] in ("minus", "negative", "plus"):
        sign = -1.0 if toks[j] != "plus" else 1.0
        j += 1
    value = _number(toks[j]) if j < len(toks) else None
    if value is not None:
        j += 1
    else:
        total, start = 0.0, j
        while j < len(toks):
            t = toks[j]
            if t in NUMBER_WORDS and t != "hundred":
                total += NUMBER_WORDS[t]
            elif t == "hundred":
                total = max(total, 1.0) * 100
            elif t in ("a", "an") and j == start:
                fraction = j + 1 < len(toks) and toks[j + 1] in ("half", "quarter", "third")
                total = 0.0 if fraction else 1.0
            elif t == "and" and toks[j + 1 : j + 3] == ["a", "half"]:
                total += 0.5
                j += 3
                continue
            elif t in ("a", "an", "of") and j > start and toks[j - 1] in _FRACTION_GLUE:
                pass  # "half a stop", "a third of a stop"
            else:
                break
            j += 1
        if j == start:
            return None
        value = total
    for unit, name in UNITS.items():
        if tuple(toks[j : j + len(unit)]) == unit:
            return sign * value, name, j + len(unit) - i
    return None


def _lex(toks: list[str]) -> list[Lexeme]:
    """Tokens -> lexemes: ratios and quantities with units, then longest lexicon phrases, then
    numbers."""
    out: list[Lexeme] = []
    i = 0
    while i < len(toks):
        start, tok = i, toks[i]
        ratio = re.fullmatch(r"([\d.]+)\s*[:x]\s*([\d.]+)", tok)
        if ratio and _number(ratio.group(1)) and _number(ratio.group(2)):
            value = _number(ratio.group(1)) / _number(ratio.group(2))
            out.append(Lexeme(re.sub(r"\s+", "", tok), None, value, "ratio", at=start))
            i += 1
            continue
        q = _read_quantity(toks, i)
        if q is not None:
            value, unit, used = q
            text = re.sub(r" (?=[%°])", "", " ".join(toks[i : i + used]))
            out.append(Lexeme(text, None, value, unit, at=start))
            i += used
            continue
        for n in range(min(MAX_PHRASE, len(toks) - i), 0, -1):
            word = LEXICON.get(tuple(toks[i : i + n]))
            if word is not None:
                out.append(Lexeme(" ".join(toks[i : i + n]), word, at=start))
                i += n
                break
        else:
            decade = re.fullmatch(r"'?(\d{2,4})s", tok)
            value = _number(tok)
            if decade:
                year = int(decade.group(1))
                year = year + 1900 if year < 100 else year
                name = DECADE_LOOK.get(year - year % 10) or DECADE_LOOK.get(year - year % 50)
                out.append(Lexeme(tok, look(name) if name else None, at=start))
            elif value is not None:
                out.append(Lexeme(tok, None, value, None, at=start))
            else:
                out.append(Lexeme(tok, None, at=start))
            i += 1
    return out


# ---------------------------------------------------------------------------------------------
# Before reading: the language, typos, words that change meaning in context, the photo's
# description
# ---------------------------------------------------------------------------------------------

# Every token the planner knows, alone or inside a phrase.
_VOCAB = frozenset(
    {tok for phrase in LEXICON for tok in phrase}
    | set(NUMBER_WORDS)
    | {tok for unit in UNITS for tok in unit}
    | {"minus", "negative", "plus", "per", "cent"}
)


def _not_english(instruction: str) -> str | None:
    """Why the instruction is refused as not English, or None.

    A word is foreign when it has a letter outside a-z ("más", "照片") or is a common word of
    another language (:data:`FOREIGN`) that the lexicon does not also know; English when the
    lexicon knows it. More foreign words than English ones is another language.
    """
    words = re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", instruction.lower())
    # A word of both ("plus", "de") says nothing either way.
    foreign = [w for w in words if not w.isascii() or (w in FOREIGN and w not in _VOCAB)]
    english = [w for w in words if w.isascii() and w in _VOCAB and w not in FOREIGN]
    if not foreign or len(foreign) <= len(english):
        return None
    return (
        f"{ENGLISH_ONLY}, and {instruction.strip()!r} does not read"
        ' as English; say it in English, e.g. "make it brighter" or "rotate 90 degrees".'
    )


def _deletes(word: str, depth: int) -> set[str]:
    """``word`` with up to ``depth`` letters deleted (the keys of the typo index)."""
    out, frontier = {word}, {word}
    for _ in range(depth):
        frontier = {w[:k] + w[k + 1 :] for w in frontier for k in range(len(w))}
        out |= frontier
    return out


def _typo_depth(word: str) -> int:
    """How many edits a word of this length may be off by: 2 from 8 letters, else 1."""
    return 2 if len(word) >= 8 else 1


@lru_cache(maxsize=1)
def _typo_index() -> dict[str, tuple[str, ...]]:
    """Deletion variants -> known words: two words within k edits share a variant with k or
    fewer deletions, so lookups need no scan of the vocabulary."""
    index: dict[str, list[str]] = {}
    for word in sorted(_VOCAB):
        if word.isalpha() and len(word) >= 3:
            for key in _deletes(word, 2 if len(word) >= 6 else 1):
                index.setdefault(key, []).append(word)
    return {k: tuple(v) for k, v in index.items()}


def _edits(a: str, b: str) -> int:
    """Edit distance with adjacent transpositions (optimal string alignment)."""
    before, row = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(row[j] + 1, cur[j - 1] + 1, row[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], before[j - 2] + 1)
        before, row = row, cur
    return row[-1]


# After these a word is a noun: "the shark" is never read as "sharp", "the tower" as "lower".
_NOUN_CONTEXT = {"the", "this", "that", "these", "those", "my", "your", "our", "his", "her"}
_NOUN_CONTEXT |= {"their", "its"}


def _nounish(word: str) -> bool:
    w = LEXICON.get((word,))
    if w is None:
        return True  # a word of a longer phrase ("white" of "white balance")
    return (
        w.role in ("semantic", "target", "look")
        or (w.role == "op" and w.pos in ("setting", "noun", "problem"))
        or w.image
    )


def _meaning(word: str) -> tuple:
    w = LEXICON.get((word,))
    return ("phrase", word) if w is None else (w.role, w.ops())


def _suggestions(tok: str, noun: bool) -> list[str]:
    """Known words ``tok`` may be a typo of, best first; several only when they mean different
    things (then none is taken). Short words are spared: a 4-letter word only for a swapped
    pair ("mkae") or a dropped letter ("whte"), nothing under 4 letters."""
    if len(tok) < 4 or not tok.isalpha() or not tok.isascii():
        return []
    depth = _typo_depth(tok)
    index = _typo_index()
    found = {c for key in _deletes(tok, depth) for c in index.get(key, ())}
    scored = []
    for c in found:
        d = _edits(tok, c)
        if d > depth or (noun and not _nounish(c)):
            continue
        if len(tok) == 4 and not (len(c) == 5 or (len(c) == 4 and sorted(c) == sorted(tok))):
            continue
        scored.append((d, c))
    if not scored:
        return []
    best = min(d for d, _ in scored)
    # Dropped letters are likelier than extra ones: prefer a word at least as long.
    ranked = sorted(
        (c for d, c in scored if d == best),
        key=lambda c: (len(c) < len(tok), abs(len(c) - len(tok)), c),
    )
    if len({_meaning(c) for c in ranked}) == 1:
        return ranked[:1]
    return ranked


def _correct(toks: list[str], lexemes: list[Lexeme], keep: set[int]):
    """Typos among the unknown words (those outside the photo's description, ``keep``):
    (corrected tokens, [(typo, word)], [(typo, [candidates])] for ambiguous ones)."""
    toks = list(toks)
    fixed: list[tuple[str, str]] = []
    unsure: list[tuple[str, list[str]]] = []
    for k, lx in enumerate(lexemes):
        if lx.role != "unknown" or k in keep or lx.at < 0:
            continue
        j = k - 1
        while j >= 0 and lexemes[j].role == "unknown":
            j -= 1
        noun = j >= 0 and lexemes[j].text in _NOUN_CONTEXT
        found = _suggestions(lx.text, noun)
        if len(found) == 1:
            toks[lx.at] = found[0]
            fixed.append((lx.text, found[0]))
        elif found:
            unsure.append((lx.text, found[:3]))
    return toks, fixed, unsure


def _has_op(lx: Lexeme, name: str) -> bool:
    w = lx.word
    return w is not None and w.role == "op" and any(o == name for o, _ in w.more or ())


def _segments(lexemes: list[Lexeme], roles: tuple[str, ...]) -> list[range]:
    """Index ranges between lexemes of ``roles`` (clauses: "bound"; items: also "join")."""
    out, start = [], 0
    for k, lx in enumerate(lexemes):
        if lx.role in roles:
            out.append(range(start, k))
            start = k + 1
    out.append(range(start, len(lexemes)))
    return out


_ARTICLES = {"a", "an", "the", "this", "that", "my", "your", "our", "his", "her", "their"}
_OBJECT = Word("semantic", category="names a part of the picture")


def _in_context(lexemes: list[Lexeme]) -> list[Lexeme]:
    """Words whose meaning depends on their neighbours: "left" and "right" in a clause with
    "rotate" are its direction; a flip in the same item as "vertically" or "upside down" is
    vertical (and those words say nothing more)."""
    out = list(lexemes)
    for clause in _segments(out, ("bound",)):
        # "turn it clockwise": a turning direction makes "turn" a rotation.
        if any(out[k].word is not None and out[k].word.turn for k in clause):
            for k in clause:
                if out[k].text in ("turn", "turning") and not _has_op(out[k], "rotate"):
                    out[k] = Lexeme(out[k].text, LEXICON[("rotate",)], at=out[k].at)
                    break
        if any(_has_op(out[k], "rotate") for k in clause):
            for k in clause:
                turn = {"left": LEFT_TURN, "right": RIGHT_TURN}.get(out[k].text)
                if turn is not None:
                    out[k] = Lexeme(out[k].text, turn, at=out[k].at)
    for item in _segments(out, ("bound", "join")):
        # After a determiner a mirror is an object ("add a mirror"), not a flip.
        for k in item:
            if out[k].text == "mirror" and k > 0 and out[k - 1].text in _ARTICLES:
                out[k] = Lexeme(out[k].text, _OBJECT, at=out[k].at)
        flips = [k for k in item if _has_op(out[k], "flip_horizontal")]
        axis = [k for k in item if out[k].word is not None and out[k].word.axis == "v"]
        if flips and axis:
            for k in flips:
                out[k] = Lexeme(out[k].text, FLIP_VERTICAL, at=out[k].at)
            for k in axis:
                out[k] = Lexeme(out[k].text, FILLER, at=out[k].at)
    return out


_DEFINITE = {"the", "this", "that", "these", "those", "my", "your", "our", "his", "her", "their"}
_POSSESSIVE = {"his", "her", "their"}
_DESCRIBES = {"of", "from", "taken", "showing", "i", "we", "that", "which", "where"}


def _describes(lx: Lexeme) -> bool:
    """Whether ``lx`` can be part of what a photo shows ("of my cat on the beach")."""
    if lx.role in ("unknown", "semantic"):
        return True
    return lx.role == "filler" and not lx.word.verb


def _description(lexemes: list[Lexeme]) -> set[int]:
    """Indices of the words that describe the photo rather than a part of it: the words
    between a definite determiner and a photo noun ("my vacation photo", "this sunset
    picture"), a possessive before one ("her selfie"), and what follows "of", "from", "taken",
    "I took" after one, up to the next word that is not a noun or filler ("this photo of my
    cat | brighter"). A global edit of the photo is global whatever the photo shows; a part
    named anywhere else ("brighten the cat in this photo") is still local."""
    drop: set[int] = set()
    for k, lx in enumerate(lexemes):
        if lx.word is None or not lx.word.image:
            continue
        j = k - 1
        while j >= 0 and lexemes[j].role in ("unknown", "semantic"):
            if lexemes[j].text in _DEFINITE:
                break
            j -= 1
        if j >= 0 and lexemes[j].text in _DEFINITE:
            drop.update(range(j + 1, k))
            if lexemes[j].text in _POSSESSIVE:
                drop.add(j)
        if k + 1 < len(lexemes) and lexemes[k + 1].text in _DESCRIBES:
            j = k + 1
            while j < len(lexemes) and _describes(lexemes[j]):
                j += 1
            drop.update(range(k + 1, j))
    return drop


def _read(instruction: str) -> tuple[list[Lexeme], list[tuple[str, str]], list]:
    """The instruction as lexemes ready for the rules: typos outside the photo's description
    corrected, context applied, the description dropped. Also returns the corrections and the
    ambiguous typos (for the reason)."""
    toks = _tokens(instruction)
    lexemes = _lex(toks)
    corrected, fixed, unsure = _correct(toks, lexemes, _description(lexemes))
    if fixed:
        lexemes = _lex(corrected)
    lexemes = _in_context(lexemes)
    drop = _description(lexemes)
    return [lx for k, lx in enumerate(lexemes) if k not in drop], fixed, unsure


def _typo_note(fixed: list[tuple[str, str]], unsure: list[tuple[str, list[str]]]) -> str:
    """'; "brigten" was read as "brighten" (did you mean "brighten"?)' and the like."""
    parts = [f'"{typo}" was read as "{word}" (did you mean "{word}"?)' for typo, word in fixed]
    for typo, words in unsure:
        options = " or ".join(f'"{w}"' for w in words)
        parts.append(f'did you mean {options} for "{typo}"?')
    return "".join(f"; {p}" for p in parts)


# ---------------------------------------------------------------------------------------------
# Lexemes -> requests
# ---------------------------------------------------------------------------------------------


class _Refuse(Exception):
    """The instruction needs the editor; the message is the reason."""


_OP_ROLES = ("op", "target", "look")


@dataclass
class _Item:
    """Part of a clause between "and"/commas: its op words and what modifies them."""

    lexemes: list[Lexeme]
    ops: list[tuple[Lexeme, bool]] = field(default_factory=list)  # (op word, negated)
    mods: list[Lexeme] = field(default_factory=list)
    mags: list[Lexeme] = field(default_factory=list)
    quantities: list[Lexeme] = field(default_factory=list)
    too: bool = False
    starts_chain: bool = False


@dataclass
class _Context:
    """What an item takes from its chain."""

    mods: list[Lexeme]  # its own modifiers
    shared_mods: list[Lexeme]  # the chain's, for its nouns and adjectives if it has none
    mags: list[Lexeme]
    q: Lexeme | None  # a stated quantity
    too: bool  # "too dark": ask for the opposite
    described: bool  # "it is dark", "the colors look dull": ask for the opposite
    fixes: bool = False  # "fix the exposure", or a bare "white balance": settings mean auto ops

    @property
    def flip(self) -> bool:
        return self.too or self.described


@dataclass(frozen=True)
class _Negation:
    """Ops an instruction asks to leave alone (sign 0: either direction)."""

    phrase: str
    ops: tuple[str, ...]
    sign: int


@dataclass
class _Request:
    """One op asked for by one phrase."""

    op: str
    amount: float
    priority: int  # 2 explicit with an amount, 1 explicit, 0 from a look
    phrase: str
    note: str
    limit: str = ""  # how the amount was brought into range ("clamped ...", "wrapped ...")


def _split(lexemes: list[Lexeme]) -> list[list[_Item]]:
    """Clauses (split at boundaries) of items (split at joins)."""
    clauses: list[list[_Item]] = [[]]
    current: list[Lexeme] = []

    def close_item() -> None:
        nonlocal current
        if current:
            clauses[-1].append(_Item(current))
        current = []

    for lx in lexemes:
        role = lx.role
        if role == "bound":
            close_item()
            clauses.append([])
            if lx.word.opens_negation:
                current.append(lx)  # "without" negates what follows it
        elif role == "join":
            close_item()
        else:
            current.append(lx)
    close_item()
    return [c for c in clauses if c]


def _starts_with_verb(lexemes: list[Lexeme]) -> bool:
    """Whether an imperative comes before (or is) the first op word: "and add grain"."""
    for lx in lexemes:
        if lx.role in _OP_ROLES:
            return lx.word.verb
        if lx.word is not None and lx.word.verb:
            return True
    return False


def _analyse(item: _Item, neg_open: bool) -> bool:
    """Sort ``item``'s lexemes by role; return whether a negation is open at its end."""
    deficit = any(x.role == "enough" for x in item.lexemes)  # "not bright enough" asks for more
    lexemes = item.lexemes
    for k, lx in enumerate(lexemes):
        role = lx.role
        if role in _OP_ROLES:
            item.ops.append((lx, neg_open))
        elif role == "mod":
            item.mods.append(lx)
        elif role == "mag":
            # "too strong", "too much": the magnitude word is what is wrong, not how much.
            if not (k > 0 and lexemes[k - 1].role == "too"):
                item.mags.append(lx)
        elif role == "quantity":
            item.quantities.append(lx)
        elif role == "too":
            # Only with something after it: "add grain too" means "also".
            if any(x.role in (*_OP_ROLES, "mod", "mag") for x in lexemes[k + 1 :]):
                item.too = True
        elif (role == "neg" or (role == "bound" and lx.word.opens_negation)) and not deficit:
            neg_open = True
    # A tonal target turns brightness words into directions for it ("brighten the shadows").
    if any(lx.word.role == "target" for lx, _ in item.ops):
        light_words = [lx for lx, _ in item.ops if lx.word.role == "op" and lx.word.light]
        item.mods += light_words
        item.ops = [(lx, n) for lx, n in item.ops if lx not in light_words]
    return neg_open


def _trailing_mags(item: _Item) -> list[Lexeme]:
    """Magnitudes after the last op word of a chain's last item cover the whole chain
    ("increase the brightness, contrast and saturation a little")."""
    if not item.mags:
        return []
    if not item.ops:
        return item.mags
    position = {id(x): k for k, x in enumerate(item.lexemes)}
    last_op = max(position[id(lx)] for lx, _ in item.ops)
    first_mag = min(position[id(m)] for m in item.mags)
    return item.mags if first_mag > last_op else []


def _chain_contexts(chain: list[_Item]) -> list[_Context]:
    """What each item of a chain shares: modifiers, magnitude and "too" carry forward, a
    single stated quantity and a trailing magnitude cover every item."""
    lexemes = [x for item in chain for x in item.lexemes]
    deficit = any(x.role == "enough" for x in lexemes)
    described = not deficit and any(x.role == "copula" for x in lexemes)
    # ... unless the chain also asks: "make it so it looks warmer", "it's dark so brighten it".
    described = described and not any(
        x.word is not None and (x.word.desire or x.word.verb) for x in lexemes
    )
    quantities = {(q.value, q.unit): q for item in chain for q in item.quantities}
    shared_q = next(iter(quantities.values())) if len(quantities) == 1 else None
    trailing = _trailing_mags(chain[-1]) if len(chain) > 1 else []
    # "fix the exposure and the white balance"; a setting named alone ("white balance").
    fixes = any(x.word is not None and x.word.fixes for x in lexemes) or not any(
        x.word is not None and (x.word.verb or x.word.desire or x.role == "copula") for x in lexemes
    )
    contexts: list[_Context] = []
    mods: list[Lexeme] = []
    mags: list[Lexeme] = []
    too = False
    for item in chain:
        too = (item.too or too) and not deficit
        ctx = _Context(
            mods=item.mods,
            shared_mods=[] if item.mods else mods,
            mags=item.mags or trailing or mags,
            q=item.quantities[0] if item.quantities else shared_q,
            too=too,
            described=described,
            fixes=fixes,
        )
        mods, mags = item.mods or mods, ctx.mags
        contexts.append(ctx)
    return contexts


def _attach_orphans(items: list[tuple[_Item, _Context]]) -> None:
    """A magnitude or number with no op of its own joins the last op before it ("brighten it,
    but only a little"; "brighten it, by one stop")."""
    last = None
    for item, ctx in items:
        if item.ops or any(m.word.fallback is not None for m in item.mods):
            last = (item, ctx)
            continue
        if last is None:
            continue
        prev_item, prev_ctx = last
        if item.mags and not prev_item.mags:
            prev_ctx.mags = item.mags
        q = item.quantities[0] if item.quantities else None
        if q is None or prev_ctx.q not in (None, q):
            continue
        if q.unit != "ev":
            prev_ctx.q = q
        elif {o for lx, _ in prev_item.ops for o in lx.word.ops()} & {"brightness", "exposure"}:
            prev_ctx.q = q
            item.quantities.clear()  # else the item becomes an exposure change of its own


def _requests(lexemes: list[Lexeme]) -> tuple[list[_Request], list[_Negation]]:
    """Resolve the clauses into op requests and negations.

    Raises :class:`_Refuse` when a request is ambiguous or impossible.
    """
    items: list[tuple[_Item, _Context]] = []
    for clause in _split(lexemes):
        chains: list[list[_Item]] = []
        neg_open = False
        for item in clause:
            item.starts_chain = _starts_with_verb(item.lexemes)
            if not chains or item.starts_chain:
                chains.append([])
                neg_open = False  # "don't change the colors and brighten it"
            neg_open = _analyse(item, neg_open)
            chains[-1].append(item)
        for chain in chains:
            items += zip(chain, _chain_contexts(chain), strict=True)
    _attach_orphans(items)
    requests: list[_Request] = []
    negations: list[_Negation] = []
    for item, ctx in items:
        _resolve_item(item, ctx, requests, negations)
    return requests, negations


def _item_ops(item: _Item, ctx: _Context) -> tuple[list[tuple[Lexeme, bool]], list[Lexeme]]:
    """The op words an item really asks for, and its own modifiers."""
    ops = list(item.ops)
    mods = list(ctx.mods)
    q = ctx.q
    # A quantity with no op word names the op of its unit: "+1 EV" is an exposure change, "16:9"
    # a crop, "4k" a resize, "90 degrees" a rotation, "2x" a scale.
    if not ops and q is not None and item.quantities and q.unit in _IMPLIED:
        name = _IMPLIED[q.unit]
        ops = [(Lexeme(name, LEXICON[(name,)]), False)]
    # "soften it", "enhance the photo": the modifier's own meaning when nothing else is named.
    if not ops:
        for m in mods:
            if m.word.fallback is not None:
                return [(Lexeme(m.text, m.word.fallback), False)], [x for x in mods if x is not m]
    # "remove the shadows" is about cast shadows (objects), not a tonal range.
    if any(lx.word.role == "target" for lx, _ in ops) and any(m.word.removal for m in mods):
        raise _Refuse(
            f'"{" ".join(x.text for x in item.lexemes)}" sounds like removing something in'
            " the picture, so the editor handles it."
        )
    # Degrees with "the colors" rotate the hue ("shift the colors by 30 degrees").
    if q is not None and q.unit == "degrees":
        hue = op("noun", {"hue": +1})
        ops = [(Lexeme(lx.text, hue), n) if lx.word.weak else (lx, n) for lx, n in ops]
    # With a hue word, "rotate" is only its verb ("rotate the hue by 45 degrees").
    if any(_has_op(lx, "hue") for lx, _ in ops):
        ops = [(lx, n) for lx, n in ops if not lx.word.hue_verb]
    # "colors", "tint", "light": only when nothing more specific is named in the item.
    ops = [(lx, n) for lx, n in ops if not lx.word.weak] or ops
    # A setting named without a direction names what another word moves ("add a green tint").
    if len(ops) > 1:
        named = {o for lx, _ in ops if not lx.word.needs_direction for o in lx.word.ops()}
        ops = [
            (lx, n)
            for lx, n in ops
            if not (lx.word.needs_direction and set(lx.word.ops()) <= named)
        ] or ops
    return ops, mods


def _direction_sign(m: Lexeme, lx: Lexeme) -> int:
    """The sign a modifier gives an op word (targets read brightness and recovery words, a
    rotation its direction, which means nothing to other ops)."""
    w = m.word
    if w.turn:
        return w.turn if _has_op(lx, "rotate") else 1
    if lx.word.role == "target":
        if w.recover:
            return lx.word.recover_sign or w.sign
        if w.light:
            return w.light * lx.word.light_mult
    return w.sign if w.role == "mod" else (w.light or 1)


def _resolve_item(
    item: _Item, ctx: _Context, requests: list[_Request], negations: list[_Negation]
) -> None:
    """Append the item's requests (or negations) with their signed, scaled amounts."""
    ops, own_mods = _item_ops(item, ctx)
    q = ctx.q
    factor = math.prod(m.word.factor for m in ctx.mags)
    mag_note = ", ".join(m.text for m in ctx.mags)
    for lx, negated in ops:
        w = lx.word
        if negated:
            # "without making it warmer" leaves out warming only; "don't touch the colors"
            # (a noun, a look) leaves out those ops in either direction.
            directed = w.role == "op" and not w.needs_direction and not w.weak and w.more
            sign = int(math.copysign(1, w.more[0][1])) if directed else 0
            negations.append(_Negation(lx.text, w.ops(), sign))
            continue
        # Particles ("up", "down") direct only nouns; nouns and adjectives share the chain's
        # modifiers ("reduce brightness and contrast"), comparatives and verbs keep their own.
        nounish = w.needs_direction or w.weak or w.pos in ("noun", "setting")
        mods = [m for m in own_mods if nounish or not m.word.particle]
        if not mods and (nounish or w.pos == "adj"):
            mods = [m for m in ctx.shared_mods if nounish or not m.word.particle]
        d = math.prod(_direction_sign(m, lx) for m in mods)
        directed = bool(mods)
        if ctx.flip and w.pos != "problem":
            d, directed = -d, True
        if q is not None and not directed and q.value < 0:
            d = -d  # "exposure -0.7"
        directed = directed or q is not None
        if w.needs_direction and not directed:
            if w.auto and ctx.fixes:  # "fix the exposure", "white balance"
                spec = SPECS[w.auto]
                fix = " ".join([x.text for x in item.lexemes if x.word and x.word.fixes][:1])
                phrase = f"{fix} {lx.text}".strip()
                amount, limit = _limit(w.auto, spec.moderate * factor)
                requests.append(_Request(w.auto, amount, 1, phrase, mag_note, limit))
                continue
            exact = next((o for o, _ in w.more or () if o in _EXACT_HINT), None)
            if exact is not None:
                raise _Refuse(f'"{lx.text}" {_EXACT_HINT[exact]}, so the editor handles it.')
            raise _Refuse(
                f'"{lx.text}" names a setting but not which way to move it, so the editor'
                " handles it."
            )
        if w.role == "look":
            _request_look(lx, d, factor, q, mag_note, requests)
            continue
        effects = w.more if d > 0 else w.less
        phrase = " ".join([m.text for m in mods] + [lx.text])
        if effects is None:
            raise _Refuse(
                f'"{phrase}" asks to {"add" if d > 0 else "remove"} something no global'
                " adjustment can, so the editor handles it."
            )
        if q is not None and q.unit == "ev":  # "brighten by one stop" is exposure
            effects = tuple(("exposure" if o == "brightness" else o, s) for o, s in effects)
        for op_name, s in effects:
            if op_name in _EXACT:
                op_name, amount, note = _exact(op_name, s, q, lx)
                priority = 2 if note else 1
            else:
                amount = _convert(q, op_name, s) if q is not None else None
                if amount is not None:
                    note, priority = q.text, 2
                else:
                    note, priority = mag_note, 2 if mag_note else 1
                    amount = SPECS[op_name].moderate * factor * s
            amount, limit = _limit(op_name, amount)
            requests.append(_Request(op_name, amount, priority, phrase, note, limit))


def _request_look(
    lx: Lexeme, d: int, factor: float, q: Lexeme | None, note: str, requests: list[_Request]
) -> None:
    """A look's ops scaled by the magnitude (or a percentage); "less faded" uses its undo."""
    w = lx.word
    if d < 0:
        if w.less is None:
            raise _Refuse(
                f'"{lx.text}" asks to undo a look, which no global adjustment can, so the'
                " editor handles it."
            )
        for op_name, s in w.less:
            spec = SPECS[op_name]
            amount = spec.clamp(spec.moderate * factor * s)
            requests.append(_Request(op_name, amount, 1, lx.text, note))
        return
    if q is not None and q.unit == "percent":
        factor, note = abs(q.value) / 100.0, q.text
    for o in PRESETS[w.preset]:
        amount = SPECS[o["op"]].clamp(o["amount"] * factor)
        requests.append(_Request(o["op"], amount, 0, f'the "{w.preset}" look', note))


# Ops whose amount is a fact, not a strength: a magnitude word does not scale them.
_EXACT = ("rotate", "flip_horizontal", "flip_vertical", "crop_aspect", "straighten", "scale")
_EXACT += ("resize",)
# What an exact op's word leaves open when it is named alone.
_EXACT_HINT = {
    "rotate": 'does not say which way or how far; say e.g. "rotate 90 degrees clockwise"',
    "crop_aspect": 'does not say to what shape; say e.g. "crop to square" or "crop to 16:9"',
    "scale": 'does not say to what size; say e.g. "make it twice as big" or "resize to 2048 px"',
}
# The op a quantity names when no op word does ("+1 EV", "16:9", "4k", "90 degrees", "2x").
_IMPLIED = {
    "ev": "exposure",
    "ratio": "crop",
    "px": "resize",
    "k": "resize",
    "lines": "resize",
    "degrees": "rotate",
    "factor": "scale",
}


def _pixels(q: Lexeme) -> float:
    """A size quantity as the long side in pixels: "2000 px", "4k" (3840), "1080p" (1920)."""
    v = abs(q.value)
    if q.unit == "k":
        return float(K_PIXELS.get(v, v * 960))
    if q.unit == "lines":  # a 16:9 frame's height
        return float(round(v * 16 / 9))
    return v


def _exact(op_name: str, s: float, q: Lexeme | None, lx: Lexeme) -> tuple[str, float, str]:
    """An exact op's (op, amount, note). ``s`` is the word's own amount ("upside down" 180,
    "square" 1, "upscale" 2, "shrink" 0.5, "rotate" +/-90 by direction); a stated quantity
    replaces it where it fits: degrees for a rotation, a ratio for a crop, a factor or a
    percentage for a scale, a size ("px", "4k", "1080p") makes any scale a resize. Words with a
    fixed amount ("twice as big", "upside down") and flips keep theirs."""
    w = lx.word
    if q is None or w.pos in ("noun", "adj") or op_name not in ("rotate", "crop_aspect", "scale"):
        if op_name == "crop_aspect" and s == 0:
            raise _Refuse(f'"{lx.text}" {_EXACT_HINT["crop_aspect"]}, so the editor handles it.')
        return op_name, s, ""
    v = abs(q.value)
    if op_name == "rotate" and q.unit in ("degrees", None):
        return op_name, math.copysign(v, s), q.text
    if op_name == "crop_aspect" and q.unit == "ratio":
        return op_name, q.value, q.text
    if op_name == "scale":
        if q.unit in ("px", "k", "lines"):
            return "resize", _pixels(q), q.text
        if q.unit in ("factor", None) and v > 0:
            # "shrink it 2x" halves it; "scale it by 0.5" is a factor as stated.
            return op_name, 1 / v if s < 1 < v else v, q.text
        if q.unit == "percent":
            p = v / 100
            if w.pos == "setting" or p > 1:  # "scale to 50%", "upscale to 200%"
                return op_name, p, q.text
            return op_name, 1 + p if s > 1 else 1 - p, q.text  # "enlarge by 50%"
    raise _Refuse(f'"{q.text}" is not an amount "{lx.text}" can take, so the editor handles it.')


def _limit(op_name: str, amount: float) -> tuple[float, str]:
    """``amount`` brought into the op's range, and a note when it had to be: angles wrap
    around the circle (hue +400 degrees is +40), anything else is clamped."""
    spec = SPECS[op_name]
    if spec.unit == "degrees" and abs(amount) > 180:
        wrapped = math.remainder(amount, 360.0) + 0.0
        wrapped = 180.0 if wrapped == -180.0 else wrapped
        return wrapped, f"wrapped to {wrapped:+g}"
    clamped = spec.clamp(amount)
    if abs(clamped - amount) > 1e-9:
        return clamped, (
            f"{amount:+.4g} clamped to {clamped:+.4g}, the {'most' if clamped < amount else 'least'}"
            f" {op_name} can take ({spec.min:g} .. {spec.max:g})"
        )
    return clamped, ""


def _convert(q: Lexeme, op_name: str, sign: float) -> float | None:
    """A stated quantity as an amount of ``op_name`` (signed by ``sign``), or None if it does
    not apply to that op (stops to anything but exposure, degrees to anything but hue)."""
    spec = SPECS[op_name]
    v = abs(q.value)
    if q.unit not in ("ev", "degrees", "percent", None):
        return None  # a ratio, size or factor says nothing about a strength
    if q.unit == "ev":
        return sign * v if op_name == "exposure" else None
    if q.unit == "degrees":
        return sign * v if op_name == "hue" else None
    if q.unit == "percent":
        p = v / 100.0
        if spec.unit == "ev":  # a percentage of light, in stops
            return math.log2(max(1.0 + sign * p, 2.0**spec.min))
        if spec.unit == "degrees":  # a percentage of the colour wheel
            return sign * p * 360.0
        return sign * p
    if spec.unit in ("ev", "degrees") or v <= spec.max:
        return sign * v
    return sign * v / 100.0  # a slider value: "contrast +20"


def _fmt(op_name: str, amount: float) -> str:
    if SPECS[op_name].unit == "degrees":
        return f"{op_name} {amount:+g} degrees"
    if op_name == "exposure":
        return f"exposure {amount:+.2f} EV"
    if op_name in ("flip_horizontal", "flip_vertical", "straighten"):
        return op_name
    if op_name == "crop_aspect":
        return f"crop_aspect {amount:.4g} (width / height)"
    if op_name == "scale":
        return f"scale x{amount:g}"
    if op_name == "resize":
        return f"resize to {amount:.0f} px on the long side"
    return f"{op_name} {amount:+.2f}"


# ---------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------


_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "my", "some", "your", "our"}
_PRONOUNS = {"he", "she", "him", "her", "his", "hers", "they", "them", "their"}
_OBJECT_EDIT = "edits an object"


def _span(lexemes: list[Lexeme], k: int) -> str:
    """The words around ``lexemes[k]`` worth quoting: "the red car", "an oil painting"."""
    start = k
    while start > 0 and lexemes[start - 1].role == "unknown":
        start -= 1
    if start > 0 and lexemes[start - 1].text in _DETERMINERS:
        start -= 1
    end = k + 1
    while (
        end < len(lexemes)
        and end - k <= 2
        and lexemes[end].role == "semantic"
        and lexemes[end - 1].text not in _PRONOUNS - {"her", "his", "their"}
    ):
        end += 1
    return " ".join(x.text for x in lexemes[start:end])


def _blocker(lexemes: list[Lexeme]) -> str | None:
    """Why the instruction needs the editor before any op is read, or None.

    Parts of the picture, people, styles, weather, text and layout come first (they say why),
    then object verbs ("replace", "erase"), then any word the lexicon does not know. A part
    named for the one op that uses it is no local request ("straighten the horizon").
    """
    asked = {
        o for lx in lexemes if lx.word is not None and lx.word.role == "op" for o in lx.word.ops()
    }
    semantic = [
        (k, lx.word.category)
        for k, lx in enumerate(lexemes)
        if lx.role == "semantic" and not set(lx.word.ok_with) & asked
    ]
    semantic.sort(key=lambda kc: kc[1] == _OBJECT_EDIT)  # stable: first in text order
    if semantic:
        k, category = semantic[0]
        return f'"{_span(lexemes, k)}" {category}, which needs the editor, not a global adjustment.'
    for k, lx in enumerate(lexemes):
        if lx.role == "unknown":
            return (
                f'"{_span(lexemes, k)}" is not a global adjustment the planner knows, so the'
                " editor handles it."
            )
    return None


def _negated(r: _Request, negations: list[_Negation]) -> bool:
    return any(r.op in n.ops and (n.sign == 0 or (r.amount > 0) == (n.sign > 0)) for n in negations)


def _merge(requests: list[_Request], negations: list[_Negation]) -> list[_Request]:
    """One request per op: negated requests are dropped, explicit beats a look, and among
    equals the last wins."""
    best: dict[str, _Request] = {}
    for r in requests:
        if _negated(r, negations):
            continue
        old = best.get(r.op)
        if old is None or r.priority >= old.priority:
            best[r.op] = r
    return list(best.values())


def _round(op_name: str, amount: float) -> float:
    """Plans are read by people: 3 decimals, 1 for degrees, whole pixels; an aspect ratio
    keeps 6 so that 16:9 crops to the pixel."""
    places = {"degrees": 1}.get(SPECS[op_name].unit, 3)
    places = {"crop_aspect": 6, "resize": 0}.get(op_name, places)
    return round(amount, places) + 0.0


def plan(instruction: str) -> EditPlan:
    """Plan one instruction (see the module docstring for the rules).

    Raises :class:`PbmlxError` for an empty or blank instruction. An instruction that is not
    in English goes to the editor with a reason that says only English is understood. An
    instruction that only says what to leave alone ("don't make it brighter") is a no-op plan:
    route ``"adjust"``, no ops, and a reason saying so.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise PbmlxError("The instruction is empty; say what to change, e.g. 'brighten it'.")
    foreign = _not_english(instruction)
    if foreign is not None:
        return EditPlan(instruction, "diffusion", [], foreign)
    lexemes, fixed, unsure = _read(instruction)
    typos = _typo_note(fixed, unsure)

    def finish(route: Route, ops: list[dict], reason: str) -> EditPlan:
        return EditPlan(instruction, route, ops, reason.rstrip(".") + typos + ".")

    reason = _blocker(lexemes)
    if reason is not None:
        return finish("diffusion", [], reason)
    try:
        requests, negations = _requests(lexemes)
    except _Refuse as refusal:
        return finish("diffusion", [], str(refusal))
    chosen = _merge(requests, negations)
    first = {r.op: k for k, r in reversed(list(enumerate(requests)))}
    chosen.sort(key=lambda r: first[r.op])
    ops = [{"op": r.op, "amount": _round(r.op, r.amount)} for r in chosen]
    ops = [o for o in ops if o["amount"] != 0.0]
    if not ops:
        if negations or any(lx.role == "neg" for lx in lexemes):
            return finish(
                "adjust",
                [],
                f"Nothing to change: {instruction.strip()!r} only says what to leave alone.",
            )
        if chosen:  # "rotate the hue by 360 degrees"
            notes = "; ".join(f'"{r.phrase}" ({r.limit or r.note})' for r in chosen)
            return finish("adjust", [], f"Nothing to change: {notes} comes to no change.")
        return finish("diffusion", [], "No global adjustment was named, so the editor handles it.")

    # Reason: phrase -> ops, in the order the phrases came.
    kept = {o["op"]: o["amount"] for o in ops}
    parts: dict[tuple[str, str], list[str]] = {}
    for r in chosen:
        if r.op in kept:
            note = ", ".join(x for x in (r.note, r.limit) if x)
            parts.setdefault((r.phrase, note), []).append(_fmt(r.op, kept[r.op]))
    clauses = []
    for (phrase, note), effects in parts.items():
        label = phrase if phrase.startswith("the ") else f'"{phrase}"'
        clauses.append(f"{label} -> {', '.join(effects)}" + (f" ({note})" if note else ""))
    text = "Global edit: " + "; ".join(clauses)
    if negations:
        phrases = ", ".join(f'"{p}"' for p in dict.fromkeys(n.phrase for n in negations))
        text += f"; nothing for {phrases}, as asked"
    return finish("adjust", ops, text)
