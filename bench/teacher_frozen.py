"""Frozen-feature teacher on a dataset (full WordNet by default): training time and the teacher's
kNN metrics for a few settings, next to zero-shot MiniLM (the same cached features, no tower).

    .venv/bin/python bench/teacher_frozen.py --data runs/wordnet --cache-dir runs/cache \
        --out runs/teacher_frozen_wordnet [--quick]

Writes bench/results/teacher_frozen_wordnet.{json,md}. Every variant trains into its own folder
under ``--work`` (default runs/teacher_frozen_bench/); the default settings (preset frozen-cpu)
are trained into ``--out``, the teacher others use. The MiniLM features are embedded once into
``--cache-dir`` (about 100k texts: tens of minutes on 2 cores) and reused by every variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
KEYS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "C@1", "C@3", "C@5", "R@100")

# name -> overrides of preset frozen-cpu (the first row is the default, trained into --out)
VARIANTS = {
    "default (pair, Eq.9, clustered from epoch 1)": {},
    "random batches": {"cl_start": 10**9},
    "label-side batches": {"batch_type": "label", "batch_size": 256},
    "softmax loss T=0.05": {"loss": "softmax"},
    "hidden 384": {"hidden": 384},
    "20 epochs": {"epochs": 20},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="runs/wordnet")
    ap.add_argument("--cache-dir", default="runs/cache")
    ap.add_argument("--out", default="runs/teacher_frozen_wordnet")
    ap.add_argument("--work", default="runs/teacher_frozen_bench")
    ap.add_argument("--quick", action="store_true", help="only the default variant")
    args = ap.parse_args()

    from lever.data import XCDataset
    from lever.teacher.evaluate import (
        dataset_inverse_propensity,
        evaluate_embeddings,
        evaluate_teacher_folder,
    )
    from lever.teacher.frozen import frozen_features
    from lever.teacher.params import preset
    from lever.teacher.train import train_teacher

    ds = XCDataset.load(args.data)
    t0 = time.perf_counter()
    feats = frozen_features(ds, ("lbl", "tst", "trn"), args.cache_dir)
    embed_s = time.perf_counter() - t0
    zero = evaluate_embeddings(
        feats["tst"], feats["lbl"], ds.tst_Y, dataset_inverse_propensity(ds), ds.tst_filter
    )
    rows = [{"name": "zero-shot MiniLM (max_len 32)", "train_s": 0.0, "test": zero}]
    variants = list(VARIANTS.items())[: 1 if args.quick else None]
    for i, (name, over) in enumerate(variants):
        params = preset("frozen-cpu").replace(cache_dir=args.cache_dir, **over)
        out = Path(args.out) if i == 0 else Path(args.work) / f"v{i}"
        if out.exists():
            shutil.rmtree(out)
        t = time.perf_counter()
        train_teacher(ds, params, out, progress=True)
        secs = time.perf_counter() - t
        rows.append(
            {
                "name": name,
                "overrides": over,
                "train_s": round(secs, 1),
                "test": evaluate_teacher_folder(ds, out, progress=False),
                "folder": str(out),
            }
        )
        print(json.dumps(rows[-1]))
    report = {
        "dataset": ds.name,
        "feature_embedding_s": round(embed_s, 1),
        "base": preset("frozen-cpu").to_dict(),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "teacher_frozen_wordnet.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Frozen-feature teacher on {ds.name}",
        "",
        f"MiniLM features (cached, max_len 32): {embed_s:.0f} s this run (0 when cached).",
        "",
        "| variant | train s | " + " | ".join(KEYS) + " |",
        "|---|---|" + "---|" * len(KEYS),
    ]
    for r in rows:
        cells = " | ".join(f"{r['test'].get(k, float('nan')):.2f}" for k in KEYS)
        lines.append(f"| {r['name']} | {r['train_s']:.0f} | {cells} |")
    (RESULTS / "teacher_frozen_wordnet.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
