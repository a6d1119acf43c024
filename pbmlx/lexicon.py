"""The planner's lexicon: every word and phrase :mod:`pbmlx.plan` understands, and what it means.

Data only: the parsing rules live in :mod:`pbmlx.plan`. Each row of :data:`TABLE` is a set of
phrases (separated by " / ", matched whole, longest first) with one :class:`Word` meaning; the
words of :data:`SEMANTIC_TABLE` always need the generative editor, with the reason given.
:data:`LEXICON` maps every phrase (a tuple of tokens) to its meaning; building it refuses a
phrase listed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pbmlx.adjust.presets import PRESETS

Effects = tuple[tuple[str, float], ...]


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
    hue_verb: bool = False  # "rotate": only the verb when the item names a hue ("rotate the hue")
    turn: int = 0  # mod: rotation direction for "rotate" (+1 counter-clockwise, -1 clockwise)
    axis: str = ""  # "v": makes a flip in the same item vertical ("flip it upside down")
    auto: str = ""  # setting: the automatic op it means when named with no direction
    fixes: bool = False  # "fix", "correct": an undirected setting asks for its ``auto`` op
    image: bool = False  # filler: names the photo itself ("photo", "portrait")
    ok_with: tuple[str, ...] = ()  # semantic: fine when one of these ops is asked ("horizon")
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


def semantic(category: str, ok_with: tuple[str, ...] = ()) -> Word:
    return Word("semantic", category=category, ok_with=ok_with)


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
TABLE: list[tuple[str, Word]] = [
    # --- brightness and exposure -----------------------------------------------------------
    (
        "brighten / brightens / brightened / brightening / lighten / lightened / lightening"
        " / light up / brighten up / lighten up",
        op("verb", BRIGHTEN, light=+1, group=BRIGHTNESS_OPS),
    ),
    ("brighter / lighter / brighter overall", op("comp", BRIGHTEN, light=+1, group=BRIGHTNESS_OPS)),
    ("bright", op("adj", BRIGHTEN, light=+1, group=BRIGHTNESS_OPS)),
    (
        "brightness / lightness / luminosity",
        op("setting", BRIGHTEN, light=+1, auto="auto_exposure"),
    ),
    # "light" is also a noun ("warm light"), so it only counts when nothing else is named.
    ("light", op("adj", BRIGHTEN, light=+1, weak=True, group=BRIGHTNESS_OPS)),
    ("darken / darkens / darkened / darkening", op("verb", DARKEN, light=-1, group=BRIGHTNESS_OPS)),
    ("darker / dimmer / gloomier", op("comp", DARKEN, light=-1, group=BRIGHTNESS_OPS)),
    ("dark / dim / gloomy / murky", op("adj", DARKEN, light=-1, group=BRIGHTNESS_OPS)),
    ("darkness", op("setting", DARKEN, light=-1)),
    ("exposure / exposures", replace(target("exposure"), auto="auto_exposure")),
    ("overexpose / over expose", op("verb", {"exposure": +1})),
    ("underexpose / under expose", op("verb", {"exposure": -1})),
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
            auto="auto_white_balance",
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
    (
        "temperature / color temperature / white balance / wb",
        op("setting", WARM, auto="auto_white_balance"),
    ),
    (
        "tint",
        Word("op", pos="setting", more=(("tint", 1.0),), less=(("tint", -1.0),), weak=True),
    ),
    # Removing a cast of no named colour is a white balance ("remove the color cast").
    (
        "color cast / cast / casts / color casts",
        Word(
            "op",
            pos="setting",
            more=(("tint", 1.0),),
            less=(("auto_white_balance", 1.0),),
            weak=True,
            auto="auto_white_balance",
        ),
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
        "grain / film grain / grains / film noise / graininess",
        op("noun", {"grain": +1}, less=None),
    ),
    ("grainy / grainier", op("adj", {"grain": +1}, less=None)),
    # Noise is added as grain ("add some noise") and taken away by the denoiser.
    (
        "noise / noisiness / digital noise / sensor noise / color noise / luminance noise",
        op("noun", {"grain": +1}, less={"denoise": +1}),
    ),
    ("noisy / noisier", op("adj", {"grain": +1}, less={"denoise": +1})),
    (
        "denoise / denoised / denoising / de noise / noise reduction / noise removal",
        op("verb", {"denoise": +1}, less=None),
    ),
    # Haze can be taken away (dehaze) but not added: adding haze is the editor's weather.
    ("haze / haziness", op("noun", None, less={"dehaze": +1})),
    ("hazy / hazier", op("adj", None, less={"dehaze": +1})),
    (
        "dehaze / dehazed / dehazing / de haze / haze removal",
        op("verb", {"dehaze": +1}, less=None),
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
    # --- automatic corrections -------------------------------------------------------------
    (
        "auto exposure / auto levels / auto level / auto tone / auto contrast / auto brightness"
        " / auto correct / autocorrect / auto fix / auto adjust / auto lighting / normalize"
        " / equalize",
        op("noun", {"auto_exposure": +1}, less=None),
    ),
    (
        "auto white balance / auto wb / awb / auto color / color correct / color correction"
        " / color balance / neutralize / neutral colors / remove the color cast / remove color cast"
        " / remove any color cast",
        op("noun", {"auto_white_balance": +1}, less=None),
    ),
    # --- geometry (exact amounts: see pbmlx.plan) ------------------------------------------
    # "rotate" needs a direction or an angle; with a hue word it is only the verb.
    (
        "rotate / rotation / rotated / rotating / spin / turn by",
        op("setting", {"rotate": 90}, less={"rotate": -90}, verb=True, hue_verb=True),
    ),
    ("clockwise / cw", mod(-1, turn=-1)),
    (
        "counterclockwise / counter clockwise / anticlockwise / anti clockwise / ccw",
        mod(+1, turn=+1),
    ),
    ("upside down", op("noun", {"rotate": 180}, less=None, axis="v")),
    (
        "flip / flips / flipped / flipping / flip over / mirror / mirrored / mirroring"
        " / mirror image",
        op("verb", {"flip_horizontal": 1}, less=None),
    ),
    (
        "horizontally / horizontal / left to right / right to left / side to side / sideways",
        Word("filler"),
    ),
    ("vertically / vertical / top to bottom / bottom to top", Word("filler", axis="v")),
    (
        "crop / crops / cropped / cropping / recrop",
        op("setting", {"crop_aspect": 0}, less=None, verb=True),
    ),
    ("square / squared / square format", op("adj", {"crop_aspect": 1}, less=None)),
    ("widescreen / wide screen", op("adj", {"crop_aspect": 16 / 9}, less=None)),
    (
        "straighten / straightened / straightening / straighten up / straighten out / auto"
        " straighten / level the horizon / level horizon / level out the horizon / fix the"
        " horizon / fix horizon / correct the horizon / straighten the horizon / make it level"
        " / level it",
        op("verb", {"straighten": 1}, less=None),
    ),
    (
        "tilt / tilted / crooked / skewed / askew / slanted / slanting / wonky / not straight"
        " / not level / off level",
        op("problem", {"straighten": 1}, less=None),
    ),
    (
        "upscale / upscaled / upscaling / up scale / enlarge / enlarged / enlarging / upsize"
        " / upsized / magnify / scale up / size up / blow up",
        op("verb", {"scale": 2}, less=None),
    ),
    (
        "downscale / downscaled / downscaling / down scale / downsize / downsized / downsizing"
        " / shrink / shrunk / shrinking / scale down / size down",
        op("verb", {"scale": 0.5}, less=None),
    ),
    (
        "scale / scaled / scaling / rescale / rescaled / resize / resized / resizing / re size",
        op("setting", {"scale": 2}, less={"scale": 0.5}, verb=True),
    ),
    ("size / dimensions / resolution", op("setting", {"scale": 2}, less={"scale": 0.5})),
    (
        "twice as big / twice as large / twice the size / twice the resolution / double the size"
        " / double its size / double the resolution / double size / two times as big",
        op("noun", {"scale": 2}, less=None),
    ),
    (
        "three times as big / three times as large / triple the size / three times the size",
        op("noun", {"scale": 3}, less=None),
    ),
    (
        "four times as big / four times as large / quadruple the size / four times the size",
        op("noun", {"scale": 4}, less=None),
    ),
    (
        "half the size / half size / half as big / half as large / halve the size / halve it"
        " / half the resolution",
        op("noun", {"scale": 0.5}, less=None),
    ),
    ("full hd / fhd", op("noun", {"resize": 1920}, less=None)),
    ("uhd / ultra hd", op("noun", {"resize": 3840}, less=None)),
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
    ("clean up / clean out", mod(-1, verb=True, removal=True)),
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
        " / convert / change / changes / changing / changed / adjust / adjusting / tweak / modify / set"
        " / let / use / bring / pull / dial / crank / bump / shift / shifting / try / create"
        " / transform / edit / want / wanted / need / needs / needed / would"
        " / should / could / like / love / prefer / go / get / grade / do",
        Word("filler", verb=True, desire=True),
    ),
    # "fix the exposure", "correct the white balance": the setting's automatic correction.
    (
        "fix / fixed / fixing / correct / corrected / correcting / correction / repair / balance"
        " / rebalance / sort out / even out / auto / automatic / automatically",
        Word("filler", verb=True, desire=True, fixes=True),
    ),
    # The photo itself: what describes it ("this photo of my cat") is not a local target.
    (
        "image / images / photo / photos / photograph / photography / picture / pictures / pic"
        " / pics / shot / snapshot / snap / portrait / selfie / landscape / headshot",
        Word("filler", image=True),
    ),
    (
        "a / an / the / this / that / these / those / it / its / me / my / our / your / i"
        " / we / you / us / scene / view / frame / version"
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
SEMANTIC_TABLE: dict[str, str] = {
    "names a part of the picture": (
        "sky / skies / cloud / clouds / background / backdrop / foreground / subject / water"
        " / sea / ocean / lake / river / beach / sand / grass / lawn / field / tree / trees"
        " / forest / leaves / flower / flowers / plant / plants / mountain / mountains / hill"
        " / road / street / city / building / buildings / house / wall / walls / window"
        " / windows / door / floor / ground / table / car / cars / bike / bus / boat / dog"
        " / dogs / cat / cats / bird / birds / animal / animals / horse / horses / food / plate"
        " / cup / left / right / top / bottom / center / centre / middle / side / corner"
        " / edge / area / region / part / section / spot / object / objects / item / except"
        " / rest / border / reflection / moon / sun / stars / carriages / carriage"
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
        " / accessories / mask / crown / wig / family / couple / crowd"
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
        " / misty / storm / stormy / thunderstorm / lightning / sunny / cloudy"
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
        "zoom / zoomed / zooming / outpaint / outpainting / extend"
        " / extended / expand / expanded / canvas / uncrop / wider / widen / panorama"
        " / panoramic / perspective / larger / bigger / smaller / move / moved / relocate / position / closer / further / behind"
        " / front / above / below / beside / near"
    ),
    "edits an object": (
        "erase / erased / delete / deleted / replace / replaced / swap / swapped / insert"
        " / inserted / place / placed / hide / duplicate / clone"
    ),
}

SEMANTIC_TABLE["relights part of the scene"] = (
    "relight / relighting / relit / spotlight / lamp / candle / candles / backlight / backlit"
    " / rim light / flash"
)
SEMANTIC_TABLE["adds an effect the adjust ops do not have"] = (
    "flare / lens flare / leak / leaks / light leak / light leaks / bokeh / glitch / halftone"
    " / sparkle / sparkles / glitter / bloom / double exposure / tilt shift"
)

# Words that take their meaning from a neighbour (see pbmlx.plan's context pass): "left" and
# "right" with "rotate", a flip that "upside down" or "vertically" makes vertical.
LEFT_TURN = mod(+1, turn=+1)
RIGHT_TURN = mod(-1, turn=-1)
FLIP_VERTICAL = op("verb", {"flip_vertical": 1}, less=None)
FILLER = Word("filler")

# Aspect words only name what a ratio ("16:9") sets.
ASPECT = Word("filler")


def _phrases(spec: str) -> list[tuple[str, ...]]:
    return [tuple(p.split()) for p in spec.split(" / ") if p.strip()]


def _build_lexicon() -> dict[tuple[str, ...], Word]:
    lexicon: dict[tuple[str, ...], Word] = {}
    rows = list(TABLE) + [(s, semantic(c)) for c, s in SEMANTIC_TABLE.items()]
    rows.append(("aspect / aspect ratio / ratio / format", ASPECT))
    rows.append(
        (
            "wide / tall / long side / long edge / longest side / longest edge / on the long side"
            " / as they are / as it is / the way it is / the way they are",
            Word("filler"),
        )
    )
    rows.append(("horizon", semantic("names a part of the picture", ("straighten",))))
    for spec, word in rows:
        for phrase in _phrases(spec):
            if phrase in lexicon:
                raise AssertionError(f"duplicate phrase {' '.join(phrase)!r} in the lexicon")
            lexicon[phrase] = word
    return lexicon


LEXICON: dict[tuple[str, ...], Word] = _build_lexicon()
MAX_PHRASE = max(len(p) for p in LEXICON)

SEMANTIC = {" ".join(p): w.category for p, w in LEXICON.items() if w.role == "semantic"}

MAGNITUDES = {" ".join(p): w.factor for p, w in LEXICON.items() if w.role == "mag"}

# Decades: up to the 1940s an old print, the 50s-60s vintage colour, the 70s-90s retro.
DECADE_LOOK = {
    **{d: "old photo" for d in (1800, 1850, 1860, 1870, 1880, 1890, 1900, 1910, 1920, 1930, 1940)},
    1950: "vintage",
    1960: "vintage",
    1970: "retro",
    1980: "retro",
    1990: "retro",
}

# Normalisation of contractions, applied before tokenising.
CONTRACTIONS = [
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

# Units read after a number.
UNITS = {
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
    ("px",): "px",
    ("pixel",): "px",
    ("pixels",): "px",
    ("k",): "k",  # "4k": a long side, see K_PIXELS
    ("p",): "lines",  # "1080p": lines of a 16:9 frame
    ("x",): "factor",
    ("times",): "factor",
    ("fold",): "factor",
}

# "4k" and friends as the long side in pixels (UHD for 4k and 8k, DCI for 2k).
K_PIXELS = {2: 2048, 4: 3840, 5: 5120, 6: 6144, 8: 7680}

# Common words of the other languages people write instructions in. The planner understands
# English only; these (and any word with a non-Latin or accented letter) are how it tells.
_FOREIGN_TEXT = (
    # German
    "mach mache machen das die der den dem des ein eine einen bild foto heller dunkler"
    " bitte und mehr weniger etwas sehr ist nicht mit kontrast farben wärmer kälter schärfer"
    " helligkeit sättigung schwarz weiß weiss"
    # French
    " rends rendre rendez fais faire la le les un une des et très peu plus moins lumineuse"
    " lumineux claire sombre couleurs couleur chaude froide contraste augmente augmenter"
    " diminue nette netteté noir blanc s'il vous plaît"
    # Spanish
    " hazlo haz hacer hace el los las más menos brillante brillo clara oscura oscuro"
    " colores cálida fría por favor muy poco imagen aumenta aumentar reduce nítida"
    # Italian
    " rendi rendila fai più luminosa luminoso scura immagine colori calda fredda per favore"
    # Portuguese and Dutch
    " deixe deixa mais escura de maak het helderder lichter donkerder warmer kleuren"
)
FOREIGN = frozenset(_FOREIGN_TEXT.split())

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "half": 0.5, "quarter": 0.25, "third": 1 / 3,
}  # fmt: skip
