"""`pbmlx eval` end to end: a tiny dataset in Pico-Banana-400K's real schema made from real photos
(``skimage.data``), a tiny InstructPix2Pix checkpoint converted by ``pbmlx convert``, and the
command run as a user runs it (a subprocess).

What is proven:

- the edits are the ones ``pbmlx edit`` makes: the adjust-route references are pbmlx's own edits
  of the same photo with the same seed, so PSNR is exactly the documented cap (100 dB) and SSIM
  exactly 1; photometric records take the adjust route, generative ones the editor, sessions run
  turn by turn (turn 2 edits turn 1's output);
- PSNR / SSIM of a resized reference equal skimage's (``peak_signal_noise_ratio``,
  ``structural_similarity``) on the same pair; a reference of another aspect is "not aligned";
- verdicts are never invented: without ``--clip`` generative edits are partial (compliance,
  overall and accept null); with a (tiny) CLIP they are full and get a CLIP image similarity;
- summary.json agrees with results.jsonl (counts, accept rates, means) and carries the readers'
  skip counts; report.html is offline (no URL, no script) with every image present, and renders
  in headless Chromium to a non-blank page (the screenshot path is printed);
- bad input is one ``pbmlx: error:`` line and exit 2, and a failed run leaves no DIR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pbmlx

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tiny_ip2p import build_tiny_ip2p

from pbmlx import evaluate

REPO = Path(__file__).resolve().parents[1]
FAST = ("--steps", "2", "--size", "64")  # tiny model at a 64 px working size: seconds per edit
CHROMIUM = Path("/usr/bin/chromium")
SCORES = ("compliance", "seamlessness", "preservation", "quality", "overall")

TONE = "Change overall color tone (warm ↔ cool)"
GRAIN = "Add film grain or vintage filter"
SEASON = "Apply seasonal transformation (summer ↔ winter)"
ADD_OBJECT = "Add a new object to the scene"


def pbmlx_cli(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PBMLX_", "HF_"))}
    base["PBMLX_CONFIG"] = str(REPO / "tests" / "no-such-config.json")
    base["HF_HUB_OFFLINE"] = "1"  # every model here is a local folder: nothing is fetched
    return subprocess.run(
        [sys.executable, "-m", "pbmlx", *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
        timeout=600,
    )


def assert_clean_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("pbmlx: error: ")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def photo(name: str, side: int) -> Image.Image:
    im = Image.fromarray(getattr(skdata, name)()).convert("RGB")
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def pbmlx_edit(image: Image.Image, instruction: str, seed: int = 0) -> np.ndarray:
    """What `pbmlx edit` makes of an 8-bit photo (adjust route: no model needed)."""
    return np.asarray(pbmlx.edit(image, instruction, seed=seed).image.convert("RGB"))


# ---- the dataset --------------------------------------------------------------------------------

URL = "https://farm{}.staticflickr.com/{}/{}_{}_o.jpg"


def sft_record(n: int, edit_type: str, text: str, summarized: str, image_id: str) -> dict:
    """One sft.jsonl object as the release writes it, plus the mapping script's
    local_input_image."""
    return {
        "open_image_input_url": URL.format(n, 1000 + n, 5000000 + n, "a1b2c3d4e5"),
        "text": text,
        "summarized_text": summarized,
        "edit_type": edit_type,
        "output_image": f"images/positive-edit/{n}.png",
        "local_input_image": f"sources/{image_id}.jpg",
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    """DATA with 6 sft.jsonl records (one whose output is missing) and one 2-turn session.

    Sources are JPEGs of skimage.data photos at about 160 px (fast to edit and judge). The
    references: record 1 is pbmlx's own "make it warmer" edit (identical to what eval makes);
    record 2 is pbmlx's "cooler" edit of the photo at twice the size (same aspect: resized);
    record 3's is cropped to another aspect (not aligned); the generative ones are photos of the
    same size.
    """
    root = tmp_path_factory.mktemp("pico") / "data"
    (root / "sources").mkdir(parents=True)
    (root / "images" / "positive-edit").mkdir(parents=True)
    (root / "images" / "multi-turn").mkdir(parents=True)
    ids = {}
    srcs = {}
    for i, name in enumerate(("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry")):
        ids[name] = f"{i:x}" * 16  # Open Images ImageIDs are 16 hex digits
        im = photo(name, 160)
        im.save(root / "sources" / f"{ids[name]}.jpg", quality=92)
        srcs[name] = Image.open(root / "sources" / f"{ids[name]}.jpg").convert("RGB")

    def out(n: int, x: np.ndarray | Image.Image) -> None:
        im = x if isinstance(x, Image.Image) else Image.fromarray(x)
        im.save(root / "images" / "positive-edit" / f"{n}.png")

    records = [
        sft_record(
            1, TONE, "Shift the whole photo to a warmer tone.", "make it warmer", ids["coffee"]
        ),
        sft_record(
            2,
            TONE.lower().replace(" ↔ ", "/"),
            "Cool the tones.",
            "give it a cooler tone",
            ids["chelsea"],
        ),
        sft_record(
            3, GRAIN, "Add visible film grain across the image.", "add film grain", ids["astronaut"]
        ),
        sft_record(
            4, SEASON, "Make the scene look like winter with snow.", "make it winter", ids["rocket"]
        ),
        sft_record(
            5, ADD_OBJECT, "Add a red balloon in the sky.", "add a red balloon", ids["coffee"]
        ),
        sft_record(6, TONE, "Warm it.", "make it warmer", ids["chelsea"]),  # its output is missing
    ]
    out(1, pbmlx_edit(srcs["coffee"], "make it warmer"))
    cool = Image.fromarray(pbmlx_edit(srcs["chelsea"], "give it a cooler tone"))
    out(2, cool.resize((cool.width * 2, cool.height * 2), Image.Resampling.BICUBIC))
    grain = pbmlx_edit(srcs["astronaut"], "add film grain")
    out(3, grain[:, : grain.shape[1] * 2 // 3])  # a 2:3 crop of a square photo
    out(4, photo("rocket", 160).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    out(5, photo("coffee", 160).rotate(3))
    (root / "sft.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )

    turn1 = pbmlx_edit(srcs["immunohistochemistry"], "add film grain")
    Image.fromarray(turn1).save(root / "images" / "multi-turn" / "1_turn1.png")
    photo("immunohistochemistry", 160).rotate(90).save(
        root / "images" / "multi-turn" / "1_final.png"
    )
    session = {
        "files": [
            {"id": "original_input_image", "url": URL.format(9, 1009, 5000009, "ffee00ddcc")},
            {"id": "edit_turn1", "url": "images/multi-turn/1_turn1.png"},
            {"id": "final_image", "url": "images/multi-turn/1_final.png"},
        ],
        "metadata_edit_turn_prompts": ["add film grain", "now make it look like winter"],
        "local_input_image": f"sources/{ids['immunohistochemistry']}.jpg",
    }
    (root / "multi-turn.jsonl").write_text(json.dumps(session) + "\n", encoding="utf-8")
    return {"root": root, "sources": srcs, "turn1": turn1}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny InstructPix2Pix checkpoint, converted to a pbmlx model folder."""
    base = tmp_path_factory.mktemp("tiny")
    ckpt = build_tiny_ip2p(base / "ip2p", seed=0)
    r = pbmlx_cli("convert", ckpt, base / "converted")
    assert r.returncode == 0, r.stderr
    return base / "converted"


@pytest.fixture(scope="module")
def run(dataset, model, tmp_path_factory) -> dict:
    """One `pbmlx eval` of the whole dataset, without a CLIP."""
    out = tmp_path_factory.mktemp("eval") / "report"
    r = pbmlx_cli(
        "eval", dataset["root"], "--model", model, "--out", out, "--split", "all", *FAST, "--json"
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return {"out": out, "rows": rows, "summary": summary, "stdout": r.stdout, "stderr": r.stderr}


# ---- the run ------------------------------------------------------------------------------------


def test_every_record_is_edited_on_its_route_and_sessions_turn_by_turn(run):
    rows = run["rows"]
    sft = {r["line"]: r for r in rows if r["kind"] == "sft"}
    mt = [r for r in rows if r["kind"] == "multi-turn"]
    assert sorted(sft) == [1, 2, 3, 4, 5]  # line 6 (no output image) was skipped by the reader
    assert [sft[n]["route"] for n in (1, 2, 3, 4, 5)] == ["adjust"] * 3 + ["diffusion"] * 2
    assert sft[1]["ops"] == [{"op": "temperature", "amount": 0.3}]
    assert sft[2]["edit_type"] == TONE  # a tolerant spelling in the file, the canonical name here
    assert {sft[1]["group"], sft[3]["group"]} == {"Pixel & photometric"}
    assert sft[4]["group"] == "Scene composition" and sft[5]["group"] == "Object-level"
    assert [(r["turn"], r["turns"], r["route"], r["seed"]) for r in mt] == [
        (1, 2, "adjust", 0),
        (2, 2, "diffusion", 1),
    ]
    assert all(
        r["seconds"] > 0 and r["size"] == list(Image.open(r["source"]).size) for r in sft.values()
    )
    # The session's turn 1 is exactly pbmlx's own edit, which is its turn 1 reference.
    assert mt[0]["psnr"] == evaluate.PSNR_CAP_DB and mt[0]["ssim"] == 1.0
    assert mt[1]["alignment"] == "same size"  # a rotated square final image: compared


def test_no_verdict_is_invented_without_a_clip(run):
    for r in run["rows"]:
        j = r["judge"]
        if r["route"] == "adjust":  # measured exactly: a full verdict
            assert j["partial"] is False and j["accept"] is not None
            assert all(j[k] is not None for k in SCORES)
            assert j["accept"] == (j["overall"] >= 0.7)
        else:
            assert j["partial"] is True and j["missing"] == ["compliance"]
            assert j["compliance"] is None and j["overall"] is None and j["accept"] is None
            assert j["partial_overall"] is not None
            assert "--clip" in j["explanations"]["compliance"]
        assert r["clip_sim"] is None


def test_verdicts_are_the_local_judges(run, dataset):
    (row,) = [r for r in run["rows"] if r["id"] == "sft-1"]
    src = np.asarray(dataset["sources"]["coffee"])
    v = pbmlx.judge(
        src,
        pbmlx_edit(dataset["sources"]["coffee"], "make it warmer"),
        "make it warmer",
        edit_type=TONE,
    )
    assert {k: row["judge"][k] for k in SCORES} == {k: getattr(v, k) for k in SCORES}
    assert row["judge"]["accept"] == v.accepted


def test_psnr_and_ssim_against_the_reference(run, dataset):
    sft = {r["line"]: r for r in run["rows"] if r["kind"] == "sft"}
    # 1: the reference is what pbmlx edit makes: identical, PSNR at the documented cap.
    assert sft[1]["alignment"] == "same size" and sft[1]["aligned"] is True
    assert sft[1]["psnr"] == evaluate.PSNR_CAP_DB == 100.0 and sft[1]["ssim"] == 1.0
    # 2: a 2x reference, same aspect: resized (Lanczos) to the edit's size, then skimage's numbers.
    edited = pbmlx_edit(dataset["sources"]["chelsea"], "give it a cooler tone")
    ref = Image.open(dataset["root"] / "images" / "positive-edit" / "2.png").convert("RGB")
    ref = np.asarray(ref.resize(edited.shape[1::-1], Image.Resampling.LANCZOS))
    assert sft[2]["alignment"] == "resized" and sft[2]["reference_size"] == [
        2 * edited.shape[1],
        2 * edited.shape[0],
    ]
    assert sft[2]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(ref, edited, data_range=255), abs=1e-4
    )
    expected = structural_similarity(
        ref,
        edited,
        channel_axis=-1,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert sft[2]["ssim"] == pytest.approx(expected, abs=1e-5)
    assert 0.5 < sft[2]["ssim"] < 1.0
    # 3: a 2:3 crop of a square photo: not aligned, nothing compared.
    assert sft[3]["aligned"] is False and sft[3]["alignment"].startswith("not aligned")
    assert sft[3]["psnr"] is None and sft[3]["ssim"] is None


def test_summary_agrees_with_the_results(run):
    rows, s = run["rows"], run["summary"]
    assert json.loads(run["stdout"]) == s  # --json prints the summary
    sft = [r for r in rows if r["kind"] == "sft"]
    assert s["counts"] == {"edits": 7, "sft": 5, "sessions": 1, "multi_turn_turns": 2}

    def check(stats: dict, subset: list[dict]) -> None:
        judged = [r for r in subset if r["judge"]["accept"] is not None]
        accepted = sum(r["judge"]["accept"] for r in judged)
        assert (stats["count"], stats["judged"], stats["accepted"]) == (
            len(subset),
            len(judged),
            accepted,
        )
        assert stats["accept_rate"] == (round(accepted / len(judged), 4) if judged else None)
        assert stats["partial"] == sum(r["judge"]["partial"] for r in subset)
        for k in SCORES:
            vals = [r["judge"][k] for r in subset if r["judge"][k] is not None]
            assert stats["scored"][k] == len(vals)
            assert stats["scores"][k] == (pytest.approx(np.mean(vals), abs=1e-4) if vals else None)
        for k in ("psnr", "ssim"):
            vals = [r[k] for r in subset if r[k] is not None]
            assert stats[k] == (pytest.approx(np.mean(vals), abs=1e-4) if vals else None)

    check(s["overall"], rows)
    assert set(s["per_edit_type"]) == {TONE, GRAIN, SEASON, ADD_OBJECT}
    for t, stats in s["per_edit_type"].items():
        check(stats, [r for r in sft if r["edit_type"] == t])
    assert s["per_edit_type"][TONE]["count"] == 2 and s["per_edit_type"][TONE]["judged"] == 2
    assert s["per_edit_type"][SEASON]["accept_rate"] is None  # partial only: no rate, not 0
    assert list(s["per_group"]) == ["Pixel & photometric", "Object-level", "Scene composition"]
    for g, stats in s["per_group"].items():
        check(stats, [r for r in sft if r["group"] == g])
    check(s["multi_turn"], [r for r in rows if r["kind"] == "multi-turn"])
    assert s["multi_turn"]["sessions"] == 1 and list(s["multi_turn"]["per_turn"]) == ["1", "2"]
    # The reader's skip counts come through (record 6's output image is missing).
    assert sum(s["reader"]["sft"]["skipped"].values()) == 1
    assert s["skipped"] == {} and s["errors"] == []
    assert (
        s["settings"]["steps"] == 2
        and s["settings"]["size"] == 64
        and s["settings"]["split"] == "all"
    )
    assert {"pbmlx", "mlx", "numpy", "python"} <= set(s["versions"])
    assert s["metrics"]["psnr_cap_db"] == 100.0


def test_report_is_offline_and_complete(run):
    out, rows = run["out"], run["rows"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert "url(" not in page  # no CSS fetches either
    srcs = re.findall(r'src="([^"]+)"', page)
    assert srcs and all((out / s).is_file() for s in srcs)
    assert {f"charts/{c}.png" for c in ("accept_rate", "scores", "ssim")} <= set(srcs)
    for group in (
        "Pixel &amp; photometric",
        "Object-level",
        "Scene composition",
        "Stylistic",
        "Text &amp; symbol",
        "Human-centric",
        "Scale",
        "Spatial/layout",
    ):
        assert f"<td>{group}</td>" in page
    for r in rows:
        thumbs = r["thumbs"]
        assert thumbs["before"] == f"thumbs/{r['id']}-before.jpg"
        for rel in thumbs.values():
            if rel is not None:
                assert rel in srcs
                with Image.open(out / rel) as im:
                    assert im.format == "JPEG" and max(im.size) <= evaluate.THUMB_SIDE
        assert (thumbs["reference"] is None) == (r["reference"] is None)
        assert f"<b>{r['instruction']}</b>" in page
    # Nothing but the report was left beside DIR (the work folder was renamed into place).
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]


def test_report_renders_in_headless_chromium(run, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: CI must install it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "report.png"
    r = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (run["out"] / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    keep = os.environ.get("PBMLX_EVAL_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    print(f"report screenshot: {keep or shot}")
    px = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    assert px.shape[:2] == (1600, 1200)
    assert px.std() > 20  # text, tables, charts and photos: far from a blank page
    non_white = (px < 235).any(axis=-1).mean()
    assert non_white > 0.03
    colourful = (px.max(axis=-1) - px.min(axis=-1) > 60).mean()  # bars and photos, not just text
    assert colourful > 0.005


# ---- with a CLIP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from tiny_clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


def test_with_a_clip_generative_edits_get_full_verdicts_and_clip_similarity(
    dataset, model, tiny_clip, tmp_path
):
    out = tmp_path / "clip-report"
    types = ("seasonal transformation", "change overall color tone warm/cool")  # tolerant names
    r = pbmlx_cli(
        "eval",
        dataset["root"],
        "--model",
        model,
        "--out",
        out,
        "--split",
        "all",
        *FAST,
        "--clip",
        tiny_clip,
        "--edit-types",
        *types,
        "--limit",
        "3",
        "--max-thumbs",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert "report.html" in r.stdout
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    # --edit-types keeps those types (and leaves out sessions, which have none); --limit 3.
    assert [(x["line"], x["edit_type"], x["route"]) for x in rows] == [
        (1, TONE, "adjust"),
        (2, TONE, "adjust"),
        (4, SEASON, "diffusion"),
    ]
    for x in rows:
        j = x["judge"]
        assert j["partial"] is False and j["compliance"] is not None
        assert j["accept"] == (j["overall"] >= 0.7)
        assert -1.0 <= x["clip_sim"] <= 1.0
    assert rows[0]["clip_sim"] == pytest.approx(1.0, abs=1e-4)  # identical to its reference
    assert [x["thumbs"] is not None for x in rows] == [True, False, False]  # --max-thumbs 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["clip"] == str(tiny_clip)
    assert "multi-turn" not in summary["reader"] and summary["counts"]["sessions"] == 0
    assert summary["per_edit_type"][SEASON]["accept_rate"] in (0.0, 1.0)


# ---- without a model, bad input, failures ------------------------------------------------------


def test_without_a_model_generative_records_are_skipped_and_counted(dataset, tmp_path):
    out = tmp_path / "adjust-only"
    r = pbmlx_cli("eval", dataset["root"], "--out", out, "--split", "all", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["counts"]["sft"] == 3 and s["counts"]["multi_turn_turns"] == 0
    # records 4 and 5 (one turn each) and the session (2 turns, one of them generative)
    assert s["skipped"] == {"needs the generative editor and no --model is set": 4}


def test_missing_data_is_one_error(tmp_path):
    line = assert_clean_error(pbmlx_cli("eval", tmp_path / "nope", "--out", tmp_path / "out"))
    assert "nope" in line and "does not exist" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = assert_clean_error(pbmlx_cli("eval", empty, "--out", tmp_path / "out"))
    assert "sft.jsonl" in line
    assert not (tmp_path / "out").exists()


def test_no_records_after_the_filters_is_one_error_and_writes_nothing(dataset, tmp_path):
    out = tmp_path / "out"
    line = assert_clean_error(
        pbmlx_cli(
            "eval", dataset["root"], "--out", out, "--split", "all", "--edit-types", "Zoom in"
        )
    )
    assert "No record" in line and "Zoom in" in line
    # The default split is the validation split: a 6-record dataset may have none there.
    line = assert_clean_error(
        pbmlx_cli("eval", dataset["root"], "--out", out, "--edit-types", "outpainting")
    )
    assert "--split all" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []
    line = assert_clean_error(
        pbmlx_cli("eval", dataset["root"], "--out", out, "--edit-types", "make it pop")
    )
    assert "make it pop" in line


def test_an_existing_report_is_replaced_only_with_overwrite(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ("eval", dataset["root"], "--out", out, "--split", "all", "--edit-types", GRAIN)
    line = assert_clean_error(pbmlx_cli(*args))
    assert "--overwrite" in line and (out / "keep.txt").read_text() == "mine"
    r = pbmlx_cli(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not (out / "keep.txt").exists() and (out / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_run_leaves_no_report(dataset, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(evaluate, "render_report", broken)
    out = tmp_path / "out"
    s = evaluate.EvalSettings(data=dataset["root"], out=out, split="all", edit_types=[GRAIN])
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate.evaluate(s, progress=False)
    assert list(tmp_path.iterdir()) == []  # no DIR, no work folder


def test_bad_editor_settings_are_refused_before_any_work(dataset, model, tmp_path):
    line = assert_clean_error(
        pbmlx_cli(
            "eval", dataset["root"], "--model", model, "--out", tmp_path / "o", "--steps", "0"
        )
    )
    assert "step" in line.lower()
    assert list(tmp_path.iterdir()) == []


# ---- the measures ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_psnr_and_ssim_match_skimage(name):
    x = np.asarray(photo(name, 200))
    rng = np.random.default_rng(0)
    y = np.clip(x.astype(np.int16) + rng.integers(-20, 21, x.shape), 0, 255).astype(np.uint8)
    assert evaluate.psnr(x, y) == pytest.approx(
        peak_signal_noise_ratio(x, y, data_range=255), abs=1e-9
    )
    ref = structural_similarity(
        x,
        y,
        channel_axis=-1,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert evaluate.ssim(x, y) == pytest.approx(ref, abs=1e-9)
    assert evaluate.psnr(x, x) == evaluate.PSNR_CAP_DB and evaluate.ssim(x, x) == pytest.approx(1.0)
    assert evaluate.ssim(x[:10, :10], y[:10, :10]) is None  # smaller than one window


def test_alignment_tolerance_is_two_percent():
    x = np.zeros((100, 200, 3), np.uint8)
    assert evaluate.compare(x, np.zeros((100, 200, 3), np.uint8))["alignment"] == "same size"
    assert evaluate.compare(x, np.zeros((51, 100, 3), np.uint8))["alignment"] == "resized"  # 1.96%
    c = evaluate.compare(x, np.zeros((53, 100, 3), np.uint8))  # 5.7%
    assert c["aligned"] is False and c["psnr"] is None
    assert evaluate.compare(x, None) == {
        "alignment": "no reference",
        "aligned": None,
        "reference_size": None,
        "psnr": None,
        "ssim": None,
        "clip_sim": None,
    }
