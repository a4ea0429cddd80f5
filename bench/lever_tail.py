"""Does LEVER lift the tail? One table per dataset in the paper's format (P/PSP/C @1/3/5):
Omikuji (reference), the teacher alone, Renée, Renée + label rows, Renée + LEVER (λ = 0.5, the
paper) and Renée + LEVER (``--lam auto``), every student with Renée's own CPU defaults (no tuning
flags), the same seed and the same frozen features; decile plots; epoch times.

Every student is a real ``lever train --backbone renee`` run (resumable: rerunning continues).

usage:
  python bench/lever_tail.py --data runs/foldoc --teacher runs/teacher_frozen_foldoc \
      --features runs/zeroshot_foldoc --soft runs/soft_foldoc.npz --out runs/tail_foldoc \
      [--variants omikuji teacher renee renee_label_rows renee_lever renee_lever_auto] \
      [--auto epochs=2 ...]

``--features``: a teacher-style folder of frozen MiniLM embeddings (the zero-shot teacher) that
feeds the students (``encoder.embeddings``); ``--teacher``: LEVER's teacher; ``--soft``: its soft
labels at the paper's defaults. Writes bench/results/lever_tail_<dataset>.{json,md} and plots.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from renee_wordnet import run_omikuji  # bench scripts share the Omikuji runner

RESULTS = Path(__file__).resolve().parent / "results"
KS = (1, 3, 5)
VARIANTS = ("omikuji", "teacher", "renee", "renee_label_rows", "renee_lever", "renee_lever_auto")


def _key_value(text: str):
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def student_params(args, variant: str):
    from lever.train.auto import AutoParams
    from lever.train.params import LeverParams, RunParams, TrainParams

    lever = variant.startswith("renee_lever")
    return TrainParams(
        data=args.data,
        backbone="renee",
        out=str(Path(args.out) / variant),
        backbone_params={"encoder": {"embeddings": args.features}},
        lever=LeverParams(
            soft_labels=args.soft if lever else None,
            label_rows=variant != "renee",
            lam="auto" if variant == "renee_lever_auto" else 0.5,
            auto=AutoParams.from_dict(dict(args.auto or []), source="--auto"),
        ),
        run=RunParams(seed=args.seed, cache_dir=str(Path(args.out) / "cache")),
    )


def run_student(args, variant: str, ds):
    import torch

    from lever.train.loop import load_trained, train
    from lever.train.predict import predict_topk

    params = student_params(args, variant)
    t0 = time.time()
    train(params, progress=not args.quiet)
    wall = time.time() - t0
    out = Path(params.out)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    backbone, module, _, _ = load_trained(out, device="cpu")
    preds = predict_topk(backbone, module, ds.num_test, ds.num_labels, 5, torch.device("cpu"),
                         exclude=ds.tst_filter, progress=not args.quiet)
    info = {
        "epoch_seconds": [r["seconds"] for r in log],
        "wall_seconds_this_invocation": wall,
        "config": json.loads((out / "config.json").read_text()),
    }
    choice = out / "auto" / "choice.json"
    if choice.exists():
        info["auto_choice"] = json.loads(choice.read_text())
        info["auto_grid"] = json.loads((out / "auto" / "grid.json").read_text())
    return preds, info


def run_teacher(args, ds):
    from lever.soft_labels.teacher_embeddings import load_teacher_embeddings, teacher_config
    from lever.teacher.evaluate import exact_knn

    emb = load_teacher_embeddings(args.teacher, {"tst": ds.num_test, "lbl": ds.num_labels}, ("tst", "lbl"))
    t0 = time.time()
    preds = exact_knn(emb["tst"], emb["lbl"], 5, filter=ds.tst_filter)
    log = Path(args.teacher) / "metrics.jsonl"
    seconds = None
    if log.exists():
        seconds = sum(json.loads(x).get("seconds", 0.0) for x in log.read_text().splitlines())
    return preds, {"knn_seconds": time.time() - t0, "train_seconds": seconds,
                   "config": teacher_config(args.teacher)}


def score(ds, preds, name: str, tag: str):
    from lever.metrics import XCMetrics, inverse_propensity
    from lever.metrics.deciles import decile_report, plot_deciles
    from lever.metrics.propensity import label_counts

    inv = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    acc = XCMetrics(ds.tst_Y, inv, k=5, filter=ds.tst_filter)
    acc.update(np.arange(ds.num_test), preds)
    report = decile_report(acc, label_counts(ds.trn_Y), k=5)
    plot_deciles(report, 5, RESULTS / f"lever_tail_{tag}_deciles_{name}.png", title=f"{name} on {tag} (k=5)")
    return acc.summary(), report


def markdown(ds, runs: dict, tag: str) -> str:
    lines = [
        f"# Does LEVER lift the tail? {tag} (CPU, Renée on frozen MiniLM ⊕ TF-IDF, Renée's defaults)",
        "",
        (f"{ds.num_train:,} train / {ds.num_test:,} test documents, {ds.num_labels:,} labels; "
         "test filter applied; metrics in %."),
        "",
        "| model | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | C@1 | C@3 | C@5 | s/epoch |",
        "|---|" + "---|" * 10,
    ]
    for name in VARIANTS:
        if name not in runs:
            continue
        m, info = runs[name]["metrics"], runs[name]["info"]
        ep = info.get("epoch_seconds")
        sec = f"{np.median(ep):.0f}" if ep else f"{info.get('train_seconds') or 0:.0f} (train)"
        vals = " | ".join(f"{m[f'{x}@{k}']:.2f}" for x in ("P", "PSP", "C") for k in KS)
        lines.append(f"| {name} | {vals} | {sec} |")
    if "renee" in runs:
        base = runs["renee"]["metrics"]
        for name in ("renee_lever", "renee_lever_auto"):
            if name in runs:
                m = runs[name]["metrics"]
                d = ", ".join(f"{x}@5 {m[f'{x}@5'] - base[f'{x}@5']:+.2f}" for x in ("P", "PSP", "C"))
                lines.append(f"\n{name} − renee: {d}")
    if "renee_lever" in runs and "renee_label_rows" in runs:
        ratio = np.median(runs["renee_lever"]["info"]["epoch_seconds"]) / np.median(
            runs["renee_label_rows"]["info"]["epoch_seconds"])
        lines.append(f"\nPer-epoch time, renee_lever / renee_label_rows: {ratio:.2f}x")
    auto = runs.get("renee_lever_auto", {}).get("info", {})
    if "auto_grid" in auto:
        lines += ["", "## `--lam auto` grid (validation split)", ""]
        lines += ["| cell | stage | P@5 | PSP@5 | C@5 | s |", "|---|---|---|---|---|---|"]
        for c in auto["auto_grid"]:
            m = c["metrics"]
            lines.append(f"| {c['name']} | {c['stage']} | {m['P@5']:.2f} | {m['PSP@5']:.2f} | "
                         f"{m['C@5']:.2f} | {c['seconds']} |")
        lines.append(f"\nchosen: `{auto['auto_choice']['cell']}` ({auto['auto_choice']['objective']})")
    for name in VARIANTS:
        if name in runs:
            lines += ["", f"![{name}](lever_tail_{tag}_deciles_{name}.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True, help="LEVER's teacher folder")
    ap.add_argument("--features", required=True, help="frozen MiniLM embeddings folder for the students")
    ap.add_argument("--soft", required=True, help="soft labels of the teacher (paper defaults)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--auto", type=_key_value, action="append", metavar="KEY=VALUE")
    ap.add_argument("--tfidf-features", dest="tfidf_features", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. the teacher's kind)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from lever.data import XCDataset
    from lever.metrics import format_table
    from lever.utils.atomic import write_json_atomic, write_text_atomic

    ds = XCDataset.load(args.data)
    tag = ds.name + (f"_{args.tag}" if args.tag else "")
    out_json = RESULTS / f"lever_tail_{tag}.json"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        print(f"== {variant}", flush=True)
        if variant == "omikuji":
            preds, info = run_omikuji(args, ds)
        elif variant == "teacher":
            preds, info = run_teacher(args, ds)
        else:
            preds, info = run_student(args, variant, ds)
        res, report = score(ds, preds, variant, tag)
        print(format_table(res, rows=("P", "PSP", "C")), flush=True)
        meta = {"args": vars(args), "cpu_count": os.cpu_count(), "machine": platform.machine(),
                "loadavg": os.getloadavg()}
        with open(Path(args.out) / "results.lock", "w") as lock:  # variants may run in parallel
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
            done["runs"][variant] = {"metrics": res, "deciles": report, "info": info, "meta": meta}
            write_json_atomic(out_json, done)
    done = json.loads(out_json.read_text())
    text = markdown(ds, done["runs"], tag)
    write_text_atomic(RESULTS / f"lever_tail_{tag}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
