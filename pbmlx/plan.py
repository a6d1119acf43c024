"""Plan an edit: turn a plain-language instruction into an :class:`EditPlan`.

An instruction takes one of two routes. ``"adjust"`` runs exact global ops
(:mod:`pbmlx.adjust.specs`): "brighten this picture", "add film grain and a vignette",
"make it look vintage". ``"diffusion"`` hands it to the generative editor: anything local or
semantic ("blur the background", "add a hat", "make it snow", "Van Gogh style"), and anything
the planner does not fully understand. The planner is deterministic, offline and pure Python.

How an instruction is read
--------------------------
1. **Words.** The text is lower-cased and normalised ("colour" -> "color", "b&w" -> "black and
   white", "it's" -> "it is"), then split into tokens. Quantities with a unit are read first
   ("by one stop", "+1 EV", "20%", "30 degrees", "half a stop"), then the longest phrase in
   :data:`LEXICON` at each position ("black and white" before "black"). Each phrase has a
   *role*: an op word ("brighter", "grain"), a tonal *target* ("the shadows"), a *look* (a
   preset: "vintage"), a *modifier* of direction ("more", "reduce", "soften"), a *magnitude*
   ("slightly", "a lot"), a negation ("don't", "without", "keep"), a boundary, or filler.
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
   asks for more. A setting named without a direction ("fix the contrast") is ambiguous and
   goes to diffusion. When the direction is negative an op word uses its ``less`` meaning
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
   of its own joins the op before it ("brighten it, but just a little"). Everything is
   clamped to the op's range.
7. **Negation.** A negation covers the op words after it up to the end of its chain ("don't
   change the colors, just brighten it"; "brighten it without making it warmer"). The plan
   leaves those ops out, including ops a look would have added ("a film look, no grain"): in
   the negated direction only for a word with one ("don't brighten it, darken it"), in both
   for a noun or a look ("don't touch the saturation").
8. **Merging.** When an op is asked for more than once, a mention with a stated amount beats
   a plain one, which beats a look's amount; among equals the last wins. Ops keep the order
   of their first mention.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from pbmlx.adjust.presets import PRESETS
from pbmlx.adjust.specs import SPECS
from pbmlx.errors import PbmlxError

Route = Literal["adjust", "diffusion"]
Effects = tuple[tuple[str, float], ...]


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
# The vocabulary
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """What one phrase of the lexicon means to the planner (fields unused by a role stay default)."""

    role: str  # op | target | look | mod | mag | neg | too | copula | enough | bound | join
    #            | filler | semantic
    pos: str = ""  # op words: verb | adj | comp | noun | setting | problem (grammar decides
    #                inheritance: comparatives and verbs keep their own direction)
    more: Effects | None = ()  # op/target: the ops this word asks for; None: no op can do it
    less: Effects | None = ()  # op/target: the ops for "less of it"; None: no op can do it
    preset: str = ""  # look: a key of PRESETS
    weak: bool = False  # "colors", "tint": only counts when the item names no other op
    light: int = 0  # +1 brightens, -1 darkens (brightness words and lift/deepen/crush)
    light_mult: int = 1  # target: what "brighten" does to its op ("brighten the corners": -)
    recover_sign: int = 0  # target: the direction "recover/soften/tame" moves it
    group: tuple[str, ...] = ()  # ops left alone when negated (default: those of more/less)
    sign: int = 0  # mod: +1 more, -1 less
    recover: bool = False  # mod: moves a target towards the middle ("recover the highlights")
    removal: bool = False  # mod: "remove", "get rid of" (with a target it means an object)
    particle: bool = False  # mod: "up"/"down", which only direct nouns ("turn the contrast up")
    verb: bool = False  # an imperative: starts a new chain
    desire: bool = False  # "make", "want", "should": the sentence asks, it does not describe
    fallback: Word | None = None  # mod: the op it means when nothing else is named ("soften it")
    needs_hue: bool = False  # "rotate": a hue rotation, else a layout change
    factor: float = 1.0  # mag
    category: str = ""  # semantic: why it needs the editor
    opens_negation: bool = False  # bound: "without"

    @property
    def needs_direction(self) -> bool:
        return self.pos == "setting" or self.role == "target"

    def ops(self) -> tuple[str, ...]:
        """Every op this word can touch (what its negation leaves alone)."""
        if self.group:
            return self.group
        if self.role == "look":
            return tuple(o["op"] for o in PRESETS[self.preset])
        names = [op for op, _ in (self.more or ()) + (self.less or ())]
        if self.fallback is not None:
            names += self.fallback.ops()
        return tuple(dict.fromkeys(names))


def _fx(effects: dict[str, float] | None) -> Effects | None:
    return None if effects is None else tuple((op, float(s)) for op, s in effects.items())


_NEGATE = object()


def op(pos: str, more: dict[str, float] | None, less=_NEGATE, **kw) -> Word:
    """An op word; ``less`` defaults to the opposite signs of ``more``; None: impossible."""
    m = _fx(more)
    opposite = None if m is None else tuple((o, -s) for o, s in m)
    lf = opposite if less is _NEGATE else _fx(less)
    return Word("op", pos=pos, more=m, less=lf, verb=kw.pop("verb", pos == "verb"), **kw)


def target(name: str, light_mult: int = 1, recover_sign: int = 0) -> Word:
    """A tonal range moved by brightness words: ``more`` is +, ``less`` is -."""
    return Word(
        "target",
        more=((name, 1.0),),
        less=((name, -1.0),),
        light_mult=light_mult,
        recover_sign=recover_sign,
    )


def look(preset: str, less: dict[str, float] | None = None) -> Word:
    assert preset in PRESETS, preset
    return Word("look", pos="look", preset=preset, less=_fx(less))


def mod(sign: int, *, verb: bool = False, **kw) -> Word:
    return Word("mod", sign=sign, verb=verb, **kw)


def mag(factor: float) -> Word:
    return Word("mag", factor=factor)


def semantic(category: str) -> Word:
    return Word("semantic", category=category)


BRIGHTNESS_OPS = ("brightness", "exposure", "gamma")
COLOR_OPS = ("saturation", "vibrance", "temperature", "tint", "hue", "grayscale", "sepia", "invert")

BRIGHTEN = {"brightness": +1}
DARKEN = {"brightness": -1}
WARM = {"temperature": +1}
COOL = {"temperature": -1}
MAGENTA = {"tint": +1}
GREEN = {"tint": -1}
WASHED_OUT = {"contrast": -1, "saturation": -1}

# Magnitude factors times spec.moderate. Below 1 is "less than a plain request".
TINY, SMALL, LARGE, HUGE = 0.25, 0.5, 2.0, 3.0

# Each row: phrases separated by " / " (matched whole, longest first), then their meaning.
_TABLE: list[tuple[str, Word]] = [
    # --- brightness and exposure -----------------------------------------------------------
    (
        "brighten / brightens / brightened / brightening / lighten / lightened / lightening"
        " / light up / brighten up / lighten up",
        op("verb", BRIGHTEN, light=+1, group=BRIGHTNESS_OPS),
    ),
    ("brighter / lighter / brighter overall", op("comp", BRIGHTEN, light=+1, group=BRIGHTNESS_OPS)),
    ("bright", op("adj", BRIGHTEN, light=+1, group=BRIGHTNESS_OPS)),
    ("brightness / lightness / luminosity", op("setting", BRIGHTEN, light=+1)),
    # "light" is also a noun ("warm light"), so it only counts when nothing else is named.
    ("light", op("adj", BRIGHTEN, light=+1, weak=True, group=BRIGHTNESS_OPS)),
    ("darken / darkens / darkened / darkening", op("verb", DARKEN, light=-1, group=BRIGHTNESS_OPS)),
    ("darker / dimmer / gloomier", op("comp", DARKEN, light=-1, group=BRIGHTNESS_OPS)),
    ("dark / dim / gloomy / murky", op("adj", DARKEN, light=-1, group=BRIGHTNESS_OPS)),
    ("darkness", op("setting", DARKEN, light=-1)),
    ("exposure / exposures", target("exposure")),
    ("overexposed / overexposure / over exposed", op("problem", {"exposure": -1})),
    ("underexposed / underexposure / under exposed", op("problem", {"exposure": +1})),
    # --- tonal ranges ----------------------------------------------------------------------
    (
        "highlights / highlight / whites / bright areas / bright parts",
        target("highlights", recover_sign=-1),
    ),
    (
        "shadows / shadow / blacks / dark areas / dark parts / shadow detail",
        target("shadows", recover_sign=+1),
    ),
    ("midtones / midtone / mid tones / mid tone / mids", target("gamma")),
    ("corners / edges", target("vignette", light_mult=-1, recover_sign=-1)),
    ("blown out / blown / clipped highlights", op("problem", {"highlights": -1})),
    ("crushed", op("problem", {"shadows": +1})),
    ("gamma", op("setting", {"gamma": +1})),
    # --- contrast --------------------------------------------------------------------------
    ("contrast", op("setting", {"contrast": +1})),
    ("contrasty", op("adj", {"contrast": +1})),
    ("flat / lifeless", op("adj", {"contrast": -1})),
    ("flatten / flattened", op("verb", {"contrast": -1})),
    ("harsh / harsher", op("adj", {"contrast": +1})),
    ("punchy / punch", op("adj", {"contrast": +1, "vibrance": +1})),
    ("punchier", op("comp", {"contrast": +1, "vibrance": +1})),
    # --- colour ----------------------------------------------------------------------------
    ("saturation / color saturation", op("setting", {"saturation": +1})),
    ("saturated / colorful / vivid / rich colors", op("adj", {"saturation": +1})),
    ("more colorful / more vivid / more saturated", op("comp", {"saturation": +1})),
    ("saturate", op("verb", {"saturation": +1})),
    ("desaturate / desaturating", op("verb", {"saturation": -1})),
    ("desaturated / muted / colorless", op("adj", {"saturation": -1})),
    ("oversaturated / over saturated", op("problem", {"saturation": -1})),
    ("undersaturated / under saturated", op("problem", {"saturation": +1})),
    ("dull / drab", op("adj", WASHED_OUT)),
    ("washed out / washed", op("adj", WASHED_OUT)),
    ("vibrance / vibrancy", op("setting", {"vibrance": +1})),
    ("vibrant / pop / pops / popping", op("adj", {"vibrance": +1})),
    ("more vibrant", op("comp", {"vibrance": +1})),
    (
        "colors / color / color tone / color tones",
        Word(
            "op",
            pos="setting",
            more=(("saturation", 1.0),),
            less=(("saturation", -1.0),),
            weak=True,
            group=COLOR_OPS,
        ),
    ),
    # --- white balance and tint ------------------------------------------------------------
    ("warm / warm up / warming / warmed / yellow / yellowish / amber / orange", op("adj", WARM)),
    ("warmer / yellower / more yellow / more orange", op("comp", WARM)),
    ("warmth", op("setting", WARM)),
    (
        "cool / cool down / cool off / cooling / cooled / cold / blue / bluish / blueish / icy",
        op("adj", COOL),
    ),
    ("cooler / colder / bluer / more blue", op("comp", COOL)),
    ("temperature / color temperature / white balance", op("setting", WARM)),
    (
        "tint / color cast / cast",
        Word("op", pos="setting", more=(("tint", 1.0),), less=(("tint", -1.0),), weak=True),
    ),
    ("magenta / pink / pinkish / purple / purplish", op("adj", MAGENTA)),
    ("pinker / more magenta / more pink", op("comp", MAGENTA)),
    ("green / greenish", op("adj", GREEN)),
    ("greener / more green", op("comp", GREEN)),
    ("hue / hues / hue shift / hue rotation", op("noun", {"hue": +1})),
    # --- monochrome and colour effects -----------------------------------------------------
    ("grayscale / gray scale / grayscaled", op("noun", {"grayscale": +1}, less=None)),
    ("sepia / sepia tone / sepia toned / sepia tones", op("noun", {"sepia": +1}, less=None)),
    (
        "invert / inverted / inverse / negative / inverting / film negative",
        op("noun", {"invert": +1}, less=None),
    ),
    # --- texture and focus -----------------------------------------------------------------
    (
        "vignette / vignetting / vignetted / vignettes / dark vignette / black vignette",
        op("noun", {"vignette": +1}),
    ),
    (
        "grain / film grain / noise / grains / film noise / graininess",
        op("noun", {"grain": +1}, less=None),
    ),
    ("grainy / grainier / noisy", op("adj", {"grain": +1}, less=None)),
    (
        "denoise / denoised / denoising / noise reduction",
        op("verb", None, less=None, group=("grain",)),
    ),
    (
        "sharpen / sharpened / sharpening / unblur / deblur / deblurred",
        op("verb", {"sharpen": +1}, less={"blur": +1}),
    ),
    ("sharper / crisper / clearer", op("comp", {"sharpen": +1}, less={"blur": +1})),
    ("sharp / crisp / in focus", op("adj", {"sharpen": +1}, less={"blur": +1})),
    (
        "sharpness / crispness / clarity / definition / detail / details",
        op("noun", {"sharpen": +1}, less={"blur": +1}),
    ),
    (
        "blur / blurred / blurring / gaussian blur / blurriness / soft focus",
        op("noun", {"blur": +1}, less={"sharpen": +1}),
    ),
    (
        "blurry / blurrier / out of focus / unfocused / fuzzy",
        op("adj", {"blur": +1}, less={"sharpen": +1}),
    ),
    ("fade / fading", op("noun", {"fade": +1}, less={"contrast": +1})),
    # --- looks (presets) -------------------------------------------------------------------
    (
        "golden hour / golden / magic hour / golden light / golden glow / golden tones",
        look("golden hour"),
    ),
    (
        "vintage / vintage filter / vintage look / vintage film / fifties / sixties / nostalgic",
        look("vintage"),
    ),
    ("noir / film noir", look("noir")),
    (
        "film / analog / analogue / film look / film photo / film stock / 35 mm / 35mm / kodak",
        look("film"),
    ),
    ("matte / matte look / matte finish", look("matte")),
    ("warm filter / warm look / warm grade", look("warm")),
    ("cool filter / cool look / cool grade", look("cool")),
    ("dramatic / drama / dramatic look / dramatic lighting", look("dramatic")),
    ("faded / faded look", look("faded", less={"contrast": +1, "saturation": +1})),
    ("retro / retro look / seventies / eighties / nineties", look("retro")),
    (
        "black and white / black white / monochrome / monochromatic / mono / bw"
        " / remove the color / remove color / remove all color / remove all the color"
        " / remove the colors / remove all colors / drain the color",
        look("black and white"),
    ),
    (
        "old photo / old photograph / old picture / old / antique / historical / historic"
        " / old fashioned / old timey / old time / aged photo / olden days / older",
        look("old photo"),
    ),
    ("moody / moodier", look("moody")),
    ("cinematic / cinema / movie / movie look / filmic", look("cinematic")),
    ("auto enhance / auto enhanced", look("enhance")),
    ("hdr / high dynamic range", look("hdr")),
    ("high key", look("high key")),
    ("low key", look("low key")),
    ("pastel / pastel colors / pastel tones", look("pastel")),
    ("dreamy / dreamlike / ethereal", look("dreamy")),
    ("fluorescent / fluorescent light / fluorescent lighting", look("fluorescent")),
    ("bleach bypass", look("bleach bypass")),
    ("polaroid / instant film / instant photo", look("polaroid")),
    # --- direction -------------------------------------------------------------------------
    (
        "more / extra / additional / higher / high / stronger / heavier / increased / plenty of",
        mod(+1),
    ),
    (
        "increase / increasing / boost / boosting / raise / raising / add / adding / intensify"
        " / heighten / amplify / amp up / bump up / crank up / turn up / dial up / bring up"
        " / push / pump up / put / apply / applying / introduce / throw in",
        mod(+1, verb=True, desire=True),
    ),
    ("enhance / enhancing / improve / improving", mod(+1, verb=True, fallback=look("enhance"))),
    ("richer / rich / deeper / deep", mod(+1, light=-1)),
    ("deepen / deepening", mod(+1, verb=True, light=-1)),
    ("lift / lifting / open up / lift up", mod(+1, verb=True, light=+1)),
    ("less / lower / low / weaker / reduced / fewer / lesser / decreased", mod(-1)),
    (
        "reduce / reducing / decrease / decreasing / lowering / lessen / minimize / drop"
        " / cut / cut down / tone down / dial down / dial back / turn down / bring down"
        " / pull back / scale back / ease off / ease up on / mute / muting / calm down",
        mod(-1, verb=True),
    ),
    (
        "remove / removing / get rid of / take out / eliminate / strip out / lose",
        mod(-1, verb=True, removal=True),
    ),
    (
        "soften / softening / softened",
        mod(-1, verb=True, recover=True, fallback=op("noun", {"blur": +1}, less={"sharpen": +1})),
    ),
    ("softer", mod(-1, recover=True, fallback=op("noun", {"blur": +1}, less={"sharpen": +1}))),
    (
        "tame / taming / recover / recovering / rescue / bring back",
        mod(-1, verb=True, recover=True),
    ),
    ("crush / crushing", mod(-1, verb=True, light=-1)),
    ("up", mod(+1, particle=True)),
    ("down / back", mod(-1, particle=True)),
    # --- how much --------------------------------------------------------------------------
    (
        "a tiny bit / tiny bit / a hint of / a hint / hint of / very slightly / ever so slightly"
        " / barely / a smidge / a smidgen / very subtle / very subtly / a hair / faint / faintly"
        " / just a hint / a very little / the slightest",
        mag(TINY),
    ),
    (
        "slightly / slight / a little / a little bit / little / a bit / bit / a touch / touch"
        " / a touch of / somewhat / a tad / tad / gently / gentle / mild / mildly / subtle"
        " / subtly / lightly / soft / marginally / minor / not too much / not so much"
        " / partially / partly / half / halfway"
        " / not much / modest / modestly / a little more / small / a small amount of",
        mag(SMALL),
    ),
    (
        "a lot / lots / lots of / a lot of / much / very / really / way / significantly"
        " / strongly / strong / heavily / heavy / considerably / substantially / a great deal"
        " / far / intense / intensely / noticeably / greatly / seriously / bold / boldly"
        " / dramatically / deeply / quite a bit / a good amount of / big / hard",
        mag(LARGE),
    ),
    (
        "extremely / hugely / massively / drastically / a ton / tons / tons of / super"
        " / insanely / maximum / max / fully / completely / totally / entirely / all the way"
        " / as much as possible / very very / really really / so much",
        mag(HUGE),
    ),
    # --- grammar ---------------------------------------------------------------------------
    ("not / no / never / avoid / nor / nothing / neither", Word("neg")),
    (
        "keep / keeping / leave / leaving / preserve / preserving / retain",
        Word("neg", verb=True),
    ),
    ("too / overly / excessively / too much / too many", Word("too")),
    ("is / are / was / were / looks / seems / feels / appears / seem / appear", Word("copula")),
    ("enough", Word("enough")),
    (
        ". / ! / ? / ; / : / then / and then / after that / afterwards / afterward / next"
        " / finally / but / however / just / only / instead / while / although / though"
        " / but also / also then",
        Word("bound"),
    ),
    ("without / with no / but no / minus", Word("bound", opens_negation=True)),
    (
        ", / and / or / plus / with / as well as / along with / together with / & / and also",
        Word("join"),
    ),
    (
        "make / makes / making / made / give / gives / giving / turn / turning / render"
        " / convert / change / changing / changed / adjust / adjusting / tweak / modify / set"
        " / let / use / bring / pull / dial / crank / bump / shift / shifting / try / create"
        " / transform / fix / correct / edit / want / wanted / need / needs / needed / would"
        " / should / could / like / love / prefer / go / get / grade / do",
        Word("filler", verb=True, desire=True),
    ),
    (
        "a / an / the / this / that / these / those / it / its / me / my / our / your / i"
        " / we / you / us / image / images / photo / photos / photograph / photography"
        " / picture / pictures / pic / pics / shot / snapshot / scene / view / frame / version"
        " / result / output / look / looking / feel / vibe / style / styled / filter / effect"
        " / effects / tone / tones / toning / treatment / finish / aesthetic / mood / overlay"
        " / layer / preset / mode / appearance / amount / level / levels / intensity"
        " / strength / value / slider / setting / overall / entire / whole / everything / all"
        " / global / globally / throughout / please / thanks / thank / ok / okay / hey / maybe"
        " / perhaps / can / will / might / may / to / of / on / in / at / for / by / as / into"
        " / from / over / out / than / so / some / any / quite / rather / pretty"
        " / kind / sort / what / there / here / now / again / still / even / already"
        " / currently / be / been / being / am / has / have / had / does / did / done"
        " / lighting / glow / same / same as / as is / alone / intact"
        " / unchanged / untouched / else / anything / something / one / about"
        " / around / roughly / approximately / bit of / lot / actually / well / toward"
        " / towards / taken / took / captured / snapped / shot on / back then / era"
        " / nice / nicely / good"
        " / also / as well / photographic / palette / grading"
        " / color grading / feeling / atmosphere / hour / more or less / if possible / how",
        Word("filler"),
    ),
]

# Words that always need the editor, with the reason given. Objects are caught anyway (they
# are not in the lexicon); these lists name the common ones so the reason can say why.
_SEMANTIC_TABLE: dict[str, str] = {
    "names a part of the picture": (
        "sky / skies / cloud / clouds / background / backdrop / foreground / subject / water"
        " / sea / ocean / lake / river / beach / sand / grass / lawn / field / tree / trees"
        " / forest / leaves / flower / flowers / plant / plants / mountain / mountains / hill"
        " / road / street / city / building / buildings / house / wall / walls / window"
        " / windows / door / floor / ground / table / car / cars / bike / bus / boat / dog"
        " / dogs / cat / cats / bird / birds / animal / animals / horse / horses / food / plate"
        " / cup / left / right / top / bottom / center / centre / middle / side / corner"
        " / edge / area / region / part / section / spot / object / objects / item / except"
        " / rest / border / horizon / reflection / moon / sun / stars / carriages / carriage"
    ),
    "is about a person": (
        "person / people / man / men / woman / women / boy / girl / child / children / kid"
        " / kids / baby / guy / lady / he / she / him / her / his / hers / they / them / their"
        " / someone / somebody / face / faces / smile / smiling / frown / expression / pose"
        " / posing / arm / arms / hand / hands / leg / legs / head / body / eyes / eye / hair"
        " / beard / mustache / moustache / skin / teeth / lips / makeup / younger"
        " / age / aged / aging / gender / male / female / clothes / clothing / outfit / shirt"
        " / dress / jacket / coat / suit / hat / cap / glasses / sunglasses / scarf / tie"
        " / earrings / necklace / jewelry / jewellery / shoes / tattoo / accessory"
        " / accessories / mask / crown / wig / portrait / selfie / family / couple / crowd"
    ),
    "asks for an artistic style": (
        "painting / paint / painted / painterly / sketch / sketched / drawing / drawn / draw"
        " / pencil / charcoal / ink / watercolor / oil / acrylic / gouache"
        " / cartoon / cartoonish / cartoony / comic / comics / manga / anime / ghibli / disney"
        " / pixar / dreamworks / 3d / 2d / cgi / clay / claymation / lego / minifigure"
        " / minifigures / funko / simpsons / simpson / simpsonize / simpsonized / caricature"
        " / sticker / stickers / cel / shaded / shading / line art / lineart / van gogh / gogh"
        " / monet / picasso / rembrandt / warhol / impressionist / impressionism / cubist"
        " / cubism / surreal / surrealist / abstract / pop art / pixel art / pixelated / mosaic"
        " / stained glass / ukiyo / origami / low poly / vector / illustration / illustrated"
        " / artwork / art / artistic / cyberpunk / steampunk / fantasy / futuristic / sci fi"
        " / neon / vaporwave / graffiti / embroidery / sculpture / statue / marble"
        " / renaissance / baroque / medieval / victorian / figure / figurine / toy / doll"
        " / plush / emoji / avatar / character / chibi / modern / modernize / contemporary"
        " / colorize / colorized / colorise / recolor / stylize / stylized"
    ),
    "changes the weather": (
        "rain / rainy / raining / snow / snowy / snowing / snowfall / fog / foggy / mist"
        " / misty / haze / hazy / storm / stormy / thunderstorm / lightning / sunny / cloudy"
        " / overcast / rainbow / weather / wind / windy / drizzle / puddles"
    ),
    "changes the season": (
        "winter / wintry / wintery / summer / summery / autumn / autumnal / fall / spring"
        " / springtime / christmas / halloween / season / seasons"
    ),
    "changes the time of day": (
        "night / nighttime / night time / dusk / dawn / sunset / sunrise / evening / morning"
        " / midday / noon / daytime / afternoon / twilight / moonlight / moonlit / daylight"
    ),
    "edits text in the picture": (
        "text / texts / sign / signs / signage / font / fonts / typeface / word / words"
        " / letter / letters / lettering / caption / captions / title / label / labels / logo"
        " / writing / written / write / say / says / saying / reads / read / translate"
        " / translated / translation / language / english / french / spanish / german"
        " / chinese / japanese / italian / headline / banner / poster / billboard / menu"
        " / quote / slogan / typography"
    ),
    "changes the framing or layout": (
        "zoom / zoomed / zooming / crop / cropped / cropping / outpaint / outpainting / extend"
        " / extended / expand / expanded / canvas / uncrop / wider / widen / panorama"
        " / panoramic / aspect / ratio / flip / flipped / mirror / mirrored / straighten"
        " / tilt / perspective / resize / resized / larger / bigger / smaller / shrink"
        " / enlarge / scale / move / moved / relocate / position / closer / further / behind"
        " / front / above / below / beside / near / upscale"
    ),
    "edits an object": (
        "erase / erased / delete / deleted / replace / replaced / swap / swapped / insert"
        " / inserted / place / placed / hide / duplicate / clone"
    ),
}

_SEMANTIC_TABLE["relights part of the scene"] = (
    "relight / relighting / relit / spotlight / lamp / candle / candles / backlight / backlit"
    " / rim light / flash"
)
_SEMANTIC_TABLE["adds an effect the adjust ops do not have"] = (
    "flare / lens flare / leak / leaks / light leak / light leaks / bokeh / glitch / halftone"
    " / sparkle / sparkles / glitter / bloom / double exposure / tilt shift"
)

_ROTATE = Word("filler", verb=True, needs_hue=True, category="changes the framing or layout")


def _phrases(spec: str) -> list[tuple[str, ...]]:
    return [tuple(p.split()) for p in spec.split(" / ") if p.strip()]


def _build_lexicon() -> dict[tuple[str, ...], Word]:
    lexicon: dict[tuple[str, ...], Word] = {}
    rows = list(_TABLE) + [(s, semantic(c)) for c, s in _SEMANTIC_TABLE.items()]
    rows.append(("rotate / rotation / rotated / rotating / spin", _ROTATE))
    for spec, word in rows:
        for phrase in _phrases(spec):
            if phrase in lexicon:
                raise AssertionError(f"duplicate phrase {' '.join(phrase)!r} in the lexicon")
            lexicon[phrase] = word
    return lexicon


LEXICON: dict[tuple[str, ...], Word] = _build_lexicon()
_MAX_PHRASE = max(len(p) for p in LEXICON)

SEMANTIC = {" ".join(p): w.category for p, w in LEXICON.items() if w.role == "semantic"}

MAGNITUDES = {" ".join(p): w.factor for p, w in LEXICON.items() if w.role == "mag"}

# Decades: up to the 1940s an old print, the 50s-60s vintage colour, the 70s-90s retro.
_DECADE_LOOK = {
    **{d: "old photo" for d in (1800, 1850, 1860, 1870, 1880, 1890, 1900, 1910, 1920, 1930, 1940)},
    1950: "vintage",
    1960: "vintage",
    1970: "retro",
    1980: "retro",
    1990: "retro",
}

# ---------------------------------------------------------------------------------------------
# Words -> lexemes
# ---------------------------------------------------------------------------------------------

_CONTRACTIONS = [
    (r"\b(it|that|what|there|here|he|she)'s\b", r"\1 is"),
    (r"\b(is|are|was|were|do|does|did|should|would|could|has|have)n't\b", r"\1 not"),
    (r"\b(is|are|was|were|do|does|did|should|would|could)nt\b", r"\1 not"),
    (r"\bdon'?t\b", "do not"),
    (r"\bwon'?t\b", "will not"),
    (r"\bcan'?t\b", "can not"),
    (r"\bi'd\b", "i would"),
    (r"\bi'm\b", "i am"),
    (r"\blet's\b", "let us"),
    (r"\b(you|we|they)'re\b", r"\1 are"),
    (r"\b(i|you|it|we|they)'ll\b", r"\1 will"),
    (r"(?<=[a-z])'s\b", ""),  # possessive: "the photo's colors"
]

_TOKEN = re.compile(
    r"(?P<decade>'?\d{2,4}s\b)"
    r"|(?P<num>[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?)"
    r"|(?P<word>[a-z]+(?:'[a-z]+)?)"
    r"|(?P<sym>[%°,.;:!?])"
)

_UNITS = {
    ("%",): "percent",
    ("percent",): "percent",
    ("per", "cent"): "percent",
    ("pct",): "percent",
    ("stop",): "ev",
    ("stops",): "ev",
    ("ev",): "ev",
    ("f", "stop"): "ev",
    ("f", "stops"): "ev",
    ("°",): "degrees",
    ("degree",): "degrees",
    ("degrees",): "degrees",
    ("deg",): "degrees",
}

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "half": 0.5, "quarter": 0.25, "third": 1 / 3,
}  # fmt: skip


@dataclass(frozen=True)
class Lexeme:
    """One understood phrase of the instruction (``word`` None: not understood)."""

    text: str
    word: Word | None
    value: float | None = None  # quantities
    unit: str | None = None  # "percent" | "ev" | "degrees" | None (a bare number)

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
    t = t.replace("\u2026", ".")
    t = re.sub(r"\bb\s*[&/]\s*w\b", " black and white ", t)
    t = t.replace("&", " and ")
    t = re.sub(r"(?<=[a-z])[-_/](?=[a-z])", " ", t)  # black-and-white, mid-tones
    t = re.sub(r"colour", "color", t)
    t = re.sub(r"\bgrey", "gray", t)
    for pattern, repl in _CONTRACTIONS:
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
    "minus"/"plus", then one of :data:`_UNITS`.
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
            if t in _NUMBER_WORDS and t != "hundred":
                total += _NUMBER_WORDS[t]
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
    for unit, name in _UNITS.items():
        if tuple(toks[j : j + len(unit)]) == unit:
            return sign * value, name, j + len(unit) - i
    return None


def _lex(instruction: str) -> list[Lexeme]:
    """Tokens -> lexemes: quantities with units, then longest lexicon phrases, then numbers."""
    toks = _tokens(instruction)
    out: list[Lexeme] = []
    i = 0
    while i < len(toks):
        q = _read_quantity(toks, i)
        if q is not None:
            value, unit, used = q
            text = re.sub(r" (?=[%°])", "", " ".join(toks[i : i + used]))
            out.append(Lexeme(text, None, value, unit))
            i += used
            continue
        for n in range(min(_MAX_PHRASE, len(toks) - i), 0, -1):
            word = LEXICON.get(tuple(toks[i : i + n]))
            if word is not None:
                out.append(Lexeme(" ".join(toks[i : i + n]), word))
                i += n
                break
        else:
            tok = toks[i]
            decade = re.fullmatch(r"'?(\d{2,4})s", tok)
            value = _number(tok)
            if decade:
                year = int(decade.group(1))
                year = year + 1900 if year < 100 else year
                name = _DECADE_LOOK.get(year - year % 10) or _DECADE_LOOK.get(year - year % 50)
                out.append(Lexeme(tok, look(name) if name else None))
            elif value is not None:
                out.append(Lexeme(tok, None, value, None))
            else:
                out.append(Lexeme(tok, None))
            i += 1
    return out


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
    # A "stops" quantity with no op word is an exposure change ("+1 EV").
    if not ops and q is not None and q.unit == "ev" and item.quantities:
        ops = [(Lexeme("exposure", target("exposure")), False)]
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
    """The sign a modifier gives an op word (targets read brightness and recovery words)."""
    w = m.word
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
            spec = SPECS[op_name]
            amount = _convert(q, op_name, s) if q is not None else None
            if amount is not None:
                note, priority = q.text, 2
            else:
                note, priority = mag_note, 2 if mag_note else 1
                amount = spec.moderate * factor * s
            requests.append(_Request(op_name, spec.clamp(amount), priority, phrase, note))


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


def _convert(q: Lexeme, op_name: str, sign: float) -> float | None:
    """A stated quantity as an amount of ``op_name`` (signed by ``sign``), or None if it does
    not apply to that op (stops to anything but exposure, degrees to anything but hue)."""
    spec = SPECS[op_name]
    v = abs(q.value)
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
    if op_name == "hue":
        return f"hue {amount:+.0f} degrees"
    if op_name == "exposure":
        return f"exposure {amount:+.2f} EV"
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
    then object verbs ("replace", "erase"), then any word the lexicon does not know.
    """
    has_hue = any(
        lx.word is not None and lx.word.role == "op" and "hue" in lx.word.ops() for lx in lexemes
    )
    has_degrees = any(lx.unit == "degrees" for lx in lexemes)
    has_colors = any(lx.word is not None and lx.word.weak for lx in lexemes)
    has_hue = has_hue or (has_degrees and has_colors)

    semantic = [(k, lx.word.category) for k, lx in enumerate(lexemes) if lx.role == "semantic"]
    semantic.sort(key=lambda kc: kc[1] == _OBJECT_EDIT)  # stable: first in text order
    if semantic:
        k, category = semantic[0]
        return f'"{_span(lexemes, k)}" {category}, which needs the editor, not a global adjustment.'
    for lx in lexemes:
        if lx.word is not None and lx.word.needs_hue and not has_hue:
            return (
                f'"{lx.text}" {lx.word.category}, which needs the editor, not a global adjustment.'
            )
    if has_degrees and not has_hue:
        return "A rotation in degrees changes the framing or layout, which needs the editor."
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
    return round(amount, 1 if SPECS[op_name].unit == "degrees" else 3) + 0.0


def plan(instruction: str) -> EditPlan:
    """Plan one instruction (see the module docstring for the rules).

    Raises :class:`PbmlxError` for an empty or blank instruction.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise PbmlxError("The instruction is empty; say what to change, e.g. 'brighten it'.")
    lexemes = _lex(instruction)

    def diffusion(reason: str) -> EditPlan:
        return EditPlan(instruction, "diffusion", [], reason)

    reason = _blocker(lexemes)
    if reason is not None:
        return diffusion(reason)
    try:
        requests, negations = _requests(lexemes)
    except _Refuse as refusal:
        return diffusion(str(refusal))
    chosen = _merge(requests, negations)
    first = {r.op: k for k, r in reversed(list(enumerate(requests)))}
    chosen.sort(key=lambda r: first[r.op])
    ops = [{"op": r.op, "amount": _round(r.op, r.amount)} for r in chosen]
    ops = [o for o in ops if o["amount"] != 0.0]
    if not ops:
        if negations:
            return diffusion(
                "It only says what to leave alone; there is no global adjustment to make, so"
                " the editor handles it."
            )
        return diffusion("No global adjustment was named, so the editor handles it.")

    # Reason: phrase -> ops, in the order the phrases came.
    kept = {o["op"]: o["amount"] for o in ops}
    parts: dict[tuple[str, str], list[str]] = {}
    for r in chosen:
        if r.op in kept:
            parts.setdefault((r.phrase, r.note), []).append(_fmt(r.op, kept[r.op]))
    clauses = []
    for (phrase, note), effects in parts.items():
        label = phrase if phrase.startswith("the ") else f'"{phrase}"'
        clauses.append(f"{label} -> {', '.join(effects)}" + (f" ({note})" if note else ""))
    text = "Global edit: " + "; ".join(clauses)
    if negations:
        phrases = ", ".join(f'"{p}"' for p in dict.fromkeys(n.phrase for n in negations))
        text += f"; nothing for {phrases}, as asked"
    return EditPlan(instruction, "adjust", ops, text + ".")
