"""The sampler's settings object: its defaults are the CLI's, it refuses bad values, and every
entry point gives the same pixels whether the settings come as one object or as keywords.

The model tests use the tiny random InstructPix2Pix checkpoint (``tiny_ip2p.py``) at a 32 px
working size, as tests/test_pipeline.py does.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)
from pbmlx.cli import build_parser, main
from pbmlx.diffuse import settings
from pbmlx.diffuse.schedulers import SCHEDULERS
from pbmlx.diffuse.settings import SamplerSettings, resolve
from pbmlx.errors import PbmlxError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "coffee.jpg"
PROMPT = "make it winter"
# Not the defaults in any field, so that a setting that is dropped on the way shows.
CUSTOM = SamplerSettings(
    steps=2, guidance=5.0, image_guidance=1.25, size=32, scheduler="euler", seed=3
)


def photo(size: tuple[int, int] = (60, 40)) -> Image.Image:
    return Image.open(SAMPLE).convert("RGB").resize(size, Image.Resampling.LANCZOS)


# ---- defaults ------------------------------------------------------------------------------------


def test_defaults_are_the_cli_defaults():
    args = build_parser().parse_args(["edit", "photo.jpg", "brighten"])
    cli = SamplerSettings(**{name: getattr(args, name) for name in settings.FIELDS})
    assert cli == SamplerSettings()
    assert SamplerSettings().to_dict() == {
        "steps": 20,
        "guidance": 7.5,
        "image_guidance": 1.5,
        "size": 512,
        "scheduler": "euler_a",
        "seed": 0,
    }


def test_eval_defaults_are_the_same_settings(tmp_path):
    from pbmlx.evaluate import EvalSettings

    s = EvalSettings(data=tmp_path, out=tmp_path / "out")
    assert s.sampler == SamplerSettings()
    assert EvalSettings(data=tmp_path, out=tmp_path, steps=4, scheduler="ddim").sampler == (
        SamplerSettings(steps=4, scheduler="ddim")
    )


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "Number of steps"),
        ("steps", -3, "Number of steps"),
        ("steps", 2.0, "Number of steps"),
        ("steps", True, "Number of steps"),
        ("steps", "20", "Number of steps"),
        ("guidance", math.nan, "Guidance"),
        ("guidance", math.inf, "Guidance"),
        ("guidance", -0.5, "Guidance"),
        ("guidance", "7.5", "Guidance"),
        ("guidance", True, "Guidance"),
        ("image_guidance", -1.0, "Image guidance"),
        ("image_guidance", math.nan, "Image guidance"),
        ("size", 7, "Working size"),
        ("size", 512.0, "Working size"),
        ("size", False, "Working size"),
        ("scheduler", "heun", "Unknown scheduler"),
        ("scheduler", None, "Unknown scheduler"),
        ("seed", -1, "Seed"),
        ("seed", 2**63, "Seed"),
        ("seed", 1.0, "Seed"),
    ],
)
def test_bad_values_are_refused_by_name(field, value, message):
    with pytest.raises(PbmlxError, match=message):
        SamplerSettings(**{field: value})
    # replace() builds a new object, so a variant is checked as well.
    with pytest.raises(PbmlxError, match=message):
        dataclasses.replace(SamplerSettings(), **{field: value})


def test_edges_of_the_valid_ranges_are_accepted():
    s = SamplerSettings(steps=1, guidance=0, image_guidance=0, size=8, seed=2**63 - 1)
    assert (s.steps, s.size, s.seed) == (1, 8, 2**63 - 1)
    assert isinstance(s.guidance, float) and isinstance(s.image_guidance, float)  # ints stored
    assert s.guidance == 0.0 and s.image_guidance == 0.0  # as floats
    for name in SCHEDULERS:
        assert SamplerSettings(scheduler=name).scheduler == name


def test_settings_are_frozen_and_hashable():
    s = SamplerSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 4  # type: ignore[misc]
    assert hash(s) == hash(SamplerSettings()) and {s, SamplerSettings()} == {s}


def test_resolve_puts_given_keywords_in_place():
    assert resolve() == SamplerSettings()
    assert resolve(CUSTOM) is CUSTOM
    assert resolve(CUSTOM, steps=None, seed=None) is CUSTOM  # None: not given
    assert resolve(CUSTOM, steps=7) == dataclasses.replace(CUSTOM, steps=7)
    assert resolve(None, size=64) == SamplerSettings(size=64)
    with pytest.raises(TypeError, match="not a sampler setting: stepz"):
        resolve(stepz=3)
    with pytest.raises(PbmlxError, match="must be a SamplerSettings"):
        resolve({"steps": 3})  # type: ignore[arg-type]
    with pytest.raises(PbmlxError, match="Number of steps"):
        resolve(CUSTOM, steps=0)


def test_the_edit_command_refuses_a_bad_setting_even_for_an_exact_edit(tmp_path, capsys):
    src = tmp_path / "photo.jpg"
    src.write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "out.png"
    assert main(["edit", str(src), "brighten this picture", "--steps", "0", "-o", str(out)]) == 2
    assert "Number of steps 0" in capsys.readouterr().err
    assert not out.exists()
    # A dry run only plans: the sampler's flags are not read.
    assert main(["edit", str(src), "brighten this picture", "--steps", "0", "--dry-run"]) == 0


def test_python_edit_takes_its_base_seed_from_the_settings():
    # An exact edit with grain: the noise depends on the run's seed only.
    from pbmlx.flow import edit

    image = photo()
    by_settings = edit(image, "add film grain", settings=SamplerSettings(seed=4))
    by_keyword = edit(image, "add film grain", seed=4)
    other = edit(image, "add film grain")
    assert by_settings.seed == by_keyword.seed == 4 and other.seed == 0
    assert np.array_equal(np.asarray(by_settings.image), np.asarray(by_keyword.image))
    assert not np.array_equal(np.asarray(by_settings.image), np.asarray(other.image))
    # An explicit seed wins over the settings' one.
    assert edit(image, "add film grain", seed=5, settings=SamplerSettings(seed=4)).seed == 5


# ---- the same pixels either way ------------------------------------------------------------------


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from tiny_ip2p import build_tiny_ip2p

    from pbmlx.editor import Editor

    return Editor.from_pretrained(build_tiny_ip2p(tmp_path_factory.mktemp("tiny") / "ip2p"))


def test_editor_edit_with_settings_is_the_keyword_edit(editor):
    image = photo()
    by_settings = editor.edit(image, PROMPT, settings=CUSTOM)
    by_keywords = editor.edit(image, PROMPT, **CUSTOM.to_dict())
    assert np.array_equal(by_settings.rgb, by_keywords.rgb)
    assert by_settings.working_size == by_keywords.working_size == (32, 24)
    d = by_settings.to_dict()
    assert (d["steps"], d["guidance"], d["image_guidance"], d["scheduler"], d["seed"]) == (
        2,
        5.0,
        1.25,
        "euler",
        3,
    )
    # A keyword next to settings= replaces that field only.
    mixed = editor.edit(image, PROMPT, settings=dataclasses.replace(CUSTOM, seed=9), seed=3)
    assert np.array_equal(mixed.rgb, by_settings.rgb)
    # And the settings are really used: another seed is another edit.
    reseeded = editor.edit(image, PROMPT, settings=dataclasses.replace(CUSTOM, seed=4))
    assert not np.array_equal(reseeded.rgb, by_settings.rgb)


def test_pipeline_generate_with_settings_is_the_keyword_generate(editor):
    small = np.asarray(photo((32, 24)), dtype=np.float32) / 255.0
    a = editor.pipeline.generate(small, PROMPT, settings=CUSTOM).image
    fields = {k: v for k, v in CUSTOM.to_dict().items() if k != "size"}
    b = editor.pipeline.generate(small, PROMPT, **fields).image
    assert np.array_equal(a, b)


def test_python_edit_with_settings_is_the_keyword_edit(editor):
    from pbmlx.flow import edit

    image = photo()
    keywords = {k: v for k, v in CUSTOM.to_dict().items() if k != "seed"}
    a = edit(image, PROMPT, model=editor, settings=CUSTOM)
    b = edit(image, PROMPT, model=editor, seed=CUSTOM.seed, **keywords)
    assert a.seed == b.seed == 3
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.turns[0].editor.to_dict()["scheduler"] == "euler"


def test_the_model_caps_the_step_count(editor):
    # Valid settings, but more steps than the model's scheduler has timesteps.
    too_many = SamplerSettings(steps=10_000)
    with pytest.raises(PbmlxError, match="Number of steps 10000 must be an int from 1 to"):
        editor.check_settings(too_many)
    assert editor.check_settings(CUSTOM, seed=5) == dataclasses.replace(CUSTOM, seed=5)
