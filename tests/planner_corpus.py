"""Reading the planner's labelled corpora and comparing a plan with its label (shared by
tests/test_plan.py and tests/test_plan_everyday.py).

A row: ``instruction``, ``route``, ``ops`` (op name -> "+", "-" or "any": the amount's sign),
optional ``amount`` (op name -> [lo, hi]) and optional ``reason`` (substrings the plan's reason
must contain, case-insensitive).
"""

from __future__ import annotations

import json
from pathlib import Path

from pbmlx.plan import plan


def read(path: Path) -> list[dict]:
    """The rows of a JSON-lines corpus (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mismatch(row: dict, tol: float) -> str | None:
    """Why the plan for ``row`` differs from its label, or None. ``tol``: slack on the
    ``amount`` bounds (amounts are rounded to the spec's step, so labels near a bound need it)."""
    p = plan(row["instruction"])
    got = {o["op"]: o["amount"] for o in p.ops}
    problems = []
    if p.route != row["route"]:
        problems.append(f"route {p.route} != {row['route']}")
    if set(got) != set(row["ops"]):
        problems.append(f"ops {sorted(got)} != {sorted(row['ops'])}")
    for name, sign in row["ops"].items():
        if name in got and sign != "any" and (got[name] > 0) != (sign == "+"):
            problems.append(f"{name} {got[name]:+g} has the wrong sign")
    for name, (lo, hi) in row.get("amount", {}).items():
        if name in got and not lo - tol <= got[name] <= hi + tol:
            problems.append(f"{name} {got[name]:+g} not in [{lo}, {hi}]")
    for words in row.get("reason", []):
        if words.lower() not in p.reason.lower():
            problems.append(f"reason lacks {words!r}")
    if not problems:
        return None
    return f"{row['instruction']!r}: {'; '.join(problems)} (reason: {p.reason})"
