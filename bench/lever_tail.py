"""Does LEVER lift the tail? One table per dataset in the paper's format (P/PSP/C @1/3/5):
Omikuji (reference), the teacher alone, and per backbone (Renée, ELIAS, CascadeXML) the plain
model, + label rows, + LEVER (λ = 0.5, the paper) and + LEVER (``--lam auto``), every student
with its backbone's own CPU defaults (no tuning flags), the same seed and the same frozen
features; decile plots; epoch times; prediction time per 1,000 test documents.

Every student is a real ``lever train --backbone B`` run (resumable: rerunning continues).

usage:
  python bench/lever_tail.py --data runs/foldoc --teacher runs/teacher_frozen_foldoc \
      --features runs/zeroshot_foldoc --soft runs/soft_foldoc.npz --out runs/tail_foldoc \
      [--variants omikuji teacher renee renee_label_rows renee_lever renee_lever_auto \
                  elias elias_label_rows elias_lever cascadexml cascadexml_lever ...] \
      [--auto epochs=2 ...]

``--features``: a teacher-style folder of frozen MiniLM embeddings (the zero-shot teacher) that
feeds Renée and ELIAS (``encoder.embeddings``; CascadeXML caches its own per-layer MiniLM
states); ``--teacher``: LEVER's teacher; ``--soft``: its soft labels at the paper's defaults.
Writes bench/results/lever_tail_<dataset>.{json,md} and plots; several invocations may add
variants to the same files at once (a lock serialises the writes).
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
from peers import run_omikuji  # the bench scripts share one Omikuji runner

RESULTS = Path(__file__).resolve().parent / "results"
KS = (1, 3, 5)
BACKBONES = ("renee", "elias", "cascadexml")
VARIANTS = ("omikuji", "teacher") + tuple(
    b + suffix for b in BACKBONES for suffix in ("", "_label_rows", "_lever", "_lever_auto"))


def _key_value(text: str):
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def student_params(args, variant: str):
    from lever.train.auto import AutoParams
    from lever.train.params import LeverParams, OptimParams, RunParams, TrainParams

    backbone = variant.split("_")[0]
    lever = "_lever" in variant
    # CascadeXML reads several encoder layers, so it caches its own states instead
    features = {} if backbone == "cascadexml" else {"encoder": {"embeddings": args.features}}
    epochs = dict(args.epochs_of or []).get(backbone)  # None: the backbone's default
    return TrainParams(
        data=args.data,
        backbone=backbone,
        optim=OptimParams(epochs=None if epochs is None else int(epochs)),
        out=str(Path(args.out) / variant),
        backbone_params=features,
        lever=LeverParams(
            soft_labels=args.soft if lever else None,
            label_rows=variant != backbone,
            lam="auto" if variant.endswith("_lever_auto") else 0.5,
            auto=AutoParams.from_dict(dict(args.auto or []), source="--auto"),
        ),
        run=RunParams(seed=args.seed, cache_dir=str(Path(args.out) / "cache")),
    )


class PeakRSS:
    """The largest resident set of this process while inside the ``with`` block (sampled every
    0.2 s from /proc; a variant's own peak, unlike ru_maxrss which never falls between variants)."""

    def __enter__(self):
        import threading

        self.peak, self._stop = self.now(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def now() -> int:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def run_student(args, variant: str, ds):
    import torch

    from lever.train.loop import load_trained, train
    from lever.train.predict import predict_topk

    params = student_params(args, variant)
    t0 = time.time()
    with PeakRSS() as rss:
        train(params, progress=not args.quiet)
    wall = time.time() - t0
    out = Path(params.out)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    backbone, module, _, _ = load_trained(out, device="cpu")
    t0 = time.time()
    preds = predict_topk(backbone, module, ds.num_test, ds.num_labels, 5, torch.device("cpu"),
                         exclude=ds.tst_filter, progress=not args.quiet)
    info = {
        "epoch_seconds": [r["seconds"] for r in log],
        "wall_seconds_this_invocation": wall,
        "peak_rss_gib_this_invocation": rss.peak / 2**30,
        "predict_seconds_per_1000_docs": 1000 * (time.time() - t0) / ds.num_test,
        "config": json.loads((out / "config.json").read_text()),
    }
    shortlists = out / f"{params.backbone}_shortlists.json"  # share of positives / teacher nodes reached
    if shortlists.exists():
        info["shortlists"] = json.loads(shortlists.read_text())["levels"]
    choice = out / "auto" / "choice.json"
    if choice.exists():
        info["auto_choice"] = json.loads(choice.read_text())
        info["auto_grid"] = json.loads((out / "auto" / "grid.json").read_text())
    return preds, info


def run_teacher(args, ds):
    from lever.soft_labels.teacher_embeddings import teacher_config
    from lever.teacher.evaluate import teacher_test_topk

    t0 = time.time()
    preds = teacher_test_topk(ds, args.teacher, 5, progress=not args.quiet)
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
        f"# Does LEVER lift the tail? {tag} (CPU, students on frozen MiniLM ⊕ TF-IDF, each backbone's defaults)",
        "",
        (f"{ds.num_train:,} train / {ds.num_test:,} test documents, {ds.num_labels:,} labels; "
         "test filter applied; metrics in %."),
        "",
        ("| model | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | C@1 | C@3 | C@5 | epochs × s/epoch | predict s / 1k docs "
         "| peak RSS GiB (training) |"),
        "|---|" + "---|" * 12,
    ]
    for name in VARIANTS:
        if name not in runs:
            continue
        m, info = runs[name]["metrics"], runs[name]["info"]
        ep = info.get("epoch_seconds")
        sec = f"{len(ep)} × {np.median(ep):.0f}" if ep else f"{info.get('train_seconds') or 0:.0f} (train)"
        vals = " | ".join(f"{m[f'{x}@{k}']:.2f}" for x in ("P", "PSP", "C") for k in KS)
        pred, rss = info.get("predict_seconds_per_1000_docs"), info.get("peak_rss_gib_this_invocation")
        lines.append(f"| {name} | {vals} | {sec} | {'' if pred is None else f'{pred:.2f}'} | "
                     f"{'' if rss is None else f'{rss:.1f}'} |")
    for b in BACKBONES:
        lines += _deltas(runs, b)
    lines += _shortlist_shares(runs)
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


def _deltas(runs: dict, b: str) -> list[str]:
    """LEVER − plain at k = 5 and the epoch-time ratios of one backbone's runs."""
    lines = []
    if b in runs:
        base = runs[b]["metrics"]
        for name in (f"{b}_lever", f"{b}_lever_auto"):
            if name in runs:
                m = runs[name]["metrics"]
                d = ", ".join(f"{x}@5 {m[f'{x}@5'] - base[f'{x}@5']:+.2f}" for x in ("P", "PSP", "C"))
                lines.append(f"\n{name} − {b}: {d}")
    epochs = {n: np.median(runs[n]["info"]["epoch_seconds"]) for n in (b, f"{b}_label_rows", f"{b}_lever")
              if n in runs and runs[n]["info"].get("epoch_seconds")}
    for ref in (f"{b}_label_rows", b):
        if f"{b}_lever" in epochs and ref in epochs:
            lines.append(f"\nPer-epoch time, {b}_lever / {ref}: {epochs[f'{b}_lever'] / epochs[ref]:.2f}x")
    return lines


def _shortlist_shares(runs: dict) -> list[str]:
    rows = [(n, s) for n in VARIANTS if n in runs for s in runs[n]["info"].get("shortlists", [])]
    if not rows:
        return []
    lines = ["", ("Share of the positive / teacher-only targets that reach the scored sets in training "
                  "(CascadeXML: each level's beam, level 0 scores every cluster; ELIAS: the label shortlist):"), "",
             "| model | level | positives | reached | teacher nodes | reached |", "|---|---|---|---|---|---|"]
    for name, s in rows:
        tr = "–" if s["teacher_reached"] is None else f"{100 * s['teacher_reached']:.1f}%"
        lines.append(f"| {name} | {s['level']} | {s['positives']:.0f} | {100 * s['positives_reached']:.1f}% | "
                     f"{s['teacher']:.0f} | {tr} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True, help="LEVER's teacher folder")
    ap.add_argument("--features", required=True, help="frozen MiniLM embeddings folder for the students")
    ap.add_argument("--soft", required=True, help="soft labels of the teacher (paper defaults)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--auto", type=_key_value, action="append", metavar="KEY=VALUE")
    ap.add_argument("--epochs-of", dest="epochs_of", type=_key_value, action="append", metavar="BACKBONE=EPOCHS",
                    help="fewer epochs than a backbone's default (a full-WordNet CascadeXML epoch is ~10 min here)")
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
