"""``pbmlx bench``'s outputs: the terminal tables, ``--json`` and ``--report DIR``.

``--report DIR`` holds ``report.md`` (the same tables, the machine, the versions, the notes)
and three PNG charts drawn with Pillow (:func:`pbmlx.evaluate.bar_chart`, no plotting
library): ``latency.png`` (seconds per stage of each edit, for the largest step count),
``compare.png`` (pbmlx against diffusers / Core ML per stage and whole edits, and the adjust
engine against PIL) and ``fraction_of_peak.png`` (achieved FLOP/s over the device's peak per
stage with counted FLOPs). A chart with nothing to show is left out and the report says so.

Outputs are checked before the benchmark starts (:meth:`Outputs.prepare`: the JSON file's
folder and the report folder must be writable, neither may exist without ``--overwrite``) and
written atomically at the end (a temporary file or folder beside the target, then renamed),
so an interrupted or failed run leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pbmlx.errors import PbmlxError
from pbmlx.save import publish_folder

REPORT = "report.md"
CHARTS = {
    "latency": "latency.png",
    "compare": "compare.png",
    "fraction_of_peak": "fraction_of_peak.png",
}
STAGE_COLOURS = {
    "load": (127, 127, 127),
    "text_encode": (148, 103, 189),
    "image_encode": (44, 160, 44),
    "denoise": (31, 119, 180),
    "denoise_first_step": (31, 119, 180),
    "denoise_step": (31, 119, 180),
    "decode": (255, 127, 14),
    "restore": (140, 86, 75),
}
PBMLX_COLOUR = (31, 119, 180)
OTHER_COLOUR = (255, 127, 14)
MB = 1e6


# ---------------------------------------------------------------------------- numbers


def fmt_s(v: float | None) -> str:
    """Seconds with three significant digits (``-`` for None)."""
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _g(v: float | None, scale: float, digits: int = 1) -> str:
    return "-" if v is None else f"{v / scale:.{digits}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _mb(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / MB:.1f}" if v < 10 * MB else f"{v / MB:.0f}"


# ---------------------------------------------------------------------------- tables


def _columns(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


STAGE_HEADER = [
    "group",
    "engine",
    "stage",
    "variant",
    "size",
    "seconds",
    "GFLOP",
    "GFLOP/s",
    "of peak",
    "s at peak",
    "peak MB",
]


def stage_cells(r: dict[str, Any]) -> list[str]:
    return [
        r["group"],
        r["engine"],
        r["name"],
        r["variant"] or "-",
        r["size"] or "-",
        fmt_s(r["seconds"]),
        _g(r["flops"], 1e9),
        _g(r["flops_per_s"], 1e9),
        _pct(r["fraction_of_peak"]),
        fmt_s(r["seconds_at_peak"]),
        _mb(r["peak_memory_bytes"]),
    ]


EDIT_HEADER = [
    "engine",
    "variant",
    "working",
    "steps",
    "edit s",
    "first edit s",
    "TFLOP",
    "of peak",
]


def edit_cells(e: dict[str, Any], peak: float) -> list[str]:
    frac = e["flops"] / e["seconds"] / peak if e["flops"] and e["seconds"] else None
    steps = f"{e['steps']}{'*' if e['extrapolated'] else ''}"
    return [
        e["engine"],
        e["variant"],
        "x".join(map(str, e["working_size"])),
        steps,
        fmt_s(e["seconds"]),
        fmt_s(e["first_edit_seconds"]),
        _g(e["flops"], 1e12, 2),
        _pct(frac),
    ]


COMPARE_HEADER = ["stage", "size", "pbmlx", "other", "pbmlx s", "other s", "ratio"]


def compare_cells(c: dict[str, Any]) -> list[str]:
    return [
        c["stage"],
        c["size"],
        f"{c['pbmlx']} {c['variant']}",
        c["other"],
        fmt_s(c["pbmlx_seconds"]),
        fmt_s(c["other_seconds"]),
        "-" if c["ratio"] is None else f"{c['ratio']:.2f}",
    ]


def adjust_pairs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """pbmlx's adjust engine against PIL, one entry per case and size: ``ratio = pbmlx /
    PIL`` (< 1: pbmlx is faster)."""
    rows = [r for r in doc["stages"] if r["group"] == "adjust"]
    out = []
    for r in rows:
        if r["engine"] != "pbmlx":
            continue
        pil = next(
            (
                p
                for p in rows
                if p["engine"] == "PIL" and (p["name"], p["size"]) == (r["name"], r["size"])
            ),
            None,
        )
        if pil is not None:
            out.append(
                {
                    "case": r["name"],
                    "size": r["size"],
                    "pbmlx_seconds": r["seconds"],
                    "pil_seconds": pil["seconds"],
                    "ratio": r["seconds"] / pil["seconds"] if pil["seconds"] else None,
                }
            )
    return out


ADJUST_HEADER = ["case", "size", "pbmlx s", "PIL s", "ratio"]


def adjust_cells(a: dict[str, Any]) -> list[str]:
    ratio = "-" if a["ratio"] is None else f"{a['ratio']:.2f}"
    return [a["case"], a["size"], fmt_s(a["pbmlx_seconds"]), fmt_s(a["pil_seconds"]), ratio]


def _header_lines(doc: dict[str, Any]) -> list[str]:
    m, p, la = doc["machine"], doc["peak"], doc["load_average"]
    where = m["chip"] or m["processor"]
    return [
        f"pbmlx bench{' --quick' if doc['quick'] else ''}: backend {m['backend']} on {where}, "
        f"{m['cpus']} CPUs, {m['platform']}",
        f"model: {doc['model']}",
        f"peak: {p['flops_per_s'] / 1e9:.1f} GFLOP/s ({p['source']}: {p['detail']})"
        + (
            f"; measured GEMM {p['measured_gemm_flops_per_s'] / 1e9:.1f} GFLOP/s"
            if p["source"] != "measured GEMM" and p["measured_gemm_flops_per_s"]
            else ""
        ),
        f"load average before {la['before']}, after {la['after']} (timings here are only "
        "comparable within one run)",
        f"wall time {doc['wall_seconds']:.0f} s",
    ]


def format_text(doc: dict[str, Any]) -> str:
    """The terminal report: header, every stage, the edits' totals, the comparisons, notes."""
    peak = doc["peak"]["flops_per_s"]
    out = [*_header_lines(doc), ""]
    rows = [STAGE_HEADER, *(stage_cells(r) for r in doc["stages"])]
    out += _columns(rows, right=set(range(5, 11)))
    if doc["edits"]:
        out += ["", "whole edits (* = extrapolated from the measured steps; see notes)"]
        out += _columns(
            [EDIT_HEADER, *(edit_cells(e, peak) for e in doc["edits"])], right=set(range(3, 8))
        )
    if doc["comparisons"]:
        out += ["", "pbmlx against the alternative (ratio = pbmlx / other; < 1: pbmlx is faster)"]
        out += _columns(
            [COMPARE_HEADER, *(compare_cells(c) for c in doc["comparisons"])], right={4, 5, 6}
        )
    adj = adjust_pairs(doc)
    if adj:
        out += ["", "adjust engine against PIL (8-bit in and out; ratio = pbmlx / PIL)"]
        out += _columns(
            [
                ADJUST_HEADER,
                *(adjust_cells(a) for a in adj),
            ],
            right={2, 3, 4},
        )
    if doc["notes"]:
        out += ["", "notes:", *(f"- {n}" for n in doc["notes"])]
    return "\n".join(out)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows),
    ]


def format_markdown(doc: dict[str, Any], charts: dict[str, str]) -> str:
    """``report.md``: the tables of :func:`format_text` as Markdown, the charts, the machine
    and versions."""
    peak = doc["peak"]["flops_per_s"]
    md = ["# pbmlx bench", "", *(f"- {line}" for line in _header_lines(doc)), ""]
    md += ["## Charts", ""]
    titles = {
        "latency": "Latency per stage",
        "compare": "pbmlx against the alternatives",
        "fraction_of_peak": "Fraction of the device's peak FLOP/s",
    }
    for key, title in titles.items():
        if key in charts:
            md += [f"### {title}", "", f"![{title}]({charts[key]})", ""]
        else:
            md += [f"### {title}", "", "(nothing to chart in this run)", ""]
    md += ["## Stages", ""]
    md += _md_table(STAGE_HEADER, [stage_cells(r) for r in doc["stages"]])
    if doc["edits"]:
        md += [
            "",
            "## Whole edits",
            "",
            "`*`: extrapolated from the measured steps (see notes).",
            "",
        ]
        md += _md_table(EDIT_HEADER, [edit_cells(e, peak) for e in doc["edits"]])
    if doc["comparisons"]:
        md += ["", "## Comparison", "", "ratio = pbmlx / other (< 1: pbmlx is faster)", ""]
        md += _md_table(COMPARE_HEADER, [compare_cells(c) for c in doc["comparisons"]])
    adj = adjust_pairs(doc)
    if adj:
        md += ["", "## Adjust engine against PIL", ""]
        md += _md_table(
            ADJUST_HEADER,
            [adjust_cells(a) for a in adj],
        )
    if doc["notes"]:
        md += ["", "## Notes", "", *(f"- {n}" for n in doc["notes"])]
    md += ["", "## Machine and versions", "", "```json"]
    md += [
        json.dumps({"machine": doc["machine"], "versions": doc["versions"]}, indent=2),
        "```",
        "",
    ]
    return "\n".join(md)


# ---------------------------------------------------------------------------- charts


def nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``v`` (an axis end with round ticks)."""
    if v <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * base >= v * (1 - 1e-9):
            return m * base
    return 10 * base


def _edit_label(e: dict[str, Any]) -> str:
    return f"{e['engine']} {e['variant']} {'x'.join(map(str, e['working_size']))}"


def write_charts(doc: dict[str, Any], folder: Path) -> dict[str, str]:
    """The PNG charts in ``folder``; returns {chart: file name} for those drawn."""
    from pbmlx.evaluate import bar_chart

    charts: dict[str, str] = {}
    largest = max((e["steps"] for e in doc["edits"]), default=None)
    bars = []
    for e in (e for e in doc["edits"] if e["steps"] == largest):
        st = e["stage_seconds"]
        parts = [
            ("text_encode", st.get("text_encode")),
            ("image_encode", st.get("image_encode")),
            (f"denoise x{e['steps']}{'*' if e['extrapolated'] else ''}", e["denoise_seconds"]),
            ("decode", st.get("decode")),
        ]
        if "restore" in st:
            parts.append(("restore", st["restore"] + st.get("resize", 0.0)))
        for name, v in parts:
            colour = STAGE_COLOURS.get(name.split()[0], (127, 127, 127))
            bars.append((f"{_edit_label(e)}: {name}", v, f"{fmt_s(v)} s", colour))
    if bars:
        vmax = nice_ceiling(max(v for _, v, _, _ in bars if v is not None))
        bar_chart(
            f"Latency per stage, {largest}-step edit (seconds; * extrapolated)",
            bars,
            folder / CHARTS["latency"],
            vmax=vmax,
        )
        charts["latency"] = CHARTS["latency"]

    bars = []
    for c in doc["comparisons"]:
        what = f"{c['size']} {c['stage'].removesuffix(' (networks only)')}"
        ratio = "" if c["ratio"] is None else f" (pbmlx {c['ratio']:.2f}x)"
        bars += [
            (f"pbmlx: {what}", c["pbmlx_seconds"], f"{fmt_s(c['pbmlx_seconds'])} s", PBMLX_COLOUR),
            (f"{c['other']}: {what}", c["other_seconds"], f"{fmt_s(c['other_seconds'])} s{ratio}",
             OTHER_COLOUR),
        ]  # fmt: skip
    for a in adjust_pairs(doc):
        what = f"{a['size']} {a['case']}"
        ratio = "" if a["ratio"] is None else f" (pbmlx {a['ratio']:.2f}x)"
        bars += [
            (f"pbmlx: {what}", a["pbmlx_seconds"], f"{fmt_s(a['pbmlx_seconds'])} s", PBMLX_COLOUR),
            (f"PIL: {what}", a["pil_seconds"], f"{fmt_s(a['pil_seconds'])} s{ratio}", OTHER_COLOUR),
        ]
    if bars:
        # Comparisons span milliseconds (adjust) to minutes (edits): each bar is drawn against
        # the largest of its own pair, so every pair reads as a ratio.
        scaled = []
        for i in range(0, len(bars), 2):
            pair = bars[i : i + 2]
            top = max((v for _, v, _, _ in pair if v), default=1.0)
            scaled += [(lbl, (v or 0.0) / top, text, col) for lbl, v, text, col in pair]
        bar_chart(
            "pbmlx (blue) against the alternative (orange), each pair relative to its slower side; "
            "whole edits: the networks only",
            scaled,
            folder / CHARTS["compare"],
            vmax=1.0,
        )
        charts["compare"] = CHARTS["compare"]

    bars = []
    for r in doc["stages"]:
        if r["fraction_of_peak"] is None:
            continue
        label = f"{r['engine']} {r['variant'] or ''} {r['size'] or ''} {r['name']}"
        bars.append(
            (
                " ".join(label.split()),
                r["fraction_of_peak"],
                f"{_pct(r['fraction_of_peak'])} ({_g(r['flops_per_s'], 1e9)} GFLOP/s)",
                STAGE_COLOURS.get(r["name"], (127, 127, 127)),
            )
        )
    if bars:
        vmax = nice_ceiling(max(1.0, max(v for _, v, _, _ in bars)))
        bar_chart(
            f"Fraction of peak ({doc['peak']['flops_per_s'] / 1e9:.0f} GFLOP/s, "
            f"{doc['peak']['source']}); line: the peak",
            bars,
            folder / CHARTS["fraction_of_peak"],
            vmax=vmax,
            marker=1.0,
        )
        charts["fraction_of_peak"] = CHARTS["fraction_of_peak"]
    return charts


# ---------------------------------------------------------------------------- writing


class Outputs:
    """The ``--json`` file and ``--report`` folder: checked up front, written at the end."""

    def __init__(self, json_path: Path | None, report_dir: Path | None, overwrite: bool) -> None:
        self.json_path = json_path
        self.report_dir = report_dir
        self.overwrite = overwrite
        self._work: Path | None = None

    def prepare(self) -> None:
        """Refuse outputs that cannot be written, before any work (PbmlxError naming them);
        creates the report's hidden work folder beside DIR."""
        if self.json_path is not None:
            p = self.json_path
            if p.exists() and (p.is_dir() or not self.overwrite):
                what = "is a folder" if p.is_dir() else "exists (pass --overwrite to replace it)"
                raise PbmlxError(f"--json {p} {what}.")
            if not p.parent.is_dir():
                raise PbmlxError(f"--json {p}: the folder {p.parent} does not exist.")
            if not os.access(p.parent, os.W_OK):
                raise PbmlxError(f"--json {p}: the folder {p.parent} is not writable.")
        if self.report_dir is not None:
            d = self.report_dir
            if d.exists() and not d.is_dir():
                raise PbmlxError(f"--report {d} exists and is not a folder.")
            if d.is_dir() and any(d.iterdir()) and not self.overwrite:
                raise PbmlxError(
                    f"--report {d} exists and is not empty; pass --overwrite to replace it."
                )
            blocked = next((a for a in d.parents if a.exists() and not a.is_dir()), None)
            if blocked is not None:
                raise PbmlxError(f"--report {d} cannot be written: {blocked} is a file.")
            try:
                d.parent.mkdir(parents=True, exist_ok=True)
                self._work = d.parent / f".{d.name}.partial-{secrets.token_hex(4)}"
                self._work.mkdir()
            except OSError as e:
                raise PbmlxError(f"--report {d} cannot be written ({e.strerror or e}).") from None

    def abort(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def write(self, doc: dict[str, Any]) -> None:
        """Write the JSON file and the report folder, each atomically."""
        try:
            if self.json_path is not None:
                _write_atomic(self.json_path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
            if self.report_dir is not None and self._work is not None:
                charts = write_charts(doc, self._work)
                (self._work / REPORT).write_text(format_markdown(doc, charts), encoding="utf-8")
                publish_folder(self._work, self.report_dir)
                self._work = None
        except OSError as e:
            self.abort()
            raise PbmlxError(
                f"Writing the bench's output failed ({e}); nothing was kept."
            ) from None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
