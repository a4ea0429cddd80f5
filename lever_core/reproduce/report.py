"""The outputs of ``lever reproduce``: ``table.md`` / ``table.json`` in the paper's format (P, PSP,
C @1/3/5; one row per backbone ± LEVER, the Δ row beneath each pair, the published rows and the
difference beside them), one decile plot per backbone (its runs side by side in each bin) and a
summary PNG (P@5 and PSP@5 per backbone, bars ± LEVER)."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from lever.reproduce.cells import Context, cell_name, variants
from lever.reproduce.config import METRIC_KEYS
from lever.reproduce.params import flat_overrides
from lever.utils.atomic import write_json_atomic, write_text_atomic

LABELS = {"plain": "", "label_rows": " + label rows", "lever": " + LEVER"}
NAMES = {"renee": "Renée", "elias": "ELIAS", "cascadexml": "CascadeXML"}


def _row(name: str, values: dict[str, float] | None, extra: str = "", signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    cells = " | ".join("–" if values is None else fmt.format(values[k]) for k in METRIC_KEYS)
    return f"| {name} | {cells} | {extra} |"


def markdown(ctx: Context, stages: dict[str, Any], records: dict[str, dict[str, Any]],
             teacher: dict[str, Any] | None = None, peers: dict[str, dict[str, Any]] | None = None) -> str:
    ds, cfg = ctx.dataset, ctx.config
    a, b = ctx.propensity
    lines = [
        f"# lever reproduce: {cfg.name} ({ctx.preset} preset)",
        "",
        (f"Dataset `{ctx.params.data}` ({ds.num_train:,} train / {ds.num_test:,} test documents, "
        f"{ds.num_labels:,} labels), recognised by {ctx.recognised_by}. Test filter applied; PSP with "
        f"A={a}, B={b} ({cfg.propensity.source or 'lever_meta.json'}); metrics in %."
        + (" Rows in italics are the paper's (Tables 1/5); 'measured − paper' beneath them."
           if any(r["published"] for r in records.values()) else "")),
        "",
    ]
    if ctx.params.overrides:  # what differs from the config and the backbones' defaults
        lines += ["Changed with `--set`: " + ", ".join(f"`{o}`" for o in flat_overrides(ctx.params.overrides)) + ".", ""]
    lines += [
        "| model | " + " | ".join(METRIC_KEYS) + " | wall time |",
        "|---|" + "---|" * (len(METRIC_KEYS) + 1),
    ]
    if teacher:  # LEVER lifts a backbone's tail where the teacher leads it there: read this row first
        lines.append(_row(f"Teacher alone (kNN, {stages['teacher'].get('kind') or 'given'})", teacher["metrics"],
                          f"{stages['teacher'].get('wall_seconds', 0) / 60:.1f} min"))
    for name, peer in (peers or {}).items():
        lines.append(_row(f"{name} (peer, `{peer['path']}`)", peer["metrics"]))
    for backbone in ctx.params.backbones:
        vs = [v for v in variants(ctx.params) if cell_name(backbone, v) in records]
        for v in vs:
            r = records[cell_name(backbone, v)]
            lines.append(_row(NAMES[backbone] + LABELS[v], r["metrics"], f"{r['wall_seconds'] / 60:.1f} min"))
        plain, lever = records.get(backbone), records.get(cell_name(backbone, "lever"))
        if plain and lever:
            delta = {k: lever["metrics"][k] - plain["metrics"][k] for k in METRIC_KEYS}
            lines.append(_row(f"Δ {NAMES[backbone]} (LEVER − plain)", delta, signed=True))
        for v in vs:
            r = records[cell_name(backbone, v)]
            if r["published"]:
                lines.append(_row(f"*{NAMES[backbone]}{LABELS[v]} (paper)*", r["published"]))
                lines.append(_row(f"measured − paper, {NAMES[backbone]}{LABELS[v]}", r["vs_published"], signed=True))
    lines += ["", "## Stages", "", "| stage | folder / file | resolved config | wall time |", "|---|---|---|---|"]
    for name, s in stages.items():
        where = s.get("folder") or s.get("path")
        lines.append(f"| {name} | `{where}` | `{s.get('config') or '–'}` | {s.get('wall_seconds', 0) / 60:.1f} min |")
    stage_s = sum(s.get("wall_seconds", 0) for s in [*stages.values(), teacher or {}])
    cell_s = sum(r["wall_seconds"] for r in records.values())
    # a sum of the recorded times, so a resumed run counts its work and not the pauses between runs
    total = (f"Total wall time {(stage_s + cell_s) / 60:.1f} min: stages {stage_s / 60:.1f} min, "
             f"cells {cell_s / 60:.1f} min (the sum of the recorded times; a resumed run counts its work, "
             "not its pauses).")
    lines += ["", total]
    lines += ["", "Each cell's resolved config: `runs/<cell>/config.json` (listed in table.json).", ""]
    notes = list(cfg.notes) + [f"{NAMES[b]}: {n}" for b in ctx.params.backbones for n in cfg.cells[b].notes]
    if stages.get("teacher", {}).get("note"):
        notes.append(stages["teacher"]["note"])
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Plots", "", "![summary](summary.png)", ""]
    lines += [f"![{b}](deciles_{b}.png)" for b in ctx.params.backbones if any(
        cell_name(b, v) in records for v in variants(ctx.params))]
    return "\n".join(lines) + "\n"


def plot_summary(ctx: Context, records: dict[str, dict[str, Any]], path) -> None:
    """P@5 and PSP@5 per backbone, one bar per variant (± LEVER)."""
    from lever.utils.figures import pyplot, save_png

    plt = pyplot()
    backbones = ctx.params.backbones
    vs = variants(ctx.params)
    x = np.arange(len(backbones))
    width = 0.8 / len(vs)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("P@5", "PSP@5")):
        for i, v in enumerate(vs):
            vals = [records[cell_name(b, v)]["metrics"][key] if cell_name(b, v) in records else np.nan for b in backbones]
            bars = ax.bar(x + (i - (len(vs) - 1) / 2) * width, vals, width, label=(LABELS[v] or " plain").strip(" +"))
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, [NAMES[b] for b in backbones])
        ax.set_ylabel(f"{key} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{ctx.config.name} ({ctx.preset} preset): each backbone without and with LEVER")
    fig.tight_layout()
    save_png(fig, path)


def write_report(ctx: Context, stages: dict[str, Any], records: dict[str, dict[str, Any]],
                 teacher: dict[str, Any] | None = None, peers: dict[str, dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    from lever.metrics.deciles import plot_deciles

    out = ctx.out
    for backbone in ctx.params.backbones:
        pair = {NAMES[backbone] + LABELS[v]: records[cell_name(backbone, v)]["deciles"]
                for v in variants(ctx.params) if cell_name(backbone, v) in records}
        if pair and teacher:
            pair["teacher"] = teacher["deciles"]
        if pair:
            plot_deciles(pair, 5, out / f"deciles_{backbone}.png",
                         title=f"{NAMES[backbone]} on {ctx.config.name}: per-decile analysis (k=5)")
    plot_summary(ctx, records, out / "summary.png")
    table = {
        "dataset": {"path": ctx.params.data, "name": ctx.dataset.name, "num_train": ctx.dataset.num_train,
                    "num_test": ctx.dataset.num_test, "num_labels": ctx.dataset.num_labels,
                    "recognised_by": ctx.recognised_by},
        "config": ctx.config.to_dict(),
        "preset": ctx.preset,
        "propensity": {"a": ctx.propensity[0], "b": ctx.propensity[1]},
        "reproduce": ctx.params.to_dict(),
        "stages": stages,
        "cells": records,
        "teacher": teacher,
        "peers": peers or {},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    write_json_atomic(out / "table.json", table)
    text = markdown(ctx, stages, records, teacher, peers)
    write_text_atomic(out / "table.md", text)
    print(text, flush=True)
    return table
