"""The judge's calibration: reproducible from data and used by the runtime.

``tests/judge_fit.py`` (the offline tool; not part of the package) builds the calibration set
(real photos from ``skimage.data`` x adjust instructions x edits of known quality made with
PIL / numpy / scikit-image, plus local, global and layout edits), fits the maps on the fit
photos, judges the held-out photos (other pictures, at another size) through the full judge,
and writes ``pbmlx/judge/calibration.json`` (what the runtime reads) and
``tests/data/judge_calibration.json`` (the same, plus the fit split's features). These tests
check, without re-running the whole tool (minutes):

- the runtime reads exactly the tested parameters (one source of truth);
- refitting from the stored features gives the stored maps (1e-6: same numpy, same data);
- stored features are what the measurements give today on a sample of fit cases, one per
  (family, kind) (1e-4: float32 image statistics; nothing here is random).

The held-out figures are recomputed from the photos in ``tests/test_judge_heldout.py``.
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pbmlx.judge import maps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import judge_fit  # noqa: E402  (the offline tool: outside the package, on purpose)

DATA = ROOT / "tests" / "data" / "judge_calibration.json"


@pytest.fixture(scope="module")
def data() -> dict:
    return json.loads(DATA.read_text())


def test_runtime_uses_the_tested_parameters(data):
    runtime = json.loads(maps.PARAMS_PATH.read_text())
    for key in ("format", "stat_units", "maps", "report", "fit_photos", "heldout_photos"):
        assert runtime[key] == data[key], key
    assert maps.load_params()["maps"] == data["maps"]


def test_refit_reproduces_the_maps(data):
    fitted = judge_fit.fit_maps(judge_fit.unpack_rows(data["fit"]))
    assert set(fitted) == set(data["maps"])
    for key, m in fitted.items():
        ref = data["maps"][key]
        assert m["features"] == ref["features"], key
        np.testing.assert_allclose(m["weights"], ref["weights"], atol=1e-6, err_msg=key)
        assert m["bias"] == pytest.approx(ref["bias"], abs=1e-6)
        assert m["kind"] == ref["kind"], key
        assert all(w <= 0 for w in m["weights"]) or m["kind"] == "evidence", key


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
    rows = _sample(judge_fit.unpack_rows(data["fit"]), lambda r: (r["family"], r["kind"]))
    assert len(rows) >= 20
    for row in rows:
        case = next(
            c
            for c in judge_fit.photo_cases(
                photos, row["photo"], side, (row["instruction"],), (row["family"],)
            )
            if c.kind == row["kind"]
        )
        got = judge_fit._round_row({"features": judge_fit.case_features(case, units)})["features"]
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
