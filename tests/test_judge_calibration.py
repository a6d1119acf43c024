"""The judge's calibration: reproducible from data, used by the runtime, meeting its goals.

``python -m pbmlx.judge.calibrate`` builds the calibration set (real photos from
``skimage.data`` x adjust instructions x edits of known quality made with PIL / numpy /
scikit-image, plus local, global and layout edits; see :mod:`pbmlx.judge.calibrate`), fits
the maps on the fit photos, judges the held-out photos (other pictures, at another size)
through the full judge, and writes ``pbmlx/judge/calibration.json`` (what the runtime reads)
and ``tests/data/judge_calibration.json`` (the same, plus the fit split's features and every
held-out verdict). These tests check, without re-running the whole script (minutes):

- the runtime reads exactly the tested parameters (one source of truth);
- refitting from the stored features gives the stored maps (1e-6: same numpy, same data);
- stored features are what the measurements give today on a sample of fit cases, one per
  (family, kind) (1e-4: float32 image statistics; nothing here is random);
- held-out verdicts are what the runtime judge gives today on a sample of held-out cases (two
  photos, every kind of several instructions; 1e-3 on the ranked score, stored to 1e-4);
- the held-out report meets the goals: pairwise ranking accuracy >= 0.95 and accept/reject
  agreement >= 0.90 (printed with ``-s``).
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import json
from pathlib import Path

import numpy as np
import pytest

from pbmlx.judge import calibrate
from pbmlx.judge.core import Judge

DATA = Path(__file__).resolve().parent / "data" / "judge_calibration.json"


@pytest.fixture(scope="module")
def data() -> dict:
    return json.loads(DATA.read_text())


def test_runtime_uses_the_tested_parameters(data):
    runtime = json.loads(calibrate.PARAMS_PATH.read_text())
    for key in ("format", "stat_units", "maps", "report", "fit_photos", "heldout_photos"):
        assert runtime[key] == data[key], key
    assert calibrate.load_params()["maps"] == data["maps"]


def test_refit_reproduces_the_maps(data):
    maps = calibrate.fit_maps(calibrate.unpack_rows(data["fit"]))
    assert set(maps) == set(data["maps"])
    for key, m in maps.items():
        ref = data["maps"][key]
        assert m["features"] == ref["features"], key
        np.testing.assert_allclose(m["weights"], ref["weights"], atol=1e-6, err_msg=key)
        assert m["bias"] == pytest.approx(ref["bias"], abs=1e-6)
        assert all(w <= 0 for w in m["weights"]) or not m["calibrated"], key


def _sample(rows: list[dict], key) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        k = key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def test_stored_features_are_reproducible(data):
    units = data["stat_units"]
    photos = tuple(p.split("@")[0] for p in data["fit_photos"])
    side = int(data["fit_photos"][0].split("@")[1])
    rows = _sample(calibrate.unpack_rows(data["fit"]), lambda r: (r["family"], r["kind"]))
    assert len(rows) >= 20
    for row in rows:
        case = next(
            c
            for c in calibrate.photo_cases(
                photos, row["photo"], side, (row["instruction"],), (row["family"],)
            )
            if c.kind == row["kind"]
        )
        got = calibrate._round_row({"features": calibrate.case_features(case, units)})["features"]
        assert set(got) == set(row["features"])
        for key, f in got.items():
            ref = row["features"][key]
            if f is None or ref is None:
                assert f == ref, (row["kind"], key)
                continue
            for name, v in f.items():
                assert v == pytest.approx(ref[name], abs=1e-4), (
                    row["family"],
                    row["kind"],
                    key,
                    name,
                )


def test_heldout_verdicts_are_reproducible(data):
    photos = tuple(p.split("@")[0] for p in data["heldout_photos"])
    side = int(data["heldout_photos"][0].split("@")[1])
    stored = {tuple(v[:4]): v[4] for v in data["heldout_verdicts"]}
    # Every kind of one adjust instruction on two photos (a colour portrait, a mostly black
    # sky), and every kind of one instruction of each other family on the first.
    plan = {photos[0]: ["brighten this picture"], photos[1]: ["give it a sepia tone"]}
    for fam in ("local", "global", "layout"):
        plan[photos[0]].append(next(k[2] for k in sorted(stored) if k[0] == fam))
    judge = Judge(model=None)
    got = []
    for name, instructions in plan.items():
        want = {k for k in stored if k[1] == name and k[2] in instructions}
        for case in calibrate.photo_cases(photos, name, side, tuple(instructions)):
            key = (case.family, case.photo, case.instruction, case.kind)
            if key in want:
                v = judge(case.source, case.edited, case.instruction)
                got.append(key)
                assert v.rank_score == pytest.approx(stored[key], abs=1e-3), key
    assert len(got) >= 50, len(got)


def test_heldout_report_meets_the_goals(data):
    rep = data["report"]["heldout"]
    print(
        f"\njudge calibration, held-out photos {', '.join(data['heldout_photos'])}:\n"
        f"  pairwise ranking accuracy {rep['ranking_accuracy']:.4f} over {rep['pairs']} pairs "
        f"(goal {calibrate.GOAL_RANKING})\n"
        f"  accept/reject agreement   {rep['accept_agreement']:.4f} over {rep['accept_cases']} "
        f"verdicts (goal {calibrate.GOAL_AGREEMENT}; {rep['accept_not_available']} not available)\n"
        f"  by family: {rep['ranking_by_family']}\n  by kind:   {rep['ranking_by_kind']}"
    )
    assert rep["ranking_accuracy"] >= calibrate.GOAL_RANKING
    assert rep["accept_agreement"] >= calibrate.GOAL_AGREEMENT
    # The stored verdicts give the stored report (the report is not edited by hand).
    judged = [calibrate.Judged(*v[:4], v[4], None, None) for v in data["heldout_verdicts"]]
    assert calibrate.evaluate(judged)["ranking_accuracy"] == pytest.approx(
        rep["ranking_accuracy"], abs=1e-4
    )
