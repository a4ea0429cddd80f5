"""CascadeXML with and without LEVER on one dataset (P/PSP/C @1/3/5, epoch times, prediction time
per 1,000 documents, and the share of positive / teacher nodes reaching each level's training
beam), every run a real ``lever train --backbone cascadexml`` with the backbone's CPU defaults.

usage:
  python bench/cascadexml_foldoc.py --data runs/foldoc --soft runs/soft_foldoc_frozen.npz \
      --out runs/h10_bench --cache runs/h10_cache [--variants cascadexml cascadexml_lever] \
      [--run cascadexml=runs/h10_cx_foldoc ...] \
      [--reference NAME=P1,P3,P5,PSP1,PSP3,PSP5,C5 ...]

Runs are resumable (rerunning continues, a finished run is only re-scored). Writes
bench/results/cascadexml_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("cascadexml", "cascadexml_label_rows", "cascadexml_lever")
KS = (1, 3, 5)


def params_of(args, variant: str):
    from lever.train.params import LeverParams, RunParams, TrainParams

    return TrainParams(
        data=args.data, backbone="cascadexml", out=str(dict(args.run).get(variant, Path(args.out) / variant)),
        lever=LeverParams(soft_labels=args.soft if variant == "cascadexml_lever" else None,
                          label_rows=variant != "cascadexml", lam=0.5),
        run=RunParams(seed=args.seed, cache_dir=args.cache),
    )


def run(args, variant: str, ds) -> dict:
    import torch

    from lever.metrics import evaluate, inverse_propensity
    from lever.train.loop import load_trained, train
    from lever.train.predict import predict_topk

    params = params_of(args, variant)
    t0 = time.time()
    train(params, progress=not args.quiet)
    wall = time.time() - t0
    out = Path(params.out)
    backbone, module, _, _ = load_trained(out, device="cpu")
    t0 = time.time()
    preds = predict_topk(backbone, module, ds.num_test, ds.num_labels, 5, torch.device("cpu"),
                         exclude=ds.tst_filter, progress=False)
    predict_seconds = time.time() - t0
    inv = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "metrics": evaluate(ds.tst_Y, preds, inv, k=5, filter=ds.tst_filter),
        "epoch_seconds": [r["seconds"] for r in log],
        "wall_seconds_this_invocation": wall,
        "predict_seconds_per_1000_docs": 1000 * predict_seconds / ds.num_test,
        "shortlists": json.loads((out / "cascadexml_shortlists.json").read_text())["levels"],
        "config": json.loads((out / "config.json").read_text()),
    }


def markdown(ds, runs: dict, refs: dict, tag: str) -> str:
    lines = [
        f"# CascadeXML ± LEVER on {tag} (CPU, frozen MiniLM layers ⊕ TF-IDF, the backbone's defaults)",
        "",
        (f"{ds.num_train:,} train / {ds.num_test:,} test documents, {ds.num_labels:,} labels; test "
        f"filter applied; metrics in %. {platform.processor() or platform.machine()}, "
        "2 cores shared with other jobs (times are indicative)."),
        "",
        "| model | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | C@5 | s/epoch | predict s / 1k docs |",
        "|---|" + "---|" * 9,
    ]
    for name, r in runs.items():
        m = r["metrics"]
        vals = " | ".join(f"{m[f'{x}@{k}']:.2f}" for x in ("P", "PSP") for k in KS)
        lines.append(f"| {name} | {vals} | {m['C@5']:.2f} | {np.median(r['epoch_seconds']):.0f} | "
                     f"{r['predict_seconds_per_1000_docs']:.2f} |")
    for name, v in refs.items():
        lines.append(f"| {name} (reference) | " + " | ".join(f"{x:.2f}" for x in v) + " | | |")
    lines += ["", ("Share of each level's positive / teacher-only nodes in its training beam "
              "(levels 1.. ; level 0 scores every cluster):"), "",
              "| model | level | positives | reached | teacher nodes | reached |", "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        for s in r["shortlists"]:
            tr = "–" if s["teacher_reached"] is None else f"{100 * s['teacher_reached']:.1f}%"
            lines.append(f"| {name} | {s['level']} | {s['positives']:.0f} | "
                         f"{100 * s['positives_reached']:.1f}% | {s['teacher']:.0f} | {tr} |")
    if "cascadexml_lever" in runs and "cascadexml_label_rows" in runs:
        ratio = np.median(runs["cascadexml_lever"]["epoch_seconds"]) / np.median(
            runs["cascadexml_label_rows"]["epoch_seconds"])
        lines.append(f"\nPer-epoch time, cascadexml_lever / cascadexml_label_rows: {ratio:.2f}x")
    return "\n".join(lines) + "\n"


def main() -> None:
    from lever.data import XCDataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--soft", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--run", nargs="*", default=[], type=lambda x: tuple(x.split("=", 1)),
                    help="VARIANT=DIR: that variant's run folder (default OUT/VARIANT)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--reference", nargs="*", default=[], help="NAME=P1,P3,P5,PSP1,PSP3,PSP5,C5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    ds = XCDataset.load(args.data)
    runs = {v: run(args, v, ds) for v in args.variants}
    refs = {}
    for item in args.reference:
        name, values = item.split("=", 1)
        refs[name] = [float(x) for x in values.split(",")]
    tag = ds.name
    RESULTS.mkdir(exist_ok=True)
    from lever.utils.atomic import write_json_atomic, write_text_atomic

    write_json_atomic(RESULTS / f"cascadexml_{tag}.json", {"runs": runs, "references": refs})
    write_text_atomic(RESULTS / f"cascadexml_{tag}.md", markdown(ds, runs, refs, tag))
    print(markdown(ds, runs, refs, tag))


if __name__ == "__main__":
    main()
