"""Printing evaluation results as tables (rich) and writing them as JSON.

The runners in `xcube_core.eval.runners` return plain dicts; this module turns them into tables for a
person and into a JSON file for scripts (NaN becomes null, written atomically).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any

# Targets of the default model v2 (issue 11), shown next to the measured numbers.
TARGETS = {"1-NNA-CD": ("<=", 0.58), "COV-CD": (">=", 0.50), "prompt_control": (">=", 0.90),
           "vae_iou": (">=", 0.85), "vae_iou_0": (">=", 0.95), "fscore_1": (">=", 0.97),
           "orphan_rate": ("<=", 0.02)}
_PLAIN = ("vae_iou", "vae_iou_0", "fscore_1")  # shown as 0.xx, the others as percentages


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(result: dict[str, Any], path: str | os.PathLike) -> pathlib.Path:
    """Write ``result`` as indented JSON to ``path`` (temporary file + rename; NaN -> null)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(result), indent=2, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _target(name: str, value: float) -> str:
    if name not in TARGETS or value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    op, goal = TARGETS[name]
    ok = value <= goal if op == "<=" else value >= goal
    return f"{op} {goal:.0%}  {'met' if ok else 'MISSED'}" if name not in _PLAIN else \
        f"{op} {goal:.2f}  {'met' if ok else 'MISSED'}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _table(title: str, columns: list[str]):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


def generation_tables(r: dict[str, Any]) -> list:
    m = r["metrics"]
    t = _table(f"Generation vs {r['num']} held-out scenes ({r['model_id']}, {r['num_points']} points, "
               f"'{r['normalize']}' normalisation)", ["metric", "value", "target"])
    t.add_row("1-NNA-CD", _pct(m["1-NNA-CD"]), _target("1-NNA-CD", m["1-NNA-CD"]))
    t.add_row("  on generated / on reference", f"{_pct(m['1-NNA-CD_gen'])} / {_pct(m['1-NNA-CD_ref'])}", "")
    t.add_row("COV-CD", _pct(m["COV-CD"]), _target("COV-CD", m["COV-CD"]))
    t.add_row("MMD-CD (x 1e3)", f"{1e3 * m['MMD-CD']:.3f}", "")
    t.add_row("failed / empty scenes", str(r["failed_scenes"]), "")
    cf = r["class_fractions"]
    c = _table(f"Class fractions (TV {cf['total_variation']:.3f})", ["class", "generated", "reference"])
    for name, g, ref in zip(cf["classes"], cf["generated"], cf["reference"]):
        c.add_row(name, _pct(g), _pct(ref))
    return [t, c] + hierarchy_tables(r.get("hierarchy"))


def hierarchy_tables(h: dict[str, Any] | None) -> list:
    """Orphan rate and parent/child class agreement, generated next to held-out data."""
    if not h or not h.get("generated"):
        return []
    t = _table("Hierarchy (generated vs held-out data)",
               ["levels", "orphan rate gen.", "orphan rate data", "class agreement gen.", "class agreement data",
                "target"])
    for pair, g in h["generated"].items():
        d = h.get("reference", {}).get(pair, {})
        gap = abs(g["class_agreement"] - d.get("class_agreement", float("nan")))
        agree = "within 2 points " + ("met" if gap <= 0.02 else "MISSED") if d else ""
        t.add_row(pair, _pct(g["orphan_rate"]), _pct(d.get("orphan_rate")), _pct(g["class_agreement"]),
                  _pct(d.get("class_agreement")), f"{_target('orphan_rate', g['orphan_rate'])}; {agree}")
    return [t]


def vae_tables(r: dict[str, Any]) -> list:
    return [_match_table(f"VAE reconstruction of {r['num']} held-out scenes ({r['model_id']})", r["levels"], True)]


def upsampling_tables(r: dict[str, Any]) -> list:
    t = _match_table(f"Finer levels generated from the true coarsest level of {r['num']} held-out scenes "
                     f"({r['model_id']})", r["levels"], False)
    return [t] + hierarchy_tables(r.get("hierarchy"))


def _match_table(title: str, levels: dict[str, Any], targets: bool):
    """One row per level of `xcube_core.eval.runners.summarise_matches` figures."""
    t = _table(title, ["level", "voxel size", "mean IoU", "min IoU", "F-score@1 (P / R)", "semantic acc."]
               + (["target"] if targets else []))
    for li, v in levels.items():
        fs = v.get("mean_fscore_1")
        fs_text = "n/a" if fs is None else f"{fs:.3f} ({v['mean_precision_1']:.3f} / {v['mean_recall_1']:.3f})"
        goal = "vae_iou_0" if li == "0" else "vae_iou"
        row = [li, f"{v['voxel_size']:.4g} m", f"{v['mean_iou']:.3f}", f"{v['min_iou']:.3f}", fs_text,
               _pct(v["mean_semantic_accuracy"])]
        if targets:
            row.append(f"IoU {_target(goal, v['mean_iou'])}; F {_target('fscore_1', fs) if fs is not None else ''}")
        t.add_row(*row)
    return t


def prompt_tables(r: dict[str, Any]) -> list:
    s = r["summary"]
    t = _table(f"Prompt control ({r['model_id']}, {len(r['seeds'])} seeds, {r['num_pairs']} pairs)",
               ["group", "success", "trials", "ties", "mean delta", "target"])
    o = s["overall"]
    t.add_row("overall", _pct(o["success_rate"]), str(o["trials"]), str(o["ties"]), f"{o['mean_delta']:.4g}",
              _target("prompt_control", o["success_rate"]))
    for group in ("by_kind", "by_attribute", "by_attribute_kind"):
        for name, v in s[group].items():
            t.add_row(f"  {name}", _pct(v["success_rate"]), str(v["trials"]), str(v["ties"]),
                      f"{v['mean_delta']:.4g}", "")
    return [t]


def print_report(result: dict[str, Any], console=None) -> None:
    """Print the tables of a runner's result (``result["task"]`` picks the layout)."""
    from rich.console import Console

    console = console or Console()
    tables = {"generation": generation_tables, "vae": vae_tables, "upsampling": upsampling_tables,
              "prompts": prompt_tables}[result["task"]](result)
    for t in tables:
        console.print(t)
