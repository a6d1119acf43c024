"""`pbmlx edit` end to end, as a user runs it: real photos, real files, a real subprocess.

Every bad input must give exactly one `pbmlx: error:` line on stderr, exit code 2, no
traceback, the input's bytes unchanged and no partial or temporary file left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from badfiles import (
    make_16bit_png,
    make_animated_gif,
    make_bomb_png,
    make_cmyk_jpeg,
    make_exif_rotated_jpeg,
    make_jpeg,
    make_long_strip_png,
    make_palette_png_with_transparency,
    make_png,
    make_symlink,
    make_text_named_jpg,
    make_truncated_jpeg,
    make_zero_byte_file,
    missing_path,
    output_in_missing_folder,
    output_under_a_file,
    snapshot,
)
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "coffee.jpg"


def pbmlx(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pbmlx", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def luma(path: Path) -> float:
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float64).mean())


def assert_clean_error(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbmlx: error: "), r.stderr
    assert "Traceback" not in r.stderr


def test_brighten_writes_a_brighter_image_beside_the_input(tmp_path):
    src = tmp_path / "coffee.jpg"
    src.write_bytes(SAMPLE.read_bytes())
    before = snapshot(tmp_path)
    r = pbmlx("edit", src, "brighten this picture")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "coffee.edited.jpg"
    assert r.stdout.strip() == str(out)
    # Brightness +0.3 lifts midtones by up to 7.5% of full scale: the coffee photo's mean
    # luma rises ~10 levels of 255; 4 is far above JPEG re-encoding noise (< 1).
    assert luma(out) > luma(src) + 4
    assert Image.open(out).size == Image.open(src).size
    assert snapshot(tmp_path) == {**before, out.name: snapshot(tmp_path)[out.name]}
    assert snapshot(tmp_path)[src.name] == before[src.name]


def test_json_output_lists_turns_with_plans_and_seconds(tmp_path):
    src = make_png(tmp_path)
    out = tmp_path / "out.png"
    r = pbmlx("edit", src, "add film grain and a vignette", "then warm it up", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["output"] == str(out) and out.exists()
    assert [t["instruction"] for t in report["turns"]] == [
        "add film grain and a vignette",
        "then warm it up",
    ]
    for t in report["turns"]:
        assert {"instruction", "route", "ops", "reason", "seconds"} <= set(t)
        assert t["route"] == "adjust" and t["seconds"] >= 0
    assert [o["op"] for o in report["turns"][0]["ops"]] == ["grain", "vignette"]
    assert [o["op"] for o in report["turns"][1]["ops"]] == ["temperature"]


def test_multi_turn_applies_each_instruction_to_the_previous_result(tmp_path):
    src = make_png(tmp_path)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert pbmlx("edit", src, "turn it black and white", "-o", a).returncode == 0
    assert pbmlx("edit", a, "brighten it", "-o", b).returncode == 0
    both = tmp_path / "both.png"
    assert pbmlx("edit", src, "turn it black and white", "brighten it", "-o", both).returncode == 0
    # Two turns in one run == the same turns run one after the other (8-bit PNG in between
    # rounds to 1/255, and the brightness curve has slope <= 1.3, so <= 1 level apart).
    diff = np.abs(np.asarray(Image.open(both), np.int16) - np.asarray(Image.open(b), np.int16))
    assert diff.max() <= 1


def test_dry_run_json_prints_one_plan_per_line_and_writes_nothing(tmp_path):
    src = make_jpeg(tmp_path)
    before = snapshot(tmp_path)
    r = pbmlx(
        "edit", src, "brighten this picture", "add a red scarf to the dog", "--dry-run", "--json"
    )
    assert r.returncode == 0, r.stderr
    plans = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [p["route"] for p in plans] == ["adjust", "diffusion"]
    for p in plans:
        assert set(p) == {"instruction", "route", "ops", "reason"}
    assert plans[1]["ops"] == []
    assert snapshot(tmp_path) == before


def test_same_seed_same_grain_other_seed_other_grain(tmp_path):
    src = make_png(tmp_path)
    outs = []
    for name, seed in (("a.png", 1), ("b.png", 1), ("c.png", 2)):
        assert (
            pbmlx("edit", src, "add film grain", "-o", tmp_path / name, "--seed", seed).returncode
            == 0
        )
        outs.append(np.asarray(Image.open(tmp_path / name)))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_local_request_needs_the_editor_and_says_how(tmp_path):
    src = make_jpeg(tmp_path)
    before = snapshot(tmp_path)
    r = pbmlx("edit", src, "blur the background")
    assert_clean_error(r)
    assert "editor" in r.stderr and "README" in r.stderr
    assert snapshot(tmp_path) == before


def test_forcing_adjust_on_a_local_request_is_refused(tmp_path):
    src = make_jpeg(tmp_path)
    r = pbmlx("edit", src, "brighten the face", "--engine", "adjust")
    assert_clean_error(r)
    assert "adjust engine cannot" in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = pbmlx("edit", missing_path(tmp_path), "brighten", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


GOOD_ODD_INPUTS = {
    "cmyk jpeg": make_cmyk_jpeg,
    "16-bit png": make_16bit_png,
    "palette png with transparency": make_palette_png_with_transparency,
    "exif-rotated jpeg": make_exif_rotated_jpeg,
    "1x20000 strip": make_long_strip_png,
}


@pytest.mark.parametrize("case", GOOD_ODD_INPUTS)
def test_odd_but_valid_inputs_are_edited(tmp_path, case):
    src = GOOD_ODD_INPUTS[case](tmp_path)
    before = snapshot(tmp_path)
    out = tmp_path / f"out{src.suffix}"
    r = pbmlx("edit", src, "brighten this picture", "-o", out)
    assert r.returncode == 0, r.stderr
    assert snapshot(tmp_path)[src.name] == before[src.name]
    with Image.open(out) as im_out:
        edited = im_out.convert("RGBA")
    with Image.open(src) as im_in:
        from PIL import ImageOps

        upright = ImageOps.exif_transpose(im_in)
        assert edited.size == upright.size
    if case == "palette png with transparency":
        alpha_in = np.asarray(upright.convert("RGBA"))[..., 3]
        assert np.array_equal(np.asarray(edited)[..., 3], alpha_in)
    if case == "16-bit png":
        with Image.open(out) as im_out:
            assert im_out.mode.startswith("I") or "16" in im_out.mode or im_out.mode == "RGB"


BAD_INPUTS = {
    "truncated jpeg": make_truncated_jpeg,
    "zero-byte file": make_zero_byte_file,
    "text file named .jpg": make_text_named_jpg,
    "decompression bomb": make_bomb_png,
    "animated gif": make_animated_gif,
    "missing path": missing_path,
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_give_one_clean_error(tmp_path, case):
    src = BAD_INPUTS[case](tmp_path)
    before = snapshot(tmp_path)
    r = pbmlx("edit", src, "brighten this picture")
    assert_clean_error(r)
    assert snapshot(tmp_path) == before


def test_unwritable_output_places(tmp_path):
    src = make_jpeg(tmp_path)
    for out in (output_under_a_file(tmp_path), output_in_missing_folder(tmp_path)):
        before = snapshot(tmp_path)
        r = pbmlx("edit", src, "brighten", "-o", out)
        assert_clean_error(r)
        assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_folder(tmp_path):
    src = make_jpeg(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = pbmlx("edit", src, "brighten", "-o", ro / "out.jpg")
        assert_clean_error(r)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_output_equal_to_input_is_refused_even_with_overwrite(tmp_path):
    src = make_jpeg(tmp_path)
    link = make_symlink(src, tmp_path)
    before = snapshot(tmp_path)
    for out in (src, link, tmp_path / "." / src.name):
        r = pbmlx("edit", src, "brighten", "-o", out, "--overwrite")
        assert_clean_error(r)
    assert snapshot(tmp_path) == before


def test_existing_output_needs_overwrite(tmp_path):
    src = make_jpeg(tmp_path)
    out = tmp_path / "out.jpg"
    out.write_bytes(b"keep me")
    r = pbmlx("edit", src, "brighten", "-o", out)
    assert_clean_error(r)
    assert out.read_bytes() == b"keep me"
    r = pbmlx("edit", src, "brighten", "-o", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == Image.open(src).size


@pytest.mark.parametrize(
    "args",
    [
        ["edit"],
        ["edit", "x.jpg"],
        ["edit", "x.jpg", "brighten", "--engine", "magic"],
        ["edit", "x.jpg", "brighten", "--seed", "abc"],
        ["frobnicate"],
        ["edit", "x.jpg", "   "],
    ],
)
def test_bad_arguments_give_one_clean_error(tmp_path, args):
    r = pbmlx(*args, cwd=tmp_path)
    assert_clean_error(r)
    assert list(tmp_path.iterdir()) == []


def assert_json_error(r: subprocess.CompletedProcess, *, says: str) -> None:
    """--json: the one error line on stderr and exit 2, and the same message as the only
    thing on stdout, one JSON object."""
    assert_clean_error(r)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    report = json.loads(lines[0])
    assert set(report) == {"error", "code"} and report["code"] == 2
    assert r.stderr.strip() == f"pbmlx: error: {report['error']}"
    assert says in report["error"]


def test_json_errors_are_also_one_json_object_on_stdout(tmp_path):
    src = make_jpeg(tmp_path)
    # Errors of the edit itself (PbmlxError), before and after the pixels are read.
    assert_json_error(pbmlx("edit", missing_path(tmp_path), "brighten", "--json"), says="exist")
    assert_json_error(
        pbmlx("edit", src, "brighten", "-o", tmp_path / "out.gif", "--json"), says=".gif"
    )
    assert_json_error(pbmlx("edit", src, "blur the background", "--json"), says="editor")
    # Argument errors: the command's own parser, and the top-level one (an unknown option).
    assert_json_error(pbmlx("edit", src, "--json", cwd=tmp_path), says="INSTRUCTION")
    assert_json_error(pbmlx("edit", src, "brighten", "--quality", "0", "--json"), says="--quality")
    assert_json_error(pbmlx("doctor", "--json", "--no-such-option"), says="--no-such-option")
    # Another command with --json: judge, on a source that is not there.
    r = pbmlx("judge", missing_path(tmp_path), src, "brighten", "--json")
    assert_json_error(r, says="exist")
    # Without --json (or for a command without it), stdout stays empty.
    r = pbmlx("edit", missing_path(tmp_path), "brighten")
    assert_clean_error(r)
    assert r.stdout == ""
    r = pbmlx("frobnicate", "--json")
    assert_clean_error(r)
    assert r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_python_api_pil_in_pil_out():
    import pbmlx
    from pbmlx.flow import edit

    src = Image.open(SAMPLE)
    result = edit(src, "brighten this picture", "add a vignette")
    assert isinstance(result.image, Image.Image) and result.image.size == src.size
    assert [t.plan.route for t in result.turns] == ["adjust", "adjust"]
    assert result.peak_memory_bytes > 0 and result.seconds["total"] > 0
    assert np.asarray(src).tobytes() == np.asarray(Image.open(SAMPLE)).tobytes()  # input untouched
    assert pbmlx.edit is edit
    with pytest.raises(pbmlx.PbmlxError):
        edit(src, "remove the cup")


def test_a_reader_that_goes_away_is_not_a_traceback():
    """`pbmlx edit ... --dry-run --json | head -1`: the pipe closes before pbmlx writes; it
    stops quietly with 141 (128 + SIGPIPE, as a shell reports it), no traceback."""
    p = subprocess.Popen(
        [sys.executable, "-m", "pbmlx", "edit", str(SAMPLE), *["brighten it"] * 2000, "--dry-run"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()  # before the child has imported anything, let alone written
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_non_english_instructions_are_refused_in_english(tmp_path) -> None:
    """Whatever the engine or model: the editor's text encoder reads English only too."""
    r = pbmlx("edit", SAMPLE, "mach es heller", "-o", tmp_path / "x.jpg", cwd=tmp_path)
    assert_clean_error(r)
    assert "English only" in r.stderr and not (tmp_path / "x.jpg").exists()


def test_negation_only_is_a_no_op_edit(tmp_path) -> None:
    out = tmp_path / "same.jpg"
    r = pbmlx("edit", SAMPLE, "don't make it brighter", "-o", out, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["turns"][0]["ops"] == [] and "Nothing to change" in doc["turns"][0]["reason"]
    assert out.is_file()
