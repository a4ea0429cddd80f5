"""Where a trained CascadeXML run loses its test positives: the beam at prediction.

Training keeps every positive in the beam (teacher forcing); prediction has no forcing, so a
positive whose cluster falls out of a level's beam can't be predicted. For one finished run this
measures, on the test split:

* per prediction beam, the share of the test positives' clusters (labels, at the last level) that
  are in the beam at each level (``CascadeModule.walk``, the module's own inference walk);
* P/PSP/C@1/3/5 (test filter applied) for each ``--beams`` setting (widths per cluster level) and
  each score mode (``weighted``: log σ(z_label) + log σ(z_parent); ``level``: log σ(z_label)), with
  the prediction time per 1,000 documents. No retraining: the beam is an inference setting
  (``--bp predict_beam=[...]`` at training time, or this script afterwards).

usage: python bench/cascadexml_beam.py --run runs/tail_wordnet/cascadexml \\
          --beams '[[8,32,64],[32,128,256]]' [--tag NAME] [--recall-docs 3000]
Writes bench/results/cascadexml_beam_<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHOWN = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "C@1", "C@3", "C@5")


@torch.no_grad()
def beam_recall(backbone, module, tst_Y, num_docs: int, batch: int = 500) -> list[float]:
    """Per level: the share of the test positives' nodes of that level that the inference beam
    (``module.walk``, at ``module.predict_beam``) keeps; the last entry: labels among the final
    candidates."""
    y = tst_Y.tocsr()
    clusters = [module.cluster_of(i).cpu().numpy() for i in range(module.num_levels - 1)]
    hits = np.zeros(module.num_levels)
    total = np.zeros(module.num_levels)
    for lo in range(0, num_docs, batch):
        rows = np.arange(lo, min(num_docs, lo + batch))
        kept, ids, _ = module.walk(backbone.test_inputs(rows))
        for b, r in enumerate(rows):
            labels = y.indices[y.indptr[r]: y.indptr[r + 1]]
            for level, nodes in enumerate([*kept, ids]):
                want = set((clusters[level][labels] if level < len(kept) else labels).tolist())
                total[level] += len(want)
                hits[level] += len(want & set(nodes[b].tolist()))
    return (hits / np.maximum(total, 1)).tolist()


def main(argv: list[str] | None = None) -> int:
    from lever.train.loop import evaluate_module, load_trained
    from lever.utils.atomic import write_json_atomic, write_text_atomic

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished lever train --backbone cascadexml run")
    ap.add_argument("--data", help="dataset folder (default: the run's)")
    ap.add_argument("--beams", default="[]", help="JSON list of prediction beams, one width per cluster level")
    ap.add_argument("--recall-docs", type=int, default=3000, help="test documents for the recall per level")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    backbone, module, _, ds = load_trained(args.run, args.data, "cpu")
    if backbone.name != "cascadexml":
        raise SystemExit(f"{args.run}: a {backbone.name} run, expected cascadexml")
    recall_docs = min(args.recall_docs, ds.num_test)
    out = {"run": str(args.run), "depths": module.depths, "train_beam": module.beam,
           "predict_beam": module.predict_beam, "labels": module.num_labels,
           "recall_docs": recall_docs, "cells": []}
    for beam in json.loads(args.beams) or [module.predict_beam]:
        module.predict_beam = [int(b) for b in beam]
        recall = beam_recall(backbone, module, ds.tst_Y, recall_docs)
        print(beam, "beam recall per level:", [round(100 * r, 2) for r in recall], flush=True)
        for mode in ("weighted", "level"):
            module.score_mode = mode
            start = time.perf_counter()
            metrics = evaluate_module(backbone, module, ds, 5, torch.device("cpu"), False)
            seconds = time.perf_counter() - start
            cell = {"beam": beam, "score": mode, "beam_recall": recall,
                    "predict_s_per_1k": 1000 * seconds / ds.num_test,
                    **{k: float(metrics[k]) for k in SHOWN}}
            out["cells"].append(cell)
            print(beam, mode, {k: round(cell[k], 2) for k in ("P@5", "PSP@5", "C@5")}, flush=True)
    tag = args.tag or Path(args.run).name
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / f"cascadexml_beam_{tag}.json", out)
    lines = [f"# CascadeXML prediction beam: {args.run}", "",
             f"Tree depths {module.depths} (then {module.num_labels} labels); training beam {out['train_beam']}.",
             "", (f"Recall: the share of the test positives' nodes that the beam keeps at levels 0, 1, … "
                  f"and among the final candidates (first {recall_docs} test documents)."), "",
             "| prediction beam | score | recall per level | " + " | ".join(SHOWN) + " | predict s / 1k docs |",
             "|---" * (len(SHOWN) + 4) + "|"]
    for c in out["cells"]:
        recall = " / ".join(f"{100 * r:.1f}" for r in c["beam_recall"])
        lines.append(f"| {c['beam']} | {c['score']} | {recall} % | " + " | ".join(f"{c[k]:.2f}" for k in SHOWN)
                     + f" | {c['predict_s_per_1k']:.2f} |")
    write_text_atomic(RESULTS / f"cascadexml_beam_{tag}.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS / f'cascadexml_beam_{tag}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
