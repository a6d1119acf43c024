"""`pbmlx edit --model` end to end: a real subprocess, a real photo, a tiny random checkpoint in
the on-disk layout of a real one (``tiny_ip2p.py``), run at a tiny working size to stay fast.

Every process gets ``PBMLX_CONFIG`` pointing at a file that does not exist and no
``PBMLX_MODEL`` unless a test sets them, so a developer's own config cannot leak in; hub tests
use an empty ``HF_HOME`` and either offline mode or an endpoint that refuses connections (this
machine has no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from badfiles import snapshot
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from tiny_ip2p import build_tiny_ip2p

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "coffee.jpg"
FAST = ("--steps", "2", "--size", "64")  # tiny model, 64 px working size: seconds per run
STAGES = ("text_encode", "image_encode", "denoise", "decode")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_tiny_ip2p(tmp_path_factory.mktemp("tiny") / "ip2p", seed=0)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(SAMPLE.read_bytes())
    return path


def pbmlx(*args, env: dict[str, str] | None = None, cwd: Path | None = None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PBMLX_", "HF_"))}
    base["PBMLX_CONFIG"] = str(REPO / "tests" / "no-such-config.json")
    return subprocess.run(
        [sys.executable, "-m", "pbmlx", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
        timeout=300,
    )


def assert_clean_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbmlx: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_edit_with_a_model_writes_an_image_of_the_input_size(ckpt, src):
    before = snapshot(src.parent)
    r = pbmlx("edit", src, "make it winter", "--model", ckpt, *FAST)
    assert r.returncode == 0, r.stderr
    out = src.parent / "photo.edited.jpg"
    assert r.stdout.strip() == str(out)
    assert Image.open(out).size == Image.open(src).size
    assert snapshot(src.parent)[src.name] == before[src.name]  # input untouched
    # The progress bar (tqdm, on stderr): two steps, completed.
    assert "denoising" in r.stderr and "2/2" in r.stderr
    assert "'make it winter': diffusion" in r.stderr


def test_json_has_stage_timings_peak_memory_and_provenance(ckpt, src, tmp_path):
    out = tmp_path / "out.png"
    r = pbmlx(
        "edit",
        src,
        "make it winter",
        "brighten this picture",
        "--model",
        ckpt,
        *FAST,
        "--seed",
        "3",
        "--scheduler",
        "euler",
        "--json",
        "-o",
        out,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # stdout is the JSON and nothing else
    assert report["output"] == str(out) and out.exists()
    diffusion, adjust = report["turns"]
    assert diffusion["engine"] == "diffusion" and adjust["engine"] == "adjust"
    for stage in STAGES:
        assert diffusion["stages"][stage] >= 0
    assert diffusion["peak_memory_bytes"] > 0 and report["peak_memory_bytes"] > 0
    assert diffusion["model"] == str(ckpt) and diffusion["steps"] == 2
    assert diffusion["seed"] == 3 and diffusion["scheduler"] == "euler"
    assert diffusion["size"] == list(Image.open(src).size)
    assert max(diffusion["working_size"]) == 64
    assert "2/2" in r.stderr  # the bar still shows, on stderr


def test_same_seed_same_image(ckpt, src, tmp_path):
    outs = []
    for name, seed in (("a.png", 5), ("b.png", 5)):
        r = pbmlx(
            "edit",
            src,
            "make it winter",
            "--model",
            ckpt,
            *FAST,
            "--seed",
            seed,
            "-o",
            tmp_path / name,
        )
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]


def test_engine_diffusion_forces_the_editor_with_low_memory(ckpt, src, tmp_path):
    out = tmp_path / "out.png"
    r = pbmlx(
        "edit", src, "brighten this picture", "--engine", "diffusion", "--model", ckpt, *FAST,
        "--low-memory", "--json", "-o", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (turn,) = json.loads(r.stdout)["turns"]
    assert turn["route"] == "adjust" and turn["engine"] == "diffusion"
    assert Image.open(out).size == Image.open(src).size


def test_pbmlx_model_and_the_config_file_are_honoured(ckpt, src, tmp_path):
    r = pbmlx(
        "edit",
        src,
        "make it winter",
        *FAST,
        "-o",
        tmp_path / "env.png",
        env={"PBMLX_MODEL": str(ckpt)},
    )
    assert r.returncode == 0, r.stderr
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": str(ckpt)}))
    r = pbmlx(
        "edit",
        src,
        "make it winter",
        *FAST,
        "-o",
        tmp_path / "cfg.png",
        env={"PBMLX_CONFIG": str(config)},
    )
    assert r.returncode == 0, r.stderr
    # --model wins over PBMLX_MODEL, which wins over the config file.
    r = pbmlx(
        "edit", src, "make it winter", *FAST, "-o", tmp_path / "x.png",
        env={"PBMLX_MODEL": str(tmp_path / "nowhere"), "PBMLX_CONFIG": str(config)},
    )  # fmt: skip
    line = assert_clean_error(r)
    assert "nowhere" in line and "PBMLX_MODEL" in line
    r = pbmlx(
        "edit", src, "make it winter", *FAST, "--model", ckpt, "-o", tmp_path / "y.png",
        env={"PBMLX_MODEL": str(tmp_path / "nowhere")},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_a_broken_config_file_is_named(src, tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{not json")
    line = assert_clean_error(
        pbmlx("edit", src, "make it winter", env={"PBMLX_CONFIG": str(config)})
    )
    assert str(config) in line


def test_no_model_anywhere_says_how_to_get_one(src):
    before = snapshot(src.parent)
    line = assert_clean_error(pbmlx("edit", src, "add a red scarf to the dog"))
    assert "--model" in line and "PBMLX_MODEL" in line and "pbmlx convert" in line
    assert snapshot(src.parent) == before


@pytest.mark.parametrize(
    "hub_env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline", "unreachable-endpoint"],
)
def test_an_unreachable_hub_id_is_one_error_naming_it(src, tmp_path, hub_env):
    before = snapshot(src.parent)
    env = {"HF_HOME": str(tmp_path / "hf-home"), **hub_env}
    r = pbmlx("edit", src, "make it winter", "--model", "nobody/no-such-ip2p", env=env)
    line = assert_clean_error(r)
    assert "'nobody/no-such-ip2p'" in line and "Hugging Face Hub" in line
    assert snapshot(src.parent) == before


def _hub_cache(home: Path, repo_id: str, model: Path) -> None:
    """Put ``model`` into the Hugging Face cache under ``home`` as ``snapshot_download`` leaves
    a downloaded repository: ``hub/models--{owner}--{name}/refs/main`` holding the commit, and
    the files under ``snapshots/{commit}/``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model, repo / "snapshots" / commit)


def test_a_hub_id_in_the_cache_loads_offline(ckpt, src, tmp_path):
    # The hub-id path end to end, without a network: snapshot_download finds the snapshot.
    home = tmp_path / "hf-home"
    _hub_cache(home, "someone/tiny-ip2p", ckpt)
    out = tmp_path / "out.png"
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    r = pbmlx(
        "edit", src, "make it winter", "--model", "someone/tiny-ip2p", *FAST, "-o", out, env=env
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == Image.open(src).size


def test_a_hub_model_with_only_pickle_weights_is_refused(ckpt, src, tmp_path):
    home = tmp_path / "hf-home"
    pickled = shutil.copytree(ckpt, tmp_path / "pickled")
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # as if only .bin existed
    _hub_cache(home, "someone/pickled-ip2p", pickled)
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    line = assert_clean_error(
        pbmlx("edit", src, "make it winter", "--model", "someone/pickled-ip2p", env=env)
    )
    assert "'someone/pickled-ip2p'" in line and "unet" in line and "pickle" in line


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN = {
    # what to do to a copy of the checkpoint -> the path the error must name
    "missing unet weights": (
        lambda m: (m / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
        "unet",
    ),
    "truncated vae weights": (
        lambda m: _truncate(m / "vae" / "diffusion_pytorch_model.safetensors"),
        "vae/diffusion_pytorch_model.safetensors",
    ),
    "pickle-only text encoder": (
        lambda m: (m / "text_encoder" / "model.safetensors").rename(
            m / "text_encoder" / "pytorch_model.bin"
        ),
        "text_encoder",
    ),
    "missing tokenizer": (lambda m: shutil.rmtree(m / "tokenizer"), "tokenizer"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_models_give_one_error_naming_the_file(ckpt, src, tmp_path, case):
    model = shutil.copytree(ckpt, tmp_path / "model")
    damage, named = BROKEN[case]
    damage(model)
    before = snapshot(src.parent)
    line = assert_clean_error(pbmlx("edit", src, "make it winter", "--model", model, *FAST))
    assert str(model / named) in line, line
    assert snapshot(src.parent) == before


def test_bad_editor_settings_are_refused_before_reading_the_photo(ckpt, tmp_path):
    missing_photo = tmp_path / "not-there.jpg"
    for args, message in (
        (("--steps", "0"), "Number of steps"),
        (("--size", "2"), "Working size"),
        (("--guidance", "nan"), "Guidance"),
    ):
        line = assert_clean_error(
            pbmlx("edit", missing_photo, "make it winter", "--model", ckpt, *args)
        )
        assert message in line  # the setting, not the missing photo, is what is reported


def test_convert_then_edit_with_the_converted_folder(ckpt, src, tmp_path):
    # The "done when": `pbmlx convert <diffusers folder> out/` then `pbmlx edit ...
    # --model out/` writes an image, with a progress bar (8-bit quantized here).
    converted = tmp_path / "converted"
    r = pbmlx("convert", ckpt, converted, "--quantize", "8")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.png"
    r = pbmlx("edit", src, "make it winter", "--model", converted, *FAST, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == Image.open(src).size
    assert json.loads(r.stdout)["turns"][0]["model"] == str(converted)
    assert "2/2" in r.stderr


# ---- judged edits: --best-of / --min-score ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from tiny_clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


def no_cached_clip(tmp_path: Path) -> dict[str, str]:
    """An empty Hugging Face cache, offline: the judge's default CLIP is certainly absent."""
    return {"HF_HOME": str(tmp_path / "hf-empty"), "HF_HUB_OFFLINE": "1"}


def test_best_of_keeps_the_best_verdict_and_lists_the_others(ckpt, src, tmp_path, tiny_clip):
    from pbmlx.judge.verdict import JSON_KEYS

    out = tmp_path / "best.png"
    edit = ("edit", src, "make it winter", "--model", ckpt, *FAST)
    r = pbmlx(*edit, "--seed", 3, "--best-of", 3, "--judge-model", tiny_clip, "--json", "-o", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    [j] = d["judge"]
    assert j["turn"] == 0 and j["partial"] is False
    assert [a["seed"] for a in j["attempts"]] == [3, 4, 5]
    overalls = [a["overall"] for a in j["attempts"]]
    assert all(isinstance(o, float) for o in overalls)
    assert j["chosen"] == overalls.index(max(overalls))  # the best; ties to the earliest
    assert j["verdict"]["overall"] == max(overalls) and j["seed"] == 3 + j["chosen"]
    assert set(JSON_KEYS) == set(j["verdict"]) and j["verdict"]["accepted"] is not None
    assert d["turns"][0]["seed"] == j["seed"]  # the editor provenance is the kept attempt's
    assert d["turns"][0]["judge"]["chosen"] == j["chosen"]
    # The file is the kept attempt's: byte-identical to a plain edit with its seed ...
    plain = tmp_path / "plain.png"
    assert pbmlx(*edit, "--seed", j["seed"], "-o", plain).returncode == 0
    assert out.read_bytes() == plain.read_bytes()
    # ... and its verdict is what `pbmlx judge` says of the written (lossless) file.
    r = pbmlx("judge", src, out, "make it winter", "--model", tiny_clip, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["overall"] == pytest.approx(j["verdict"]["overall"], abs=1e-12)


def test_min_score_stops_at_the_first_attempt_that_reaches_it(ckpt, src, tmp_path, tiny_clip):
    edit = ("edit", src, "make it winter", "--model", ckpt, *FAST, "--judge-model", tiny_clip)
    r = pbmlx(*edit, "--min-score", "0", "--json", "-o", tmp_path / "a.png")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)["judge"][0]
    assert len(j["attempts"]) == 1 and j["reached_min_score"] is True and j["min_score"] == 0
    # Unreachable: all attempts are made (3 by default), the best is kept and said to fall short.
    r = pbmlx(*edit, "--min-score", "1", "--json", "-o", tmp_path / "b.png")
    j = json.loads(r.stdout)["judge"][0]
    assert len(j["attempts"]) == 3 and j["reached_min_score"] is False
    r = pbmlx(*edit, "--min-score", "1", "--best-of", "2", "-o", tmp_path / "c.png")
    assert r.returncode == 0, r.stderr
    assert "judge: overall" in r.stderr and "kept attempt" in r.stderr
    assert "none reached --min-score 1" in r.stderr


def test_without_a_clip_generative_attempts_are_ranked_on_the_partial_score(ckpt, src, tmp_path):
    out = tmp_path / "out.png"
    edit = ("edit", src, "make it winter", "--model", ckpt, *FAST, "--best-of", 2, "--json")
    r = pbmlx(*edit, "-o", out, env=no_cached_clip(tmp_path))
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)["judge"][0]
    v = j["verdict"]
    # Honest: no CLIP, no compliance, so no overall and no accept decision; never a made-up score.
    assert j["partial"] is True and v["compliance"] is None
    assert v["overall"] is None and v["accepted"] is None
    assert all(isinstance(a["partial_overall"], float) for a in j["attempts"])
    assert "compliance" in v["details"]["missing"]


def test_best_of_on_an_adjust_edit_judges_it_once_without_any_model(src, tmp_path):
    out = tmp_path / "out.jpg"
    r = pbmlx(
        "edit", src, "brighten this picture", "--best-of", 3, "--json", "-o", out,
        env=no_cached_clip(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    [j] = d["judge"]
    assert len(j["attempts"]) == 1  # exact edits: another seed would give the same pixels
    assert 0 < d["turns"][0]["judge_seconds"] <= d["turns"][0]["seconds"]
    v = j["verdict"]
    assert all(v[c] is not None for c in ("compliance", "seamlessness", "preservation", "quality"))
    assert v["accepted"] is True and v["overall"] >= 0.7
    assert v["details"]["route"] == "adjust"
    # --judge alone: the same verdict, in the text summary too.
    r = pbmlx(
        "edit", src, "brighten this picture", "--judge", "-o", out, "--overwrite",
        env=no_cached_clip(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"judge: overall {v['overall']:.2f} (accepted)" in r.stderr


def test_judged_edit_settings_are_checked(src, tmp_path):
    for args, message in (
        (("--best-of", "0"), "--best-of"),
        (("--min-score", "1.5"), "--min-score"),
        (("--judge-model", tmp_path / "clip"), "--judge-model"),
        (("--judge", "--min-score", "x"), "--min-score"),
    ):
        line = assert_clean_error(pbmlx("edit", src, "brighten this picture", *args))
        assert message in line
    # An explicit judge model that is not there is refused before anything is written.
    r = pbmlx(
        "edit", src, "brighten this picture", "--best-of", 2, "--judge-model",
        tmp_path / "no-such-clip", "-o", tmp_path / "out.jpg",
    )  # fmt: skip
    assert "no-such-clip" in assert_clean_error(r)
    assert not (tmp_path / "out.jpg").exists()


def test_library_best_of_and_the_callable_judge(tmp_path, monkeypatch):
    import pbmlx

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))
    photo = Image.open(SAMPLE)
    result = pbmlx.edit(photo, "increase the contrast", best_of=2)
    assert result.verdict is not None and result.verdict.accepted is True
    again = pbmlx.judge(photo, result.image, "increase the contrast")
    assert again.to_json() == result.verdict.to_json()  # the flow judges exactly what it returns
    assert pbmlx.edit(photo, "increase the contrast").verdict is None  # not judged unless asked
    judged = pbmlx.edit(photo, "increase the contrast", judge=True)
    assert judged.verdict.to_json() == result.verdict.to_json()  # exact edits: one attempt
    with pytest.raises(pbmlx.PbmlxError, match="best_of"):
        pbmlx.edit(photo, "increase the contrast", best_of=0)
